//! The pingora `ProxyHttp` phases of the gateway: `request_filter` normalises the request (see
//! [`normalize`](crate::request::normalize)), picks the route and runs its filter chain;
//! `upstream_request_filter` sets what the API receives (the JWT, forwarding headers, the verified
//! client certificate); `fail_to_proxy` turns failures into JSON answers and blames the right
//! party; `logging` writes one access-log line and the metrics of every request.

use crate::config::{AccessFormat, RefusalsConfig};
use crate::connection::limits::source_key;
use crate::metrics;
use crate::reason::{Failure, ForwardedResult, Limit, Reason, RefusedBy, Token};
use crate::request::access_log::AccessLine;
use crate::request::cors;
use crate::request::filters::{FilterState, Outcome};
use crate::request::forwarded::{Forwarded, ForwardedReader};
use crate::request::headers::{forwarded, interaction_id};
use crate::request::limit::{InFlight, InFlightSlot, Partner};
use crate::request::normalize::{Normalizer, OnConnection};
use crate::request::partners::Partners;
use crate::request::respond::{self, BadRequest, Refusal};
use crate::request::route::{self, Route};
use crate::request::upstream::Upstream;
use crate::token::{ClientCert, ConnectionFacts, Exchanges};
use crate::trace::{ChildSpan, Tracing};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a request is judged by; replaced whole when the configuration is reloaded, while
/// each request keeps the one it started with.
pub struct Routing {
    routes: Vec<Route>,
    normalizer: Normalizer,
    refusals: RefusalsConfig,
    access_format: AccessFormat,
    /// `limits.per_partner_requests`.
    partner_requests: usize,
    /// The metric names of configured partners.
    partners: Partners,
    /// Whose trace context is continued.
    tracing: Tracing,
    /// `limits.ipv6_prefix`: a client without a certificate is its address, or this prefix.
    ipv6_prefix: u8,
}

impl Routing {
    /// Routes come from the build step, with their chains and peers.
    pub fn new(routes: Vec<Route>, normalizer: Normalizer, refusals: RefusalsConfig) -> Self {
        Routing {
            routes,
            normalizer,
            refusals,
            access_format: AccessFormat::Text,
            partner_requests: usize::MAX,
            partners: Partners::default(),
            tracing: Tracing::default(),
            ipv6_prefix: 64,
        }
    }

    pub fn with_ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = prefix;
        self
    }

    pub fn with_tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = tracing;
        self
    }

    pub fn with_partners(mut self, partners: Partners) -> Self {
        self.partners = partners;
        self
    }

    pub fn with_partner_requests(mut self, max: usize) -> Self {
        self.partner_requests = max;
        self
    }

    pub fn with_access_format(mut self, format: AccessFormat) -> Self {
        self.access_format = format;
        self
    }

    /// Resolves the upstreams' backends; called when serving starts or a reload is applied,
    /// never by `-t`.
    pub fn resolve_upstreams(&self) -> std::result::Result<(), crate::config::Problem> {
        self.upstreams().try_for_each(|u| u.resolve())
    }

    /// Keeps the upstreams' backends current: names looked up again (a name that no longer
    /// resolves keeps its last addresses) and active health checks, each when due.
    pub async fn maintain_upstreams(&self) {
        for u in self.upstreams() {
            u.maintain().await;
        }
    }

    /// Each upstream once, however many routes lead to it.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        let mut seen = std::collections::BTreeSet::new();
        self.routes.iter().map(|r| &r.upstream).filter(move |u| seen.insert(u.cfg.name.clone()))
    }
}

/// The shared handle through which a reload swaps the routing in.
pub type RoutingHandle = Arc<ArcSwap<Routing>>;

#[derive(Clone)]
pub struct Gateway {
    current: RoutingHandle,
    /// Requests in flight per partner, for the process (every loop's copy shares it).
    inflight: Arc<InFlight>,
    /// The reader of the trusted hop's certificate header, when a hop is configured.
    forwarded: Option<Arc<ForwardedReader>>,
}

pub use crate::reason::Party;

impl Party {
    /// The party an error of pingora's comes from.
    fn of(e: &Error) -> Party {
        match e.esource() {
            ErrorSource::Downstream => Party::Client,
            ErrorSource::Upstream => Party::Upstream,
            ErrorSource::Internal | ErrorSource::Unset => Party::Gateway,
        }
    }
}

/// Per-request context.
pub struct RequestCtx {
    started: Instant,
    /// The routing this request started with.
    state: Arc<Routing>,
    route: Option<usize>,
    /// The request's host (Host header or :authority), lower case, without the port.
    host: String,
    /// The server name the connection's TLS handshake was for.
    sni: Option<String>,
    interaction_id: String,
    filters: FilterState,
    refused_by: Option<(RefusedBy, Reason)>,
    upstream_started: Option<Instant>,
    upstream_elapsed: Option<Duration>,
    /// The request's `Origin`, when the route's CORS settings trust it.
    cors_origin: Option<String>,
    ended_by: Option<Party>,
    /// The connection's exchange counts, which its watchdog reads (header and body timeouts).
    exchanges: Option<Arc<Exchanges>>,
    /// This request's body is still arriving (counted in `exchanges`).
    body_pending: bool,
    /// The span of the call to the API, from `upstream_peer` to its answer.
    upstream_span: Option<ChildSpan>,
    /// Request body bytes passed on so far, against the route's `max_body_bytes`.
    body_bytes: u64,
    /// The backend of the current attempt, and those an earlier attempt failed on.
    backend: Option<SocketAddr>,
    tried: Vec<SocketAddr>,
    /// The `DPoP-Nonce` this request's answer carries.
    dpop_nonce: Option<String>,
    /// The request came on the trusted hop's connection.
    via_hop: bool,
    /// This request's place in its partner's in-flight count, released with the context.
    _inflight: Option<InFlightSlot>,
}

