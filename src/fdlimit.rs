//! The process's file-descriptor limit, which every open connection counts against. The gateway
//! raises its soft limit to the hard one at start and sizes its default connection caps from it,
//! so that a flood of connections meets a cap of ours (counted, logged) before the kernel refuses
//! `accept` for everyone (every partner then sees resets).

use rlimit::Resource;

/// Descriptors kept back for the listeners, upstream pools, the identity server, files and logs.
pub const RESERVE: u64 = 512;

/// Beyond this the defaults stop growing: caps in the hundreds of thousands are a choice to write.
const DEFAULT_CEILING: u64 = 1 << 18;

/// The hard limit (what the soft one can be raised to), or the soft one where that fails.
pub fn hard() -> u64 {
    match rlimit::getrlimit(Resource::NOFILE) {
        Ok((_, hard)) if hard != rlimit::INFINITY => hard,
        Ok((soft, _)) => soft.max(DEFAULT_CEILING),
        Err(_) => 1024,
    }
}

/// Raises the soft limit to the hard one: (before, after).
pub fn raise() -> std::io::Result<(u64, u64)> {
    let (before, _) = rlimit::getrlimit(Resource::NOFILE)?;
    let after = rlimit::increase_nofile_limit(hard())?;
    Ok((before, after))
}

/// The default cap for each of terminated connections and passthrough tunnels under `limit`: a
/// quarter of what is left after the reserve each (a terminated connection may hold an upstream
/// connection too, a tunnel always does), so both full still leave the reserve free.
pub fn default_share(limit: u64) -> usize {
    (limit.min(DEFAULT_CEILING).saturating_sub(RESERVE) / 4).max(16) as usize
}

/// Whether `connections` and `tunnels` both full stay inside `limit`.
pub fn fits(limit: u64, connections: usize, tunnels: usize) -> bool {
    2 * (connections as u64 + tunnels as u64) + RESERVE <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_fit_the_limit_they_come_from() {
        for limit in [1024, 4096, 65_536, 1 << 20] {
            let share = default_share(limit);
            assert!(fits(limit, share, share), "{limit}: {share}");
        }
        assert_eq!(default_share(1024), 128);
        assert!(!fits(1024, 4096, 4096));
    }
}
