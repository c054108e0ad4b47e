//! The internal admin listener, off unless an `admin:` section is written: `POST /purge` removes
//! cached introspection answers (one token, a token id from the access log, every token bound to
//! a certificate thumbprint, or everything) and can end a certificate's open connections, so a
//! revoked token stops working now instead of when its cache entry ends. Callers authenticate
//! with an admin client certificate ([`auth`]) or the bearer secret; every action is logged with
//! who asked. The `admin` command ([`cli`]) calls it, on one gateway or on every replica.

pub mod auth;
pub mod cli;
pub mod protocol;

use crate::config::PerSourceLimits;
use crate::config::{AdminConfig, Problem};
use crate::connection::limits::{Kind, SourceLimits};
use crate::connection::live::LiveConnections;
use crate::request::introspect::Introspector;
use crate::token::PurgeTarget;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use auth::{Auth, Caller};
use openssl::ssl::SslAcceptor;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::tls::server::handshake_with_callback;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use protocol::{AdminError, PurgeAnswer, PurgeRequest};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The largest request body read: a purge request is a few hundred bytes.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Connections one address may hold on the admin listener: an operator's CLI needs one.
const CONNECTIONS_PER_SOURCE: usize = 4;

/// The longest an admin connection lives, whatever it does: a purge takes milliseconds, and
/// pingora's read timeout is per read, so a client sending a byte now and then would hold it.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// The longest a TLS handshake may take: a connection that never finishes one would otherwise
/// hold its slot and descriptor for good.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin app behind a per-source connection cap, a handshake timeout and a lifetime bound,
/// on a plain TCP listener: it does the TLS handshake itself.
pub struct GuardedAdmin {
    app: Arc<AdminApp>,
    acceptor: SslAcceptor,
    limits: Arc<SourceLimits>,
}

impl GuardedAdmin {
    pub fn new(app: AdminApp, acceptor: SslAcceptor) -> Self {
        let per_source =
            PerSourceLimits { tunnels: 1, connections: CONNECTIONS_PER_SOURCE, handshakes: 1, ipv6_prefix: 64 };
        GuardedAdmin { app: Arc::new(app), acceptor, limits: SourceLimits::new(per_source, Duration::from_secs(10)) }
    }

    /// The TLS handshake, within [`HANDSHAKE_TIMEOUT`]; the stream with what it proved.
    async fn handshake(&self, io: Stream, source: Option<std::net::IpAddr>) -> Option<Stream> {
        let Ok(tcp) = io.into_any().downcast::<L4Stream>() else {
            log::error!("the admin listener needs a plain TCP listener");
            return None;
        };
        let callback = crate::connection::tls::KeepClientCert;
        let done = handshake_with_callback(&self.acceptor, *tcp, &callback);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, done).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                log::debug!("admin: TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                self.limits.cuts.cut(source, crate::reason::Cut::AdminHandshakeTimeout);
                None
            }
        }
    }
}

#[async_trait]
impl ServerApp for GuardedAdmin {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let source = io.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _slot = match source {
            Some(ip) => Some(self.limits.acquire(ip, Kind::Connection)?),
            None => None,
        };
        let tls = self.handshake(io, source).await?;
        let served = ServerApp::process_new(&self.app, tls, shutdown);
        if tokio::time::timeout(CONNECTION_LIFETIME, served).await.is_err() {
            self.limits.cuts.cut(source, crate::reason::Cut::AdminConnectionLifetime);
        }
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.app.as_ref()).await;
    }
}

/// The introspectors the admin acts on; swapped when the configuration is reloaded, so a purge
/// always reaches the caches that serve requests now.
pub type SharedIntrospectors = Arc<ArcSwap<BTreeMap<String, Arc<Introspector>>>>;

/// What the build step makes of the `admin:` section.
pub struct AdminParts {
    pub address: SocketAddr,
    pub tls: SslAcceptor,
    pub auth: Arc<Auth>,
}

/// Builds the listener's TLS and reads its secret; every problem, each under its key.
pub fn build(cfg: &AdminConfig) -> Result<AdminParts, Vec<Problem>> {
    let tls = crate::connection::tls::admin_acceptor(cfg);
    let auth = Auth::new(cfg);
    match (tls, auth) {
        (Ok(tls), Ok(auth)) => Ok(AdminParts { address: cfg.address, tls, auth: Arc::new(auth) }),
        (tls, auth) => Err(tls.err().into_iter().chain(auth.err()).collect()),
    }
}