/// The body length a request declares (the normalisation step made sure it is one integer).
fn declared_length(req: &RequestHeader) -> Option<u64> {
    req.headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Trace headers replaced on every request to the API: parsed once, not at each removal.
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Why `upstream_peer` found no backend, as its error says.
const NO_HEALTHY_BACKEND: &str = "no healthy backend";

impl RequestCtx {
    fn route(&self) -> Option<&Route> {
        self.route.and_then(|i| self.state.routes.get(i))
    }

    /// What keeps a partner on one backend under consistent hashing: its certificate, or its
    /// address without one.
    fn affinity(&self) -> &[u8] {
        match (&self.filters.client, &self.filters.source) {
            (Some(c), _) => c.thumbprint.as_bytes(),
            (None, Some(source)) => source.as_bytes(),
            (None, None) => b"",
        }
    }

    /// Records that the attempt on the current backend failed; whether another attempt can be
    /// made (the upstream allows one, and has a backend this request has not failed on).
    fn attempt_failed(&mut self, why: Failure) -> bool {
        let Some(backend) = self.backend.take() else { return false };
        let Some(upstream) = self.route().map(|r| r.upstream.clone()) else { return false };
        upstream.failed(backend, why);
        self.tried.push(backend);
        // With no other backend to try, the answer is this attempt's failure (502 or 504).
        self.tried.len() < upstream.cfg.max_attempts && upstream.select(self.affinity(), &self.tried).is_some()
    }

    /// The request goes to another backend after `why`.
    fn retrying(&self, why: Failure) -> bool {
        if let Some(route) = self.route() {
            metrics::upstream_retry(&route.upstream.cfg.name, why);
        }
        true
    }

    /// The body is in (or the exchange is over): the watchdog stops timing it.
    fn body_ended(&mut self) {
        if std::mem::take(&mut self.body_pending) {
            if let Some(exchanges) = &self.exchanges {
                exchanges.body_ended();
            }
        }
    }

    /// Headers every answer carries: the interaction id, a fresh DPoP nonce on a route that
    /// asks for them (RFC 9449 §8.2), and, for a trusted origin, CORS.
    fn response_headers(&self) -> Vec<(&'static str, &str)> {
        let mut h = vec![("x-fapi-interaction-id", self.interaction_id.as_str())];
        if let Some(nonce) = &self.dpop_nonce {
            h.push(("dpop-nonce", nonce));
        }
        if let Some(origin) = &self.cors_origin {
            h.push(("access-control-allow-origin", origin));
            h.push(("access-control-expose-headers", "www-authenticate, x-fapi-interaction-id, dpop-nonce"));
            h.push(("vary", "Origin"));
        }
        h
    }

    /// The challenges of this request's route (`Bearer` before a route is found).
    fn challenge(&self) -> respond::Challenge {
        let route = self.route.and_then(|i| self.state.routes.get(i));
        let mut c = route.map(|r| r.challenge.clone()).unwrap_or_default();
        c.used_dpop = self.filters.scheme == Some(crate::request::filters::Scheme::Dpop);
        c
    }

    fn client(&self) -> Option<&ClientCert> {
        self.filters.client.as_deref()
    }
}

impl Gateway {
    pub fn new(routing: Routing) -> Self {
        Gateway { current: Arc::new(ArcSwap::from_pointee(routing)), inflight: Arc::default(), forwarded: None }
    }

    /// A gateway on a routing that a reload replaces through `current`.
    pub fn with_handle(current: RoutingHandle) -> Self {
        Gateway { current, inflight: Arc::default(), forwarded: None }
    }

    /// Reads the partners' certificates the trusted hop forwards (on its connections only).
    pub fn with_forwarded(mut self, reader: ForwardedReader) -> Self {
        self.forwarded = Some(Arc::new(reader));
        self
    }

    /// The handle a reload stores a new routing through.
    pub fn handle(&self) -> RoutingHandle {
        self.current.clone()
    }

    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, filter: RefusedBy, r: Refusal) -> Result<bool> {
        metrics::refusal(filter, r.reason());
        ctx.refused_by = Some((filter, r.reason()));
        ctx.ended_by = Some(Party::Gateway);
        if !Self::drain(session, &ctx.state.refusals).await {
            // HTTP/1.1: close after the answer; HTTP/2 resets the stream (NO_ERROR) after it.
            session.set_keepalive(None);
        }
        let challenge = ctx.challenge();
        respond::send_for(session, &r, &ctx.response_headers(), &challenge).await?;
        Ok(true)
    }

    /// Reads and discards the request body up to `refusals.drain_bytes`, so that a client still
    /// sending it reads the refusal: some (curl 7.88 over HTTP/2) lose an answer that arrives before
    /// they finished sending. `false` when the body was not read to its end: it is larger than the
    /// bound, too slow, or waits for `100 Continue` (never sent for a refusal, RFC 9110 §10.1.1).
    async fn drain(session: &mut Session, refusals: &RefusalsConfig) -> bool {
        if session.is_body_done() {
            return true;
        }
        let req = session.req_header();
        let limit = refusals.drain_bytes;
        let declared = req.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if req.headers.contains_key(http::header::EXPECT) || declared.is_some_and(|n| n > limit as u64) {
            return false;
        }
        let read = async {
            let mut total = 0usize;
            loop {
                match session.read_request_body().await {
                    Ok(Some(chunk)) => total += chunk.len(),
                    Ok(None) => return true,
                    Err(_) => return false,
                }
                if total > limit {
                    return false;
                }
            }
        };
        tokio::time::timeout(refusals.drain_timeout, read).await.unwrap_or(false)
    }

    /// `limits.per_partner_requests` for a client without a certificate: it is known by its DPoP
    /// key, which only the binding filter has proven, so it is counted after the chain.
    fn hold_key_in_flight(&self, ctx: &mut RequestCtx) -> Result<(), Refusal> {
        let Some(jkt) = ctx.filters.proven_jkt.as_deref().filter(|_| ctx._inflight.is_none()) else {
            return Ok(());
        };
        let Some(slot) = self.inflight.acquire(Partner::key(jkt), ctx.state.partner_requests) else {
            metrics::rate_limited(Limit::PartnerRequests);
            return Err(Refusal::RateLimited { limit: Limit::PartnerRequests, retry_after: 1 });
        };
        ctx._inflight = Some(slot);
        Ok(())
    }

    /// CORS for a route that trusts web origins: remembers an allowed `Origin` for the response
    /// and answers pre-flights. `Ok(true)` means a response was sent.
    async fn cors(&self, session: &mut Session, ctx: &mut RequestCtx, index: usize) -> Result<bool> {
        let state = ctx.state.clone();
        let Some(cfg) = &state.routes[index].cfg.cors else {
            return Ok(false);
        };
        ctx.cors_origin = cors::allowed_origin(session.req_header(), cfg);
        if !cors::is_preflight(session.req_header()) {
            return Ok(false);
        }
        if ctx.cors_origin.is_none() {
            return self.refuse(session, ctx, RefusedBy::Cors, Refusal::OriginNotAllowed).await;
        }
        let answer = cors::preflight_answer(cfg, &ctx.response_headers())?;
        session.write_response_header(Box::new(answer), true).await?;
        Ok(true)
    }

    /// Continues a trusted caller's trace or starts one; the filters pass it to introspection.
    fn start_trace(session: &Session, ctx: &mut RequestCtx) {
        let source = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let partner = ctx.state.partners.name(ctx.filters.client.as_deref());
        let req = session.req_header();
        ctx.filters.trace = Some(ctx.state.tracing.start(&req.headers, source, partner, req.method.as_str()));
    }

    /// Per-connection facts from the TLS handshake: the verified client certificate and the SNI;
    /// and the client's source, which only a limit without a certificate needs: its address, or
    /// its IPv6 prefix (a host holds a whole /64), as the per-source caps count it.
    fn connection_facts(session: &Session, ctx: &mut RequestCtx) {
        let ssl = session.digest().and_then(|d| d.ssl_digest.as_ref());
        if let Some(facts) = ssl.and_then(|s| s.extension.get::<ConnectionFacts>()) {
            ctx.sni = facts.sni.clone();
            ctx.filters.client = facts.client.clone();
            ctx.exchanges = Some(facts.exchanges.clone());
            ctx.via_hop = facts.via_hop;
        }
        if ctx.filters.client.is_none() {
            let ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
            ctx.filters.source = ip.map(|ip| client_source(ip, ctx.state.ipv6_prefix));
        }
    }
}

