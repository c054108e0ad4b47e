//! Purges of cached introspection answers: the record that keeps a purge ([`PurgeTarget`]) true
//! for answers that were still on their way ([`PurgeLog`]). An answer the identity server gave
//! before a purge is never served after it, even when it reached the cache a moment after the
//! purge went through the entries.

use crate::token::PurgeTarget;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The purges of the last `horizon`. Every cache entry expires within `horizon` of the moment
/// its introspection call started, so an older purge can no longer void anything.
pub struct PurgeLog {
    base: Instant,
    /// Nanoseconds after `base` of the latest purge, 0 for none: all a cache hit reads unless an
    /// entry is older than the latest purge.
    latest: AtomicU64,
    recent: Mutex<Vec<(Instant, PurgeTarget)>>,
    horizon: Duration,
}

impl PurgeLog {
    pub fn new(horizon: Duration) -> Self {
        PurgeLog { base: Instant::now(), latest: AtomicU64::new(0), recent: Mutex::new(Vec::new()), horizon }
    }

    /// Records a purge made now; from its return on, `voids` holds for what it matches.
    pub fn record(&self, target: PurgeTarget) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        recent.retain(|(at, _)| now.duration_since(*at) <= self.horizon);
        recent.push((now, target));
        let nanos = u64::try_from(now.duration_since(self.base).as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latest.store(nanos, Ordering::Release);
    }

    /// Whether an answer asked for at `asked` was voided by a purge made at or after that moment.
    pub fn voids(&self, asked: Instant, key: &[u8; 32], thumbprint: Option<&str>) -> bool {
        let latest = self.latest.load(Ordering::Acquire);
        if latest == 0 || asked > self.base + Duration::from_nanos(latest) {
            return false;
        }
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().any(|(at, target)| *at >= asked && target.matches(key, thumbprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_voids_answers_asked_before_it_and_only_those() {
        let log = PurgeLog::new(Duration::from_secs(60));
        let key = crate::token::cache_key("t");
        let before = Instant::now();
        assert!(!log.voids(before, &key, Some("x5t")), "nothing purged yet");
        log.record(PurgeTarget::Thumbprint("x5t".into()));
        assert!(log.voids(before, &key, Some("x5t")), "asked before the purge, arriving after it");
        assert!(!log.voids(before, &key, Some("other")), "another certificate's token");
        let after = Instant::now() + Duration::from_millis(1);
        assert!(!log.voids(after, &key, Some("x5t")), "asked after the purge");
    }

    #[test]
    fn purges_older_than_the_horizon_are_forgotten() {
        let log = PurgeLog::new(Duration::ZERO);
        log.record(PurgeTarget::All);
        std::thread::sleep(Duration::from_millis(2));
        log.record(PurgeTarget::Key([9; 32]));
        assert_eq!(log.recent.lock().unwrap().len(), 1);
    }
}
