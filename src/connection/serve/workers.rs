//! The threads that serve connections: each one a tokio current-thread runtime with its own copy
//! of the HTTP app, and so its own upstream connection pool, like nginx's workers. A connection
//! runs on one of them from its ClientHello to its end, so nothing it does wakes a second thread.
//! The listener's own runtime only accepts.
//!
//! The loops live inside pingora's lifecycle: [`LoopService`] is a background service, so they
//! start after pingora has daemonized (a thread started before the fork does not exist in the
//! daemon), and they stop when pingora shuts its runtimes down, after the drain
//! ([`super::drain`]). A loop that dies is logged, counted and replaced.
//!
//! Why not one pingora service per thread on a shared socket: pingora would give each service the
//! same listening fd as an owned socket, and the second to close it at shutdown closes a number
//! that may by then belong to another file.

use super::drain::Drain;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::{Builder, Handle};
use tokio::sync::{broadcast, mpsc, oneshot};

/// One event loop and the app its connections are served with.
pub struct Loop<A> {
    pub index: usize,
    pub handle: Handle,
    pub app: Arc<A>,
    /// Tells the thread to end; taken once.
    command: Mutex<Option<oneshot::Sender<Command>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Which start of this index it is, so that a late exit notice of a replaced loop is ignored.
    generation: u64,
}

/// What a loop's thread is told.
enum Command {
    Stop,
    /// Tests only: the thread panics, as a bug in a loop would make it.
    #[cfg(test)]
    Die,
}

/// The loops, handed out round robin, and the count of connections they serve.
pub struct Pool<A> {
    size: usize,
    make: Box<dyn Fn() -> A + Send + Sync>,
    loops: ArcSwap<Vec<Arc<Loop<A>>>>,
    next: AtomicUsize,
    open: Arc<Open>,
    exits: mpsc::UnboundedSender<Exit>,
    exit_rx: Mutex<Option<mpsc::UnboundedReceiver<Exit>>>,
    generations: AtomicU64,
    pub drain: Arc<Drain>,
}

/// A loop thread ended, for whatever reason: sent from the thread's last drop, so a panic sends
/// it too.
struct Exit {
    index: usize,
    generation: u64,
    panicked: bool,
}

struct ExitNotice(Option<(mpsc::UnboundedSender<Exit>, usize, u64)>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        if let Some((tx, index, generation)) = self.0.take() {
            let _ = tx.send(Exit { index, generation, panicked: std::thread::panicking() });
        }
    }
}

/// Connections being served, so that shutdown can wait for them to drain.
#[derive(Default)]
struct Open {
    count: AtomicUsize,
    drained: tokio::sync::Notify,
}

/// Held by a connection's task for its whole life.
pub struct Serving {
    open: Arc<Open>,
    index: usize,
}

impl Drop for Serving {
    fn drop(&mut self) {
        crate::metrics::loop_connections(self.index, -1);
        if self.open.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.open.drained.notify_waiters();
        }
    }
}

