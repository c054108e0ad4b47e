//! An upstream API and its backends: the configured `host:port` entries (a name counts every
//! address it resolves to, looked up again every `resolve_interval`), how one backend is chosen
//! per request (pingora-load-balancing's round robin or Ketama consistent hash, by weight), which
//! backends may be chosen (active checks run by pingora-load-balancing; passive ejection after
//! consecutive connect failures or timeouts, for a while), and the TLS settings of a connection
//! to any of them (its CA, SNI, timeouts and, for mutual TLS, the gateway's client certificate).

use crate::config::{HealthCheckKind, Problem, Selection, UpstreamConfig};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures_util::FutureExt;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::{HealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::{Consistent, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many candidates one selection looks at, at most (the selector yields each backend once).
const MAX_SELECTION_STEPS: usize = 256;

pub struct Upstream {
    pub cfg: Arc<UpstreamConfig>,
    /// The connection settings every backend shares; each request's peer is a copy with the
    /// backend's address.
    template: HttpPeer,
    /// What the configured names resolved to last, one list per entry.
    resolved: Arc<Resolved>,
    balancer: Balancer,
    /// Each resolved backend's passive health and counters, replaced whole when the set changes:
    /// a request reads it without a lock.
    backends: ArcSwap<HashMap<SocketAddr, Arc<BackendState>>>,
    /// When the next active check is due, and the next lookup of the names.
    due: Mutex<(Instant, Instant)>,
    /// The instant ejection times are counted from.
    epoch: Instant,
}

/// One backend's passive health and its metric handles (made once, not per request).
struct BackendState {
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which it is ejected; 0 when it is not.
    ejected_until_ms: AtomicU64,
    ok: prometheus::IntCounter,
    connect_failed: prometheus::IntCounter,
    after_send: prometheus::IntCounter,
}

use crate::reason::Attempt;
/// Why a request's attempt on a backend failed, for passive health and the metrics.
pub use crate::reason::Failure;

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Hash(LoadBalancer<Consistent>),
}

impl Balancer {
    fn new(selection: Selection, backends: Backends) -> Self {
        match selection {
            Selection::RoundRobin => Balancer::RoundRobin(LoadBalancer::from_backends(backends)),
            Selection::ConsistentHash => Balancer::Hash(LoadBalancer::from_backends(backends)),
        }
    }

    fn select_with(&self, key: &[u8], accept: impl Fn(&Backend, bool) -> bool) -> Option<Backend> {
        match self {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECTION_STEPS, accept),
            Balancer::Hash(lb) => lb.select_with(key, MAX_SELECTION_STEPS, accept),
        }
    }

    async fn update(&self) -> pingora_core::Result<()> {
        match self {
            Balancer::RoundRobin(lb) => lb.update().await,
            Balancer::Hash(lb) => lb.update().await,
        }
    }

    fn backends(&self) -> &Backends {
        match self {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Hash(lb) => lb.backends(),
        }
    }
}

/// The discovery the balancer reads: the last resolution, never a lookup of its own, so that an
/// update can run without waiting (at start and on reload) or after an asynchronous lookup.
struct Resolved {
    weights: Vec<usize>,
    per_entry: Mutex<Vec<Vec<SocketAddr>>>,
    current: ArcSwap<BTreeSet<Backend>>,
}

impl Resolved {
    /// Replaces the addresses of entry `i`; an empty list keeps the last ones (a name that stops
    /// resolving must not become an outage of the API).
    fn set(&self, i: usize, addrs: Vec<SocketAddr>) {
        let mut per_entry = self.per_entry.lock().unwrap_or_else(|p| p.into_inner());
        if addrs.is_empty() {
            return;
        }
        if let Some(slot) = per_entry.get_mut(i) {
            *slot = addrs;
        }
        let mut set = BTreeSet::new();
        for (addrs, weight) in per_entry.iter().zip(&self.weights) {
            for addr in addrs {
                set.insert(Backend { addr: PeerAddr::Inet(*addr), weight: *weight, ext: Default::default() });
            }
        }
        self.current.store(Arc::new(set));
    }
}

