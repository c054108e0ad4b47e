//! Header hygiene of one request: which client-supplied headers are stripped before anything reads
//! them, the request's host, the FAPI interaction id, the `Forwarded` element, and paths that an
//! upstream could resolve differently from the route match.

use http::HeaderName;
use pingora_http::RequestHeader;

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

/// The header names stripped from every request, parsed once at build.
#[derive(Debug, Clone)]
pub struct StripList(Vec<HeaderName>);

impl StripList {
    /// The built-in identity headers plus the configured extra names.
    pub fn new(extra: &[HeaderName]) -> Self {
        let builtin = IDENTITY_HEADERS.iter().map(|n| HeaderName::from_static(n));
        StripList(builtin.chain(extra.iter().cloned()).collect())
    }

    pub fn apply(&self, req: &mut RequestHeader) {
        for name in &self.0 {
            req.remove_header(name);
        }
    }
}

/// Host from the `Host` header (HTTP/1.1) or the URI authority (HTTP/2), without the port.
pub fn request_host(req: &RequestHeader) -> Option<String> {
    let raw = match req.headers.get(http::header::HOST) {
        Some(h) => h.to_str().ok()?,
        None => req.uri.host()?,
    };
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    Some(host.to_ascii_lowercase())
}

/// Whether a path has `.` or `..` segments (also percent-encoded, or split by backslashes), which
/// an upstream may resolve differently from the prefix match that chose the route.
pub fn has_dot_segments(path: &str) -> bool {
    if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return false;
    }
    let lower =
        path.to_ascii_lowercase().replace("%2e", ".").replace('\\', "/").replace("%5c", "/").replace("%2f", "/");
    lower.split('/').any(|seg| seg == "." || seg == "..")
}

/// FAPI: echo a valid `x-fapi-interaction-id` (a UUID), otherwise make one.
pub fn interaction_id(req: &RequestHeader) -> String {
    req.headers
        .get("x-fapi-interaction-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v).ok())
        .unwrap_or_else(uuid::Uuid::new_v4)
        .to_string()
}

/// RFC 7239 `Forwarded` element for this hop.
pub fn forwarded(addr: &std::net::SocketAddr, host: &str) -> String {
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
        for bad in [
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2e/admin",
            "/api/%2E./admin",
            "/api/..%2fadmin",
            "/api/..\\admin",
            "/api/..",
        ] {
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
}