impl<A: Send + Sync + 'static> Pool<A> {
    /// A pool of `size` (at least one) loops, none started yet: [`Pool::start`] (through
    /// [`LoopService`]) starts them.
    pub fn new(size: usize, make: impl Fn() -> A + Send + Sync + 'static, drain: Arc<Drain>) -> Arc<Self> {
        let (exits, exit_rx) = mpsc::unbounded_channel();
        Arc::new(Pool {
            size: size.max(1),
            make: Box::new(make),
            loops: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            open: Arc::default(),
            exits,
            exit_rx: Mutex::new(Some(exit_rx)),
            generations: AtomicU64::new(0),
            drain,
        })
    }

    /// Starts every loop.
    pub fn start(&self) -> std::io::Result<()> {
        let loops = (0..self.size).map(|i| self.spawn(i)).collect::<std::io::Result<Vec<_>>>()?;
        self.loops.store(Arc::new(loops));
        Ok(())
    }

    fn spawn(&self, index: usize) -> std::io::Result<Arc<Loop<A>>> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let (command, commands) = oneshot::channel();
        let notice = ExitNotice(Some((self.exits.clone(), index, generation)));
        let thread = std::thread::Builder::new().name(format!("router-{index}")).spawn(move || {
            let _notice = notice;
            crate::metrics::on_loop(index);
            // Dropping the runtime at the end cancels what is still running on it: by then the
            // drain has ended every connection, or its time is up.
            match runtime.block_on(commands) {
                Ok(Command::Stop) | Err(_) => {}
                #[cfg(test)]
                Ok(Command::Die) => panic!("loop {index} told to die"),
            }
        })?;
        Ok(Arc::new(Loop {
            index,
            handle,
            app: Arc::new((self.make)()),
            command: Mutex::new(Some(command)),
            thread: Mutex::new(Some(thread)),
            generation,
        }))
    }

    /// The loop for the next connection, and the token its task holds until it ends. `None`
    /// before the loops have started.
    pub fn pick(&self) -> Option<(Arc<Loop<A>>, Serving)> {
        let loops = self.loops.load();
        if loops.is_empty() {
            return None;
        }
        let chosen = loops[self.next.fetch_add(1, Ordering::Relaxed) % loops.len()].clone();
        self.open.count.fetch_add(1, Ordering::AcqRel);
        crate::metrics::loop_connections(chosen.index, 1);
        let serving = Serving { open: self.open.clone(), index: chosen.index };
        Some((chosen, serving))
    }

    /// Connections being served now.
    pub fn open(&self) -> usize {
        self.open.count.load(Ordering::Acquire)
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

    /// A loop thread ended. Unless the pool is stopping, that is a bug: log it, count it, and
    /// start a replacement so that every connection still finds a live loop.
    fn on_exit(&self, exit: Exit) {
        let loops = self.loops.load_full();
        let Some(current) = loops.get(exit.index).filter(|l| l.generation == exit.generation) else {
            return; // a loop already replaced, or one stopped on purpose
        };
        let how = if exit.panicked { "panicked" } else { "ended" };
        log::error!("worker loop {} {how}: its open connections are lost; starting a replacement", current.index);
        crate::metrics::loop_restart(exit.index);
        let replacement = match self.spawn(exit.index) {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot replace worker loop {}: {e}; it leaves the rotation", exit.index);
                let rest: Vec<_> = loops.iter().filter(|l| l.index != exit.index).cloned().collect();
                if !rest.is_empty() {
                    self.loops.store(Arc::new(rest));
                }
                return;
            }
        };
        let mut next = (*loops).clone();
        if let Some(slot) = next.iter_mut().find(|l| l.index == exit.index) {
            *slot = replacement;
        }
        self.loops.store(Arc::new(next));
    }

    /// Stops every loop and waits for their threads. Their runtimes drop what still runs.
    fn stop_all(&self) {
        let loops = self.loops.swap(Arc::new(Vec::new()));
        for l in loops.iter() {
            if let Some(tx) = l.command.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(Command::Stop);
            }
        }
        for l in loops.iter() {
            if let Some(t) = l.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = t.join();
            }
        }
    }

    /// The loops' supervisor, on a thread of its own: replaces loops that die, starts the drain on
    /// pingora's shutdown signals, and at the end of pingora's grace period closes idle
    /// connections, waits up to `graceful` for the rest, then stops the loops.
    fn supervise(self: Arc<Self>, mut phases: broadcast::Receiver<ExecutionPhase>, graceful: Duration) {
        let Some(mut exits) = self.exit_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let rt = match Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return log::error!("cannot start the worker loops' supervisor: {e}"),
        };
        rt.block_on(async {
            let mut graceful_stop = false;
            loop {
                tokio::select! {
                    Some(exit) = exits.recv() => self.on_exit(exit),
                    phase = phases.recv() => match phase {
                        // The drain starts when this process stops accepting: at once on
                        // SIGTERM; on an upgrade after the sockets are handed over and pingora's
                        // pause, while both processes accept. A connection accepted while draining
                        // would be told to go at once, and an HTTP/2 client racing that GOAWAY
                        // with its first request loses it.
                        Ok(ExecutionPhase::GracefulTerminate | ExecutionPhase::ShutdownStarted) => {
                            self.drain.begin();
                        }
                        Ok(ExecutionPhase::ShutdownGracePeriod) => {
                            self.drain.begin();
                            graceful_stop = true;
                        }
                        Ok(ExecutionPhase::ShutdownRuntimes) | Err(broadcast::error::RecvError::Closed) => break,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    },
                }
            }
            self.drain.close_idle();
            if graceful_stop {
                // Leave a margin inside pingora's own bound, which ends the process.
                let bound = graceful.saturating_sub(graceful / 10);
                if tokio::time::timeout(bound, self.drained()).await.is_err() {
                    log::warn!("{} connections still open after {bound:?}: ending them", self.open());
                }
            }
        });
        self.stop_all();
        log::info!("worker loops stopped");
    }
}

