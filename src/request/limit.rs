//! Token buckets keyed by partner: a client certificate's thumbprint or subject, or the source
//! (address, or IPv6 prefix) of a request without one. Backed by `governor`; idle keys are
//! forgotten from time to time so that many distinct keys cannot grow the table without bound.
//! And the count of requests in flight per partner ([`InFlight`]).

use crate::cluster::Cluster;
use crate::config::{FailPolicy, RateConfig};
use crate::token::ClientCert;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests in flight per partner for the whole process, so that one partner cannot take every
/// upstream connection, whatever its HTTP/2 stream count or number of connections. A partner is its
/// client certificate (thumbprint) or, without one, the DPoP key its proofs prove.
#[derive(Default)]
pub struct InFlight {
    table: Mutex<HashMap<String, usize>>,
}

/// Whom a request in flight is counted for.
#[derive(Clone)]
pub enum Partner {
    Certificate(Arc<ClientCert>),
    /// The key's `jkt` under a prefix of its own: no certificate thumbprint can spell it.
    Key(String),
}

impl Partner {
    /// A client without a certificate, known by the thumbprint of its proven DPoP key.
    pub fn key(jkt: &str) -> Self {
        Partner::Key(format!("jkt:{jkt}"))
    }

    fn name(&self) -> &str {
        match self {
            Partner::Certificate(c) => &c.thumbprint,
            Partner::Key(k) => k,
        }
    }
}

/// One request in flight; released when dropped (the request's context ends with it).
pub struct InFlightSlot {
    table: Arc<InFlight>,
    partner: Partner,
}

impl InFlight {
    /// A slot for `partner`, or `None` when it has `max` requests in flight already. Only a
    /// partner's first request in flight allocates (its key).
    pub fn acquire(self: &Arc<Self>, partner: Partner, max: usize) -> Option<InFlightSlot> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match table.get_mut(partner.name()) {
            Some(n) if *n >= max => return None,
            Some(n) => *n += 1,
            None if max == 0 => return None,
            None => drop(table.insert(partner.name().to_string(), 1)),
        }
        Some(InFlightSlot { table: self.clone(), partner })
    }

    /// Partners with a request in flight (bounded by the connections open).
    pub fn partners(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let mut table = self.table.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = self.partner.name();
        if let Some(n) = table.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                table.remove(key);
            }
        }
    }
}

pub struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    checks: AtomicU64,
}

/// How often (in checks) idle buckets are dropped.
const RETAIN_EVERY: u64 = 4096;

impl Limiter {
    pub fn new(rate: RateConfig) -> Self {
        let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Limiter { buckets: RateLimiter::keyed(quota), clock: DefaultClock::default(), checks: AtomicU64::new(0) }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there.
    pub fn check(&self, key: &String) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            self.buckets.retain_recent();
        }
        self.buckets.check_key(key).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Why a limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Over the limit; a token is back after this long.
    Over(Duration),
    /// The shared count cannot be read and the policy is `closed`.
    Unavailable,
}

/// A limit counted across every replica when a cluster is configured (one GCRA bucket per name
/// and key on the server), in this process otherwise. When the server does not answer, the
/// `cluster.rate_limits` policy decides: `open` falls back to this replica's own bucket, `closed`
/// refuses.
pub struct SharedLimit {
    local: Limiter,
    rate: RateConfig,
    /// The bucket family on the server: a route's label, or `introspection_misses`.
    name: String,
    cluster: Option<Arc<Cluster>>,
}

impl SharedLimit {
    pub fn new(rate: RateConfig, name: impl Into<String>, cluster: Option<Arc<Cluster>>) -> Self {
        SharedLimit { local: Limiter::new(rate), rate, name: name.into(), cluster }
    }

    /// Takes one request from `key`'s bucket.
    pub async fn take(&self, key: &String) -> Result<(), Denied> {
        let Some(cluster) = &self.cluster else {
            return self.local.check(key).map_err(Denied::Over);
        };
        match cluster.gcra(&self.name, key, self.rate.per_second, self.rate.burst).await {
            Ok(r) => r.map_err(Denied::Over),
            Err(_) if cluster.config().rate_limits == FailPolicy::Open => self.local.check(key).map_err(Denied::Over),
            Err(_) => Err(Denied::Unavailable),
        }
    }
}

/// Retry-After in whole seconds, at least 1.
pub fn retry_after(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_requests_are_capped_per_partner_and_released() {
        let client = |der: &[u8]| Partner::Certificate(Arc::new(ClientCert::from_der(der, "CN=x".into()).unwrap()));
        let (a_cert, other) = (client(b"partner a"), client(b"partner b"));
        let inflight = Arc::new(InFlight::default());
        let a = inflight.acquire(a_cert.clone(), 2).unwrap();
        let _b = inflight.acquire(a_cert.clone(), 2).unwrap();
        assert!(inflight.acquire(a_cert.clone(), 2).is_none());
        assert!(inflight.acquire(other, 2).is_some(), "another partner is not affected");
        drop(a);
        assert!(inflight.acquire(a_cert, 2).is_some());
        drop(_b);
        assert_eq!(inflight.partners(), 0, "idle partners are forgotten");
    }

    #[test]
    fn a_client_without_a_certificate_is_counted_by_its_key() {
        let inflight = Arc::new(InFlight::default());
        let held: Vec<_> = (0..3).map(|_| inflight.acquire(Partner::key("key-a"), 3).unwrap()).collect();
        assert!(inflight.acquire(Partner::key("key-a"), 3).is_none(), "the fourth request of one key");
        assert!(inflight.acquire(Partner::key("key-b"), 3).is_some(), "another key is not affected");
        // A certificate whose thumbprint is the key's thumbprint is another partner.
        let mut cert = ClientCert::from_der(b"c", "CN=c".into()).unwrap();
        cert.thumbprint = "key-a".into();
        assert!(inflight.acquire(Partner::Certificate(Arc::new(cert)), 3).is_some());
        drop(held);
        assert_eq!(inflight.partners(), 0);
    }

    #[test]
    fn a_bucket_empties_per_key() {
        let l = Limiter::new(RateConfig { per_second: 1, burst: 3 });
        let (a, b) = ("partner-a".to_string(), "partner-b".to_string());
        for _ in 0..3 {
            assert!(l.check(&a).is_ok());
        }
        let wait = l.check(&a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(l.check(&b).is_ok(), "another partner has its own bucket");
        assert_eq!(retry_after(Duration::from_millis(300)), 1);
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_secs(2)), 2);
    }
}