struct Discovery(Arc<Resolved>);

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> pingora_core::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((BTreeSet::clone(&self.0.current.load()), HashMap::new()))
    }
}

/// Logs and counts a backend's active health when it changes.
struct Observer(String);

#[async_trait]
impl HealthObserve for Observer {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let backend = target.addr.to_string();
        crate::metrics::upstream_backend_up(&self.0, &backend, healthy);
        match healthy {
            true => log::info!(target: "upstream", "upstreams.{}: backend {backend} passes its health check", self.0),
            false => log::warn!(target: "upstream", "upstreams.{}: backend {backend} fails its health check", self.0),
        }
    }
}

impl Upstream {
    /// The upstream's settings and balancer; its backends are filled in by [`Upstream::resolve`].
    pub fn new(cfg: Arc<UpstreamConfig>) -> Result<Self, Problem> {
        let template = peer_template(&cfg)?;
        let resolved = Arc::new(Resolved {
            weights: cfg.backends.iter().map(|b| b.weight).collect(),
            per_entry: Mutex::new(vec![Vec::new(); cfg.backends.len()]),
            current: ArcSwap::from_pointee(BTreeSet::new()),
        });
        let mut backends = Backends::new(Box::new(Discovery(resolved.clone())));
        if let Some(check) = health_check(&cfg, &template) {
            backends.set_health_check(check);
        }
        let balancer = Balancer::new(cfg.selection, backends);
        let now = Instant::now();
        let due = Mutex::new((now, now));
        let backends = ArcSwap::default();
        Ok(Upstream { cfg, template, resolved, balancer, backends, due, epoch: now })
    }

    /// Resolves every entry now (blocking lookups: called when serving starts or a reload is
    /// applied, never by `-t`). A name that does not resolve yet is said at WARN and looked up
    /// again every second until it does: a Kubernetes headless Service has no address while no
    /// pod of the API is ready, and the gateway must not restart in a loop over it (its requests
    /// are answered 503 `no_healthy_backend` meanwhile).
    pub fn resolve(&self) -> Result<(), Problem> {
        for (i, b) in self.cfg.backends.iter().enumerate() {
            match b.address.to_socket_addrs().map(|a| a.collect::<Vec<_>>()) {
                Ok(addrs) if !addrs.is_empty() => self.resolved.set(i, dedup(addrs)),
                Ok(_) => log::warn!("upstreams.{}: {} resolves to no address yet", self.cfg.name, b.address),
                Err(e) => log::warn!("upstreams.{}: cannot resolve {} yet: {e}", self.cfg.name, b.address),
            }
        }
        // The discovery answers from memory: the update completes without waiting.
        match self.balancer.update().now_or_never() {
            Some(Ok(())) => {
                self.count_backends();
                Ok(())
            }
            _ => Err(Problem::new(format!("upstreams.{}", self.cfg.name), "could not set up its backends")),
        }
    }

    /// Every backend's series exist from the start (0 attempts, up until a check says otherwise),
    /// so that rates and alerts see their first event.
    fn count_backends(&self) {
        let current = self.backends.load();
        let mut next = HashMap::new();
        for addr in self.balancer.backends().get_backend().iter().filter_map(|b| b.addr.as_inet()) {
            let state = match current.get(addr) {
                Some(state) => state.clone(),
                None => Arc::new(self.new_backend(addr)),
            };
            next.insert(*addr, state);
        }
        self.backends.store(Arc::new(next));
        self.publish_health();
    }