/// The pingora service that owns the loops' life: started after any daemonizing, it starts the
/// loops and their supervisor, then keeps pingora's runtime shutdown waiting (a blocking task,
/// which `shutdown_timeout` waits for) until the supervisor has drained and stopped them.
pub struct LoopService<A> {
    pool: Arc<Pool<A>>,
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    graceful: Duration,
}

impl<A> LoopService<A> {
    /// `phases` from pingora's `Server::watch_execution_phase`, `graceful` its
    /// `graceful_shutdown_timeout_seconds`.
    pub fn new(pool: Arc<Pool<A>>, phases: broadcast::Receiver<ExecutionPhase>, graceful: Duration) -> Self {
        LoopService { pool, phases: Mutex::new(Some(phases)), graceful }
    }
}

#[async_trait]
impl<A: Send + Sync + 'static> BackgroundService for LoopService<A> {
    async fn start_with_ready_notifier(&self, _shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        let Some(phases) = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        if let Err(e) = self.pool.start() {
            log::error!("cannot start the worker loops: {e}");
            std::process::exit(1);
        }
        ready.notify_ready();
        log::info!("{} worker loops serving; this task lasts until they stop", self.pool.size);
        let (pool, graceful) = (self.pool.clone(), self.graceful);
        let _ = tokio::task::spawn_blocking(move || pool.supervise(phases, graceful)).await;
    }
}

/// The accepted socket as a stream of the current loop. Its readiness would otherwise be reported
/// by the listener's runtime, where it was accepted, and relayed to this thread for every read and
/// write. The socket is duplicated (the same connection, a second descriptor owned here), and the
/// listener's stream is dropped by the caller.
pub fn adopt(accepted: &L4Stream) -> std::io::Result<(L4Stream, ReadCount)> {
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
    let read = ReadCount::default();
    let buffered = Buffered { tcp, out: Vec::new(), read: read.clone() };
    let mut stream = L4Stream::from(VirtualSocketStream::new(Box::new(buffered)));
    stream.set_socket_digest(digest);
    Ok((stream, read))
}

/// Bytes read from a connection's socket so far. The drain closes an HTTP/1.1 connection only when
/// nothing arrived since its last answer: then no request is under way on it.
///
/// It also carries whether the client's bytes are acknowledged at once ([`ReadCount::eager_ack`]).
#[derive(Clone, Debug, Default)]
pub struct ReadCount {
    count: Arc<AtomicU64>,
    eager_ack: Arc<AtomicBool>,
}

