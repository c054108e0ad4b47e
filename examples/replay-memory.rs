//! `replay-memory`: what the DPoP replay cache holds in memory. Fills the gateway's in-process
//! cache with N proof ids (as N distinct valid proofs would) and prints the resident memory it
//! added, per entry, from /proc/self/statm.
//!
//!   cargo run --release --example replay-memory -- 100000 1000000

use mtls_gateway::request::dpop::{LocalReplayCache, ReplayCache, ReplayEntry};
use std::time::Duration;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    let sizes: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![100_000, 1_000_000] } else { sizes };
    println!("| entries (bound) | entries held | resident added | bytes per entry |");
    println!("|---|---|---|---|");
    for n in sizes {
        let before = resident_bytes();
        let cache = LocalReplayCache::new(n);
        for i in 0..n {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.to_be_bytes());
            key[8..16].copy_from_slice(&(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
            cache.first_use(ReplayEntry { key, ttl: Duration::from_secs(66) });
        }
        let held = cache.entries();
        let added = resident_bytes().saturating_sub(before);
        println!("| {n} | {held} | {:.1} MiB | {} |", added as f64 / 1048576.0, added / held.max(1));
        drop(cache);
    }
}