    fn new_backend(&self, addr: &SocketAddr) -> BackendState {
        let backend = addr.to_string();
        let counter = |result| crate::metrics::upstream_attempts(&self.cfg.name, &backend, result);
        let state = BackendState {
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ok: counter(Attempt::Ok),
            connect_failed: counter(Attempt::Failed(Failure::Connect)),
            after_send: counter(Attempt::Failed(Failure::AfterSend)),
        };
        crate::metrics::upstream_backend_new(&self.cfg.name, &backend);
        state
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// What the background task does every second: looks the names up again when
    /// `resolve_interval` is due, runs the active checks when their interval is due.
    pub async fn maintain(&self) {
        let now = Instant::now();
        let (resolve, check) = {
            let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
            let resolve = now >= due.0;
            if resolve {
                // Without any address yet, every second: the API's first instance is awaited.
                let empty = self.balancer.backends().get_backend().is_empty();
                due.0 = now + if empty { Duration::from_secs(1) } else { self.cfg.resolve_interval };
            }
            let interval = self.cfg.health_check.as_ref().map(|h| h.interval);
            let check = interval.is_some() && now >= due.1;
            if let Some(interval) = interval.filter(|_| check) {
                due.1 = now + interval;
            }
            (resolve, check)
        };
        if resolve {
            self.lookup().await;
        }
        if check {
            self.balancer.backends().run_health_check(true).await;
        }
        self.publish_health();
    }

    async fn lookup(&self) {
        for (i, b) in self.cfg.backends.iter().enumerate() {
            match tokio::net::lookup_host(b.address.as_str()).await.map(|a| a.collect::<Vec<_>>()) {
                Ok(addrs) if !addrs.is_empty() => self.resolved.set(i, dedup(addrs)),
                Ok(_) => log::warn!(
                    "upstreams.{}: {} resolves to no address; keeping the last ones",
                    self.cfg.name,
                    b.address
                ),
                Err(e) => {
                    log::warn!("upstreams.{}: cannot resolve {}: {e}; keeping the last ones", self.cfg.name, b.address)
                }
            }
        }
        match self.balancer.update().await {
            Ok(()) => self.count_backends(),
            Err(e) => log::warn!("upstreams.{}: backends not updated: {e}", self.cfg.name),
        }
    }

    /// The healthy-backend gauge, from the active and the passive view.
    fn publish_health(&self) {
        let (healthy, total) = self.health();
        crate::metrics::upstream_healthy_backends(&self.cfg.name, healthy, total);
    }

    /// How many backends can be chosen now, of how many.
    pub fn health(&self) -> (usize, usize) {
        let backends = self.balancer.backends().get_backend();
        let healthy = backends.iter().filter(|b| self.usable(b, self.balancer.backends().ready(b))).count();
        (healthy, backends.len())
    }

    fn usable(&self, backend: &Backend, healthy: bool) -> bool {
        let Some(addr) = backend.addr.as_inet() else { return false };
        healthy && !self.ejected(addr)
    }

    fn ejected(&self, addr: &SocketAddr) -> bool {
        let backends = self.backends.load();
        let until = backends.get(addr).map_or(0, |b| b.ejected_until_ms.load(Ordering::Relaxed));
        until != 0 && self.now_ms() < until
    }

    /// A backend for one attempt of a request: healthy, not ejected and not tried already by
    /// this request. `key` keeps a partner on one backend under consistent hashing.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        let chosen = self.balancer.select_with(key, |b, healthy| {
            b.addr.as_inet().is_some_and(|a| !tried.contains(a)) && self.usable(b, healthy)
        })?;
        chosen.addr.as_inet().copied()
    }

    /// The connection settings for a request to `backend`.
    pub fn peer(&self, backend: SocketAddr) -> HttpPeer {
        let mut peer = self.template.clone();
        peer._address = PeerAddr::Inet(backend);
        peer
    }

    /// A failed attempt: `ejection.failures` in a row take the backend out for `ejection.duration`.
    pub fn failed(&self, backend: SocketAddr, why: Failure) {
        let e = self.cfg.ejection;
        let backends = self.backends.load();
        let Some(state) = backends.get(&backend) else { return };
        match why {
            Failure::Connect => state.connect_failed.inc(),
            Failure::AfterSend => state.after_send.inc(),
        }
        if e.failures == 0 || state.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1 < e.failures {
            return;
        }
        state.consecutive_failures.store(0, Ordering::Relaxed);
        let until = self.now_ms() + e.duration.as_millis() as u64;
        state.ejected_until_ms.store(until.max(1), Ordering::Relaxed);
        drop(backends);
        crate::metrics::upstream_ejection(&self.cfg.name, &backend.to_string());
        log::warn!(
            target: "upstream",
            "upstreams.{}: backend {backend} ejected for {:?} after {} failures in a row",
            self.cfg.name,
            e.duration,
            e.failures
        );
        self.publish_health();
    }

    /// An answer came from `backend`: its run of failures ends.
    pub fn succeeded(&self, backend: SocketAddr) {
        if let Some(state) = self.backends.load().get(&backend) {
            state.ok.inc();
            if state.consecutive_failures.load(Ordering::Relaxed) != 0 {
                state.consecutive_failures.store(0, Ordering::Relaxed);
            }
        }
    }
}

