//! The threads that serve connections: each one a tokio current-thread runtime with its own copy
//! of the HTTP app, and so its own upstream connection pool, like nginx's workers. A connection
//! runs on one of them from its ClientHello to its end, so nothing it does wakes a second thread.
//! The listener's own runtime only accepts.
//!
//! Why not one pingora service per thread on a shared socket: pingora would give each service the
//! same listening fd as an owned socket, and the second to close it at shutdown closes a number
//! that may by then belong to another file.

use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::{Builder, Handle};

/// One event loop and the app its connections are served with.
pub struct Worker<A> {
    pub handle: Handle,
    pub app: Arc<A>,
}

/// The loops, handed out round robin, and the count of connections they serve.
pub struct Workers<A> {
    loops: Vec<Worker<A>>,
    next: AtomicUsize,
    open: Arc<Open>,
}

/// Connections being served, so that shutdown can wait for them to drain.
#[derive(Default)]
struct Open {
    count: AtomicUsize,
    drained: tokio::sync::Notify,
}

/// Held by a connection's task for its whole life.
pub struct Serving(Arc<Open>);

impl Drop for Serving {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

impl<A: Send + Sync + 'static> Workers<A> {
    /// Starts `count` (at least one) threads, each running its own app made by `make`. The threads
    /// live as long as the process.
    pub fn start(count: usize, mut make: impl FnMut() -> A) -> std::io::Result<Self> {
        let mut loops = Vec::with_capacity(count.max(1));
        for i in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(format!("router-{i}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
            loops.push(Worker { handle, app: Arc::new(make()) });
        }
        Ok(Workers { loops, next: AtomicUsize::new(0), open: Arc::default() })
    }

    /// The loop for the next connection, and the token its task holds until it ends.
    pub fn pick(&self) -> (&Worker<A>, Serving) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        self.open.count.fetch_add(1, Ordering::AcqRel);
        (&self.loops[i], Serving(self.open.clone()))
    }

    /// Waits until no connection is being served.
    pub async fn drained(&self) {
        loop {
            let notified = self.open.drained.notified();
            if self.open.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The accepted socket as a stream of the current loop. Its readiness would otherwise be reported
/// by the listener's runtime, where it was accepted, and relayed to this thread for every read and
/// write. The socket is duplicated (the same connection, a second descriptor owned here), and the
/// listener's stream is dropped by the caller.
pub fn adopt(accepted: &L4Stream) -> std::io::Result<L4Stream> {
    let raw = accepted.as_raw_fd();
    if raw < 0 {
        return Err(std::io::Error::other("not a socket"));
    }
    // SAFETY: `accepted` owns this open descriptor and outlives the borrow, which only duplicates it.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) }.try_clone_to_owned()?;
    let digest = SocketDigest::from_raw_fd(fd.as_raw_fd());
    let socket = std::net::TcpStream::from(fd);
    socket.set_nonblocking(true)?;
    let tcp = tokio::net::TcpStream::from_std(socket)?;
    let mut stream = L4Stream::from(VirtualSocketStream::new(Box::new(Buffered { tcp, out: Vec::new() })));
    stream.set_socket_digest(digest);
    Ok(stream)
}

/// Writes held until a flush, as pingora's own accepted streams do: a response's header and body
/// records leave in one send. Reads go straight to the socket (the TLS acceptor reads ahead).
#[derive(Debug)]
struct Buffered {
    tcp: tokio::net::TcpStream,
    out: Vec<u8>,
}

/// Above this, a write goes out at once.
const WRITE_BUFFER: usize = 16 * 1024;

impl Buffered {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Buffered {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Buffered {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.out.len() + buf.len() > WRITE_BUFFER {
            ready!(self.poll_drain(cx))?;
            if buf.len() > WRITE_BUFFER {
                return Pin::new(&mut self.tcp).poll_write(cx, buf);
            }
        }
        self.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl VirtualSocket for Buffered {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.tcp.set_nodelay(true),
            // Keep-alive is not set on accepted connections; the listener's settings stay on it.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_round_robin_and_run_on_their_loop() {
        let workers = Workers::start(2, || ()).unwrap();
        let mut names = Vec::new();
        for _ in 0..4 {
            let (worker, _serving) = workers.pick();
            let name = worker.handle.spawn(async { std::thread::current().name().map(str::to_string) });
            names.push(name.await.unwrap().unwrap());
        }
        assert_eq!(names, ["router-0", "router-1", "router-0", "router-1"]);
    }

    #[tokio::test]
    async fn drained_waits_for_every_connection_to_end() {
        let workers = Workers::start(1, || ()).unwrap();
        workers.drained().await; // none open
        let (_, first) = workers.pick();
        let (_, second) = workers.pick();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), workers.drained()).await;
        assert!(waiting.is_err(), "two connections are open");
        drop(first);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), workers.drained()).await;
        assert!(waiting.is_err(), "one connection is open");
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), workers.drained()).await.expect("drained");
    }
}
