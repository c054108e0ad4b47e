//! The `passthrough` section: the SNI names whose TLS is spliced to another server untouched, and
//! the limits of those tunnels.

use crate::config::shared::{dur, host_port, Check};
use crate::config::shared::{Dur, MinRate};
use crate::host::HostPattern;
use serde::Deserialize;
use std::time::Duration;

const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const PASSTHROUGH_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const PASSTHROUGH_MAX_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passthrough {
    #[serde(default)]
    pub routes: Vec<PassthroughRouteSection>,
    pub connect_timeout: Option<Dur>,
    pub max_connections: Option<usize>,
    /// A tunnel that moves no byte in either direction for this long is closed.
    pub idle_timeout: Option<Dur>,
    /// No tunnel lives longer than this.
    pub max_lifetime: Option<Dur>,
    /// A tunnel must move at least `bytes` (both directions together) in every `window`.
    pub min_rate: Option<MinRate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassthroughRouteSection {
    pub sni: String,
    pub upstream: String,
    #[serde(default)]
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone)]
pub struct PassthroughRoute {
    pub sni: HostPattern,
    pub upstream: String,
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone)]
pub struct PassthroughConfig {
    pub routes: Vec<PassthroughRoute>,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// At least `min_rate_bytes` in every `min_rate_window`, both directions together.
    pub min_rate_bytes: u64,
    pub min_rate_window: Duration,
}

pub(in crate::config) fn validate(check: &mut Check, p: &Passthrough) -> PassthroughConfig {
    let routes = p
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let sni = check.ok(&format!("passthrough.routes[{i}].sni"), HostPattern::parse(&r.sni))?;
            check.ok(&format!("passthrough.routes[{i}].upstream"), host_port(&r.upstream))?;
            Some(PassthroughRoute { sni, upstream: r.upstream.clone(), proxy_protocol: r.proxy_protocol })
        })
        .collect();
    let (min_rate_bytes, min_rate_window) = match &p.min_rate {
        Some(r) => (r.bytes, r.window.0),
        None => (512, Duration::from_secs(30)),
    };
    if min_rate_window.is_zero() {
        check.fail("passthrough.min_rate.window", "must be longer than zero");
    }
    PassthroughConfig {
        routes,
        connect_timeout: dur(p.connect_timeout, PASSTHROUGH_CONNECT_TIMEOUT),
        max_connections: p.max_connections.unwrap_or_else(|| crate::fdlimit::default_share(crate::fdlimit::hard())),
        idle_timeout: dur(p.idle_timeout, PASSTHROUGH_IDLE_TIMEOUT),
        max_lifetime: dur(p.max_lifetime, PASSTHROUGH_MAX_LIFETIME),
        min_rate_bytes,
        min_rate_window,
    }
}
