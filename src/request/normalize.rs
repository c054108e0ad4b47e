//! The one normalisation step every request passes first, before routing and before any filter
//! reads it: a canonical method, no method-override header, a request target without control
//! characters or dot segments, exactly one `Content-Length` integer, no client-supplied identity
//! header, a `Connection` header that nominates none of the gateway's own headers, and a host that
//! this TLS connection was opened for. It either leaves a request every later step can trust, or
//! names the refusal.

use crate::config::HttpMethod;
use crate::header_name::is_tchar;
use crate::host::HostPattern;
use crate::reason::Token;
use crate::request::headers::{request_host, StripList};
use crate::request::respond::{BadRequest, Refusal};
use pingora_http::RequestHeader;
use target::TargetError;

pub mod percent;
pub mod target;

/// Headers that ask an application server to act as if another method had been sent. Many
/// frameworks honour them, so a scope granted for `GET` could be used to `DELETE`.
const METHOD_OVERRIDE_HEADERS: &[&str] = &["x-http-method-override", "x-http-method", "x-method-override"];

/// Headers the gateway reads or sets itself, besides the stripped ones: a client's `Connection`
/// header must not make them hop-by-hop (pingora would drop them, or refuse the request as an
/// upstream failure when it is `Host` or an `X-Forwarded-*` name).
const OWN_HEADERS: &[&str] = &["host", "authorization", "content-length", "x-fapi-interaction-id"];

/// Pingora refuses a `Connection` header with this many nominations or more.
const MAX_CONNECTION_TOKENS: usize = 10;

/// What the normalisation step knows besides the request: the stripped headers, the names the
/// default certificate serves (for connections that sent no SNI) and the hosts whose clients may
/// come without a certificate.
#[derive(Debug, Clone)]
pub struct Normalizer {
    pub strip: StripList,
    pub default_hosts: Vec<HostPattern>,
    pub certificate_optional: Vec<HostPattern>,
    /// `listener.max_request_header_bytes`: the request line and header fields, as received.
    pub max_header_bytes: usize,
}

/// What the TLS handshake established about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct OnConnection<'a> {
    /// The server name the connection was opened for.
    pub sni: Option<&'a str>,
    /// Whether a verified client certificate was presented.
    pub certificate: bool,
    /// The connection is the trusted hop's: it carries requests for every host, so its name
    /// decides nothing.
    pub via_hop: bool,
}

impl Normalizer {
    /// Normalises `req` in place. `conn` is what the TLS handshake of its connection established.
    /// Returns the request's host (lower case, no port) for routing.
    pub fn apply(&self, req: &mut RequestHeader, conn: OnConnection) -> Result<String, Refusal> {
        if header_bytes(req) > self.max_header_bytes {
            return Err(Refusal::HeaderTooLarge);
        }
        method(&req.method)?;
        refuse_method_override(req)?;
        target::check(req.raw_path()).map_err(|e| Refusal::BadRequest(bad_target(e)))?;
        content_length(req)?;
        self.strip.apply(req);
        self.connection(req)?;
        let host = request_host(req).filter(|h| !h.is_empty()).ok_or(Refusal::BadRequest(BadRequest::Malformed))?;
        if !conn.via_hop && self.misdirected(&host, conn.sni) {
            return Err(Refusal::Misdirected);
        }
        // The host is the connection's own name now. Only the optional hosts' acceptor lets a
        // handshake end without a certificate; this holds even if a connection got past it.
        if !conn.certificate && !self.certificate_optional.iter().any(|h| h.matches(&host)) {
            return Err(Refusal::InvalidToken(Token::NoClientCertificate));
        }
        Ok(host)
    }

    /// RFC 9110 §15.5.20 and RFC 9113 §9.1.1: a connection serves the name it was opened for.
    /// Without SNI, the default certificate was served, so the host must be one of its names.
    fn misdirected(&self, host: &str, sni: Option<&str>) -> bool {
        let host = host.trim_end_matches('.');
        match sni {
            Some(sni) => !sni.trim_end_matches('.').eq_ignore_ascii_case(host),
            None => !self.default_hosts.iter().any(|h| h.matches(host)),
        }
    }