pub struct AdminApp {
    pub auth: Arc<Auth>,
    pub introspectors: SharedIntrospectors,
    pub live: Arc<LiveConnections>,
    /// With a cluster, a purge is published to every replica.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// An answer: the status and its JSON body.
type Reply = (u16, serde_json::Value);

#[async_trait]
impl ServeHttp for AdminApp {
    /// Authenticates first, whatever the path, then runs the action.
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let peer = session.client_addr().map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        let (status, body) = match self.caller(session) {
            Ok(caller) => self.act(session, &caller, &peer).await,
            Err(denied) => {
                log::warn!("admin: refused a call from {peer}: {}", denied.reason());
                let error = if denied.status() == 403 { "forbidden" } else { "unauthenticated" };
                error_reply(denied.status(), error, &denied.reason())
            }
        };
        reply(status, &body)
    }
}

impl AdminApp {
    fn caller(&self, session: &ServerSession) -> Result<Caller, auth::Denied> {
        let ssl = session.digest().and_then(|d| d.ssl_digest.as_ref());
        let client =
            ssl.and_then(|s| s.extension.get::<crate::token::ConnectionFacts>()).and_then(|f| f.client.as_ref());
        let authorization = session.req_header().headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        self.auth.check(client.map(|c| c.as_ref()), authorization)
    }

    async fn act(&self, session: &mut ServerSession, caller: &Caller, peer: &str) -> Reply {
        let req = session.req_header();
        match (req.method.as_str(), req.uri.path()) {
            ("POST", "/purge") => {}
            (_, "/purge") => return error_reply(405, "method_not_allowed", "POST /purge"),
            _ => return error_reply(404, "not_found", "the admin listener serves POST /purge"),
        }
        let request = match read_json(session).await {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        let target = match request.target() {
            Ok(t) => t,
            Err(e) => return error_reply(400, "bad_request", &e.to_string()),
        };
        self.purge(&request, &target, caller, peer).await
    }

    /// Purges every current introspector and, when asked, ends the certificate's connections.
    async fn purge(&self, request: &PurgeRequest, target: &PurgeTarget, caller: &Caller, peer: &str) -> Reply {
        let introspectors = self.introspectors.load_full();
        if let (PurgeTarget::IdPrefix(id), false) = (target, request.several) {
            let matches: u64 = introspectors.values().map(|i| i.count(target)).sum();
            if matches > 1 {
                log::warn!(
                    "admin: {caller} from {peer}: token_id={id} matches {matches} cached tokens; nothing purged"
                );
                let message = format!("token_id {id} matches {matches} cached tokens: give a longer id or several");
                let body = AdminError { error: "ambiguous_token_id".into(), message, matches: Some(matches) };
                return (409, serde_json::to_value(body).unwrap_or_default());
            }
        }
        let mut answer = PurgeAnswer::default();
        for (name, introspector) in introspectors.iter() {
            let n = introspector.purge(target).await;
            answer.purged += n;
            answer.introspection.insert(name.clone(), n);
        }
        if let (true, PurgeTarget::Thumbprint(x5t)) = (request.end_connections, target) {
            answer.connections_ended = Some(self.live.end_thumbprint(x5t));
        }
        if let Some(cluster) = &self.cluster {
            let published = cluster.publish_purge(target).await;
            if published.is_err() {
                // Replicas without a live subscription bypass their caches until it is back, so
                // a purge that cannot be published is not lost on them; the operator is told.
                log::warn!("admin: {caller} from {peer}: the purge was applied here but not published to the cluster");
            }
            answer.replicas = Some(if published.is_ok() { "published" } else { "not_published" }.to_string());
        }
        log::info!(
            "admin: {caller} from {peer} purged {}: {} cache entries{}",
            target.describe(),
            answer.purged,
            answer.connections_ended.map(|n| format!(", ended {n} connections")).unwrap_or_default(),
        );
        (200, serde_json::to_value(answer).unwrap_or_default())
    }
}

/// The request body as a purge request, read up to [`MAX_BODY_BYTES`].
async fn read_json(session: &mut ServerSession) -> Result<PurgeRequest, Reply> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(error_reply(400, "bad_request", &format!("cannot read the body: {e}"))),
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(error_reply(413, "too_large", &format!("a purge request is under {MAX_BODY_BYTES} bytes")));
        }
    }
    serde_json::from_slice(&body).map_err(|e| error_reply(400, "bad_request", &format!("not a purge request: {e}")))
}

fn error_reply(status: u16, error: &str, message: &str) -> Reply {
    let body = AdminError { error: error.into(), message: message.into(), matches: None };
    (status, serde_json::to_value(body).unwrap_or_default())
}

fn reply(status: u16, body: &serde_json::Value) -> http::Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    let mut builder = http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("cache-control", "no-store");
    if status == 401 {
        builder = builder.header("www-authenticate", "Bearer realm=\"mtls-gateway-admin\"");
    }
    builder.body(body).unwrap_or_default()
}
