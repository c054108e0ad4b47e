//! The process's passthrough tunnel slots (`passthrough.max_connections`), shared so that no
//! group of sources can lock the others out: when every slot is taken, a new tunnel from a source
//! holding less than the heaviest one ends that source's oldest tunnel and takes its slot, and a
//! source holding none ends the oldest tunnel of all.
//!
//! Without this, 32 addresses with two tunnels each filled 64 slots, and every new client,
//! partners logging in included, was refused for as long as they held them.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where tunnels without a known source are counted.
const UNKNOWN: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

pub struct Tunnels {
    cap: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    total: usize,
    next_id: u64,
    /// Oldest first.
    by_source: HashMap<IpAddr, VecDeque<Held>>,
}

struct Held {
    id: u64,
    end: watch::Sender<bool>,
}

/// A tunnel's slot: released when dropped. `end` turns true when another source displaced it.
pub struct Ticket {
    tunnels: Arc<Tunnels>,
    source: IpAddr,
    id: u64,
    pub end: watch::Receiver<bool>,
}

/// What became of a request for a slot.
pub enum Admission {
    Admitted(Ticket),
    /// Admitted by ending the oldest tunnel of this (heaviest) source.
    Displaced(Ticket, IpAddr),
    Refused,
}

impl Tunnels {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Tunnels { cap: cap.max(1), table: Mutex::new(Table::default()) })
    }

    /// A slot for a tunnel from `source` (already keyed: see `limits::source_key`).
    pub fn admit(self: &Arc<Self>, source: Option<IpAddr>) -> Admission {
        let source = source.unwrap_or(UNKNOWN);
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
        let ticket = Ticket { tunnels: self.clone(), source, id, end: end_rx };
        match displaced {
            Some(victim) => Admission::Displaced(ticket, victim),
            None => Admission::Admitted(ticket),
        }
    }

    /// Tunnels held now.
    pub fn len(&self) -> usize {
        self.table.lock().map(|t| t.total).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    /// Whose oldest tunnel makes room for one more from `source`: the heaviest source's, when it
    /// holds at least two more than `source`; otherwise, for a source holding none, the oldest
    /// tunnel of all, so that a newcomer always gets in. `None`: `source` has its share already.
    fn victim_for(&self, source: IpAddr) -> Option<IpAddr> {
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

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut table = self.tunnels.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = table.by_source.get_mut(&self.source) else { return };
        let Some(at) = queue.iter().position(|h| h.id == self.id) else { return }; // displaced already
        queue.remove(at);
        if queue.is_empty() {
            table.by_source.remove(&self.source);
        }
        table.total -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    fn ticket(a: Admission) -> Ticket {
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
                assert_eq!(Some(victim), ip(2));
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
            Admission::Displaced(_, victim) => assert_eq!(Some(victim), ip(2)),
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
}
