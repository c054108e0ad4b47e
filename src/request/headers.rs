//! Header hygiene of one request: which client-supplied headers are stripped before anything reads
//! them, the request's host, the FAPI interaction id, the `Forwarded` element, and paths that an
//! upstream could resolve differently from the route match.

use crate::header_name::{canonical_header_name, HeaderPattern};
use pingora_http::RequestHeader;
use std::collections::HashSet;

/// The built-in families of request headers that carry a client identity, a client address or the
/// URL a client used, as other proxies and servers set them. A client must never set them: an API
/// that trusts one of them could be handed a forged identity. Names ending in `*` are prefixes.
/// Each is compared lower case with `_` read as `-`.
pub const IDENTITY_FAMILIES: &[(&str, &[&str])] = &[
    (
        "client certificate",
        &[
            "client-cert",
            "client-cert-chain",
            "x-client-cert*",
            "x-client-crt",
            "x-client-verify*",
            "x-client-dn",
            "x-client-s-dn",
            "x-client-i-dn",
            "x-client-subject*",
            "x-client-issuer*",
            "x-client-san*",
            "x-client-serial*",
            "x-client-fingerprint*",
            "x-client-escaped-cert",
            "x-ssl-*",
            "ssl-client-*",
            "x-tls-*",
            "x-mtls-*",
            "x-arr-clientcert",
            "x-arr-ssl",
            "x-amzn-mtls-*",
            "cf-client-cert-*",
            "wl-proxy-ssl",
            "x-example-client-public-key",
        ],
    ),
    (
        "forwarding",
        &[
            "forwarded",
            "x-forwarded",
            "x-forwarded-*",
            "x-original-*",
            "x-rewrite-url",
            "x-host",
            "x-http-host-override",
        ],
    ),
    (
        "client address",
        &[
            "x-real-ip",
            "x-real-client-ip",
            "x-client-ip",
            "x-client-addr",
            "client-ip",
            "true-client-ip",
            "x-true-client-ip",
            "x-cluster-client-ip",
            "cf-connecting-ip",
            "cf-connecting-ipv6",
            "fastly-client-ip",
            "fly-client-ip",
            "x-originating-ip",
            "x-remote-ip",
            "x-remote-addr",
            "x-envoy-external-address",
            "x-azure-clientip",
            "x-azure-socketip",
            "x-appengine-*",
            "wl-proxy-client-ip",
            "proxy-client-ip",
            "x-proxyuser-ip",
            "forwarded-for",
        ],
    ),
    (
        "authenticated user",
        &[
            "x-authenticated-*",
            "x-consumer-*",
            "x-credential-identifier",
            "x-userinfo",
            "x-remote-user",
            "remote-user",
            "x-auth-user",
            "x-auth-email",
            "x-auth-request-*",
            "x-amzn-oidc-*",
            "x-ms-client-principal*",
            "x-ms-token-*",
            "x-goog-authenticated-user-*",
            "x-goog-iap-jwt-assertion",
            "x-apigateway-api-userinfo",
            "x-endpoint-api-userinfo",
            "x-jwt-*",
            "x-pomerium-*",
            "x-vouch-*",
            "x-webauth-*",
            "oidc-*",
            "x-user",
            "x-user-*",
            "x-username",
        ],
    ),
];

/// The request headers stripped from every request: the built-in families and the configured
/// patterns, built once.
#[derive(Debug, Clone)]
pub struct StripList {
    exact: HashSet<String>,
    prefixes: Vec<String>,
    /// The first bytes of the prefixes (every byte when one is empty): a name starting with
    /// another byte is compared with none of them. Nearly all start with `x`, few names do.
    prefix_starts: [bool; 256],
}

impl StripList {
    /// The built-in identity families plus the configured `strip_headers` patterns.
    pub fn new(extra: &[HeaderPattern]) -> Self {
        let builtin = IDENTITY_FAMILIES.iter().flat_map(|(_, names)| names.iter()).filter_map(|n| builtin_pattern(n));
        let mut list = StripList { exact: HashSet::new(), prefixes: Vec::new(), prefix_starts: [false; 256] };
        for pattern in builtin.chain(extra.iter().cloned()) {
            match pattern {
                HeaderPattern::Exact(n) => drop(list.exact.insert(n)),
                HeaderPattern::Prefix(p) => {
                    match p.as_bytes().first() {
                        Some(&b) => list.prefix_starts[usize::from(b)] = true,
                        None => list.prefix_starts = [true; 256],
                    }
                    list.prefixes.push(p);
                }
            }
        }
        list
    }

    /// Whether a header of this name is stripped.
    pub fn matches(&self, name: &str) -> bool {
        let name = canonical_header_name(name);
        if self.exact.contains(name.as_ref()) {
            return true;
        }
        let start = name.as_bytes().first().is_none_or(|&b| self.prefix_starts[usize::from(b)]);
        start && self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Removes every stripped header from the request.
    pub fn apply(&self, req: &mut RequestHeader) {
        let doomed: Vec<http::HeaderName> =
            req.headers.keys().filter(|name| self.matches(name.as_str())).cloned().collect();
        for name in doomed {
            req.remove_header(&name);
        }
    }
}

/// A built-in name as a pattern (they are written canonical already; parsing them keeps one rule).
fn builtin_pattern(name: &str) -> Option<HeaderPattern> {
    HeaderPattern::parse(name).ok()
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
    fn host_comes_without_port_and_lower_case() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("host", "API.example.com:8443").unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("api.example.com"));
    }

    /// Prefixes are compared only with names that start as one of them does: the same names are
    /// stripped as when every prefix is compared with every name.
    #[test]
    fn the_first_byte_index_strips_what_every_prefix_would() {
        let list = StripList::new(&[HeaderPattern::parse("my-*").unwrap(), HeaderPattern::parse("A_B").unwrap()]);
        let every = |name: &str| {
            let n = canonical_header_name(name);
            list.exact.contains(n.as_ref()) || list.prefixes.iter().any(|p| n.starts_with(p.as_str()))
        };
        let names = [
            "x-ssl-client-verify",
            "X_SSL_CLIENT",
            "my-header",
            "MY_HEADER",
            "a-b",
            "a_b",
            "authorization",
            "host",
            "oidc-claims",
            "cf-client-cert-der",
            "ssl-client-s-dn",
            "client-cert",
            "x-forwarded-for",
            "accept",
            "content-type",
            "x-fapi-interaction-id",
            "z",
        ];
        let mut stripped = 0;
        for name in names {
            assert_eq!(list.matches(name), every(name), "{name}");
            stripped += usize::from(list.matches(name));
        }
        assert_eq!(stripped, 11);
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