    /// Drops `Connection` nominations of headers the gateway strips or owns, and refuses what
    /// pingora would refuse later as if the upstream had failed.
    fn connection(&self, req: &mut RequestHeader) -> Result<(), Refusal> {
        if !req.headers.contains_key(http::header::CONNECTION) {
            return Ok(());
        }
        let bad = || Refusal::BadRequest(BadRequest::ConnectionHeader);
        let mut kept: Vec<String> = Vec::new();
        for value in req.headers.get_all(http::header::CONNECTION) {
            let text = value.to_str().map_err(|_| bad())?;
            for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if !token.bytes().all(is_tchar) {
                    return Err(bad());
                }
                let lower = token.to_ascii_lowercase();
                if !self.strip.matches(&lower) && !OWN_HEADERS.contains(&lower.as_str()) {
                    kept.push(lower);
                }
            }
        }
        if kept.len() >= MAX_CONNECTION_TOKENS {
            return Err(bad());
        }
        req.remove_header(&http::header::CONNECTION);
        if !kept.is_empty() {
            req.insert_header(http::header::CONNECTION, kept.join(", ")).map_err(|_| bad())?;
        }
        Ok(())
    }
}

/// The size of the request line and header fields as a client sends them (HTTP/2 header list
/// sizes are counted the same way, without the 32 bytes of per-field overhead). The connection's
/// watchdog bounds a header that is still arriving; this bounds one that arrived whole.
fn header_bytes(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.raw_path().len() + " HTTP/1.1\r\n".len();
    let fields: usize = req.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    line + fields + 2
}

/// Methods are case-sensitive (RFC 9110 §9.1) but many servers upper-case them, so `delete` would
/// pass a check written for `DELETE` and still delete. Only the implemented methods, spelled
/// canonically, go on; other spellings of them are 400 and unknown methods 501.
fn method(m: &http::Method) -> Result<HttpMethod, Refusal> {
    if let Some(known) = HttpMethod::exact(m.as_str()) {
        return Ok(known);
    }
    let canonical = m.as_str().bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
    let respelled = HttpMethod::ALL.iter().any(|k| k.as_str().eq_ignore_ascii_case(m.as_str()));
    if respelled || !canonical {
        return Err(Refusal::BadRequest(BadRequest::NonCanonicalMethod));
    }
    Err(Refusal::MethodNotImplemented)
}

/// Refused rather than stripped: a client that sends one expects another method than the one the
/// gateway authorizes, and silently running a `GET` for an intended `DELETE` helps nobody.
fn refuse_method_override(req: &RequestHeader) -> Result<(), Refusal> {
    let overridden = req.headers.keys().any(|name| {
        METHOD_OVERRIDE_HEADERS.contains(&crate::header_name::canonical_header_name(name.as_str()).as_ref())
    });
    if overridden {
        return Err(Refusal::BadRequest(BadRequest::MethodOverride));
    }
    Ok(())
}

/// The refusal of each target a [`target::check`] refuses.
fn bad_target(e: TargetError) -> BadRequest {
    match e {
        TargetError::ControlCharacter => BadRequest::ControlCharacter,
        TargetError::PathEncoding => BadRequest::PathEncoding,
        TargetError::DotSegments => BadRequest::DotSegments,
        TargetError::PathParameters => BadRequest::PathParameters,
        TargetError::MethodOverride => BadRequest::MethodOverride,
    }
}

