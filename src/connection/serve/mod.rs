//! The gateway's own copy of pingora's serve path, in one place: everything here replaces a part
//! of pingora-core that the gateway could otherwise have used as it is, and each part stays only
//! because it was measured to pay or because pingora offers no hook for what it does.
//! `docs/benchmarks.md` ("The serve path") has the measurements and the decision.
//!
//! | here | mirrors, in pingora-core [`CHECKED_AGAINST`] | why it is not pingora's |
//! |---|---|---|
//! | [`workers`]: `Pool`, `LoopService` | `server/mod.rs` `Server::run_service` and `create_runtime` (a runtime per service), `services/listening.rs` `handle_event` (a task per connection on it) | one current-thread runtime per thread, its own upstream pool each: no second thread woken per request (measured); their start after the daemonizing fork and their drain are pingora's lifecycle, through a `BackgroundService` |
//! | [`workers`]: `adopt`, `Buffered` | `protocols/l4/stream.rs` `Stream` (its `BufferedStream` write buffer and `poll_write`/`poll_flush`) | the accepted socket is moved to the loop's own reactor, and a `Stream` built from outside pingora gets no write buffer (`Stream::set_buffer` is crate-private); also counts the bytes read for the drain and the watchdog |
//! | [`keepalive`]: the HTTP/1.1 loop | `apps/mod.rs` `impl<T: HttpServerApp> ServerApp for T`, `process_new` | the listener's keep-alive timeout (pingora's is 60 s), the gateway's end switch instead of `ShutdownWatch`, and each exchange marked for the watchdog: pingora has no hook for any |
//! | [`drain`] | `server/mod.rs` `ShutdownWatch` and the `ExecutionPhase`s | obeying `ShutdownWatch` closes idle keep-alive connections at once, racing clients that send on them |
//!
//! When pingora-core changes version, re-read the code named above, compare, update the table and
//! [`CHECKED_AGAINST`], and run `scripts/bench-cpu.sh` with `PINGORA_SERVE=1` (a build served by
//! pingora's own runtime and stream) to see whether each part still pays. A unit test fails until
//! [`CHECKED_AGAINST`] names the version in `Cargo.lock`.

pub mod drain;
pub mod keepalive;
pub mod workers;

/// The pingora-core version whose code the parts of this module were last compared with.
pub const CHECKED_AGAINST: &str = "0.9.1";

/// The version of `package` in a `Cargo.lock`.
#[cfg(test)]
fn locked_version<'a>(lock: &'a str, package: &str) -> Option<&'a str> {
    let name = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    lines.find(|l| l.trim() == name)?;
    let version = lines.next()?.trim().strip_prefix("version = \"")?;
    version.strip_suffix('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serve_path_was_checked_against_the_locked_pingora() {
        let lock = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"));
        let locked = locked_version(lock, "pingora-core").expect("pingora-core in Cargo.lock");
        assert_eq!(
            locked, CHECKED_AGAINST,
            "pingora-core is now {locked}: compare src/connection/serve/ with the pingora code its module \
             docs name, measure (docs/benchmarks.md, \"The serve path\"), then set CHECKED_AGAINST"
        );
    }

    #[test]
    fn a_locked_version_is_read_from_its_package_entry() {
        let lock = "[[package]]\nname = \"pingora-core-x\"\nversion = \"9\"\n\n[[package]]\nname = \"pingora-core\"\nversion = \"0.9.1\"\n";
        assert_eq!(locked_version(lock, "pingora-core"), Some("0.9.1"));
        assert_eq!(locked_version(lock, "pingora"), None);
    }
}