impl ReadCount {
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn add(&self, n: usize) {
        self.count.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The switch that makes every read acknowledge the client's bytes at once (`TCP_QUICKACK`).
    /// Once the gateway has answered on a connection, Linux delays its acknowledgements (up to
    /// 40 ms) hoping to send them with the next answer; a client with Nagle's algorithm on (most
    /// sockets' default) holds the rest of a request, such as a body written apart from its header,
    /// until that acknowledgement comes. It is on only while more of a request is awaited (a body
    /// is pending) and for passthrough tunnels: an acknowledgement of its own is one more packet
    /// per request, which the gateway's answer otherwise carries for free.
    pub fn eager_ack(&self) -> Arc<AtomicBool> {
        self.eager_ack.clone()
    }
}

/// Writes held until a flush, as pingora's own accepted streams do: a response's header and body
/// records leave in one send. Reads go straight to the socket (the TLS acceptor reads ahead).
#[derive(Debug)]
struct Buffered {
    tcp: tokio::net::TcpStream,
    out: Vec<u8>,
    read: ReadCount,
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
        if self.read.eager_ack.load(Ordering::Relaxed) {
            // Before the read: a delayed acknowledgement of what was read already goes out now,
            // also when nothing new has arrived (the client may be waiting for it to send more).
            // The option is not sticky, so it is set at each read while the switch is on.
            let _ = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.tcp).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        self.read.count.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
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

/// How long, and for how many bytes, a closed connection's late request bytes are read and thrown
/// away (nginx's `lingering_time`; its `lingering_close` is on in the same cases).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

impl Drop for Buffered {
    /// A lingering close. A socket closed with unread bytes sends a reset instead of a FIN, and a
    /// reset can destroy the answer the client has not read yet: a refusal of a request whose body
    /// is still coming, which the client, busy sending, reads last. So when bytes are waiting, the
    /// socket's write side is shut (the answer is followed by a FIN) and what still arrives is
    /// read and thrown away, for [`LINGER_TIME`] and [`LINGER_BYTES`] at most, before it closes.
    /// A socket with nothing waiting closes at once, as before.
    fn drop(&mut self) {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit()];
        let socket = socket2::SockRef::from(&self.tcp);
        if !matches!(socket.peek(&mut probe), Ok(n) if n > 0) {
            return;
        }
        let Ok(handle) = Handle::try_current() else { return };
        // The duplicate keeps the socket open once this one's descriptor closes.
        let Ok(copy) = socket.try_clone() else { return };
        let _runtime = handle.enter();
        if let Ok(tcp) = tokio::net::TcpStream::from_std(std::net::TcpStream::from(copy)) {
            handle.spawn(linger(tcp));
        }
    }
}

/// Shuts the write side, then reads until the client closes, up to the bounds.
async fn linger(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let discard = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, discard).await;
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

    fn started(size: usize) -> Arc<Pool<()>> {
        let pool = Pool::new(size, || (), Drain::new());
        pool.start().unwrap();
        pool
    }

    async fn thread_of(pool: &Pool<()>) -> String {
        let (worker, _serving) = pool.pick().expect("a loop");
        let name = worker.handle.spawn(async { std::thread::current().name().map(str::to_string) });
        name.await.unwrap().unwrap()
    }

    /// The server answers and closes while the client is still sending: the client can send on and
    /// reads the whole answer and then the end of the stream, never a reset.
    #[tokio::test]
    async fn a_close_with_request_bytes_unread_lets_the_client_read_the_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = Buffered { tcp, out: Vec::new(), read: ReadCount::default() };
        client.write_all(&[b'a'; 64 * 1024]).await.unwrap();
        let mut head = [0u8; 1024];
        server.read_exact(&mut head).await.unwrap();
        server.write_all(b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\n\r\n").await.unwrap();
        server.flush().await.unwrap();
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The client goes on sending, as a client uploading a body does: a reset would fail this
        // (and curl, failing to send, reports the error instead of the answer).
        let sent = client.write_all(&[b'b'; 64 * 1024]).await;
        assert!(sent.is_ok(), "{sent:?}");
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let read = client.read_to_end(&mut answer).await;
        assert!(read.is_ok(), "{read:?} after {:?}", String::from_utf8_lossy(&answer));
        assert!(answer.starts_with(b"HTTP/1.1 413"), "{:?}", String::from_utf8_lossy(&answer));
    }

