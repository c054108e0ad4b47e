//! The single external port: a pingora `ServerApp` on plain TCP that peeks the ClientHello's SNI,
//! splices identity-server traffic through untouched, and terminates mutual TLS for the API hosts
//! in-process before handing the TLS stream to the HTTP app (no loopback hop, no second listener).
//!
//! Every connection is bounded: per-source slots for unfinished handshakes, tunnels and
//! terminated connections; a keep-alive and an HTTP/2 idle timeout; a maximum age after which the
//! connection is ended gracefully; and an end signal that a reloaded CRL sends to the connections
//! of a revoked certificate.

use crate::config::{ListenerConfig, PassthroughConfig, UnknownSni};
use crate::connection::crl::SharedAcceptor;
use crate::connection::drain;
use crate::connection::hop::{HopDoor, KeepHopFacts};
use crate::connection::limits::{Kind, Slot, SourceLimits};
use crate::connection::live::{LiveConnections, Registration};
use crate::connection::passthrough::{self, TunnelInfo};
use crate::connection::serve::keepalive::{Connection, Served};
use crate::connection::shares::{Admission, ConnectionShares, Seat, Tunnels, UNKNOWN};
use crate::connection::sni::{self, Hello};
use crate::connection::tls::KeepClientCert;
use crate::connection::watchdog::{self, Watchdog};
use crate::connection::workers::{self, Pool, ReadCount};
use crate::host::HostPattern;
use crate::reason::{Cut, TunnelEnd};
use crate::token::{ClientCert, ConnectionFacts, Exchanges};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::tls::server::handshake_with_callback;
use pingora_core::protocols::tls::SslStream;
use pingora_core::protocols::tls::ALPN;
use pingora_core::protocols::{GetSocketDigest, Ssl, Stream};
use pingora_core::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// What to do with a connection once its ClientHello is known.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Passthrough(usize),
    Terminate,
    Close(&'static str),
}

/// What a reload may change: each new connection takes the current one and keeps it to its end.
pub struct RouterConfig {
    pub listener: ListenerConfig,
    pub terminate_hosts: Vec<HostPattern>,
    pub passthrough: PassthroughConfig,
}

/// Both ends of a connection's end signal (set by the drain, the maximum age, a revocation, a
/// displacement or an anonymous connection's idle limit), and the switch that closes it while idle.
struct Ends {
    tx: Arc<watch::Sender<bool>>,
    rx: ShutdownWatch,
    close: watch::Sender<bool>,
}

/// What the router shares with the rest of the process (and the hop listener's router with it).
#[derive(Clone)]
pub struct RouterParts {
    pub current: Arc<ArcSwap<RouterConfig>>,
    pub acceptor: SharedAcceptor,
    pub live: Arc<LiveConnections>,
    pub limits: Arc<SourceLimits>,
    /// OCSP and fetched CRLs, checked after the handshake (off when not configured).
    pub revocation: Arc<crate::revocation::Revocation>,
}

/// The router, serving terminated TLS streams with the HTTP app `A` (the proxy, in production),
/// each connection on one of the worker loops.
pub struct SniRouter<A> {
    parts: RouterParts,
    pool: Arc<Pool<A>>,
    /// `passthrough.max_connections`: one count for the process, whichever loop a tunnel is on.
    tunnels: Arc<Tunnels>,
    /// `listener.max_connections` and `listener.anonymous_max_connections`: TLS-terminated
    /// connections, one count for the process, shared fairly between sources.
    connections: ConnectionShares,
    /// Set on the trusted hop's listener, which serves only the hop's connections.
    hop: Option<Arc<HopDoor>>,
}

