//! Process-wide connection slots shared fairly between sources: the passthrough tunnels
//! (`passthrough.max_connections`), the TLS-terminated connections (`listener.max_connections`)
//! and, within those, the connections without a client certificate
//! (`listener.anonymous_max_connections`). When every slot is taken, a newcomer from a source
//! holding less than the heaviest one ends that source's oldest connection and takes its slot,
//! and a source holding none ends the oldest connection of all.
//!
//! Without this, 32 addresses with two tunnels each filled 64 slots, and every new client,
//! partners logging in included, was refused for as long as they held them; and 5 addresses with
//! 40 idle HTTP/2 connections without a certificate each filled 200 TLS slots.
//!
//! A displaced connection is told to end (its `end` receiver turns true); how it ends is its
//! owner's choice: a tunnel at once, an HTTP connection gracefully, closing only while idle.

use crate::reason::Cut;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where connections without a known source are counted.
pub const UNKNOWN: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// What the slots are counted by: a source address (already keyed: see `limits::source_key`),
/// or a source and its class.
pub trait ShareKey: Copy + Eq + Hash + Ord + Send + 'static {}
impl<K: Copy + Eq + Hash + Ord + Send + 'static> ShareKey for K {}

/// The passthrough tunnels, shared by source address.
pub type Tunnels = Shares<IpAddr>;

pub struct Shares<K: ShareKey> {
    cap: usize,
    table: Mutex<Table<K>>,
}

struct Table<K> {
    total: usize,
    next_id: u64,
    /// Oldest first.
    by_source: HashMap<K, VecDeque<Held>>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table { total: 0, next_id: 0, by_source: HashMap::new() }
    }
}

struct Held {
    id: u64,
    end: watch::Sender<bool>,
}

/// A connection's slot: released when dropped. `end` turns true when another source displaced it.
pub struct Ticket<K: ShareKey> {
    shares: Arc<Shares<K>>,
    source: K,
    id: u64,
    pub end: watch::Receiver<bool>,
}

/// What became of a request for a slot.
pub enum Admission<K: ShareKey> {
    Admitted(Ticket<K>),
    /// Admitted by ending the oldest connection of this (heaviest) source.
    Displaced(Ticket<K>, K),
    Refused,
}