    #[tokio::test]
    async fn connections_go_round_robin_and_run_on_their_loop() {
        let pool = started(2);
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(thread_of(&pool).await);
        }
        assert_eq!(names, ["router-0", "router-1", "router-0", "router-1"]);
        pool.stop_all();
    }

    #[tokio::test]
    async fn no_loop_is_handed_out_before_the_pool_starts() {
        let pool = Pool::new(2, || (), Drain::new());
        assert!(pool.pick().is_none());
    }

    #[tokio::test]
    async fn drained_waits_for_every_connection_to_end() {
        let pool = started(1);
        pool.drained().await; // none open
        let (_, first) = pool.pick().unwrap();
        let (_, second) = pool.pick().unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), pool.drained()).await;
        assert!(waiting.is_err(), "two connections are open");
        drop(first);
        let waiting = tokio::time::timeout(Duration::from_millis(50), pool.drained()).await;
        assert!(waiting.is_err(), "one connection is open");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), pool.drained()).await.expect("drained");
        pool.stop_all();
    }

    /// A loop whose thread panics is replaced by the supervisor, and every connection handed out
    /// afterwards runs on a live loop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loop_that_dies_is_replaced_and_new_connections_are_served() {
        let pool = started(2);
        let (phases_tx, phases) = broadcast::channel(4);
        let supervisor = std::thread::spawn({
            let pool = pool.clone();
            move || pool.supervise(phases, Duration::from_secs(1))
        });
        let dying = pool.loops.load()[0].clone();
        let tx = dying.command.lock().unwrap().take().unwrap();
        let _ = tx.send(Command::Die);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::ptr_eq(&pool.loops.load()[0], &dying) {
            assert!(std::time::Instant::now() < deadline, "the dead loop was not replaced");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_ne!(pool.loops.load()[0].generation, dying.generation);
        for _ in 0..6 {
            let (worker, _serving) = pool.pick().unwrap();
            let ran = tokio::time::timeout(Duration::from_secs(5), worker.handle.spawn(async { 7 })).await;
            assert_eq!(ran.expect("served in time").unwrap(), 7);
        }
        phases_tx.send(ExecutionPhase::ShutdownRuntimes).unwrap();
        supervisor.join().unwrap();
        assert!(pool.pick().is_none(), "stopped loops leave the rotation");
    }

    /// The supervisor follows pingora's phases: a graceful signal starts the drain, the runtime
    /// shutdown closes idle connections and waits for open ones before stopping the loops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_phases_drain_then_wait_for_open_connections() {
        let pool = started(1);
        let (phases_tx, phases) = broadcast::channel(8);
        let supervisor = std::thread::spawn({
            let pool = pool.clone();
            move || pool.supervise(phases, Duration::from_secs(5))
        });
        let (_, serving) = pool.pick().unwrap();
        phases_tx.send(ExecutionPhase::GracefulTerminate).unwrap();
        let mut draining = pool.drain.draining();
        tokio::time::timeout(Duration::from_secs(5), crate::connection::drain::until(&mut draining)).await.unwrap();
        phases_tx.send(ExecutionPhase::ShutdownGracePeriod).unwrap();
        phases_tx.send(ExecutionPhase::ShutdownRuntimes).unwrap();
        let mut closing = pool.drain.closing();
        tokio::time::timeout(Duration::from_secs(5), crate::connection::drain::until(&mut closing)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!supervisor.is_finished(), "a connection is still open");
        drop(serving);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !supervisor.is_finished() {
            assert!(std::time::Instant::now() < deadline, "the loops did not stop once drained");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
