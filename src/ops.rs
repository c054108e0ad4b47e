//! The internal operations listener: `/metrics` (Prometheus), `/healthz` (the process is alive)
//! and `/readyz` (the configuration is loaded, the public listener accepts connections and the
//! process is not draining; the identity servers', the shared-state server's, the upstreams',
//! the client CRLs' and the OCSP responders' and fetched CRLs' state is reported in the body, not
//! required, except that under `revocation.policy: hard` a configured CRL URL never fetched makes
//! the replica not ready), as JSON. Readiness is probed
//! in the background, so a probe request never waits on the network.

use crate::cluster::Cluster;
use crate::config::{Config, OpsConfig};
use crate::connection::drain::Drain;
use async_trait::async_trait;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// This replica's own listener: the one target readiness requires.
const OWN_TARGET: &str = "listener";

/// One thing `/readyz` depends on, and when it last answered.
struct Target {
    name: String,
    address: String,
    last_ok: Option<Instant>,
    probe: Probe,
}

/// How a target is probed.
#[derive(Clone)]
enum Probe {
    /// A TCP connection is accepted.
    Connect,
    /// The shared-state server answers a `PING` on the gateway's own connection: TLS, password
    /// and all.
    Cluster(Arc<Cluster>),
}

pub struct Health {
    targets: Mutex<Vec<Target>>,
    /// A draining process is not ready from the first moment of its drain.
    drain: Arc<Drain>,
    /// How often the probes run, and how old a success may be for `/readyz`.
    every: Duration,
    window: Duration,
    /// The routing in force, whose upstreams' backends are reported.
    routing: Option<crate::request::proxy::RoutingHandle>,
    /// The OCSP responders and CRL sources, reported; under `hard`, a configured CRL never
    /// fetched makes this replica not ready (it would refuse the certificates it is about).
    revocation: Option<Arc<crate::revocation::Revocation>>,
}

impl Health {
    /// Reports the upstreams of the routing in force as well.
    pub fn with_routing(mut self, routing: crate::request::proxy::RoutingHandle) -> Self {
        self.routing = Some(routing);
        self
    }

    /// Reports the revocation sources as well.
    pub fn with_revocation(mut self, revocation: Arc<crate::revocation::Revocation>) -> Self {
        self.revocation = revocation.enabled().then_some(revocation);
        self
    }

    /// Each upstream's usable backends: an upstream with none answers 503 at once, but every
    /// replica shares its backends, so it is reported, never a reason to be unready.
    fn upstreams(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let Some(routing) = &self.routing else { return out };
        for u in routing.load().upstreams() {
            let (healthy, total) = u.health();
            let role = "dependency (reported, not required)";
            out.insert(
                u.cfg.name.clone(),
                json!({ "ok": healthy > 0, "healthy_backends": healthy, "backends": total, "role": role }),
            );
        }
        out
    }

    /// The public listener, every introspection endpoint (at its `resolve` address if set) and
    /// the shared-state server of this process (`cluster`), if any.
    pub fn new(cfg: &Config, ops: &OpsConfig, drain: Arc<Drain>, cluster: Option<Arc<Cluster>>) -> Self {
        let target = |name: String, address: String, probe: Probe| Target { name, address, last_ok: None, probe };
        let mut targets = vec![target(OWN_TARGET.into(), cfg.listener.address.clone(), Probe::Connect)];
        for (name, i) in &cfg.introspection {
            // A discovered endpoint is on the discovery URL's server, as far as a probe can tell.
            let Some(url) = i.endpoint.as_ref().or(i.discovery.as_ref()) else { continue };
            let address = match (i.resolve, url.host_str(), url.port_or_known_default()) {
                (Some(addr), _, _) => addr.to_string(),
                (None, Some(host), Some(port)) => format!("{host}:{port}"),
                _ => continue,
            };
            targets.push(target(format!("introspection.{name}"), address, Probe::Connect));
        }
        // The process's own connection, which a reload never adds or replaces.
        if let Some(c) = cluster {
            let url = &c.config().url;
            let address = format!("{}:{}", url.host_str().unwrap_or_default(), url.port().unwrap_or(6379));
            targets.push(target("cluster".into(), address, Probe::Cluster(c)));
        }
        Health {
            targets: Mutex::new(targets),
            drain,
            every: ops.probe_interval,
            window: ops.ready_window,
            routing: None,
            revocation: None,
        }
    }