impl<K: ShareKey> Shares<K> {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Shares { cap: cap.max(1), table: Mutex::new(Table::default()) })
    }

    /// A slot for a connection from `source`.
    pub fn admit(self: &Arc<Self>, source: K) -> Admission<K> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut displaced = None;
        if table.total >= self.cap {
            let Some(victim) = table.victim_for(source) else { return Admission::Refused };
            if let Some(oldest) = table.by_source.get_mut(&victim).and_then(VecDeque::pop_front) {
                let _ = oldest.end.send(true);
                table.total -= 1;
                displaced = Some(victim);
            }
            if table.by_source.get(&victim).is_some_and(VecDeque::is_empty) {
                table.by_source.remove(&victim);
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let (end, end_rx) = watch::channel(false);
        table.by_source.entry(source).or_default().push_back(Held { id, end });
        table.total += 1;
        drop(table);
        let ticket = Ticket { shares: self.clone(), source, id, end: end_rx };
        match displaced {
            Some(victim) => Admission::Displaced(ticket, victim),
            None => Admission::Admitted(ticket),
        }
    }

    /// Whether a connection from `source` would get a slot now (changes nothing).
    pub fn would_admit(&self, source: K) -> bool {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.total < self.cap || table.victim_for(source).is_some()
    }

    /// Slots held now.
    pub fn len(&self) -> usize {
        self.table.lock().map(|t| t.total).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: ShareKey> Table<K> {
    /// Whose oldest connection makes room for one more from `source`: the heaviest source's, when
    /// it holds at least two more than `source`; otherwise, for a source holding none, the oldest
    /// connection of all, so that a newcomer always gets in. `None`: `source` has its share already.
    fn victim_for(&self, source: K) -> Option<K> {
        let mine = self.by_source.get(&source).map_or(0, VecDeque::len);
        let (most, heaviest) = self.by_source.iter().map(|(s, q)| (q.len(), *s)).max()?;
        if heaviest != source && most > mine + 1 {
            return Some(heaviest);
        }
        if mine > 0 {
            return None;
        }
        self.by_source.iter().filter_map(|(s, q)| q.front().map(|h| (h.id, *s))).min().map(|(_, s)| s)
    }
}

impl<K: ShareKey> Drop for Ticket<K> {
    fn drop(&mut self) {
        let mut table = self.shares.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = table.by_source.get_mut(&self.source) else { return };
        let Some(at) = queue.iter().position(|h| h.id == self.id) else { return }; // displaced already
        queue.remove(at);
        if queue.is_empty() {
            table.by_source.remove(&self.source);
        }
        table.total -= 1;
    }
}

/// A TLS connection's key in the process's shares: its source, and whether it came without a
/// client certificate, so that a partner's connections and anonymous ones from the same address
/// are counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    pub source: IpAddr,
    pub anonymous: bool,
}

/// The TLS-terminated connections' slots: all of them (`listener.max_connections`), and the
/// share of them that connections without a certificate may hold
/// (`listener.anonymous_max_connections`), so that anonymous clients, who need nothing but a
/// handshake, can never take the slots the partners need.
pub struct ConnectionShares {
    all: Arc<Shares<Peer>>,
    anonymous: Arc<Shares<IpAddr>>,
}

/// A TLS connection's place in the shares, released when dropped.
pub struct Seat {
    all: Ticket<Peer>,
    anonymous: Option<Ticket<IpAddr>>,
}

impl Seat {
    /// Whether another connection displaced this one.
    pub fn is_displaced(&self) -> bool {
        *self.all.end.borrow() || self.anonymous.as_ref().is_some_and(|t| *t.end.borrow())
    }

    /// Resolves when another connection displaced this one: it must end.
    pub async fn displaced(&mut self) {
        let all = super::drain::until(&mut self.all.end);
        match &mut self.anonymous {
            Some(t) => tokio::select! { _ = all => {}, _ = super::drain::until(&mut t.end) => {} },
            None => all.await,
        }
    }
}

impl ConnectionShares {
    pub fn new(cap: usize, anonymous_cap: usize) -> Self {
        ConnectionShares { all: Shares::new(cap), anonymous: Shares::new(anonymous_cap) }
    }

    /// Whether `source` could have a place at all, before its handshake says whether it has a
    /// certificate: a source that would be refused even with one is refused before the handshake
    /// costs anything.
    pub fn may_admit(&self, source: IpAddr) -> bool {
        self.all.would_admit(Peer { source, anonymous: false })
    }

    /// A place for a connection from `source` (already keyed), with the sources whose oldest
    /// connection was displaced to make room; or the reason it was refused.
    pub fn admit(&self, source: IpAddr, anonymous: bool) -> Result<(Seat, Vec<IpAddr>), Cut> {
        let mut displaced = Vec::new();
        let anonymous_ticket = match anonymous {
            false => None,
            true => match self.anonymous.admit(source) {
                Admission::Admitted(t) => Some(t),
                Admission::Displaced(t, victim) => {
                    displaced.push(victim);
                    Some(t)
                }
                Admission::Refused => return Err(Cut::AnonymousConnections),
            },
        };
        let all = match self.all.admit(Peer { source, anonymous }) {
            Admission::Admitted(t) => t,
            Admission::Displaced(t, victim) => {
                displaced.push(victim.source);
                t
            }
            Admission::Refused => return Err(Cut::MaxConnections),
        };
        Ok((Seat { all, anonymous: anonymous_ticket }, displaced))
    }

    /// Connections held now, and how many of them have no certificate.
    pub fn len(&self) -> (usize, usize) {
        (self.all.len(), self.anonymous.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn ticket(a: Admission<IpAddr>) -> Ticket<IpAddr> {
        match a {
            Admission::Admitted(t) | Admission::Displaced(t, _) => t,
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn a_new_source_displaces_the_oldest_tunnel_of_the_heaviest_one() {
        let tunnels = Tunnels::new(4);
        let first = ticket(tunnels.admit(ip(2)));
        let _b = ticket(tunnels.admit(ip(2)));
        let _c = ticket(tunnels.admit(ip(2)));
        let _d = ticket(tunnels.admit(ip(3)));
        assert_eq!(tunnels.len(), 4);
        let _newcomer = match tunnels.admit(ip(9)) {
            Admission::Displaced(t, victim) => {
                assert_eq!(victim, ip(2));
                t
            }
            _ => panic!("a newcomer is let in"),
        };
        assert!(*first.end.borrow(), "the oldest tunnel of the heaviest source is told to end");
        assert_eq!(tunnels.len(), 4);
        drop(first);
        assert_eq!(tunnels.len(), 4, "a displaced ticket's drop frees nothing twice");
    }

    #[test]
    fn a_source_with_its_share_waits_and_a_newcomer_takes_the_oldest_slot() {
        let tunnels = Tunnels::new(2);
        let a = ticket(tunnels.admit(ip(2)));
        let _b = ticket(tunnels.admit(ip(3)));
        assert!(matches!(tunnels.admit(ip(2)), Admission::Refused), "equal shares: nobody is displaced");
        match tunnels.admit(ip(4)) {
            Admission::Displaced(_, victim) => assert_eq!(victim, ip(2)),
            _ => panic!("a source holding nothing gets in"),
        }
        assert!(*a.end.borrow(), "the oldest tunnel of all made room");
    }

    #[test]
    fn released_slots_are_free_again() {
        let tunnels = Tunnels::new(1);
        let a = ticket(tunnels.admit(ip(2)));
        assert!(matches!(tunnels.admit(ip(2)), Admission::Refused));
        drop(a);
        assert!(tunnels.is_empty());
        ticket(tunnels.admit(ip(2)));
    }

    fn seated(r: Result<(Seat, Vec<IpAddr>), Cut>) -> (Seat, Vec<IpAddr>) {
        r.unwrap_or_else(|why| panic!("refused: {}", why.as_str()))
    }

    /// Round 4: 5 addresses holding idle anonymous connections no longer lock partners out; the
    /// anonymous share is theirs to compete for, and a partner's newcomer address displaces them.
    #[test]
    fn anonymous_connections_have_a_share_of_their_own() {
        let shares = ConnectionShares::new(8, 4);
        let mut held = Vec::new();
        for n in 0..20 {
            if let Ok((seat, _)) = shares.admit(ip(10 + n % 5), true) {
                held.push(seat);
            }
            // A displaced connection ends (gracefully) and gives its slots back.
            held.retain(|s| !s.is_displaced());
        }
        assert_eq!(shares.len().1, 4, "at most the anonymous share");
        // A partner from another address, and one from an attacker's own address, get in.
        let (_partner, displaced) = seated(shares.admit(ip(2), false));
        assert!(displaced.is_empty(), "room was left for certificates: {displaced:?}");
        let (_same_address, _) = seated(shares.admit(ip(10), false));
        // Anonymous newcomers displace the oldest anonymous connection of all.
        let (_newcomer, displaced) = seated(shares.admit(ip(99), true));
        assert_eq!(displaced.len(), 1);
        assert_eq!(shares.len().1, 4);
    }

    #[tokio::test]
    async fn a_displaced_seat_is_told_to_end() {
        let shares = ConnectionShares::new(2, 2);
        let (mut first, _) = seated(shares.admit(ip(2), false));
        let (_second, _) = seated(shares.admit(ip(2), false));
        assert_eq!(shares.admit(ip(2), false).err(), Some(Cut::MaxConnections), "its share already");
        let (_third, displaced) = seated(shares.admit(ip(3), false));
        assert_eq!(displaced, vec![ip(2)]);
        tokio::time::timeout(std::time::Duration::from_secs(1), first.displaced()).await.expect("told to end");
    }
}
