//! The gateway's own answers: refusals with a JSON body and, for token problems, an RFC 6750
//! `WWW-Authenticate` header. Every refusal the filters can produce is one variant here, so status,
//! header and body can never disagree. The reason words and statuses are [`crate::reason`]'s.

pub use crate::reason::BadRequest;
use crate::reason::{CertStatus, IdentityAnswer, IdentityDown, Limit, Proof, Reason, Request, SharedCheck, Token};
use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Why the gateway answered a request itself instead of proxying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No access token at all: 401 with a plain `Bearer` challenge.
    NoToken,
    /// A token was sent but is malformed, unknown, expired, or not bound to this connection's certificate.
    InvalidToken(Token),
    /// RFC 9449 §7.1: the DPoP proof is missing or fails a check (the reason names which).
    InvalidDpopProof(Proof),
    /// RFC 9449 §9: the proof must carry a nonce this gateway issued (one is in `DPoP-Nonce`).
    UseDpopNonce,
    /// The request itself is malformed (token in the query string, several Authorization headers).
    InvalidRequest(Request),
    /// The token lacks a scope this route and method need.
    InsufficientScope(String),
    /// The identity server could not be reached, timed out, or answered 5xx.
    IdentityUnavailable(IdentityDown),
    /// The identity server answered something the gateway cannot use.
    IdentityBadAnswer(IdentityAnswer),
    /// No route for this host and path.
    NoRoute,
    /// The API could not be reached or failed mid-request.
    UpstreamUnavailable,
    /// Every backend of the route's upstream is unhealthy, ejected or already failed this request.
    NoHealthyBackend,
    /// The shared-state server did not answer a check whose policy is `closed` (the check's name).
    SharedStateUnavailable(SharedCheck),
    /// The API did not answer in time.
    UpstreamTimeout,
    /// A CORS pre-flight from an origin the route does not trust.
    OriginNotAllowed,
    /// Over a rate limit; retry after this many seconds.
    RateLimited { limit: Limit, retry_after: u64 },
    /// The request is malformed in a way a server may misread (400, no challenge).
    BadRequest(BadRequest),
    /// A method the gateway does not implement at all (501).
    MethodNotImplemented,
    /// A method this route does not accept (405); carries the route's `Allow` value.
    MethodNotAllowed(String),
    /// The scope filter's `default: deny`: no scope grants this method on this route (403).
    MethodDenied,
    /// The request's host is not the name this TLS connection was opened for (421).
    Misdirected,
    /// The request line and header fields are over `listener.max_request_header_bytes` (431).
    HeaderTooLarge,
    /// The request body is over the route's `max_body_bytes` (413).
    BodyTooLarge,
    /// The client certificate's revocation status (OCSP, fetched CRL): 401 revoked or unknown,
    /// 503 when no answer could be had under the hard policy.
    Certificate(CertStatus),
}

/// The message a malformed request's client reads.
impl BadRequest {
    fn message(self) -> &'static str {
        match self {
            BadRequest::NonCanonicalMethod => "The method must be written in upper case, such as GET or DELETE",
            BadRequest::MethodOverride => "Method override headers are not accepted: send the real method",
            BadRequest::ControlCharacter => "The request target contains a control character",
            BadRequest::DotSegments => "The path contains dot segments",
            BadRequest::PathEncoding => {
                "The path contains a double-encoded, invalid or non-UTF-8 escape, or an encoded slash"
            }
            BadRequest::PathParameters => "Path parameters (;) are not accepted",
            BadRequest::Upgrade => "This route does not accept protocol upgrades",
            BadRequest::ContentLength => "Content-Length must be exactly one integer",
            BadRequest::ConnectionHeader => "The Connection header is malformed",
            BadRequest::Malformed => "The request is malformed",
        }
    }
}

pub const UNAUTHORIZED_BODY: &str = r#"{"code":"unauthorized","message":"Missing, invalid or expired access token"}"#;

impl Refusal {
    pub fn status(&self) -> u16 {
        self.reason().status()
    }

