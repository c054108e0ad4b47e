//! The `limits` section: what one client may hold or ask for, and the token-bucket rates that
//! other sections (a route's `rate_limit`) share.

use crate::config::shared::Dur;
use crate::config::shared::{dur, Check};
use serde::Deserialize;
use std::time::Duration;

const LIMITS_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// nginx's `client_max_body_size` default, which the users come from: an API call's JSON body
/// is far below it, and a larger upload is a route's own decision.
const MAX_BODY_BYTES: u64 = 1024 * 1024;
const PER_SOURCE_CONNECTIONS: usize = 1024;
const PER_SOURCE_HANDSHAKES: usize = 128;
const IPV6_PREFIX: u8 = 64;
const PER_PARTNER_REQUESTS: usize = 256;
const INTROSPECTION_MISSES: RateConfig = RateConfig { per_second: 20, burst: 100 };

/// Limits on what one client may hold or ask for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub per_source: PerSource,
    /// A cut is logged at most once per source, reason and interval.
    pub log_interval: Option<Dur>,
    /// Token bucket per client certificate (per source address without one) on introspection
    /// calls; cache hits are not counted.
    pub introspection_misses: Option<Rate>,
    /// IPv6 sources are counted per prefix of this length (one /64 is one source by default).
    pub ipv6_prefix: Option<u8>,
    /// Requests one partner (client certificate) may have in flight at once, for the process.
    pub per_partner_requests: Option<usize>,
    /// The request body limit of routes that set none (bytes).
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerSource {
    pub tunnels: Option<usize>,
    pub connections: Option<usize>,
    pub handshakes: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: Option<u32>,
}

/// Concurrent holdings of one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerSourceLimits {
    pub tunnels: usize,
    pub connections: usize,
    pub handshakes: usize,
    /// IPv6 addresses count per prefix of this length.
    pub ipv6_prefix: u8,
}

/// A token bucket: `per_second` on average, bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    pub per_second: u32,
    pub burst: u32,
}

/// A token bucket's value that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("must be at least 1")]
    PerSecond,
    #[error("must be at least 1")]
    Burst,
}

impl RateError {
    /// The key it is about, below the bucket's own.
    pub fn key(self) -> &'static str {
        match self {
            RateError::PerSecond => "per_second",
            RateError::Burst => "burst",
        }
    }
}

impl RateConfig {
    /// The bucket written as `per_second` and `burst` (`per_second` when absent), with every
    /// problem found; the bucket returned is usable either way (each value at least 1).
    pub fn checked(per_second: u32, burst: Option<u32>) -> (RateConfig, Vec<RateError>) {
        let mut problems = Vec::new();
        if per_second == 0 {
            problems.push(RateError::PerSecond);
        }
        let burst = burst.unwrap_or(per_second.max(1));
        if burst == 0 {
            problems.push(RateError::Burst);
        }
        (RateConfig { per_second: per_second.max(1), burst: burst.max(1) }, problems)
    }
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub per_source: PerSourceLimits,
    pub log_interval: Duration,
    pub introspection_misses: Option<RateConfig>,
    pub per_partner_requests: usize,
    /// The request body limit of routes that set none.
    pub max_body_bytes: u64,
}

/// Defaults keep one address to a small share: 1/32 of the tunnel slots every partner shares.
pub(in crate::config) fn validate(check: &mut Check, l: &Limits, max_tunnels: usize) -> LimitsConfig {
    let per_source = PerSourceLimits {
        tunnels: l.per_source.tunnels.unwrap_or((max_tunnels / 32).max(1)),
        connections: l.per_source.connections.unwrap_or(PER_SOURCE_CONNECTIONS),
        handshakes: l.per_source.handshakes.unwrap_or(PER_SOURCE_HANDSHAKES),
        ipv6_prefix: l.ipv6_prefix.unwrap_or(IPV6_PREFIX),
    };
    if !(16..=128).contains(&per_source.ipv6_prefix) {
        check.fail("limits.ipv6_prefix", "must be between 16 and 128");
    }
    for (key, v) in [
        ("tunnels", per_source.tunnels),
        ("connections", per_source.connections),
        ("handshakes", per_source.handshakes),
    ] {
        if v == 0 {
            check.fail(&format!("limits.per_source.{key}"), "must be at least 1");
        }
    }
    LimitsConfig {
        per_source,
        log_interval: dur(l.log_interval, LIMITS_LOG_INTERVAL),
        per_partner_requests: match l.per_partner_requests {
            Some(0) => {
                check.fail("limits.per_partner_requests", "must be at least 1");
                1
            }
            n => n.unwrap_or(PER_PARTNER_REQUESTS),
        },
        // On by default: a partner whose tokens are cached never reaches it, and a flood of
        // made-up tokens cannot reach the identity server at more than this per certificate.
        introspection_misses: Some(match l.introspection_misses {
            Some(r) => rate(check, "limits.introspection_misses", r.per_second, r.burst),
            None => INTROSPECTION_MISSES,
        }),
        max_body_bytes: l.max_body_bytes.unwrap_or(MAX_BODY_BYTES),
    }
}

/// The bucket, each problem reported under `key`.
fn rate(check: &mut Check, key: &str, per_second: u32, burst: Option<u32>) -> RateConfig {
    let (rate, problems) = RateConfig::checked(per_second, burst);
    for p in problems {
        check.fail(&format!("{key}.{}", p.key()), p);
    }
    rate
}