impl Gateway {
    /// The partner's certificate the trusted hop forwarded for this request, verified as a
    /// handshake would verify it, in place of the connection's (the hop's connection has none).
    /// A refusal when the header is there but cannot be read or verified; nothing when it is
    /// absent (the request is then one without a certificate).
    async fn forwarded_certificate(&self, session: &Session, ctx: &mut RequestCtx) -> Option<Refusal> {
        let Some(reader) = &self.forwarded else {
            return None;
        };
        match reader.read(&session.req_header().headers) {
            Forwarded::Absent => {
                metrics::forwarded_certificate(ForwardedResult::Absent);
                None
            }
            Forwarded::Verified(v) => {
                if let crate::revocation::Verdict::Refused(status) = reader.revocation(&v).await {
                    return Some(Refusal::Certificate(status));
                }
                metrics::forwarded_certificate(ForwardedResult::Accepted);
                ctx.filters.client = Some(v.client.clone());
                ctx.filters.source = None;
                None
            }
            Forwarded::Refused(token, why) => {
                let result = why.map_or(ForwardedResult::Malformed, ForwardedResult::Refused);
                metrics::forwarded_certificate(result);
                log_forwarded_refusal(result);
                Some(Refusal::InvalidToken(token))
            }
        }
    }
}

/// A forwarded certificate refused: logged at most once a minute per reason (a hop sends the
/// same certificate on every request), never with the certificate itself.
fn log_forwarded_refusal(result: ForwardedResult) {
    use crate::connection::limits::Throttle;
    static THROTTLE: std::sync::LazyLock<Throttle<&'static str>> =
        std::sync::LazyLock::new(|| Throttle::new(Duration::from_secs(60)));
    if let Some(suppressed) = THROTTLE.admit(result.as_str()) {
        log::warn!(
            target: "tls",
            "forwarded client certificate refused: reason={} also_since_last_line={suppressed}",
            result.as_str()
        );
    }
}