    /// A short, stable reason for logs and metric labels. Never contains request data.
    pub fn reason(&self) -> Reason {
        match self {
            Refusal::NoToken => Reason::NoToken,
            Refusal::InvalidToken(r) => Reason::Token(*r),
            Refusal::InvalidDpopProof(r) => Reason::Proof(*r),
            Refusal::UseDpopNonce => Reason::Proof(Proof::Nonce),
            Refusal::InvalidRequest(r) => Reason::Request(*r),
            Refusal::InsufficientScope(_) => Reason::InsufficientScope,
            Refusal::IdentityUnavailable(r) => Reason::IdentityDown(*r),
            Refusal::IdentityBadAnswer(r) => Reason::IdentityAnswer(*r),
            Refusal::NoRoute => Reason::NoRoute,
            Refusal::UpstreamUnavailable => Reason::UpstreamUnavailable,
            Refusal::NoHealthyBackend => Reason::NoHealthyBackend,
            Refusal::SharedStateUnavailable(_) => Reason::ClusterUnavailable,
            Refusal::UpstreamTimeout => Reason::UpstreamTimeout,
            Refusal::OriginNotAllowed => Reason::OriginNotAllowed,
            Refusal::RateLimited { limit, .. } => Reason::RateLimited(*limit),
            Refusal::BadRequest(b) => Reason::BadRequest(*b),
            Refusal::MethodNotImplemented => Reason::MethodNotImplemented,
            Refusal::MethodNotAllowed(_) => Reason::MethodNotAllowed,
            Refusal::MethodDenied => Reason::MethodDenied,
            Refusal::Misdirected => Reason::MisdirectedRequest,
            Refusal::HeaderTooLarge => Reason::HeaderTooLarge,
            Refusal::BodyTooLarge => Reason::BodyTooLarge,
            Refusal::Certificate(s) => Reason::Certificate(*s),
        }
    }

    /// RFC 6750 §3 challenge for a route that accepts `Bearer` only.
    pub fn www_authenticate(&self) -> Option<String> {
        self.www_authenticate_for(&Challenge::default())
    }

