//! The HTTP side of the gateway: a pingora `ProxyHttp` that routes by host and path prefix, runs
//! the route's filter chain in `request_filter`, forwards the JWT to the API over verified TLS, and
//! writes one access-log line and the metrics for every request.

use crate::config::{Config, CorsConfig, RouteConfig, UpstreamConfig};
use crate::filters::{build_chain, Filter, FilterState, Outcome};
use crate::introspect::Introspector;
use crate::issuer::TokenIssuer;
use crate::metrics;
use crate::respond::{self, Refusal};
use crate::tls::{b64url, ClientCert};
use async_trait::async_trait;
use base64::Engine;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Request headers that could carry a client identity: a client must never be able to set them.
const IDENTITY_HEADERS: &[&str] = &[
    "client-cert",
    "client-cert-chain",
    "x-forwarded-client-cert",
    "x-client-cert",
    "x-ssl-client-cert",
    "x-example-client-public-key",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

struct Route {
    cfg: RouteConfig,
    label: String,
    chain: Vec<Box<dyn Filter>>,
    peer: HttpPeer,
}

pub struct Gateway {
    routes: Vec<Route>,
    strip_headers: Vec<String>,
}

/// Per-request context.
pub struct RequestCtx {
    started: Instant,
    route: Option<usize>,
    /// The request's host (Host header or :authority), lower case, without the port.
    host: String,
    interaction_id: String,
    client: Option<Arc<ClientCert>>,
    filters: FilterState,
    refused_by: Option<(&'static str, &'static str)>,
    upstream_started: Option<Instant>,
    upstream_elapsed: Option<Duration>,
    /// The request's `Origin`, when the route's CORS settings trust it.
    cors_origin: Option<String>,
}

impl RequestCtx {
    /// Headers every answer carries: the interaction id and, for a trusted origin, CORS.
    fn response_headers(&self) -> Vec<(&'static str, &str)> {
        let mut h = vec![("x-fapi-interaction-id", self.interaction_id.as_str())];
        if let Some(origin) = &self.cors_origin {
            h.push(("access-control-allow-origin", origin));
            h.push(("access-control-expose-headers", "www-authenticate, x-fapi-interaction-id"));
            h.push(("vary", "Origin"));
        }
        h
    }
}

impl Gateway {
    /// Builds routes, filter chains and one shared introspector (and cache) per introspection section.
    pub fn new(cfg: &Config, issuer: Option<Arc<TokenIssuer>>) -> std::result::Result<Self, String> {
        let mut introspectors = BTreeMap::new();
        for (name, i) in &cfg.introspection {
            introspectors.insert(name.clone(), Arc::new(Introspector::new(i.clone(), issuer.clone())?));
        }
        Self::build(&cfg.routes, &introspectors, &cfg.strip_headers)
    }

    fn build(
        routes: &[RouteConfig],
        introspectors: &BTreeMap<String, Arc<Introspector>>,
        extra_strip: &[String],
    ) -> std::result::Result<Self, String> {
        let routes = routes
            .iter()
            .map(|r| {
                Ok(Route {
                    label: format!("{}{}", r.host, r.path_prefix),
                    chain: build_chain(&r.filters, introspectors)?,
                    peer: upstream_peer(&r.upstream)?,
                    cfg: r.clone(),
                })
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        let mut strip_headers: Vec<String> = IDENTITY_HEADERS.iter().map(|s| s.to_string()).collect();
        strip_headers.extend(extra_strip.iter().cloned());
        Ok(Gateway { routes, strip_headers })
    }

    fn find_route(&self, host: &str, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.cfg.host.matches(host) && path.starts_with(&r.cfg.path_prefix))
    }

    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, filter: &'static str, r: Refusal) -> Result<bool> {
        metrics::refusal(filter, r.reason());
        ctx.refused_by = Some((filter, r.reason()));
        respond::send(session, &r, &ctx.response_headers()).await?;
        Ok(true)
    }

    /// CORS for a route that trusts web origins: remembers an allowed `Origin` for the response
    /// and answers pre-flights itself (they carry no token). `Ok(true)` means a response was sent.
    async fn cors(&self, session: &mut Session, ctx: &mut RequestCtx, cors: &CorsConfig) -> Result<bool> {
        let req = session.req_header();
        let origin = req.headers.get("origin").and_then(|o| o.to_str().ok()).filter(|o| cors.allows(o));
        ctx.cors_origin = origin.map(str::to_string);
        let preflight = req.method == http::Method::OPTIONS && req.headers.contains_key("access-control-request-method");
        if !preflight {
            return Ok(false);
        }
        if ctx.cors_origin.is_none() {
            return self.refuse(session, ctx, "cors", Refusal::OriginNotAllowed).await;
        }
        let mut h = ResponseHeader::build(204, Some(8))?;
        for (name, value) in ctx.response_headers() {
            h.insert_header(name, value)?;
        }
        h.insert_header("access-control-allow-methods", &cors.methods)?;
        h.insert_header("access-control-allow-headers", &cors.headers)?;
        h.insert_header("access-control-max-age", &cors.max_age)?;
        h.insert_header("content-length", "0")?;
        session.write_response_header(Box::new(h), true).await?;
        Ok(true)
    }
}

/// The pooled, verified TLS connection settings for one upstream API.
fn upstream_peer(u: &UpstreamConfig) -> std::result::Result<HttpPeer, String> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(u.address.as_str())
        .map_err(|e| format!("upstreams.{}.address: cannot resolve {}: {e}", u.name, u.address))?
        .next()
        .ok_or_else(|| format!("upstreams.{}.address: {} resolves to no address", u.name, u.address))?;
    let mut peer = HttpPeer::new(addr, u.tls, u.sni.clone());
    if let Some(ca) = &u.ca {
        let certs = crate::tls::read_certs(ca)?;
        peer.options.ca = Some(Arc::new(certs.into_boxed_slice()));
    }
    peer.options.verify_cert = true;
    peer.options.verify_hostname = true;
    peer.options.connection_timeout = Some(u.connect_timeout);
    peer.options.total_connection_timeout = Some(u.connect_timeout * 2);
    peer.options.read_timeout = Some(u.read_timeout);
    peer.options.write_timeout = Some(u.write_timeout);
    peer.options.idle_timeout = Some(u.idle_timeout);
    // The pool key does not include the CA: keep upstreams with different trust apart.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (u.name.as_str(), u.ca.as_ref()).hash(&mut h);
    peer.group_key = h.finish();
    Ok(peer)
}