/// The rate-limit key of a client without a certificate: its IPv4 address (also when written as
/// an IPv4-mapped IPv6 address), or its IPv6 prefix of `ipv6_prefix` bits.
fn client_source(ip: std::net::IpAddr, ipv6_prefix: u8) -> String {
    source_key(ip, ipv6_prefix).to_string()
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            state: self.current.load_full(),
            route: None,
            host: String::new(),
            sni: None,
            interaction_id: String::new(),
            filters: FilterState::default(),
            refused_by: None,
            upstream_started: None,
            upstream_elapsed: None,
            cors_origin: None,
            ended_by: None,
            exchanges: None,
            body_pending: false,
            upstream_span: None,
            body_bytes: 0,
            backend: None,
            tried: Vec::new(),
            dpop_nonce: None,
            via_hop: false,
            _inflight: None,
        }
    }

    /// Normalises the request, picks the route and runs its filters. `Ok(true)` means a refusal
    /// was already sent and the request goes no further.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.interaction_id = interaction_id(session.req_header());
        Self::connection_facts(session, ctx);
        Self::start_trace(session, ctx);
        if let Some(exchanges) = &ctx.exchanges {
            exchanges.header_read();
            if !session.is_body_empty() {
                exchanges.body_started();
                ctx.body_pending = true;
            }
        }
        if let Some(status) = ctx.client().and_then(ClientCert::refused) {
            // The revocation check (OCSP, fetched CRL) refused this certificate after the handshake.
            session.set_keepalive(None);
            return self.refuse(session, ctx, RefusedBy::Connection, Refusal::Certificate(status)).await;
        }
        if ctx.via_hop {
            if let Some(refusal) = self.forwarded_certificate(session, ctx).await {
                // The refusal is this request's certificate's: the hop's connection carries every
                // partner's requests and stays open (closing it would make one partner's bad
                // certificate cost the balancer a new handshake per request).
                return self.refuse(session, ctx, RefusedBy::Connection, refusal).await;
            }
        }
        if ctx.client().is_some_and(ClientCert::is_revoked) {
            // A reloaded CRL revoked this certificate: the connection is being ended.
            session.set_keepalive(None);
            return self
                .refuse(session, ctx, RefusedBy::Connection, Refusal::InvalidToken(Token::CertificateRevoked))
                .await;
        }
        let client = ctx.filters.client.clone();
        if let Some(c) = &client {
            let Some(slot) = self.inflight.acquire(Partner::Certificate(c.clone()), ctx.state.partner_requests) else {
                metrics::rate_limited(Limit::PartnerRequests);
                let refusal = Refusal::RateLimited { limit: Limit::PartnerRequests, retry_after: 1 };
                return self.refuse(session, ctx, RefusedBy::Limits, refusal).await;
            };
            ctx._inflight = Some(slot);
        }
        let state = ctx.state.clone();
        let conn = OnConnection { sni: ctx.sni.as_deref(), certificate: client.is_some(), via_hop: ctx.via_hop };
        match state.normalizer.apply(session.req_header_mut(), conn) {
            Ok(host) => ctx.host = host,
            Err(refusal) => {
                // Nothing else this connection sends can pass either; on the hop's connection a
                // missing certificate is one request's, not the connection's.
                let certificate = matches!(refusal, Refusal::InvalidToken(_));
                if refusal == Refusal::HeaderTooLarge || (certificate && !ctx.via_hop) {
                    session.set_keepalive(None);
                }
                return self.refuse(session, ctx, RefusedBy::Normalize, refusal).await;
            }
        }
        let Some(index) = route::find(&state.routes, &ctx.host, session.req_header().uri.path()) else {
            return self.refuse(session, ctx, RefusedBy::Router, Refusal::NoRoute).await;
        };
        ctx.route = Some(index);
        ctx.dpop_nonce = state.routes[index].dpop.as_ref().and_then(|v| v.fresh_nonce());
        // Pre-flights are answered here and never forwarded, whatever methods the route accepts.
        if self.cors(session, ctx, index).await? {
            return Ok(true);
        }
        if let Some(refusal) = state.routes[index].method_refusal(&session.req_header().method) {
            return self.refuse(session, ctx, RefusedBy::Router, refusal).await;
        }
        if declared_length(session.req_header()).is_some_and(|n| n > state.routes[index].cfg.max_body_bytes) {
            // Refused before anything is read or forwarded; the body is not read either.
            session.set_keepalive(None);
            return self.refuse(session, ctx, RefusedBy::Router, Refusal::BodyTooLarge).await;
        }
        // After a 101 every later byte on the connection would reach the API unchecked.
        if session.req_header().headers.contains_key(http::header::UPGRADE) && !state.routes[index].cfg.allow_upgrade {
            return self.refuse(session, ctx, RefusedBy::Router, Refusal::BadRequest(BadRequest::Upgrade)).await;
        }
        for filter in &state.routes[index].chain {
            if let Outcome::Respond(refusal) = filter.run(session.req_header(), &mut ctx.filters).await {
                return self.refuse(session, ctx, RefusedBy::Filter(filter.name()), refusal).await;
            }
        }
        if let Err(refusal) = self.hold_key_in_flight(ctx) {
            return self.refuse(session, ctx, RefusedBy::Limits, refusal).await;
        }
        Ok(false)
    }

    /// The backend for this attempt: a healthy one this request has not failed on yet. When
    /// there is none, the request is answered 503 at once.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let state = ctx.state.clone();
        let route =
            ctx.route.and_then(|i| state.routes.get(i)).ok_or_else(|| Error::new(ErrorType::HTTPStatus(404)))?;
        if ctx.upstream_started.is_none() {
            ctx.upstream_started = Some(Instant::now());
            if let Some(trace) = &ctx.filters.trace {
                let mut span = trace.child("upstream");
                if span.recording() {
                    span.set(opentelemetry::KeyValue::new("server.address", route.label.clone()));
                }
                ctx.upstream_span = Some(span);
            }
        }
        let Some(backend) = route.upstream.select(ctx.affinity(), &ctx.tried) else {
            return Error::e_explain(ErrorType::HTTPStatus(503), NO_HEALTHY_BACKEND);
        };
        ctx.backend = Some(backend);
        Ok(Box::new(route.upstream.peer(backend)))
    }

    /// A connection to the backend failed before anything was sent: counted against it, and
    /// tried on another backend, up to the upstream's `max_attempts`.
    fn fail_to_connect(&self, _s: &mut Session, _peer: &HttpPeer, ctx: &mut RequestCtx, e: Box<Error>) -> Box<Error> {
        let mut e = e;
        let retry = ctx.attempt_failed(Failure::Connect) && ctx.retrying(Failure::Connect);
        e.set_retry(retry);
        e
    }

    /// The exchange with the backend broke after the request was sent: counted against it, and
    /// sent again to another backend only for a method the route retries, when no answer has
    /// begun and the body can be sent again whole.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if *e.esource() != ErrorSource::Upstream || ctx.backend.is_none() {
            e.set_retry(false);
            return e;
        }
        let retries = ctx.route().is_some_and(|r| r.retries(&session.req_header().method));
        let resendable = session.response_written().is_none() && !session.as_ref().retry_buffer_truncated();
        // A pooled connection found closed, most likely by the backend while it was idle: sent
        // again for an idempotent method (pingora's own rule), never for POST or PATCH, since the
        // backend may also have closed it after acting on the request.
        let idempotent = session.req_header().method.is_idempotent();
        let stale_pool =
            client_reused && idempotent && matches!(e.etype(), ErrorType::ConnectionClosed | ErrorType::WriteError);
        let again = ctx.attempt_failed(Failure::AfterSend) && resendable && (retries || stale_pool);
        e.set_retry(again && ctx.retrying(Failure::AfterSend));
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let state = ctx.state.clone();
        let Some(route) = ctx.route.and_then(|i| state.routes.get(i)) else {
            return Error::e_explain(ErrorType::HTTPStatus(404), "no route");
        };
        if let Some(token) = &ctx.filters.token {
            upstream.insert_header(http::header::AUTHORIZATION, token.authorization.clone())?;
        }
        if let Some(host) = &route.cfg.upstream.host_header {
            upstream.insert_header(http::header::HOST, host)?;
        }
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            upstream.insert_header("x-forwarded-for", addr.ip().to_string())?;
            upstream.insert_header(http::header::FORWARDED, forwarded(addr, &ctx.host))?;
        }
        upstream.insert_header("x-forwarded-proto", "https")?;
        upstream.insert_header("x-fapi-interaction-id", &ctx.interaction_id)?;
        // What the caller sent is replaced: it was continued only if trusted.
        upstream.remove_header(&TRACESTATE);
        if !ctx.filters.trace.as_ref().is_some_and(|t| t.from_trusted_caller()) {
            for name in crate::trace::caller_only_headers(&upstream.headers) {
                upstream.remove_header(&name);
            }
        }
        if let Some(span) = &ctx.upstream_span {
            upstream.insert_header("traceparent", span.traceparent())?;
            if let Some(state) = span.tracestate() {
                upstream.insert_header("tracestate", state)?;
            }
        } else {
            upstream.remove_header(&TRACEPARENT);
        }
        if route.cfg.forward_client_cert {
            if let Some(client) = ctx.client() {
                // RFC 9440 §2: the DER of the verified leaf, encoded once at handshake.
                upstream.insert_header("client-cert", client.client_cert_header.clone())?;
            }
        }
        Ok(())
    }

    async fn response_filter(&self, _s: &mut Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        if let (Some(route), Some(backend)) = (ctx.route(), ctx.backend) {
            route.upstream.succeeded(backend);
        }
        if let Some(start) = ctx.upstream_started {
            ctx.upstream_elapsed = Some(start.elapsed());
        }
        if let Some(mut span) = ctx.upstream_span.take() {
            if span.recording() {
                span.set(opentelemetry::KeyValue::new("http.response.status_code", i64::from(resp.status.as_u16())));
            }
            span.end((resp.status.as_u16() >= 500).then_some("upstream error status"));
        }
        for (name, value) in ctx.response_headers() {
            resp.insert_header(name, value)?;
        }
        Ok(())
    }

    /// Failures become JSON answers, blamed on whoever caused them: a client that went away gets
    /// nothing, one that sent something pingora could not forward gets 400; an unreachable API is
    /// 502, a slow one 504.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let party = Party::of(e);
        ctx.ended_by = Some(party);
        if let Some(span) = ctx.upstream_span.take() {
            span.end(Some(e.etype().as_str()));
        }
        let io = matches!(
            e.etype(),
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed | ErrorType::H2Error
        );
        let refusal = match (party, e.etype()) {
            (Party::Client, _) if io => {
                log::info!("client ended the exchange: {e}");
                return FailToProxy { error_code: 0, can_reuse_downstream: false };
            }
            (Party::Client, _) => Refusal::BadRequest(BadRequest::Malformed),
            (_, ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
                Refusal::UpstreamTimeout
            }
            (_, ErrorType::HTTPStatus(404)) => Refusal::NoRoute,
            (_, ErrorType::HTTPStatus(503)) => Refusal::NoHealthyBackend,
            (_, ErrorType::HTTPStatus(413)) => Refusal::BodyTooLarge,
            _ => Refusal::UpstreamUnavailable,
        };
        if party == Party::Client {
            log::warn!("client error, answered {}: {e}", refusal.status());
        }
        let who = match (&refusal, party) {
            (Refusal::BodyTooLarge, _) => RefusedBy::Limits,
            (_, Party::Client) => RefusedBy::Client,
            _ => RefusedBy::Upstream,
        };
        ctx.refused_by = Some((who, refusal.reason()));
        if party != Party::Client && session.response_written().is_none() {
            // The API failed before the body was forwarded: the 502 must arrive like a refusal.
            let state = ctx.state.clone();
            Self::drain(session, &state.refusals).await;
        }
        // pingora closes the connection after a failed proxy attempt whatever this returns (its
        // `finish` reuses it only after a clean exchange): the answer must say so first, or a
        // keep-alive client loses the next request it sends on it.
        session.set_keepalive(None);
        if let Err(err) = respond::send(session, &refusal, &ctx.response_headers()).await {
            log::debug!("could not send the error response: {err}");
        }
        FailToProxy { error_code: refusal.status(), can_reuse_downstream: false }
    }

    /// Client-caused failures are logged by `fail_to_proxy` at INFO or WARN, as the client's doing;
    /// pingora's ERROR line is kept for the gateway's and the upstream's failures.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        Party::of(e) == Party::Client
    }

    /// Counts the body a chunk at a time: a chunked or HTTP/2 body that grows past the route's
    /// limit ends the exchange before the chunk that crosses it is forwarded, so the API never
    /// has more than the limit (`fail_to_proxy` answers 413 when no answer has begun).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.route().is_some_and(|r| ctx.body_bytes > r.cfg.max_body_bytes) {
            *body = None;
            return Error::e_explain(ErrorType::HTTPStatus(413), "the request body grew past the route's limit");
        }
        if end_of_stream {
            ctx.body_ended();
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.body_ended();
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        let (route, series) = match ctx.route.and_then(|i| ctx.state.routes.get(i)) {
            Some(r) => (r.label.as_str(), &r.series),
            None => ("-", &metrics::NO_ROUTE),
        };
        let elapsed = ctx.started.elapsed();
        metrics::request(series, route, status, elapsed);
        let label = ctx.state.partners.label(ctx.filters.client.as_deref());
        let partner = label.name.as_str();
        metrics::partner_request(&label.series, partner, status, elapsed, ctx.refused_by.map(|r| r.1));
        if let Some(client) = &ctx.filters.client {
            ctx.state.partners.saw(partner, client);
        }
        if let Some(span) = ctx.upstream_span.take() {
            span.end(Some("no answer"));
        }
        if let Some(trace) = ctx.filters.trace.as_ref().filter(|t| t.exported()) {
            Self::finish_trace(session, ctx, trace, route, status, partner);
        }
        if !log::log_enabled!(target: "access", log::Level::Info) {
            return;
        }
        let req = session.req_header();
        let ended_by = ctx.ended_by.or(e.map(Party::of)).unwrap_or(Party::Upstream);
        let client = ctx.client();
        let line = AccessLine {
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            upstream_ms: ctx.upstream_elapsed.map(|d| d.as_secs_f64() * 1000.0),
            client: client.map(|c| c.subject.as_str()),
            x5t: client.map(|c| &c.thumbprint[..c.thumbprint.len().min(8)]),
            token: ctx.filters.token_id.as_deref(),
            cache: ctx.filters.cache,
            refused_by: ctx.refused_by.map(|r| r.0),
            reason: ctx.refused_by.map(|r| r.1),
            ended_by,
            interaction_id: &ctx.interaction_id,
            error: e.map(|e| e.etype().as_str()),
            backend: ctx.backend.or(ctx.tried.last().copied()).map(|b| b.to_string()),
            retries: ctx.tried.len().saturating_sub(usize::from(ctx.backend.is_none())),
        };
        match ctx.state.access_format {
            AccessFormat::Text => log::info!(target: "access", "{}", line.text()),
            AccessFormat::Json => log::info!(target: "access", "{}", line.json()),
        }
    }
}