    /// The challenges of a route: one per scheme it accepts, the error on the scheme it concerns
    /// (the one the request used, or DPoP for a proof problem), `algs` on the DPoP one.
    pub fn www_authenticate_for(&self, c: &Challenge) -> Option<String> {
        let params = match self {
            Refusal::NoToken => None,
            Refusal::InvalidToken(_) => {
                Some(r#"error="invalid_token", error_description="Missing, invalid or expired access token""#.into())
            }
            Refusal::Certificate(s) if s.is_answer() => Some(format!(
                r#"error="invalid_token", error_description="The client certificate is refused: {}""#,
                s.as_str()
            )),
            Refusal::InvalidDpopProof(r) => {
                Some(format!(r#"error="invalid_dpop_proof", error_description="DPoP proof refused: {}""#, r.as_str()))
            }
            Refusal::UseDpopNonce => Some(
                r#"error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#.into(),
            ),
            Refusal::InvalidRequest(r) => {
                Some(format!(r#"error="invalid_request", error_description="{}""#, r.as_str()))
            }
            Refusal::InsufficientScope(scope) => {
                Some(format!(r#"error="insufficient_scope", scope="{}""#, scope.replace('"', "")))
            }
            Refusal::MethodDenied => {
                Some(r#"error="insufficient_scope", error_description="No scope grants this method here""#.into())
            }
            _ => return None,
        };
        let on_dpop = match self {
            Refusal::InvalidDpopProof(_) | Refusal::UseDpopNonce => true,
            _ => c.used_dpop || !c.bearer,
        };
        let mut parts = Vec::with_capacity(2);
        if c.bearer {
            match (&params, on_dpop) {
                (Some(p), false) => parts.push(format!("Bearer {p}")),
                _ => parts.push("Bearer".to_string()),
            }
        }
        if let Some(algs) = &c.dpop_algs {
            match (&params, on_dpop) {
                (Some(p), true) => parts.push(format!(r#"DPoP {p}, algs="{algs}""#)),
                _ => parts.push(format!(r#"DPoP algs="{algs}""#)),
            }
        }
        Some(parts.join(", "))
    }

    pub fn body(&self) -> String {
        match self {
            Refusal::NoToken | Refusal::InvalidToken(_) => UNAUTHORIZED_BODY.to_string(),
            Refusal::InvalidDpopProof(_) => json("invalid_dpop_proof", "The DPoP proof is missing or invalid"),
            Refusal::UseDpopNonce => json("use_dpop_nonce", "Send the DPoP proof again with the nonce in DPoP-Nonce"),
            Refusal::InvalidRequest(r) => json("invalid_request", r.as_str()),
            Refusal::InsufficientScope(_) => json("forbidden", "The access token does not have the required scope"),
            Refusal::IdentityUnavailable(_) => {
                json("server_error", "The identity server is unavailable, please retry later")
            }
            Refusal::IdentityBadAnswer(_) => json("server_error", "The identity server gave an unusable answer"),
            Refusal::NoRoute => json("not_found", "No API is served at this address"),
            Refusal::UpstreamUnavailable => json("bad_gateway", "The API is unavailable"),
            Refusal::NoHealthyBackend => json("service_unavailable", "The API is unavailable, please retry later"),
            Refusal::SharedStateUnavailable(_) => {
                json("server_error", "The gateway cannot check this request right now, please retry later")
            }
            Refusal::UpstreamTimeout => json("gateway_timeout", "The API did not answer in time"),
            Refusal::OriginNotAllowed => json("forbidden", "This origin is not allowed"),
            Refusal::RateLimited { .. } => json("rate_limited", "Too many requests, retry later"),
            Refusal::BadRequest(b) => json("invalid_request", b.message()),
            Refusal::MethodNotImplemented => json("not_implemented", "The gateway does not implement this method"),
            Refusal::MethodNotAllowed(_) => json("method_not_allowed", "This method is not allowed here"),
            Refusal::MethodDenied => json("forbidden", "No scope grants this method here"),
            Refusal::Misdirected => {
                json("misdirected_request", "This connection does not serve this host: open a new connection")
            }
            Refusal::HeaderTooLarge => json("header_too_large", "The request header is too large"),
            Refusal::BodyTooLarge => json("payload_too_large", "The request body is larger than this API accepts"),
            Refusal::Certificate(s) if s.is_answer() => {
                json("unauthorized", "The client certificate is revoked or unknown to its issuer")
            }
            Refusal::Certificate(_) => json(
                "service_unavailable",
                "The client certificate's revocation status cannot be checked now, please retry later",
            ),
        }
    }

    /// The `Allow` header of a 405.
    fn allow(&self) -> Option<&str> {
        match self {
            Refusal::MethodNotAllowed(allow) => Some(allow),
            _ => None,
        }
    }

    /// The full response header, ready to send, with the caller's `extra` headers.
    pub fn header(&self, extra: &[(&'static str, &str)]) -> pingora_core::Result<ResponseHeader> {
        self.header_for(extra, &Challenge::default())
    }

    /// As [`Refusal::header`], with the challenges of the route.
    pub fn header_for(&self, extra: &[(&'static str, &str)], c: &Challenge) -> pingora_core::Result<ResponseHeader> {
        let body_len = self.body().len();
        let mut h = ResponseHeader::build(self.status(), Some(5 + extra.len()))?;
        h.insert_header("content-type", "application/json")?;
        h.insert_header("content-length", body_len.to_string())?;
        h.insert_header("cache-control", "no-store")?;
        for (name, value) in extra {
            h.insert_header(*name, *value)?;
        }
        if let Some(challenge) = self.www_authenticate_for(c) {
            h.insert_header("www-authenticate", challenge)?;
        }
        if let Refusal::RateLimited { retry_after, .. } = self {
            h.insert_header("retry-after", retry_after.to_string())?;
        }
        if let Some(allow) = self.allow() {
            h.insert_header("allow", allow)?;
        }
        Ok(h)
    }
}

fn json(code: &str, message: &str) -> String {
    serde_json::json!({ "code": code, "message": message }).to_string()
}

/// The authorization schemes a route accepts, for its challenges: `Bearer` unless the route
/// accepts DPoP only; `DPoP` (with the accepted `algs`) when it accepts DPoP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub bearer: bool,
    pub dpop_algs: Option<String>,
    /// The request came with the `DPoP` scheme: token errors go on the DPoP challenge.
    pub used_dpop: bool,
}

impl Default for Challenge {
    fn default() -> Self {
        Challenge { bearer: true, dpop_algs: None, used_dpop: false }
    }
}

/// Sends a refusal downstream with `extra` headers. HEAD requests get the headers only.
pub async fn send(
    session: &mut Session,
    refusal: &Refusal,
    extra: &[(&'static str, &str)],
) -> pingora_core::Result<()> {
    send_for(session, refusal, extra, &Challenge::default()).await
}

/// As [`send`], with the route's challenges.
pub async fn send_for(
    session: &mut Session,
    refusal: &Refusal,
    extra: &[(&'static str, &str)],
    challenge: &Challenge,
) -> pingora_core::Result<()> {
    let header = refusal.header_for(extra, challenge)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(header), head_only).await?;
    if !head_only {
        session.write_response_body(Some(Bytes::from(refusal.body())), true).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_matches_the_reference_body_and_rfc6750() {
        let r = Refusal::InvalidToken(Token::InactiveToken);
        assert_eq!(r.status(), 401);
        assert_eq!(r.body(), UNAUTHORIZED_BODY);
        assert!(r.www_authenticate().unwrap().starts_with(r#"Bearer error="invalid_token""#));
        assert_eq!(Refusal::NoToken.www_authenticate().unwrap(), "Bearer");
    }

    #[test]
    fn dpop_routes_challenge_with_dpop_and_algs() {
        let both = Challenge { bearer: true, dpop_algs: Some("ES256 PS256".into()), used_dpop: false };
        assert_eq!(Refusal::NoToken.www_authenticate_for(&both).unwrap(), r#"Bearer, DPoP algs="ES256 PS256""#);
        let proof = Refusal::InvalidDpopProof(Proof::Htu).www_authenticate_for(&both).unwrap();
        assert!(proof.starts_with(r#"Bearer, DPoP error="invalid_dpop_proof""#), "{proof}");
        assert!(proof.ends_with(r#"algs="ES256 PS256""#), "{proof}");
        let bearer_error = Refusal::InvalidToken(Token::Expired).www_authenticate_for(&both).unwrap();
        assert!(
            bearer_error.starts_with(r#"Bearer error="invalid_token""#)
                && bearer_error.ends_with(r#"DPoP algs="ES256 PS256""#)
        );
        let dpop_used = Challenge { used_dpop: true, ..both.clone() };
        let dpop_error = Refusal::InvalidToken(Token::Expired).www_authenticate_for(&dpop_used).unwrap();
        assert!(dpop_error.starts_with(r#"Bearer, DPoP error="invalid_token""#), "{dpop_error}");
        let only = Challenge { bearer: false, dpop_algs: Some("ES256".into()), used_dpop: false };
        let nonce = Refusal::UseDpopNonce.www_authenticate_for(&only).unwrap();
        assert!(nonce.starts_with(r#"DPoP error="use_dpop_nonce""#) && !nonce.contains("Bearer"), "{nonce}");
    }

    #[test]
    fn outages_are_not_401() {
        assert_eq!(Refusal::IdentityUnavailable(IdentityDown::Timeout).status(), 503);
        assert!(Refusal::IdentityUnavailable(IdentityDown::Timeout).www_authenticate().is_none());
        assert_eq!(Refusal::InsufficientScope("transactions".into()).status(), 403);
    }
}
