//! HTTP on one terminated connection, on a task of its own: HTTP/2 through pingora's
//! `ServerApp::process_new`, HTTP/1.1 through this module's copy of pingora's keep-alive loop.
//!
//! The copy differs from pingora-core's `impl<T: HttpServerApp> ServerApp for T` (`apps/mod.rs`,
//! `process_new`) in three ways, none of which pingora has a hook for: the keep-alive timeout is
//! the listener's (pingora's loop sets 60 s), the end of a connection is the gateway's own switch
//! (pingora's `ShutdownWatch` closes idle connections at once, racing clients that send on them;
//! see [`super::drain`]), and each exchange's start is marked for the watchdog's header deadline.
//!
//! The task is apart from the connection's supervisor (the router's), which waits on the drain,
//! the age, revocation, displacement and the watchdog's tick: this task is woken by its sockets
//! only, so no signal is polled again on every read and write of every request. The supervisor
//! ends it by aborting it ([`Served::stop`]), which drops the stream and closes the socket.

use crate::connection::serve::workers::ReadCount;
use crate::connection::watchdog::ExchangeMark;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the serve task of one connection is given.
pub struct Connection {
    pub stream: Stream,
    pub h2: bool,
    /// The HTTP/1.1 keep-alive timeout.
    pub keepalive: Duration,
    /// Bytes read from the socket, to tell an idle connection from one with a request under way.
    pub read: ReadCount,
    /// Moved at the start of each HTTP/1.1 exchange (the first one's is set by the watchdog).
    pub mark: Arc<ExchangeMark>,
    /// True once the connection is to end: the next answer says `Connection: close` (HTTP/2:
    /// GOAWAY).
    pub end: ShutdownWatch,
    /// True once the connection is to close as soon as it is idle.
    pub closing: watch::Receiver<bool>,
}

/// A connection's serve task. Dropping it aborts the task.
pub struct Served {
    task: JoinHandle<()>,
}

impl Served {
    /// Starts serving `conn` with `app` on the current loop.
    pub fn spawn<A: HttpServerApp + Send + Sync + 'static>(app: Arc<A>, conn: Connection) -> Self {
        Served { task: tokio::spawn(serve(app, conn)) }
    }

    /// Resolves when the connection's serving ended by itself.
    pub async fn finished(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// Ends the connection now, whatever is under way, and waits until its stream is dropped.
    pub async fn stop(mut self) {
        self.task.abort();
        self.finished().await;
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// HTTP on a terminated stream until it ends. Once `end` is true, the next answer says
/// `Connection: close` and the connection closes after it; an answer that already went out with
/// keep-alive is never followed by a close, since the client may be sending its next request.
/// An exchange that starts after `closing` turned true is served only if its first bytes are
/// already there; a connection idle when `closing` turns is stopped by its supervisor.
async fn serve<A: HttpServerApp + Send + Sync + 'static>(app: Arc<A>, conn: Connection) {
    let Connection { stream, h2, keepalive, read, mark, end, closing } = conn;
    if h2 {
        ServerApp::process_new(&app, stream, &end).await;
        return;
    }
    let keepalive = keepalive.as_secs().max(1);
    let mut next = Some((stream, None));
    let mut first = true;
    while let Some((stream, settings)) = next {
        // The first exchange's mark is the watchdog's own, set at the handshake.
        if !std::mem::take(&mut first) {
            mark.start();
        }
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *end.borrow() { None } else { Some(keepalive) });
        if let Some(settings) = settings {
            HttpPersistentSettings::apply_to_session(settings, &mut session);
        }
        let exchange = app.process_new_http(session, &end);
        let done = if *closing.borrow() { unless_idle(exchange, &read).await } else { exchange.await };
        next = done.map(|r| r.consume());
    }
}

/// Runs an exchange that starts after the drain period ended: polled once, and dropped (which
/// closes the connection) if no byte of a request has arrived by then.
async fn unless_idle<T>(exchange: impl Future<Output = Option<T>>, read: &ReadCount) -> Option<T> {
    let mark = read.get();
    tokio::pin!(exchange);
    tokio::select! {
        biased;
        done = &mut exchange => return done,
        _ = std::future::ready(()) => {}
    }
    if read.get() == mark {
        return None;
    }
    exchange.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_exchange_after_closing_is_dropped_unless_its_request_has_begun() {
        let read = ReadCount::default();
        let waiting = unless_idle(std::future::pending::<Option<()>>(), &read).await;
        assert_eq!(waiting, None, "nothing arrived: closed");
        let arriving = async {
            read.add(10);
            tokio::task::yield_now().await;
            Some(7)
        };
        assert_eq!(unless_idle(arriving, &read).await, Some(7), "a request under way is served");
        assert_eq!(unless_idle(async { Some(1) }, &read).await, Some(1));
    }

    #[tokio::test]
    async fn dropping_or_stopping_a_served_connection_ends_its_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let held = async move {
            let _tx = tx;
            std::future::pending::<()>().await
        };
        let served = Served { task: tokio::spawn(held) };
        served.stop().await;
        assert!(rx.await.is_err(), "the task's state was dropped");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = Served {
            task: tokio::spawn(async move {
                let _tx = tx;
                std::future::pending::<()>().await
            }),
        };
        drop(served);
        assert!(rx.await.is_err(), "dropping the handle aborts the task");
    }
}