/// RFC 9110 §8.6: exactly one field holding one decimal integer. Pingora accepts `5,5` and repeated
/// equal fields, which another server on the way may read differently.
fn content_length(req: &RequestHeader) -> Result<(), Refusal> {
    let mut values = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let (first, second) = (values.next(), values.next());
    let valid = |v: &http::HeaderValue| !v.is_empty() && v.len() <= 19 && v.as_bytes().iter().all(u8::is_ascii_digit);
    match (first, second) {
        (None, _) => Ok(()),
        (Some(v), None) if valid(v) => Ok(()),
        _ => Err(Refusal::BadRequest(BadRequest::ContentLength)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeaderPattern;

    fn normalizer() -> Normalizer {
        Normalizer {
            strip: StripList::new(&[HeaderPattern::parse("x-acme-*").unwrap()]),
            default_hosts: vec![HostPattern::parse("api.example.com").unwrap()],
            certificate_optional: vec![HostPattern::parse("dpop-api.example.com").unwrap()],
            max_header_bytes: 4096,
        }
    }

    /// A connection opened for `sni` with a client certificate.
    fn with_cert(sni: Option<&str>) -> OnConnection<'_> {
        OnConnection { sni, certificate: true, via_hop: false }
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        r.insert_header("host", "api.example.com").unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    /// Method, target, headers, SNI, and the reason of the refusal (`None`: the request passes).
    type Row<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>, Option<&'a str>);

    #[test]
    fn every_request_is_normalised_or_refused_with_a_reason() {
        let sni = Some("api.example.com");
        let table: &[Row] = &[
            ("GET", "/api/x", &[], sni, None),
            ("DELETE", "/api/x", &[], sni, None),
            ("delete", "/api/x", &[], sni, Some("non_canonical_method")),
            ("Delete", "/api/x", &[], sni, Some("non_canonical_method")),
            ("get", "/api/x", &[], sni, Some("non_canonical_method")),
            ("FOO", "/api/x", &[], sni, Some("method_not_implemented")),
            ("TRACE", "/api/x", &[], sni, Some("method_not_implemented")),
            ("foo", "/api/x", &[], sni, Some("non_canonical_method")),
            ("GET", "/api/x", &[("X-HTTP-Method-Override", "DELETE")], sni, Some("method_override")),
            ("GET", "/api/x", &[("X-HTTP-Method", "DELETE")], sni, Some("method_override")),
            ("GET", "/api/x", &[("X-Method-Override", "DELETE")], sni, Some("method_override")),
            ("GET", "/api/x", &[("X_HTTP_Method_Override", "DELETE")], sni, Some("method_override")),
            ("GET", "/api/a%00b", &[], sni, Some("control_character")),
            ("GET", "/api/a%7Fb", &[], sni, Some("control_character")),
            ("GET", "/api/a%7fb", &[], sni, Some("control_character")),
            ("GET", "/api/a%0Db", &[], sni, Some("control_character")),
            ("GET", "/api/x?q=%1b", &[], sni, Some("control_character")),
            ("GET", "/api/a%20b?q=%7E", &[], sni, None),
            ("GET", "/api/../admin", &[], sni, Some("dot_segments")),
            // Round 3: every spelling that reaches another path at a Java or .NET server.
            ("DELETE", "/api/x/..;/admin/users", &[], sni, Some("dot_segments")),
            ("DELETE", "/api/x/.;/admin/users", &[], sni, Some("dot_segments")),
            ("DELETE", "/api/x/..;jsessionid=1/admin", &[], sni, Some("dot_segments")),
            ("DELETE", "/api/admin;x/users", &[], sni, Some("path_parameters")),
            ("GET", "/api/x;jsessionid=1", &[], sni, Some("path_parameters")),
            ("DELETE", "/api/x/%c0%ae%c0%ae/admin", &[], sni, Some("invalid_path_encoding")),
            ("DELETE", "/api/x/%e0%80%ae%e0%80%ae/admin", &[], sni, Some("invalid_path_encoding")),
            ("DELETE", "/api/x/%c0%af..%c0%afadmin", &[], sni, Some("invalid_path_encoding")),
            ("DELETE", "/api/x/%252e%252e/admin", &[], sni, Some("invalid_path_encoding")),
            ("DELETE", "/api/x/%252E%252E%252Fadmin", &[], sni, Some("invalid_path_encoding")),
            ("DELETE", "/api/x/%u002e%u002e/admin", &[], sni, Some("invalid_path_encoding")),
            ("DELETE", "/api/x/%2e%2e%2fadmin", &[], sni, Some("invalid_path_encoding")),
            ("DELETE", "/api/x%5c..%5cadmin", &[], sni, Some("invalid_path_encoding")),
            ("DELETE", "/api/x/..%20/admin", &[], sni, Some("dot_segments")),
            ("DELETE", "/api/x/%20../admin", &[], sni, Some("dot_segments")),
            ("DELETE", "/api/x/..%c2%a0/admin", &[], sni, Some("dot_segments")),
            ("DELETE", "/api/x/%2e%2e/admin", &[], sni, Some("dot_segments")),
            ("DELETE", "/api/x/.%2E/admin", &[], sni, Some("dot_segments")),
            ("DELETE", "/api/x\\..\\admin", &[], sni, Some("dot_segments")),
            ("GET", "/api/50%", &[], sni, Some("invalid_path_encoding")),
            ("GET", "/api/a%2", &[], sni, Some("invalid_path_encoding")),
            ("GET", "/api/caf%C3%A9/x..y/.well-known", &[], sni, None),
            ("POST", "/api/echo?_method=DELETE", &[], sni, Some("method_override")),
            ("POST", "/api/echo?a=1&_METHOD=DELETE", &[], sni, Some("method_override")),
            ("POST", "/api/echo?%5Fmethod=DELETE", &[], sni, Some("method_override")),
            ("POST", "/api/echo?x-http-method-override=DELETE", &[], sni, Some("method_override")),
            ("POST", "/api/echo?_httpmethod=DELETE", &[], sni, Some("method_override")),
            ("GET", "/api/echo?method=list&methods=2", &[], sni, None),
            ("GET", "/api/x?next=/../y", &[], sni, None),
            ("POST", "/api/x", &[("content-length", "5")], sni, None),
            ("POST", "/api/x", &[("content-length", "5,5")], sni, Some("invalid_content_length")),
            (
                "POST",
                "/api/x",
                &[("content-length", "5"), ("content-length", "5")],
                sni,
                Some("invalid_content_length"),
            ),
            ("POST", "/api/x", &[("content-length", "+5")], sni, Some("invalid_content_length")),
            ("POST", "/api/x", &[("content-length", " 5")], sni, Some("invalid_content_length")),
            ("GET", "/api/x", &[("connection", "close, x-forwarded-for")], sni, None),
            ("GET", "/api/x", &[("connection", "host")], sni, None),
            ("GET", "/api/x", &[("connection", ":authority")], sni, Some("invalid_connection_header")),
            ("GET", "/api/x", &[("connection", "\"x-forwarded-for\"")], sni, Some("invalid_connection_header")),
            ("GET", "/api/x", &[("connection", "a,b,c,d,e,f,g,h,i,j")], sni, Some("invalid_connection_header")),
            ("GET", "/api/x", &[], Some("login.example.com"), Some("misdirected_request")),
            ("GET", "/api/x", &[], Some("API.example.com"), None),
            ("GET", "/api/x", &[], None, None),
        ];
        for (method, target, headers, sni, want) in table {
            let mut req = request(method, target, headers);
            let got = normalizer().apply(&mut req, with_cert(*sni)).err().map(|r| r.reason().as_str());
            assert_eq!(got, *want, "{method} {target} {headers:?} sni={sni:?}");
        }
    }

    #[test]
    fn without_sni_the_host_must_be_a_default_certificate_name() {
        let mut req = request("GET", "/api/x", &[]);
        req.insert_header("host", "login.example.com").unwrap();
        assert_eq!(normalizer().apply(&mut req, with_cert(None)), Err(Refusal::Misdirected));
        let mut req = request("GET", "/api/x", &[]);
        req.remove_header("host");
        assert_eq!(normalizer().apply(&mut req, with_cert(None)), Err(Refusal::BadRequest(BadRequest::Malformed)));
    }

    /// The host a request may reach is the connection's own name, and only the optional hosts
    /// serve connections without a certificate: host × certificate presence.
    #[test]
    fn a_connection_without_a_certificate_serves_only_optional_hosts() {
        let table: &[(Option<&str>, &str, bool, Option<&str>)] = &[
            (Some("api.example.com"), "api.example.com", true, None),
            (Some("api.example.com"), "api.example.com", false, Some("no_client_certificate")),
            (Some("dpop-api.example.com"), "dpop-api.example.com", false, None),
            (Some("dpop-api.example.com"), "dpop-api.example.com", true, None),
            // Round 4: no certificate, SNI of the optional host, Host of the certificate-only one.
            (Some("dpop-api.example.com"), "api.example.com", false, Some("misdirected_request")),
            (Some("dpop-api.example.com"), "api.example.com", true, Some("misdirected_request")),
            (Some("api.example.com"), "dpop-api.example.com", true, Some("misdirected_request")),
            (None, "api.example.com", true, None),
            (None, "api.example.com", false, Some("no_client_certificate")),
        ];
        for (sni, host, certificate, want) in table {
            let mut req = request("GET", "/api/x", &[]);
            req.insert_header("host", *host).unwrap();
            let got =
                normalizer().apply(&mut req, OnConnection { sni: *sni, certificate: *certificate, via_hop: false });
            assert_eq!(
                got.err().map(|r| r.reason().as_str()),
                *want,
                "sni={sni:?} host={host} certificate={certificate}"
            );
        }
    }

    #[test]
    fn a_header_over_the_cap_is_refused_whole() {
        let mut req = request("GET", "/api/x", &[("x-big", &"a".repeat(4100))]);
        assert_eq!(normalizer().apply(&mut req, with_cert(None)), Err(Refusal::HeaderTooLarge));
        let mut req = request("GET", "/api/x", &[("x-big", &"a".repeat(3900))]);
        assert!(normalizer().apply(&mut req, with_cert(None)).is_ok());
    }

    #[test]
    fn connection_keeps_only_what_is_not_the_gateways() {
        let mut req = request("GET", "/api/x", &[("connection", "close, X-Forwarded-For, x-acme-id, x-trace")]);
        assert_eq!(normalizer().apply(&mut req, with_cert(Some("api.example.com"))).as_deref(), Ok("api.example.com"));
        assert_eq!(req.headers["connection"], "close, x-trace");
        let mut req = request("GET", "/api/x", &[("connection", "x-real-ip")]);
        normalizer().apply(&mut req, with_cert(Some("api.example.com"))).unwrap();
        assert!(req.headers.get("connection").is_none());
    }

    #[test]
    fn identity_headers_of_every_family_are_stripped() {
        let spoofed = [
            "X-Forwarded-Tls-Client-Cert",
            "X-Forwarded-Tls-Client-Cert-Info",
            "X-Arr-ClientCert",
            "X-Amzn-Mtls-Clientcert",
            "Ssl-Client-Cert",
            "Ssl_Client_Cert",
            "X-Ssl-Client-S-Dn",
            "X-Ssl-Client-Verify",
            "X-Client-Dn",
            "X-Client-Certificate",
            "X-Forwarded-Port",
            "X-Forwarded-Prefix",
            "X-Original-Url",
            "True-Client-Ip",
            "X-Client-Ip",
            "X-Cluster-Client-Ip",
            "CF-Connecting-IP",
            "Fastly-Client-IP",
            "X-Real-IP",
            "Forwarded",
            "X-Consumer-Username",
            "X-Acme-Tenant",
        ];
        let headers: Vec<(&str, &str)> = spoofed.iter().map(|h| (*h, "forged")).collect();
        let mut req = request("GET", "/api/x", &headers);
        req.append_header("x-request-id", "kept").unwrap();
        normalizer().apply(&mut req, with_cert(Some("api.example.com"))).unwrap();
        for h in spoofed {
            assert!(req.headers.get(h).is_none(), "{h} survived");
        }
        assert_eq!(req.headers["x-request-id"], "kept");
    }
}
