//! The replay cache (RFC 9449 §11.1): each `(key, jti)` of an accepted proof is remembered until
//! the proof's own `iat` can no longer pass the window, so that the proof cannot be used twice.
//! Bounded in entries. With a cluster the verifier asks the shared store instead
//! (`Cluster::first_use`) and falls back to this one only as the cluster's policy says.

use crate::metrics;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A proof's place in the replay cache: its key and how long it must be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayEntry {
    pub key: [u8; 32],
    /// Until the proof's `iat` falls out of the window (see [`ReplayEntry::for_proof`]).
    pub ttl: Duration,
}

impl ReplayEntry {
    /// The entry of a proof by the key `jkt` with this `jti` and `iat`, for a window of `max_age`.
    /// The verifier compares `iat` with the clock in whole seconds, so the proof passes until
    /// `iat + max_age + 1 s`. Counted from the proof's own `iat`, not from its first use: a proof
    /// dated ahead (up to the leeway) lives that much longer.
    pub(super) fn for_proof(jkt: &str, jti: &str, iat: i64, max_age: Duration) -> Self {
        let last_ms = (iat.saturating_add(max_age.as_secs() as i64).saturating_add(1)).saturating_mul(1000);
        let ttl = Duration::from_millis(u64::try_from(last_ms.saturating_sub(unix_now_ms())).unwrap_or(0).max(1));
        ReplayEntry { key: replay_key(jkt, jti), ttl }
    }
}

/// The replay cache's key: the proof's key and its `jti` (RFC 9449 §11.1: a `jti` is unique per key).
fn replay_key(jkt: &str, jti: &str) -> [u8; 32] {
    Sha256::new().chain_update(jkt.as_bytes()).chain_update([0]).chain_update(jti.as_bytes()).finalize().into()
}

/// The milliseconds since the Unix epoch (0 before it).
fn unix_now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Remembers each `(key, jti)` for as long as its proof could pass.
pub trait ReplayCache: Send + Sync {
    /// `true` the first time `entry.key` is seen while an earlier use is still kept.
    fn first_use(&self, entry: ReplayEntry) -> bool;
}

/// Each entry expires after the lifetime it was inserted with; reads never extend it.
struct EntryLifetime;

impl moka::Expiry<[u8; 32], Duration> for EntryLifetime {
    fn expire_after_create(&self, _key: &[u8; 32], ttl: &Duration, _now: std::time::Instant) -> Option<Duration> {
        Some(*ttl)
    }
}

/// The process's own replay cache: bounded in entries; an entry lives until its proof's `iat`
/// leaves the window. When full, the least recently used entries go first and each is counted
/// (`gateway_dpop_replay_evictions_total`): an evicted `jti` could be replayed within its window.
pub struct LocalReplayCache {
    seen: moka::sync::Cache<[u8; 32], Duration>,
}

impl LocalReplayCache {
    pub fn new(max_entries: u64) -> Self {
        let seen = moka::sync::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(EntryLifetime)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(|_k, _v, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    metrics::dpop_replay_eviction();
                }
            })
            .build();
        LocalReplayCache { seen }
    }

    pub fn entries(&self) -> u64 {
        self.seen.run_pending_tasks();
        self.seen.entry_count()
    }
}

impl ReplayCache for LocalReplayCache {
    fn first_use(&self, entry: ReplayEntry) -> bool {
        self.seen.entry(entry.key).or_insert(entry.ttl).is_fresh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_cache_is_bounded() {
        let c = LocalReplayCache::new(1000);
        for i in 0u32..5000 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            assert!(c.first_use(ReplayEntry { key, ttl: Duration::from_secs(60) }));
        }
        assert!(c.entries() <= 1000, "{}", c.entries());
    }
}