/// Host from the `Host` header (HTTP/1.1) or the URI authority (HTTP/2), without the port.
fn request_host(req: &RequestHeader) -> Option<String> {
    let raw = match req.headers.get(http::header::HOST) {
        Some(h) => h.to_str().ok()?.to_string(),
        None => req.uri.host()?.to_string(),
    };
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw.as_str(),
    };
    Some(host.to_ascii_lowercase())
}

/// Whether a path has `.` or `..` segments (also percent-encoded, or split by backslashes), which
/// an upstream may resolve differently from the prefix match that chose the route.
fn has_dot_segments(path: &str) -> bool {
    if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return false;
    }
    let lower = path.to_ascii_lowercase().replace("%2e", ".").replace('\\', "/").replace("%5c", "/").replace("%2f", "/");
    lower.split('/').any(|seg| seg == "." || seg == "..")
}

/// FAPI: echo a valid `x-fapi-interaction-id` (a UUID), otherwise make one.
fn interaction_id(req: &RequestHeader) -> String {
    req.headers
        .get("x-fapi-interaction-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v).ok())
        .unwrap_or_else(uuid::Uuid::new_v4)
        .to_string()
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            route: None,
            host: String::new(),
            interaction_id: String::new(),
            client: None,
            filters: FilterState::default(),
            refused_by: None,
            upstream_started: None,
            upstream_elapsed: None,
            cors_origin: None,
        }
    }

    /// Strips identity headers, picks the route and runs its filters. `Ok(true)` means a refusal
    /// was already sent and the request goes no further.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.interaction_id = interaction_id(session.req_header());
        for name in &self.strip_headers {
            session.req_header_mut().remove_header(name.as_str());
        }
        if let Some(ssl) = session.digest().and_then(|d| d.ssl_digest.clone()) {
            if !ssl.cert_digest.is_empty() {
                ctx.filters.client_thumbprint = Some(b64url(&ssl.cert_digest));
            }
            ctx.client = ssl.extension.get::<Arc<ClientCert>>().cloned();
        }
        if has_dot_segments(session.req_header().uri.path()) {
            // "/api/../admin" would match the /api/ route here and reach /admin at the API.
            return self.refuse(session, ctx, "router", Refusal::InvalidRequest("dot segments in the path")).await;
        }
        ctx.host = request_host(session.req_header()).unwrap_or_default();
        let Some(index) = self.find_route(&ctx.host, session.req_header().uri.path()) else {
            return self.refuse(session, ctx, "router", Refusal::NoRoute).await;
        };
        ctx.route = Some(index);
        if let Some(cors) = &self.routes[index].cfg.cors {
            if self.cors(session, ctx, cors).await? {
                return Ok(true);
            }
        }
        for filter in &self.routes[index].chain {
            if let Outcome::Respond(refusal) = filter.run(session.req_header(), &mut ctx.filters).await {
                return self.refuse(session, ctx, filter.name(), refusal).await;
            }
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let route = ctx.route.and_then(|i| self.routes.get(i)).ok_or_else(|| Error::new(ErrorType::HTTPStatus(404)))?;
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(route.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.and_then(|i| self.routes.get(i)) else {
            return Error::e_explain(ErrorType::HTTPStatus(404), "no route");
        };
        if let Some(token) = &ctx.filters.token {
            upstream.insert_header("authorization", format!("Bearer {}", token.jwt))?;
        }
        if let Some(host) = &route.cfg.upstream.host_header {
            upstream.insert_header("host", host)?;
        }
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            upstream.insert_header("x-forwarded-for", addr.ip().to_string())?;
            upstream.insert_header("forwarded", forwarded(addr, &ctx.host))?;
        }
        upstream.insert_header("x-forwarded-proto", "https")?;
        upstream.insert_header("x-fapi-interaction-id", &ctx.interaction_id)?;
        if route.cfg.forward_client_cert {
            if let Some(client) = &ctx.client {
                // RFC 9440 §2: the DER of the verified leaf as a structured-field byte sequence.
                let b64 = base64::engine::general_purpose::STANDARD.encode(&client.der);
                upstream.insert_header("client-cert", format!(":{b64}:"))?;
            }
        }
        Ok(())
    }

    async fn response_filter(&self, _s: &mut Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        if let Some(start) = ctx.upstream_started {
            ctx.upstream_elapsed = Some(start.elapsed());
        }
        for (name, value) in ctx.response_headers() {
            resp.insert_header(name, value)?;
        }
        Ok(())
    }

    /// API failures become JSON answers: unreachable 502, too slow 504.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let refusal = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => Refusal::UpstreamTimeout,
            ErrorType::HTTPStatus(404) => Refusal::NoRoute,
            _ => Refusal::UpstreamUnavailable,
        };
        let downstream_gone =
            matches!(e.etype(), ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed)
                && e.esource() == &pingora_core::ErrorSource::Downstream;
        if downstream_gone {
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        }
        ctx.refused_by = Some(("upstream", refusal.reason()));
        if let Err(err) = respond::send(session, &refusal, &ctx.response_headers()).await {
            log::debug!("could not send the error response: {err}");
        }
        FailToProxy { error_code: refusal.status(), can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        let route = ctx.route.and_then(|i| self.routes.get(i)).map(|r| r.label.as_str()).unwrap_or("-");
        let elapsed = ctx.started.elapsed();
        metrics::request(route, status, elapsed);
        let req = session.req_header();
        let (refused, reason) = ctx.refused_by.unwrap_or(("-", "-"));
        log::info!(
            target: "access",
            "method={} path={} status={} duration_ms={:.2} upstream_ms={} client=\"{}\" x5t={} token={} cache={} refused_by={} reason={} interaction_id={} error={}",
            req.method,
            req.uri.path(),
            status,
            elapsed.as_secs_f64() * 1000.0,
            ctx.upstream_elapsed.map(|d| format!("{:.2}", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "-".into()),
            ctx.client.as_ref().map(|c| c.subject.as_str()).unwrap_or("-"),
            ctx.filters.client_thumbprint.as_deref().map(|t| &t[..t.len().min(8)]).unwrap_or("-"),
            ctx.filters.token_id.as_deref().unwrap_or("-"),
            ctx.filters.cache.map(|c| c.as_str()).unwrap_or("-"),
            refused,
            reason,
            ctx.interaction_id,
            e.map(|e| e.etype().as_str()).unwrap_or("-"),
        );
    }
}

