//! Per-source limits on the one external port: how many passthrough tunnels, TLS-terminated
//! connections and unfinished handshakes one client address may hold at once, so that no single
//! address can take the slots every partner shares. Every cut is counted by reason and logged at
//! most once per source, reason and interval, so a flood cannot flood the log as well.
//!
//! The address is the TCP peer of the accepted socket. Behind a load balancer it must be the
//! client's: run it in passthrough mode with `externalTrafficPolicy: Local` (the gateway does not
//! read PROXY protocol on its listener).

use crate::config::PerSourceLimits;
use crate::metrics;
use crate::reason::Cut;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a slot is held for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// From accept until the ClientHello is read and, for terminated connections, the TLS
    /// handshake is done.
    Handshake,
    Tunnel,
    Connection,
}

impl Kind {
    fn over_reason(self) -> Cut {
        match self {
            Kind::Handshake => Cut::SourceHandshakes,
            Kind::Tunnel => Cut::SourceTunnels,
            Kind::Connection => Cut::SourceConnections,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    handshakes: usize,
    tunnels: usize,
    connections: usize,
}

impl Counts {
    fn get(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::Handshake => &mut self.handshakes,
            Kind::Tunnel => &mut self.tunnels,
            Kind::Connection => &mut self.connections,
        }
    }

    fn is_empty(&self) -> bool {
        self.handshakes == 0 && self.tunnels == 0 && self.connections == 0
    }
}

pub struct SourceLimits {
    /// Replaced by a reload; slots already held are kept.
    max: ArcSwap<PerSourceLimits>,
    table: Mutex<HashMap<IpAddr, Counts>>,
    pub cuts: CutLog,
}

impl SourceLimits {
    pub fn new(max: PerSourceLimits, log_interval: Duration) -> Arc<Self> {
        let max = ArcSwap::from_pointee(max);
        Arc::new(SourceLimits { max, table: Mutex::new(HashMap::new()), cuts: CutLog::new(log_interval) })
    }

    pub fn set_max(&self, max: PerSourceLimits) {
        self.max.store(Arc::new(max));
    }

    fn cap(&self, kind: Kind) -> usize {
        let max = self.max.load();
        match kind {
            Kind::Handshake => max.handshakes,
            Kind::Tunnel => max.tunnels,
            Kind::Connection => max.connections,
        }
    }

    /// The key `ip` is counted under now (see [`source_key`]).
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        source_key(ip, self.max.load().ipv6_prefix)
    }

    /// A slot of `kind` for `ip`'s source, or `None` (and the cut counted and logged) when that
    /// source holds its share already.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, kind: Kind) -> Option<Slot> {
        let ip = self.key(ip);
        let granted = {
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            let n = table.entry(ip).or_default().get(kind);
            let ok = *n < self.cap(kind);
            if ok {
                *n += 1;
            }
            ok
        };
        if !granted {
            self.cuts.cut(Some(ip), kind.over_reason());
            return None;
        }
        Some(Slot { limits: self.clone(), ip, kind })
    }

    fn release(&self, ip: IpAddr, kind: Kind) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counts) = table.get_mut(&ip) {
            let n = counts.get(kind);
            *n = n.saturating_sub(1);
            if counts.is_empty() {
                table.remove(&ip);
            }
        }
    }

    /// Sources currently holding anything (for tests and the log).
    pub fn sources(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }
}

/// What one client counts as: an IPv4 address (also written IPv4-mapped), or the IPv6 prefix of
/// `v6_prefix` bits, since one host is handed a whole /64 and could otherwise count as billions.
pub fn source_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let keep = u32::from(v6_prefix.min(128));
                let mask = if keep == 0 { 0 } else { u128::MAX << (128 - keep) };
                IpAddr::V6((bits & mask).into())
            }
        },
    }
}

/// One held slot; released when dropped.
pub struct Slot {
    limits: Arc<SourceLimits>,
    ip: IpAddr,
    kind: Kind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.release(self.ip, self.kind);
    }
}

/// Lets a log line through at most once per key and interval, and says how many were held back
/// since the last one: a flood cannot flood the log as well.
pub struct Throttle<K> {
    interval: Duration,
    last: Mutex<HashMap<K, (Instant, u64)>>,
}

/// Bound on the remembered keys: past it the memory is cleared, which at worst logs a line early.
const MAX_REMEMBERED: usize = 10_000;

impl<K: std::hash::Hash + Eq> Throttle<K> {
    pub fn new(interval: Duration) -> Self {
        Throttle { interval, last: Mutex::new(HashMap::new()) }
    }

    /// `Some(held back since the last line)` when a line for `key` may be written now.
    pub fn admit(&self, key: K) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() > MAX_REMEMBERED {
            last.clear();
        }
        let entry = last.entry(key).or_insert((Instant::now() - self.interval * 2, 0));
        if entry.0.elapsed() < self.interval {
            entry.1 += 1;
            return None;
        }
        let held = entry.1;
        *entry = (Instant::now(), 0);
        Some(held)
    }
}

/// Counts every cut and logs it at most once per (source, reason) and interval.
pub struct CutLog(Throttle<(Option<IpAddr>, Cut)>);

impl CutLog {
    pub fn new(interval: Duration) -> Self {
        CutLog(Throttle::new(interval))
    }

    pub fn cut(&self, source: Option<IpAddr>, reason: Cut) {
        metrics::connection_cut(reason);
        let Some(suppressed) = self.0.admit((source, reason)) else { return };
        let who = source.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into());
        log::warn!(target: "limits", "cut source={who} reason={} also_cut_since_last_line={suppressed}", reason.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(n: usize) -> Arc<SourceLimits> {
        let max = PerSourceLimits { handshakes: n, tunnels: n, connections: n, ipv6_prefix: 64 };
        SourceLimits::new(max, Duration::from_secs(60))
    }

    #[test]
    fn a_source_gets_its_share_and_another_source_is_still_served() {
        let l = limits(2);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let first = l.acquire(a, Kind::Tunnel).unwrap();
        let _second = l.acquire(a, Kind::Tunnel).unwrap();
        assert!(l.acquire(a, Kind::Tunnel).is_none(), "a third tunnel from one address");
        assert!(l.acquire(a, Kind::Connection).is_some(), "kinds are counted apart");
        assert!(l.acquire(b, Kind::Tunnel).is_some(), "another address is served");
        drop(first);
        assert!(l.acquire(a, Kind::Tunnel).is_some(), "a released slot is free again");
    }

    #[test]
    fn one_ipv6_prefix_is_one_source() {
        let l = limits(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::7".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _one = l.acquire(a, Kind::Tunnel).unwrap();
        let _two = l.acquire(b, Kind::Tunnel).unwrap();
        assert!(l.acquire("2001:db8:1:2:abcd::9".parse().unwrap(), Kind::Tunnel).is_none(), "same /64");
        assert!(l.acquire(other, Kind::Tunnel).is_some(), "another /64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped, 64), IpAddr::from([10, 0, 0, 1]));
        assert_eq!(source_key(a, 48), "2001:db8:1::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn released_sources_are_forgotten() {
        let l = limits(1);
        let slot = l.acquire([10, 0, 0, 1].into(), Kind::Handshake).unwrap();
        assert_eq!(l.sources(), 1);
        drop(slot);
        assert_eq!(l.sources(), 0);
    }
}