    async fn probe(&self) {
        let probes: Vec<(usize, String, Probe)> = match self.targets.lock() {
            Ok(t) => t.iter().enumerate().map(|(i, t)| (i, t.address.clone(), t.probe.clone())).collect(),
            Err(_) => return,
        };
        for (i, address, probe) in probes {
            let ok = match probe {
                Probe::Connect => {
                    let connect = tokio::net::TcpStream::connect(address.as_str());
                    matches!(tokio::time::timeout(Duration::from_secs(2), connect).await, Ok(Ok(_)))
                }
                Probe::Cluster(c) => c.ping().await.is_ok(),
            };
            if let (true, Ok(mut t)) = (ok, self.targets.lock()) {
                t[i].last_ok = Some(Instant::now());
            }
        }
        // The gauge follows the probes, whether or not anyone asks `/readyz`.
        if let Ok(targets) = self.targets.lock() {
            for t in targets.iter().filter(|t| t.name != OWN_TARGET) {
                let up = t.last_ok.is_some_and(|at| at.elapsed() <= self.window);
                crate::metrics::dependency_up(&t.name, up);
            }
        }
    }

    /// Whether this replica can serve, and the JSON that says why. Only what is this replica's
    /// own counts (its listener accepts, it is not draining): a dependency every replica shares,
    /// such as the identity server, is reported in the body and in
    /// `gateway_dependency_up{dependency}`, never by taking every replica out of the Service, which
    /// would turn an identity-server outage into a total one while cached tokens could be served.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let Ok(targets) = self.targets.lock() else {
            return (false, json!({ "status": "unknown" }));
        };
        let cluster = targets.iter().any(|t| matches!(t.probe, Probe::Cluster(_)));
        let mut ready = true;
        let mut checks = serde_json::Map::new();
        for t in targets.iter() {
            let age = t.last_ok.map(|at| at.elapsed());
            let ok = age.is_some_and(|a| a <= self.window);
            let own = t.name == OWN_TARGET;
            if own {
                ready &= ok;
            }
            let age_ms = age.map(|a| a.as_millis() as u64);
            let role = if own { "this replica" } else { "dependency (reported, not required)" };
            checks.insert(
                t.name.clone(),
                json!({ "ok": ok, "address": t.address, "last_ok_ms_ago": age_ms, "role": role }),
            );
        }
        let crls = crate::connection::expiry::crl_states();
        if let Some(r) = &self.revocation {
            ready &= r.ready();
        }
        let draining = self.drain.is_draining();
        let status = match (draining, ready) {
            (true, _) => "draining",
            (false, true) => "ready",
            (false, false) => "not_ready",
        };
        let upstreams = self.upstreams();
        let mut body = json!({ "status": status, "checks": checks, "upstreams": upstreams, "client_crls": crls });
        if let Some(r) = &self.revocation {
            body["revocation"] = r.readiness();
        }
        if cluster {
            // Without the subscription the token caches are bypassed: slower, never stale.
            body["cluster_purges"] =
                json!(if crate::cluster::cache_trusted() { "subscribed" } else { "not_subscribed" });
        }
        (ready && !draining, body)
    }
}

/// Runs the readiness probes until shutdown.
pub struct Prober(pub std::sync::Arc<Health>);

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.0.probe().await;
            tokio::select! {
                _ = tokio::time::sleep(self.0.every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz`.
pub struct OpsApp(pub std::sync::Arc<Health>);

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => answer(200, "application/json", json!({ "status": "live" }).to_string().into_bytes()),
            "/readyz" => {
                let (ready, body) = self.0.readiness();
                answer(if ready { 200 } else { 503 }, "application/json", body.to_string().into_bytes())
            }
            _ => {
                let (status, content_type, body) = crate::metrics::encode();
                answer(status, &content_type, body)
            }
        }
    }
}

fn answer(status: u16, content_type: &str, body: Vec<u8>) -> http::Response<Vec<u8>> {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

/// `mtls-gateway health [ADDRESS] [--live]`: asks a running gateway's operations listener, for
/// container health checks. Exit status 0 when it answers 200.
pub fn health_command(address: &str, live: bool) -> std::process::ExitCode {
    let path = if live { "/healthz" } else { "/readyz" };
    match get(address, path) {
        Ok((status, body)) => {
            println!("{body}");
            if status == 200 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("mtls-gateway health: {address}{path}: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// A plain HTTP/1.1 GET with a short timeout; (status, body).
fn get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::net::ToSocketAddrs::to_socket_addrs(address)?
        .next()
        .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