impl Gateway {
    /// Ends the request span with what the access line says.
    fn finish_trace(
        session: &Session,
        ctx: &RequestCtx,
        trace: &crate::trace::RequestTrace,
        route: &str,
        status: u16,
        partner: &str,
    ) {
        use opentelemetry::KeyValue;
        let method = session.req_header().method.as_str();
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("http.route", route.to_string()),
            KeyValue::new("mtls_gateway.partner", partner.to_string()),
            KeyValue::new("mtls_gateway.interaction_id", ctx.interaction_id.clone()),
        ];
        if let Some((filter, reason)) = ctx.refused_by {
            attributes.push(KeyValue::new("mtls_gateway.refused_by", filter.as_str()));
            attributes.push(KeyValue::new("mtls_gateway.reason", reason.as_str()));
        }
        trace.finish(format!("{method} {route}"), status, attributes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{CorsConfig, HeaderPattern, HttpMethod, RouteConfig};
    use crate::host::HostPattern;
    use crate::request::filters::{build_chain, ChainParts};
    use crate::request::headers::StripList;
    use std::collections::BTreeMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn gateway(cors: Option<CorsConfig>) -> Gateway {
        gateway_with(cors, None)
    }

    fn gateway_with(cors: Option<CorsConfig>, methods: Option<Vec<HttpMethod>>) -> Gateway {
        let upstream = route::test_upstream("127.0.0.1:9");
        let route = RouteConfig {
            host: HostPattern::parse("api.example.com").unwrap(),
            path_prefix: "/api/".into(),
            upstream,
            methods,
            filters: vec![serde_yaml::from_str("cert_binding: {}").unwrap()],
            forward_client_cert: false,
            allow_upgrade: false,
            cors,
            retry_methods: vec![HttpMethod::GET],
            max_body_bytes: 1 << 20,
        };
        let parts = ChainParts { introspectors: BTreeMap::new(), miss_limit: None, dpop: None, cluster: None };
        let chain = build_chain(&route.filters, &parts, "api").unwrap();
        let upstream = Arc::new(Upstream::new(route.upstream.clone()).unwrap());
        upstream.resolve().unwrap();
        let normalizer = Normalizer {
            strip: StripList::new(&[HeaderPattern::parse("x-evil").unwrap()]),
            default_hosts: vec![HostPattern::parse("api.example.com").unwrap()],
            certificate_optional: Vec::new(),
            max_header_bytes: 64 * 1024,
        };
        let refusals = RefusalsConfig { drain_bytes: 1024, drain_timeout: Duration::from_secs(1) };
        Gateway::new(Routing::new(vec![Route::new(route, chain, upstream)], normalizer, refusals))
    }

    /// Feeds raw request bytes to a pingora session over in-memory IO, runs `request_filter`, and
    /// returns whether it answered, what the client received, and the request as the filters left it.
    async fn run(gw: &Gateway, request: &str) -> (bool, String, RequestHeader) {
        run_on(gw, request.as_bytes(), None).await.expect("pingora parses the request")
    }

    /// The same on a connection opened for `sni`; `None` when pingora itself refused the request
    /// before the gateway saw it.
    async fn run_on(gw: &Gateway, request: &[u8], sni: Option<&str>) -> Option<(bool, String, RequestHeader)> {
        run_with(gw, request, sni, true).await
    }

    /// As [`run_on`], on a connection with a client certificate or without one.
    async fn run_with(
        gw: &Gateway,
        request: &[u8],
        sni: Option<&str>,
        certificate: bool,
    ) -> Option<(bool, String, RequestHeader)> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut session = Session::new_h1(Box::new(server));
        client.write_all(request).await.unwrap();
        if !matches!(session.read_request().await, Ok(true)) {
            return None;
        }
        let mut ctx = gw.new_ctx();
        ctx.sni = sni.map(str::to_string);
        ctx.filters.client = certificate.then(|| crate::request::filters::test_support::client("x5t"));
        let answered = gw.request_filter(&mut session, &mut ctx).await.unwrap();
        let header = session.req_header().clone();
        drop(session);
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        Some((answered, out, header))
    }

