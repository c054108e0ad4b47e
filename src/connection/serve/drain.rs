//! The drain: how the process stops (`SIGTERM`) or hands over to a new one (`-u` + `SIGQUIT`)
//! without losing a request.
//!
//! Two steps, each a one-way switch that every connection watches:
//! - **draining**, from the moment the process stops accepting (at once on `SIGTERM`; after the
//!   socket hand-over and pingora's 5 s pause on an upgrade): an HTTP/1.1 connection answers its next request with
//!   `Connection: close` and closes after it; an HTTP/2 connection gets GOAWAY (pingora sends the
//!   two-step GOAWAY of RFC 9113 §6.8) and its open streams finish. Nothing is closed under a
//!   client that may be sending on it. `/readyz` answers 503.
//! - **closing**, when the drain period ends (pingora's `grace_period_seconds` after that):
//!   connections still idle are closed, and only while idle; passthrough tunnels end. Requests in
//!   flight get up to `graceful_shutdown_timeout_seconds` to finish before the loops stop.
//!
//! Why a switch of our own rather than pingora's `ShutdownWatch`: a connection that obeys that
//! at once closes idle keep-alive connections, which races clients sending on them.

use std::sync::Arc;
use tokio::sync::watch;

/// The process's drain state, shared by every connection and the readiness probe.
pub struct Drain {
    draining: watch::Sender<bool>,
    closing: watch::Sender<bool>,
}

impl Drain {
    pub fn new() -> Arc<Self> {
        Arc::new(Drain { draining: watch::channel(false).0, closing: watch::channel(false).0 })
    }

    /// Starts the drain; true the first time only.
    pub fn begin(&self) -> bool {
        let first = !self.draining.send_replace(true);
        if first {
            log::info!("drain started: connections answer their next request with Connection: close (HTTP/2: GOAWAY)");
        }
        first
    }

    /// Ends the drain period: idle connections close, tunnels end.
    pub fn close_idle(&self) {
        self.begin();
        if !self.closing.send_replace(true) {
            log::info!("drain period over: closing idle connections and tunnels");
        }
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Turns true when the drain starts.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Turns true when the drain period ends.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Resolves once `watch` is true (at once if it already is); never if its sender is gone.
pub async fn until(watch: &mut watch::Receiver<bool>) {
    if watch.wait_for(|on| *on).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn both_switches_turn_once_and_closing_implies_draining() {
        let drain = Drain::new();
        let (mut draining, mut closing) = (drain.draining(), drain.closing());
        assert!(!drain.is_draining());
        let early = tokio::time::timeout(Duration::from_millis(20), until(&mut draining)).await;
        assert!(early.is_err(), "not draining yet");
        assert!(drain.begin());
        assert!(!drain.begin(), "a second signal changes nothing");
        until(&mut draining).await;
        let early = tokio::time::timeout(Duration::from_millis(20), until(&mut closing)).await;
        assert!(early.is_err(), "draining is not closing");
        let fresh = Drain::new();
        fresh.close_idle();
        assert!(fresh.is_draining());
        until(&mut fresh.closing()).await;
    }
}