/// The way a connection came in: the external port (with the ClientHello's server name), or the
/// trusted hop's listener.
#[derive(Clone, Copy)]
enum Door<'a> {
    Edge(Option<&'a str>),
    Hop(&'a HopDoor),
}

impl Door<'_> {
    fn is_hop(&self) -> bool {
        matches!(self, Door::Hop(_))
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> SniRouter<A> {
    pub fn new(parts: RouterParts, pool: Arc<Pool<A>>) -> Self {
        let current = parts.current.load();
        let tunnels = Tunnels::new(current.passthrough.max_connections);
        let l = &current.listener;
        let connections = ConnectionShares::new(l.max_connections, l.anonymous_max_connections);
        drop(current);
        SniRouter { parts, pool, tunnels, connections, hop: None }
    }

    /// The router of the trusted hop's listener: TLS with the hop's acceptor, no passthrough, its
    /// own connection cap; every other part (loops, drain, watchdog, limits' cuts) shared.
    pub fn for_hop(parts: RouterParts, pool: Arc<Pool<A>>, hop: Arc<HopDoor>) -> Self {
        let connections = ConnectionShares::new(hop.cfg.max_connections, 0);
        SniRouter { parts, pool, tunnels: Tunnels::new(0), connections, hop: Some(hop) }
    }

    fn decide(&self, cfg: &RouterConfig, hello: &Hello) -> Decision {
        let name = match hello {
            Hello::Sni(name) => name,
            Hello::NoSni => return Self::unknown(cfg),
            Hello::NotTls(why) => return Decision::Close(why),
            Hello::NeedMore(_) => return Decision::Close("incomplete ClientHello"),
        };
        if let Some(i) = cfg.passthrough.routes.iter().position(|r| r.sni.matches(name)) {
            return Decision::Passthrough(i);
        }
        if cfg.terminate_hosts.iter().any(|h| h.matches(name)) {
            return Decision::Terminate;
        }
        Self::unknown(cfg)
    }

    fn unknown(cfg: &RouterConfig) -> Decision {
        match cfg.listener.unknown_sni {
            UnknownSni::Terminate => Decision::Terminate,
            UnknownSni::Close => Decision::Close("unknown or absent SNI"),
        }
    }

    /// Reads until the ClientHello is complete (or proven not to be one). Everything read is
    /// returned so that it can be rewound into the stream.
    async fn read_hello(stream: &mut L4Stream, max: usize) -> (Vec<u8>, Hello) {
        let mut buf = Vec::with_capacity(1024);
        loop {
            let want = match sni::parse(&buf, max) {
                Hello::NeedMore(n) => n,
                done => return (buf, done),
            };
            // Read what is there, not only what the parser asks for next: a ClientHello then comes
            // in one read, and a client that is not speaking TLS is read out before its connection
            // is closed (closing on unread bytes would reset it). Everything read is rewound.
            let start = buf.len();
            buf.resize(want.max(start + 1).max(start + 2048), 0);
            match stream.read(&mut buf[start..]).await {
                Ok(0) | Err(_) => {
                    buf.truncate(start);
                    return (buf, Hello::NotTls("connection closed before the ClientHello ended"));
                }
                Ok(n) => buf.truncate(start + n),
            }
        }
    }

    /// Terminates TLS, then serves HTTP on the stream until it ends, the certificate is revoked,
    /// the connection reaches its maximum age, or the process drains.
    async fn terminate(
        &self,
        app: &Arc<A>,
        cfg: &ListenerConfig,
        (stream, read): (L4Stream, ReadCount),
        (source, door): (Option<IpAddr>, Door<'_>),
        handshake: Option<Slot>,
    ) {
        // The trusted hop is one source carrying every partner: per-source slots would throttle
        // them all; its listener has its own connection cap.
        let slot = if door.is_hop() { Some(None) } else { self.slot(source, Kind::Connection) };
        let Some(_slot) = slot else { return };
        let key = source.map(|ip| self.parts.limits.key(ip)).unwrap_or(UNKNOWN);
        if !self.connections.may_admit(key) {
            return self.parts.limits.cuts.cut(source, Cut::MaxConnections);
        }
        let Some(tls) = self.handshake(door, stream, cfg).await else { return };
        if let Door::Hop(hop) = door {
            if !hop.trusts_certificate(tls.ssl()) {
                return self.parts.limits.cuts.cut(source, Cut::HopCertificate);
            }
        }
        let facts = tls.ssl_digest().and_then(|d| d.extension.get::<ConnectionFacts>().map(Self::facts));
        let (client, exchanges) = facts.unwrap_or_default();
        // OCSP and fetched CRLs wait on the network, which OpenSSL's verify callback cannot: the
        // check runs here (bounded by its timeout), and a refusal answers every request.
        // (The hop's certificate is the balancer's: its partners' are checked per request.)
        let leaf = (self.parts.revocation.enabled() && !door.is_hop()).then(|| tls.ssl().peer_certificate()).flatten();
        if let (Some(c), Some(leaf)) = (&client, leaf) {
            let chain: Vec<_> =
                tls.ssl().peer_cert_chain().map(|s| s.iter().map(|x| x.to_owned()).collect()).unwrap_or_default();
            if let crate::revocation::Verdict::Refused(status) = self.parts.revocation.check(&leaf, &chain).await {
                c.refuse(status);
            }
        }
        drop(handshake);
        exchanges.link_eager_ack(read.eager_ack());
        // Only a connection with neither a certificate nor the hop's trust is anonymous.
        let anonymous = client.is_none() && !door.is_hop();
        // One count for the process, below the file limit (past it the kernel would refuse every
        // partner's connections, not just the flood's), taken once the handshake says whether
        // the client has a certificate.
        let Some(seat) = self.seat((source, key), anonymous) else { return };
        // Starts false even while draining: the supervisor's switch to true is what makes
        // pingora's HTTP/2 loop send GOAWAY, and it only reacts to a change.
        let (end_tx, end_rx) = watch::channel(false);
        let end_tx = Arc::new(end_tx);
        let _registration = self.register(&tls, client.clone(), &end_tx);
        let h2 = tls.selected_alpn_proto() == Some(ALPN::H2);
        let (close_tx, close_rx) = watch::channel(false);
        let watchdog = Watchdog::new(cfg, read.clone(), exchanges, h2);
        let keepalive = match anonymous {
            false => cfg.keepalive_timeout,
            true => cfg.keepalive_timeout.min(cfg.anonymous_idle_timeout),
        };
        let conn = Connection {
            stream: Box::new(tls),
            h2,
            keepalive,
            read,
            mark: watchdog.mark(),
            end: end_rx.clone(),
            closing: close_rx,
        };
        let served = Served::spawn(app.clone(), conn);
        let ends = Ends { tx: end_tx, rx: end_rx, close: close_tx };
        self.supervise(cfg, served, (client, source, anonymous), (ends, seat), (watchdog, h2)).await;
    }

    /// The TLS handshake of the door the connection came in by, within the listener's deadline
    /// (the hop's own on its listener).
    async fn handshake(&self, door: Door<'_>, stream: L4Stream, cfg: &ListenerConfig) -> Option<SslStream<L4Stream>> {
        let done = match door {
            Door::Edge(sni) => {
                let acceptors = self.parts.acceptor.load_full();
                let handshake = handshake_with_callback(acceptors.for_sni(sni), stream, &KeepClientCert);
                tokio::time::timeout(cfg.handshake_timeout, handshake).await
            }
            Door::Hop(hop) => {
                let handshake = handshake_with_callback(&hop.acceptor, stream, &KeepHopFacts);
                tokio::time::timeout(hop.cfg.handshake_timeout, handshake).await
            }
        };
        match done {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                log::debug!("TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                log::debug!("TLS handshake timed out");
                None
            }
        }
    }

    /// A place among the process's TLS connections, displacing the oldest connection of the
    /// heaviest source if needed; `None` (and the cut counted) when this source has its share.
    fn seat(&self, (source, key): (Option<IpAddr>, IpAddr), anonymous: bool) -> Option<Seat> {
        match self.connections.admit(key, anonymous) {
            Ok((seat, displaced)) => {
                for victim in displaced {
                    self.parts.limits.cuts.cut(Some(victim), Cut::ConnectionDisplaced);
                }
                Some(seat)
            }
            Err(reason) => {
                self.parts.limits.cuts.cut(source, reason);
                None
            }
        }
    }

    fn facts(f: &ConnectionFacts) -> (Option<Arc<ClientCert>>, Arc<Exchanges>) {
        (f.client.clone(), f.exchanges.clone())
    }

    /// Records the connection with its certificate, so that a CRL reload can end it.
    fn register(
        &self,
        tls: &pingora_core::protocols::tls::SslStream<L4Stream>,
        client: Option<Arc<ClientCert>>,
        end: &Arc<watch::Sender<bool>>,
    ) -> Option<Registration> {
        let leaf = tls.ssl().peer_certificate()?;
        let chain = tls.ssl().peer_cert_chain().map(|c| c.iter().map(|x| x.to_owned()).collect()).unwrap_or_default();
        Some(self.parts.live.register(leaf, chain, client?, end.clone()))
    }

    /// Waits for the connection's serving to end, and relays the reasons to end it early: the
    /// drain and maximum age end it gracefully (and `max_connection_age_grace` after the age, at
    /// once); a revoked certificate ends it after `revocation_grace` at the latest; the watchdog
    /// cuts a client that holds it without sending what it owes (header, preface, body). A
    /// connection displaced by another source's, or one without a certificate that sent nothing
    /// for `anonymous_idle_timeout`, ends gracefully and closes at once if idle. Returning drops
    /// `served`, which stops its task and closes the socket, whatever is under way.
    ///
    /// This task waits on the signals; the serve task is woken by its sockets only.
    async fn supervise(
        &self,
        cfg: &ListenerConfig,
        mut served: Served,
        (client, source, anonymous): (Option<Arc<ClientCert>>, Option<IpAddr>, bool),
        (Ends { tx: end_tx, rx: mut end_rx, close }, mut seat): (Ends, Seat),
        (mut watchdog, h2): (Watchdog, bool),
    ) {
        let (mut draining, mut closing) = (self.pool.drain.draining(), self.pool.drain.closing());
        let age = tokio::time::sleep(cfg.max_connection_age);
        tokio::pin!(age);
        let grace = tokio::time::sleep(std::time::Duration::MAX / 4);
        tokio::pin!(grace);
        let mut tick = tokio::time::interval(watchdog::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut drained, mut aged, mut revoked, mut closed) = (false, false, false, false);
        let idle_limit = anonymous.then_some(cfg.anonymous_idle_timeout);
        let mark = watchdog.mark();
        // Ends the connection gracefully and closes it while idle; true if it is idle now (an
        // HTTP/1.1 exchange with no byte of its request yet), and so to be closed at once.
        let end_now = |closed: &mut bool| {
            let _ = end_tx.send(true);
            let _ = close.send(true);
            *closed = true;
            !h2 && mark.idle()
        };
        loop {
            tokio::select! {
                _ = served.finished() => return,
                _ = drain::until(&mut draining), if !drained => {
                    drained = true;
                    let _ = end_tx.send(true);
                }
                _ = drain::until(&mut closing), if !closed => if end_now(&mut closed) { return },
                _ = seat.displaced(), if !closed => if end_now(&mut closed) { return },
                _ = &mut age, if !aged => {
                    aged = true;
                    crate::metrics::connection_cut(Cut::MaxConnectionAge);
                    let _ = end_tx.send(true);
                    if !revoked {
                        grace.as_mut().reset(tokio::time::Instant::now() + cfg.max_connection_age_grace);
                    }
                }
                _ = end_rx.changed(), if !revoked => {
                    if client.as_ref().is_some_and(|c| c.is_revoked()) {
                        revoked = true;
                        let deadline = tokio::time::Instant::now() + cfg.revocation_grace;
                        grace.as_mut().reset(deadline);
                    }
                }
                _ = &mut grace, if revoked || aged => {
                    // A revoked certificate, or a connection that outlived its age and the grace
                    // after it: closed whatever is under way.
                    if !revoked {
                        self.parts.limits.cuts.cut(source, Cut::MaxConnectionAgeHard);
                    }
                    return;
                }
                now = tick.tick() => {
                    let now = now.into_std();
                    if let Some(reason) = watchdog.check(now) {
                        return self.parts.limits.cuts.cut(source, reason);
                    }
                    if idle_limit.is_some_and(|limit| watchdog.silent_for(now) >= limit) && !closed && end_now(&mut closed) {
                        return;
                    }
                }
            }
        }
    }

    /// One connection from its ClientHello to its end: passed through, terminated and served, or
    /// closed.
    async fn connection(&self, app: &Arc<A>, io: Stream) {
        let Ok(accepted) = io.into_any().downcast::<L4Stream>() else {
            log::error!("the SNI router needs a plain TCP listener");
            return;
        };
        let (mut stream, read_count) = match workers::adopt(&accepted) {
            Ok((s, count)) => (Box::new(s), count),
            Err(e) => return log::warn!("could not move a connection to its loop: {e}"),
        };
        drop(accepted);
        let source = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        if let Some(hop) = &self.hop {
            return self.through_hop(app, hop, (*stream, read_count), source).await;
        }
        let Some(handshake) = self.slot(source, Kind::Handshake) else { return };
        let cfg = self.parts.current.load_full();
        let listener = &cfg.listener;
        let read = Self::read_hello(&mut stream, listener.max_client_hello_bytes);
        let Ok((bytes, hello)) = tokio::time::timeout(listener.client_hello_timeout, read).await else {
            log::debug!("closing a connection that sent no complete ClientHello in time");
            return;
        };
        stream.rewind(&bytes);
        match self.decide(&cfg, &hello) {
            Decision::Passthrough(i) => {
                drop(handshake);
                // Nothing tells a tunnel's requests apart: every read is acknowledged at once.
                read_count.eager_ack().store(true, std::sync::atomic::Ordering::Relaxed);
                self.pass(&cfg.passthrough, &mut stream, (&hello, i), source).await
            }
            Decision::Terminate => {
                let sni = match &hello {
                    Hello::Sni(name) => Some(name.as_str()),
                    _ => None,
                };
                self.terminate(app, &cfg.listener, (*stream, read_count), (source, Door::Edge(sni)), handshake).await
            }
            Decision::Close(why) => log::debug!("closing connection: {why}"),
        }
    }

    /// A connection on the trusted hop's listener: only from its sources, TLS always, no SNI
    /// decision (the hop's one connection carries requests for every API host).
    async fn through_hop(&self, app: &Arc<A>, hop: &HopDoor, stream: (L4Stream, ReadCount), source: Option<IpAddr>) {
        if !source.is_some_and(|ip| hop.cfg.trusts(ip)) {
            return self.parts.limits.cuts.cut(source, Cut::HopUntrustedSource);
        }
        let cfg = self.parts.current.load_full();
        self.terminate(app, &cfg.listener, stream, (source, Door::Hop(hop)), None).await
    }

    fn slot(&self, source: Option<IpAddr>, kind: Kind) -> Option<Option<Slot>> {
        match source {
            Some(ip) => self.parts.limits.acquire(ip, kind).map(Some),
            None => Some(None),
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for SniRouter<A> {
    /// Always answers `None`: a connection is served to its end on a worker loop, never handed
    /// back. Nothing waits for it here (that would wake this thread again when it ends); the
    /// loops' supervisor (`workers::LoopService`) drains them at shutdown. pingora's shutdown
    /// signal is not used: the drain (`connection::drain`) decides when connections end.
    async fn process_new(self: &Arc<Self>, io: Stream, _shutdown: &ShutdownWatch) -> Option<Stream> {
        let Some((worker, serving)) = self.pool.pick() else {
            // The listener starts after the loops (a service dependency); after they stopped it
            // no longer accepts. Seen only if that order breaks.
            log::error!("no worker loop is running: connection closed");
            crate::metrics::connection_cut(Cut::NoWorkerLoop);
            return None;
        };
        let (this, app) = (self.clone(), worker.app.clone());
        worker.handle.spawn(async move {
            this.connection(&app, io).await;
            drop(serving);
        });
        None
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> SniRouter<A> {
    async fn pass(
        &self,
        cfg: &PassthroughConfig,
        stream: &mut L4Stream,
        (hello, i): (&Hello, usize),
        source: Option<IpAddr>,
    ) {
        let (Hello::Sni(name), Some(route)) = (hello, cfg.routes.get(i)) else {
            return;
        };
        let Some(_source_slot) = self.slot(source, Kind::Tunnel) else { return };
        let ticket = match self.tunnels.admit(source.map(|ip| self.parts.limits.key(ip)).unwrap_or(UNKNOWN)) {
            Admission::Admitted(t) => t,
            Admission::Displaced(t, victim) => {
                self.parts.limits.cuts.cut(Some(victim), Cut::TunnelDisplaced);
                t
            }
            Admission::Refused => {
                crate::metrics::passthrough(&route.sni.to_string(), TunnelEnd::OverCapacity);
                return self.parts.limits.cuts.cut(source, Cut::PassthroughCapacity);
            }
        };
        let info = TunnelInfo { sni: name, route, source };
        // A tunnel ends early when another source displaces it, or when the drain period ends
        // (tunnels get the drain period as HTTP connections do).
        let (end_tx, end_rx) = watch::channel(false);
        let (mut displaced, mut closing) = (ticket.end.clone(), self.pool.drain.closing());
        let splice = passthrough::splice(stream, info, cfg, &end_rx, &self.parts.limits.cuts);
        tokio::pin!(splice);
        loop {
            tokio::select! {
                _ = &mut splice => return,
                _ = drain::until(&mut displaced), if !*end_tx.borrow() => { let _ = end_tx.send(true); }
                _ = drain::until(&mut closing), if !*end_tx.borrow() => { let _ = end_tx.send(true); }
            }
        }
    }
}