    /// Raw request, the connection's SNI, and the expected status and a word of the body.
    type Row<'a> = (&'a [u8], Option<&'a str>, Option<(u16, &'a str)>);

    /// The normalisation step on real HTTP/1.1 bytes through pingora's parser: each row is the
    /// request, the connection's SNI, and the status and reason the client must read (`None`:
    /// pingora refuses it itself, before the gateway).
    #[tokio::test]
    async fn the_normalisation_step_refuses_every_malformed_request_with_json() {
        const API: Option<&str> = Some("api.example.com");
        let table: &[Row] = &[
            (b"delete /api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", API, Some((400, "upper case"))),
            (b"Delete /api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", API, Some((400, "upper case"))),
            (b"FOO /api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", API, Some((501, "not_implemented"))),
            (
                b"GET /api/x HTTP/1.1\r\nHost: api.example.com\r\nX-HTTP-Method-Override: DELETE\r\n\r\n",
                API,
                Some((400, "override")),
            ),
            (b"GET /api/a\x00b HTTP/1.1\r\nHost: api.example.com\r\n\r\n", API, Some((400, "control character"))),
            (b"GET /api/a\x7fb HTTP/1.1\r\nHost: api.example.com\r\n\r\n", API, Some((400, "control character"))),
            (b"GET /api/a\x1bb HTTP/1.1\r\nHost: api.example.com\r\n\r\n", API, Some((400, "control character"))),
            (
                b"POST /api/x HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5,5\r\n\r\nhello",
                API,
                Some((400, "Content-Length")),
            ),
            (
                b"POST /api/x HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                API,
                Some((400, "Content-Length")),
            ),
            (b"POST /api/x HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5,6\r\n\r\nhello", API, None),
            (b"POST /api/x HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: -5\r\n\r\n", API, None),
            (
                b"GET /api/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close, :authority\r\n\r\n",
                API,
                Some((400, "Connection")),
            ),
            (b"GET /api/x HTTP/1.1\r\nHost: login.example.com\r\n\r\n", API, Some((421, "misdirected_request"))),
            (b"GET /api/x HTTP/1.1\r\nHost: login.example.com\r\n\r\n", None, Some((421, "misdirected_request"))),
            (b"GET /api/x HTTP/1.0\r\n\r\n", API, Some((400, "malformed"))),
            // Passes the step; the route's only filter (cert_binding) then finds no token.
            (b"GET /api/x HTTP/1.1\r\nHost: API.example.com:443\r\n\r\n", API, Some((401, "unauthorized"))),
            (
                b"GET /api/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close, x-forwarded-for\r\n\r\n",
                API,
                Some((401, "unauthorized")),
            ),
        ];
        for (request, sni, want) in table {
            let shown = String::from_utf8_lossy(request).escape_debug().to_string();
            let got = run_on(&gateway(None), request, *sni).await;
            let (Some((answered, out, _)), Some((status, text))) = (&got, want) else {
                assert!(got.is_none() && want.is_none(), "{shown}: {:?}", got.map(|g| g.1));
                continue;
            };
            assert!(answered, "{shown}");
            assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{shown}: {out}");
            assert!(out.contains("content-type: application/json") && out.contains(text), "{shown}: {out}");
        }
    }

    #[test]
    fn clients_without_a_certificate_are_limited_per_ipv6_prefix() {
        let source = |ip: &str, prefix| client_source(ip.parse().unwrap(), prefix);
        assert_eq!(source("2001:db8:1:2::1", 64), source("2001:db8:1:2:ffff:1:2:3", 64), "one /64, one bucket");
        assert_ne!(source("2001:db8:1:2::1", 64), source("2001:db8:1:3::1", 64), "another /64");
        assert_eq!(source("2001:db8:1:2::1", 48), source("2001:db8:1:3::1", 48));
        assert_ne!(source("2001:db8::1", 128), source("2001:db8::2", 128));
        assert_eq!(source("::ffff:192.0.2.7", 64), "192.0.2.7", "an IPv4 client is its address");
        assert_ne!(source("192.0.2.7", 64), source("192.0.2.8", 64));
    }

    #[tokio::test]
    async fn a_raw_space_reaches_the_gateway_already_escaped_by_pingora() {
        // pingora 0.9.1's HTTP/1.1 parser percent-encodes the target of a request line it cannot
        // parse; the gateway then sees `%20`, which a client may legitimately send.
        let req = b"GET /api/a b HTTP/1.1\r\nHost: api.example.com\r\n\r\n";
        let (_, _, header) = run_on(&gateway(None), req, Some("api.example.com")).await.unwrap();
        assert_eq!(header.raw_path(), b"/api/a%20b");
    }

    #[tokio::test]
    async fn a_route_listing_methods_answers_405_with_allow() {
        let gw = gateway_with(None, Some(vec![HttpMethod::POST, HttpMethod::GET]));
        let (_, out, _) = run(&gw, "DELETE /api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 405") && out.contains("allow: GET, HEAD, POST"), "{out}");
        assert!(out.contains("\"code\":\"method_not_allowed\""), "{out}");
        let (_, out, _) = run(&gw, "HEAD /api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 401"), "HEAD comes with GET: {out}");
    }

    #[tokio::test]
    async fn connection_nominating_a_gateway_header_is_trimmed_not_refused() {
        let req = "GET /api/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close, X-Forwarded-For, x-trace\r\n\r\n";
        let (_, _, header) = run(&gateway(None), req).await;
        assert_eq!(header.headers["connection"], "close, x-trace");
    }

    /// A refused request's body is read first when it is small, so the client reads the answer
    /// and the connection stays usable; a larger one gets the answer and `Connection: close`.
    #[tokio::test]
    async fn refusals_read_a_small_body_first_and_close_after_a_large_one() {
        let post = |n: usize| {
            format!("POST /api/x HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: {n}\r\n\r\n{}", "a".repeat(n))
        };
        let gw = gateway(None);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut session = Session::new_h1(Box::new(server));
        client.write_all(post(1000).as_bytes()).await.unwrap();
        assert!(session.read_request().await.unwrap());
        let mut ctx = gw.new_ctx();
        ctx.filters.client = Some(crate::request::filters::test_support::client("x5t"));
        assert!(gw.request_filter(&mut session, &mut ctx).await.unwrap());
        assert!(session.is_body_done(), "the 1000-byte body was read before the refusal");
        assert!(session.get_keepalive().is_some());
        drop(session);
        let (_, out, _) = run(&gw, &post(2000)).await;
        assert!(out.starts_with("HTTP/1.1 401") && out.to_ascii_lowercase().contains("connection: close"), "{out}");
    }

    #[tokio::test]
    async fn identity_headers_are_stripped_before_any_filter_and_no_certificate_is_401() {
        let req = "POST /api/transactions HTTP/1.1\r\nHost: api.example.com\r\nClient-Cert: :AAAA:\r\n\
                   X-Forwarded-Client-Cert: x\r\nX-Evil: 1\r\nx-fapi-interaction-id: c770aef3-6784-41f7-8e0e-ff5f97bddb3a\r\n\
                   Content-Length: 0\r\n\r\n";
        let (answered, out, header) = run_with(&gateway(None), req.as_bytes(), None, false).await.unwrap();
        assert!(answered);
        for h in ["client-cert", "x-forwarded-client-cert", "x-evil"] {
            assert!(header.headers.get(h).is_none(), "{h} survived");
        }
        assert!(out.starts_with("HTTP/1.1 401"), "{out}");
        assert!(out.to_ascii_lowercase().contains("www-authenticate: bearer error=\"invalid_token\""), "{out}");
        assert!(out.contains("x-fapi-interaction-id: c770aef3-6784-41f7-8e0e-ff5f97bddb3a"), "{out}");
        assert!(out.ends_with(crate::request::respond::UNAUTHORIZED_BODY), "{out}");
    }

    #[tokio::test]
    async fn unknown_paths_get_a_json_404_and_head_gets_no_body() {
        let (answered, out, _) = run(&gateway(None), "GET /other/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n").await;
        assert!(answered);
        assert!(out.starts_with("HTTP/1.1 404") && out.contains("\"code\":\"not_found\""), "{out}");
        let (_, out, _) = run(&gateway(None), "HEAD /api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 401") && out.ends_with("\r\n\r\n"), "{out}");
    }

    #[tokio::test]
    async fn dot_segment_paths_cannot_reach_another_route() {
        for path in ["/api/../admin/users", "/api/%2e%2e/admin/users"] {
            let (answered, out, _) =
                run(&gateway(None), &format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\n\r\n")).await;
            assert!(answered);
            assert!(out.starts_with("HTTP/1.1 400") && out.contains("invalid_request"), "{path}: {out}");
        }
    }

    #[tokio::test]
    async fn cors_preflight_only_for_trusted_origins() {
        let cors = CorsConfig {
            origins: vec!["https://portal.example.com".into()],
            methods: "GET, POST".into(),
            headers: "authorization".into(),
            max_age: "600".into(),
        };
        let gw = gateway(Some(cors));
        let preflight = |origin: &str| {
            format!(
                "OPTIONS /api/transactions HTTP/1.1\r\nHost: api.example.com\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: POST\r\n\r\n"
            )
        };
        let (answered, out, _) = run(&gw, &preflight("https://portal.example.com")).await;
        assert!(answered);
        assert!(out.starts_with("HTTP/1.1 204"), "{out}");
        assert!(out.contains("access-control-allow-origin: https://portal.example.com"), "{out}");
        assert!(out.contains("access-control-allow-methods: GET, POST"), "{out}");
        let (_, out, _) = run(&gw, &preflight("https://evil.example.com")).await;
        assert!(out.starts_with("HTTP/1.1 403") && !out.contains("access-control-allow-origin"), "{out}");
        // Without CORS configured a pre-flight is just a request without a token.
        let (_, out, _) = run(&gateway(None), &preflight("https://portal.example.com")).await;
        assert!(out.starts_with("HTTP/1.1 401") && !out.contains("access-control-allow-origin"), "{out}");
        // A refusal for a trusted origin carries the CORS headers, so the browser can read it.
        let (_, out, _) = run(&gw, "POST /api/transactions HTTP/1.1\r\nHost: api.example.com\r\nOrigin: https://portal.example.com\r\nContent-Length: 0\r\n\r\n").await;
        assert!(
            out.starts_with("HTTP/1.1 401") && out.contains("access-control-allow-origin: https://portal.example.com"),
            "{out}"
        );
    }
}