/// RFC 7239 `Forwarded` element for this hop.
fn forwarded(addr: &std::net::SocketAddr, host: &str) -> String {
    let for_ = match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':')).collect();
    format!("for={for_};host={host};proto=https")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        for bad in ["/api/../admin", "/api/./x", "/api/%2e%2e/admin", "/api/%2E./admin", "/api/..%2fadmin", "/api/..\\admin", "/api/.."] {
            assert!(has_dot_segments(bad), "{bad}");
        }
        for ok in ["/api/transactions", "/api/v1.2/x", "/api/...", "/api/.well-known"] {
            assert!(!has_dot_segments(ok), "{ok}");
        }
    }

    #[test]
    fn host_comes_without_port_and_lower_case() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("host", "API.example.com:8443").unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("api.example.com"));
    }

    #[test]
    fn interaction_id_is_echoed_only_when_a_uuid() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("x-fapi-interaction-id", "c770aef3-6784-41f7-8e0e-ff5f97bddb3a").unwrap();
        assert_eq!(interaction_id(&r), "c770aef3-6784-41f7-8e0e-ff5f97bddb3a");
        r.insert_header("x-fapi-interaction-id", "<script>").unwrap();
        assert_ne!(interaction_id(&r), "<script>");
    }

    use crate::config::{FilterConfig, HostPattern};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn gateway(cors: Option<CorsConfig>) -> Gateway {
        let d = Duration::from_secs(1);
        let upstream = Arc::new(UpstreamConfig {
            name: "api".into(),
            address: "127.0.0.1:9".into(),
            tls: false,
            sni: "api".into(),
            ca: None,
            host_header: None,
            connect_timeout: d,
            read_timeout: d,
            write_timeout: d,
            idle_timeout: d,
        });
        let route = RouteConfig {
            host: HostPattern::parse("api.example.com").unwrap(),
            path_prefix: "/api/".into(),
            upstream,
            filters: vec![FilterConfig::CertBinding],
            forward_client_cert: false,
            cors,
        };
        Gateway::build(&[route], &BTreeMap::new(), &["x-evil".to_string()]).unwrap()
    }

    /// Feeds raw request bytes to a pingora session over in-memory IO, runs `request_filter`, and
    /// returns whether it answered, what the client received, and the request as the filters left it.
    async fn run(gw: &Gateway, request: &str) -> (bool, String, RequestHeader) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut session = Session::new_h1(Box::new(server));
        client.write_all(request.as_bytes()).await.unwrap();
        assert!(session.read_request().await.unwrap());
        let mut ctx = gw.new_ctx();
        let answered = gw.request_filter(&mut session, &mut ctx).await.unwrap();
        let header = session.req_header().clone();
        drop(session);
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        (answered, out, header)
    }

    #[tokio::test]
    async fn identity_headers_are_stripped_before_any_filter_and_no_certificate_is_401() {
        let req = "POST /api/transactions HTTP/1.1\r\nHost: api.example.com\r\nClient-Cert: :AAAA:\r\n\
                   X-Forwarded-Client-Cert: x\r\nX-Evil: 1\r\nx-fapi-interaction-id: c770aef3-6784-41f7-8e0e-ff5f97bddb3a\r\n\
                   Content-Length: 0\r\n\r\n";
        let (answered, out, header) = run(&gateway(None), req).await;
        assert!(answered);
        for h in ["client-cert", "x-forwarded-client-cert", "x-evil"] {
            assert!(header.headers.get(h).is_none(), "{h} survived");
        }
        assert!(out.starts_with("HTTP/1.1 401"), "{out}");
        assert!(out.to_ascii_lowercase().contains("www-authenticate: bearer error=\"invalid_token\""), "{out}");
        assert!(out.contains("x-fapi-interaction-id: c770aef3-6784-41f7-8e0e-ff5f97bddb3a"), "{out}");
        assert!(out.ends_with(crate::respond::UNAUTHORIZED_BODY), "{out}");
    }

    #[tokio::test]
    async fn unknown_hosts_get_a_json_404_and_head_gets_no_body() {
        let (answered, out, _) = run(&gateway(None), "GET /api/x HTTP/1.1\r\nHost: other.example.com\r\n\r\n").await;
        assert!(answered);
        assert!(out.starts_with("HTTP/1.1 404") && out.contains("\"code\":\"not_found\""), "{out}");
        let (_, out, _) = run(&gateway(None), "HEAD /api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 401") && out.ends_with("\r\n\r\n"), "{out}");
    }

    #[tokio::test]
    async fn dot_segment_paths_cannot_reach_another_route() {
        for path in ["/api/../admin/users", "/api/%2e%2e/admin/users"] {
            let (answered, out, _) = run(&gateway(None), &format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\n\r\n")).await;
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
        assert!(out.starts_with("HTTP/1.1 401") && out.contains("access-control-allow-origin: https://portal.example.com"), "{out}");
    }
}