fn dedup(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The pooled, verified TLS connection settings every backend of an upstream shares.
fn peer_template(u: &UpstreamConfig) -> Result<HttpPeer, Problem> {
    let unresolved = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut peer = HttpPeer::new(unresolved, u.tls, u.sni.clone());
    if let Some(ca) = &u.ca {
        let certs = crate::pki::read_certs(ca).map_err(|e| Problem::new(format!("upstreams.{}.ca", u.name), e))?;
        peer.options.ca = Some(Arc::new(certs.into_boxed_slice()));
    }
    peer.options.verify_cert = true;
    peer.options.verify_hostname = true;
    peer.options.connection_timeout = Some(u.connect_timeout);
    peer.options.total_connection_timeout = Some(u.connect_timeout * 2);
    peer.options.read_timeout = Some(u.read_timeout);
    peer.options.write_timeout = Some(u.write_timeout);
    peer.options.idle_timeout = Some(u.idle_timeout);
    if let Some(identity) = &u.client_identity {
        peer.client_cert_key = Some(Arc::new(client_identity(&u.name, identity)?));
    }
    // The pool key does not include the CA: keep upstreams with different trust apart.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (u.name.as_str(), u.ca.as_ref(), u.client_identity.as_ref().map(|i| &i.certificate)).hash(&mut h);
    peer.group_key = h.finish();
    Ok(peer)
}

/// The gateway's certificate chain and key for mutual TLS to the API: read, and checked to
/// belong together, so that `-t` names a key that is not the certificate's.
fn client_identity(
    name: &str,
    id: &crate::config::ClientIdentity,
) -> Result<pingora_core::utils::tls::CertKey, Problem> {
    let at = |k: &str| format!("upstreams.{name}.{k}");
    let certs = crate::pki::read_certs(&id.certificate).map_err(|e| Problem::new(at("client_certificate"), e))?;
    let key = crate::pki::read_key(&id.key).map_err(|e| Problem::new(at("client_key"), e))?;
    if !certs[0].public_key().is_ok_and(|p| p.public_eq(&key)) {
        let message = format!("{} does not match the certificate {}", id.key.display(), id.certificate.display());
        return Err(Problem::new(at("client_key"), message));
    }
    Ok(pingora_core::utils::tls::CertKey::new(certs, key))
}

/// The active check of an upstream, when configured: over the same TLS settings as requests.
fn health_check(cfg: &UpstreamConfig, template: &HttpPeer) -> Option<Box<dyn HealthCheck + Send + Sync>> {
    let h = cfg.health_check.as_ref()?;
    let observer = Box::new(Observer(cfg.name.clone()));
    let timeout = Some(h.timeout);
    match h.kind {
        HealthCheckKind::Tcp => {
            let mut check = TcpHealthCheck::new();
            check.consecutive_success = h.healthy_after;
            check.consecutive_failure = h.unhealthy_after;
            check.peer_template.options.connection_timeout = timeout;
            check.health_changed_callback = Some(observer);
            Some(check)
        }
        HealthCheckKind::Http => {
            let host = cfg.host_header.clone().unwrap_or_else(|| cfg.sni.clone());
            let mut check = HttpHealthCheck::new(&host, cfg.tls);
            check.peer_template = template.clone();
            check.peer_template.options.connection_timeout = timeout;
            check.peer_template.options.total_connection_timeout = timeout;
            check.peer_template.options.read_timeout = timeout;
            check.peer_template.options.write_timeout = timeout;
            check.consecutive_success = h.healthy_after;
            check.consecutive_failure = h.unhealthy_after;
            let path = h.path.clone();
            if let Ok(req) = pingora_http::RequestHeader::build("GET", path.as_bytes(), None) {
                let mut req = req;
                let _ = req.insert_header("host", host.as_str());
                let _ = req.insert_header("user-agent", "mtls-gateway-health-check");
                check.req = req;
            }
            let status = h.status;
            check.validator = Some(Box::new(move |resp| match resp.status.as_u16() == status {
                true => Ok(()),
                false => pingora_core::Error::e_explain(
                    pingora_core::ErrorType::CustomCode("unexpected status", resp.status.as_u16()),
                    "during the health check",
                ),
            }));
            check.health_changed_callback = Some(observer);
            Some(Box::new(check))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendAddress, EjectionConfig};

    fn upstream(addresses: &[&str], failures: u32, ejection: Duration) -> Upstream {
        let mut cfg = crate::request::route::test_upstream("127.0.0.1:1");
        let c = Arc::make_mut(&mut cfg);
        c.backends = addresses.iter().map(|a| BackendAddress { address: a.to_string(), weight: 1 }).collect();
        c.ejection = EjectionConfig { failures, duration: ejection };
        let u = Upstream::new(cfg).unwrap();
        u.resolve().unwrap();
        u
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn round_robin_spreads_and_skips_what_the_request_tried() {
        let u = upstream(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], 3, Duration::from_secs(10));
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            seen.insert(u.select(b"", &[]).unwrap());
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        for _ in 0..6 {
            let next = u.select(b"", &[addr(1), addr(2)]).unwrap();
            assert_eq!(next, addr(3));
        }
        assert_eq!(u.select(b"", &[addr(1), addr(2), addr(3)]), None, "nothing left to try");
    }

    #[test]
    fn consecutive_failures_eject_a_backend_for_a_while() {
        let u = upstream(&["127.0.0.1:1", "127.0.0.1:2"], 2, Duration::from_millis(200));
        u.failed(addr(1), Failure::Connect);
        u.succeeded(addr(1));
        u.failed(addr(1), Failure::Connect);
        assert_eq!(u.health(), (2, 2), "a success in between resets the run");
        u.failed(addr(1), Failure::AfterSend);
        assert_eq!(u.health(), (1, 2), "two in a row eject it");
        for _ in 0..4 {
            assert_eq!(u.select(b"", &[]), Some(addr(2)));
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(u.health(), (2, 2), "back after the ejection period");
    }

    #[test]
    fn consistent_hashing_keeps_a_partner_on_one_backend() {
        let mut cfg = crate::request::route::test_upstream("127.0.0.1:1");
        let c = Arc::make_mut(&mut cfg);
        c.selection = Selection::ConsistentHash;
        c.backends = (1..=3).map(|p| BackendAddress { address: format!("127.0.0.1:{p}"), weight: 1 }).collect();
        let u = Upstream::new(cfg).unwrap();
        u.resolve().unwrap();
        let first = u.select(b"partner-a", &[]).unwrap();
        assert!((0..10).all(|_| u.select(b"partner-a", &[]) == Some(first)));
        let other = u.select(b"partner-a", &[first]).unwrap();
        assert_ne!(other, first, "its backend failed: another one");
    }

    #[tokio::test]
    async fn a_name_counts_every_address_and_a_failed_lookup_keeps_the_last() {
        let u = upstream(&["localhost:4000"], 3, Duration::from_secs(1));
        assert!(u.health().1 >= 1);
        assert!(u.select(b"", &[]).is_some_and(|a| a.ip().is_loopback() && a.port() == 4000));
        let mut cfg = crate::request::route::test_upstream("no-such-host.invalid:4000");
        Arc::make_mut(&mut cfg).backends[0].address = "no-such-host.invalid:4000".into();
        let gone = Upstream::new(cfg).unwrap();
        gone.resolve().unwrap();
        assert_eq!(gone.health(), (0, 0), "a name that does not resolve yet: no backend, no failure to start");
        // Resolved once before, then the name stops resolving: its last addresses stay.
        gone.resolved.set(0, vec![SocketAddr::from(([127, 0, 0, 9], 4000))]);
        gone.lookup().await;
        assert_eq!(gone.select(b"", &[]), Some(SocketAddr::from(([127, 0, 0, 9], 4000))));
    }
}
