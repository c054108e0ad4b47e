//! The pingora `ProxyHttp` phases of the gateway: `request_filter` strips identity headers, picks
//! the route and runs its filter chain; `upstream_request_filter` sets what the API receives (the
//! JWT, forwarding headers, the verified client certificate); `fail_to_proxy` turns API failures
//! into JSON answers; `logging` writes one access-log line and the metrics of every request.

use crate::metrics;
use crate::request::cors;
use crate::request::filters::{FilterState, Outcome};
use crate::request::headers::{forwarded, has_dot_segments, interaction_id, request_host, StripList};
use crate::request::respond::{self, Refusal};
use crate::request::route::{self, Route};
use crate::token::ClientCert;
use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Gateway {
    routes: Vec<Route>,
    strip: StripList,
}

/// Per-request context.
pub struct RequestCtx {
    started: Instant,
    route: Option<usize>,
    /// The request's host (Host header or :authority), lower case, without the port.
    host: String,
    interaction_id: String,
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

    fn client(&self) -> Option<&ClientCert> {
        self.filters.client.as_deref()
    }
}

impl Gateway {
    /// Routes come from the build step, with their chains and peers.
    pub fn new(routes: Vec<Route>, strip: StripList) -> Self {
        Gateway { routes, strip }
    }

    /// Resolves the upstream addresses; called when serving starts, never by `-t`.
    pub fn resolve_upstreams(&mut self) -> std::result::Result<(), crate::config::Problem> {
        route::resolve(&mut self.routes)
    }

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        filter: &'static str,
        r: Refusal,
    ) -> Result<bool> {
        metrics::refusal(filter, r.reason());
        ctx.refused_by = Some((filter, r.reason()));
        respond::send(session, &r, &ctx.response_headers()).await?;
        Ok(true)
    }

    /// CORS for a route that trusts web origins: remembers an allowed `Origin` for the response
    /// and answers pre-flights. `Ok(true)` means a response was sent.
    async fn cors(&self, session: &mut Session, ctx: &mut RequestCtx, index: usize) -> Result<bool> {
        let Some(cfg) = &self.routes[index].cfg.cors else {
            return Ok(false);
        };
        ctx.cors_origin = cors::allowed_origin(session.req_header(), cfg);
        if !cors::is_preflight(session.req_header()) {
            return Ok(false);
        }
        if ctx.cors_origin.is_none() {
            return self.refuse(session, ctx, "cors", Refusal::OriginNotAllowed).await;
        }
        let answer = cors::preflight_answer(cfg, &ctx.response_headers())?;
        session.write_response_header(Box::new(answer), true).await?;
        Ok(true)
    }

    /// Per-connection facts from the TLS handshake: the verified client certificate; and the
    /// client's address, which only a limit without a certificate needs.
    fn connection_facts(session: &Session, ctx: &mut RequestCtx) {
        let ssl = session.digest().and_then(|d| d.ssl_digest.as_ref());
        ctx.filters.client = ssl.and_then(|s| s.extension.get::<Arc<ClientCert>>()).cloned();
        if ctx.filters.client.is_none() {
            ctx.filters.source = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string());
        }
    }
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
        self.strip.apply(session.req_header_mut());
        Self::connection_facts(session, ctx);
        if ctx.client().is_some_and(ClientCert::is_revoked) {
            // A reloaded CRL revoked this certificate: the connection is being ended.
            session.set_keepalive(None);
            return self.refuse(session, ctx, "connection", Refusal::InvalidToken("certificate_revoked")).await;
        }
        if has_dot_segments(session.req_header().uri.path()) {
            // "/api/../admin" would match the /api/ route here and reach /admin at the API.
            return self.refuse(session, ctx, "router", Refusal::InvalidRequest("dot segments in the path")).await;
        }
        ctx.host = request_host(session.req_header()).unwrap_or_default();
        let Some(index) = route::find(&self.routes, &ctx.host, session.req_header().uri.path()) else {
            return self.refuse(session, ctx, "router", Refusal::NoRoute).await;
        };
        ctx.route = Some(index);
        if self.cors(session, ctx, index).await? {
            return Ok(true);
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
        if route.cfg.forward_client_cert {
            if let Some(client) = ctx.client() {
                // RFC 9440 §2: the DER of the verified leaf, encoded once at handshake.
                upstream.insert_header("client-cert", client.client_cert_header.clone())?;
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
            ctx.client().map(|c| c.subject.as_str()).unwrap_or("-"),
            ctx.client().map(|c| &c.thumbprint[..c.thumbprint.len().min(8)]).unwrap_or("-"),
            ctx.filters.token_id.as_deref().unwrap_or("-"),
            ctx.filters.cache.map(|c| c.as_str()).unwrap_or("-"),
            refused,
            reason,
            ctx.interaction_id,
            e.map(|e| e.etype().as_str()).unwrap_or("-"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{CorsConfig, FilterConfig, RouteConfig, UpstreamConfig};
    use crate::host::HostPattern;
    use crate::request::filters::{build_chain, ChainParts};
    use std::collections::BTreeMap;
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
        let parts = ChainParts { introspectors: BTreeMap::new(), miss_limit: None };
        let chain = build_chain(&route.filters, &parts).unwrap();
        let peer = route::upstream_peer(&route.upstream).unwrap();
        Gateway::new(vec![Route::new(route, chain, peer)], StripList::new(&[http::HeaderName::from_static("x-evil")]))
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
        assert!(out.ends_with(crate::request::respond::UNAUTHORIZED_BODY), "{out}");
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
