//! The per-route filter chain run in `request_filter`: phantom token, certificate binding, scope.
//!
//! Each filter is built and validated from its configuration section at load time and answers
//! `Continue` or `Respond(refusal)`. Filters see the request header and the per-request state only,
//! so they are unit-tested without any network or pingora session.

use crate::config::FilterConfig;
use crate::introspect::{ActiveToken, CacheResult, IntrospectError, Introspector, TokenState};
use crate::metrics;
use crate::respond::Refusal;
use async_trait::async_trait;
use pingora_http::RequestHeader;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one filter decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    Respond(Refusal),
}

/// Per-request facts the filters read and write.
#[derive(Debug, Default)]
pub struct FilterState {
    /// `x5t#S256` of this connection's verified client certificate, if there is one.
    pub client_thumbprint: Option<String>,
    /// The token the phantom-token filter found active.
    pub token: Option<Arc<ActiveToken>>,
    pub cache: Option<CacheResult>,
    /// Short id of the presented token (a hash prefix), for logs.
    pub token_id: Option<String>,
}

#[async_trait]
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;
    async fn run(&self, req: &RequestHeader, state: &mut FilterState) -> Outcome;
}

/// Builds a route's chain. `introspectors` holds one shared introspector (and cache) per name.
pub fn build_chain(
    configs: &[FilterConfig],
    introspectors: &BTreeMap<String, Arc<Introspector>>,
) -> Result<Vec<Box<dyn Filter>>, String> {
    configs
        .iter()
        .map(|c| -> Result<Box<dyn Filter>, String> {
            Ok(match c {
                FilterConfig::PhantomToken { introspection } => {
                    let i = introspectors.get(introspection).ok_or_else(|| format!("no introspection {introspection}"))?;
                    Box::new(PhantomToken { introspector: i.clone() })
                }
                FilterConfig::CertBinding => Box::new(CertBinding),
                FilterConfig::Scope { required, methods } => {
                    Box::new(Scope { required: required.clone(), methods: methods.clone() })
                }
            })
        })
        .collect()
}

/// Swaps an opaque access token for the JWT that introspection returns.
pub struct PhantomToken {
    pub introspector: Arc<Introspector>,
}

#[async_trait]
impl Filter for PhantomToken {
    fn name(&self) -> &'static str {
        "phantom_token"
    }

    async fn run(&self, req: &RequestHeader, state: &mut FilterState) -> Outcome {
        let token = match bearer_token(req) {
            Ok(t) => t,
            Err(refusal) => return Outcome::Respond(refusal),
        };
        let key = crate::introspect::cache_key(token);
        state.token_id = Some(crate::introspect::token_id(&key));
        let (result, how) = self.introspector.lookup(token, key).await;
        state.cache = Some(how);
        metrics::cache_lookup(self.introspector.name(), how.as_str(), self.introspector.entry_count());
        match result {
            Ok(TokenState::Active(t)) => {
                state.token = Some(t);
                Outcome::Continue
            }
            Ok(TokenState::Inactive) => Outcome::Respond(Refusal::InvalidToken("inactive_token")),
            Err(IntrospectError::Unavailable(r)) => Outcome::Respond(Refusal::IdentityUnavailable(r)),
            Err(IntrospectError::BadAnswer(r)) => Outcome::Respond(Refusal::IdentityBadAnswer(r)),
        }
    }
}

/// RFC 6750 §2.1: `Authorization: Bearer <token68>`, scheme case-insensitive. Tokens in the query
/// string (§2.3) are refused, as FAPI 2.0 requires.
pub fn bearer_token(req: &RequestHeader) -> Result<&str, Refusal> {
    if req.uri.query().is_some_and(|q| q.split('&').any(|p| p.starts_with("access_token="))) {
        return Err(Refusal::InvalidRequest("access tokens in the query string are not accepted"));
    }
    let mut values = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Refusal::NoToken);
    };
    if values.next().is_some() {
        return Err(Refusal::InvalidRequest("more than one Authorization header"));
    }
    let text = value.to_str().map_err(|_| Refusal::InvalidToken("malformed_authorization"))?;
    let (scheme, token) = text.split_once(' ').ok_or(Refusal::InvalidToken("malformed_authorization"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::InvalidToken("not_bearer"));
    }
    let token = token.trim_start_matches(' ');
    if !is_token68(token) {
        return Err(Refusal::InvalidToken("malformed_token"));
    }
    Ok(token)
}

fn is_token68(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && t.len() <= 8192
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}

/// RFC 8705 §3: the token's `cnf."x5t#S256"` must be this connection's client certificate.
pub struct CertBinding;

#[async_trait]
impl Filter for CertBinding {
    fn name(&self) -> &'static str {
        "cert_binding"
    }

    async fn run(&self, _req: &RequestHeader, state: &mut FilterState) -> Outcome {
        let Some(presented) = state.client_thumbprint.as_deref() else {
            return Outcome::Respond(Refusal::InvalidToken("no_client_certificate"));
        };
        let bound = state.token.as_ref().and_then(|t| t.claims.cnf.as_ref()).and_then(|c| c.x5t_s256.as_deref());
        match bound {
            None => Outcome::Respond(Refusal::InvalidToken("token_not_certificate_bound")),
            Some(b) if same(b.as_bytes(), presented.as_bytes()) => Outcome::Continue,
            Some(_) => Outcome::Respond(Refusal::InvalidToken("certificate_mismatch")),
        }
    }
}

/// Requires scopes per route and method. Runs on every request, cached token or not.
pub struct Scope {
    pub required: Vec<String>,
    pub methods: BTreeMap<String, Vec<String>>,
}

#[async_trait]
impl Filter for Scope {
    fn name(&self) -> &'static str {
        "scope"
    }

    async fn run(&self, req: &RequestHeader, state: &mut FilterState) -> Outcome {
        let Some(token) = state.token.as_ref() else {
            return Outcome::Respond(Refusal::InvalidToken("no_token_claims"));
        };
        let per_method = self.methods.get(req.method.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let wanted: Vec<&String> = self.required.iter().chain(per_method).collect();
        if wanted.iter().all(|s| token.claims.has_scope(s)) {
            return Outcome::Continue;
        }
        let scopes: Vec<&str> = wanted.iter().map(|s| s.as_str()).collect();
        Outcome::Respond(Refusal::InsufficientScope(scopes.join(" ")))
    }
}

/// Constant-time comparison; `openssl::memcmp::eq` panics on unequal lengths, this does not.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::{Claims, Confirmation};

    fn req(method: &str, uri: &str, auth: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
        for a in auth {
            r.append_header("authorization", *a).unwrap();
        }
        r
    }

    fn token(scope: &str, x5t: Option<&str>) -> Arc<ActiveToken> {
        let claims = Claims {
            exp: Some(i64::MAX),
            scope: Some(scope.into()),
            sub: None,
            cnf: x5t.map(|x| Confirmation { x5t_s256: Some(x.into()) }),
        };
        Arc::new(ActiveToken { jwt: "h.p.s".into(), claims })
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&req("GET", "/", &["Bearer abc-123"])), Ok("abc-123"));
        assert_eq!(bearer_token(&req("GET", "/", &["bEaReR abc"])), Ok("abc"));
        assert_eq!(bearer_token(&req("GET", "/", &[])), Err(Refusal::NoToken));
        assert!(matches!(bearer_token(&req("GET", "/", &["Basic abc"])), Err(Refusal::InvalidToken(_))));
        assert!(matches!(bearer_token(&req("GET", "/", &["Bearer "])), Err(Refusal::InvalidToken(_))));
        assert!(matches!(bearer_token(&req("GET", "/", &["Bearer a b"])), Err(Refusal::InvalidToken(_))));
        assert!(matches!(bearer_token(&req("GET", "/", &["Bearer a", "Bearer b"])), Err(Refusal::InvalidRequest(_))));
        assert!(matches!(bearer_token(&req("GET", "/x?access_token=abc", &[])), Err(Refusal::InvalidRequest(_))));
    }

    #[tokio::test]
    async fn binding_needs_the_same_thumbprint() {
        // A thumbprint with several '-' and '_' (the reference API replaced only the first '/').
        let x5t = "ls2Lhy1SwH4o1F_sU40C66HWfjQ-49Iz8w7_-gii6wU";
        let r = req("POST", "/api/transactions", &[]);
        let mut s = FilterState { client_thumbprint: Some(x5t.into()), token: Some(token("t", Some(x5t))), ..Default::default() };
        assert_eq!(CertBinding.run(&r, &mut s).await, Outcome::Continue);
        s.client_thumbprint = Some("ls2Lhy1SwH4o1F/sU40C66HWfjQ+49Iz8w7/+gii6wU".into());
        assert_eq!(CertBinding.run(&r, &mut s).await, Outcome::Respond(Refusal::InvalidToken("certificate_mismatch")));
        s.client_thumbprint = None;
        assert_eq!(CertBinding.run(&r, &mut s).await, Outcome::Respond(Refusal::InvalidToken("no_client_certificate")));
        let mut unbound = FilterState { client_thumbprint: Some(x5t.into()), token: Some(token("t", None)), ..Default::default() };
        assert_eq!(
            CertBinding.run(&r, &mut unbound).await,
            Outcome::Respond(Refusal::InvalidToken("token_not_certificate_bound"))
        );
    }

    #[tokio::test]
    async fn scope_is_checked_per_method() {
        let f = Scope {
            required: vec!["transactions".into()],
            methods: BTreeMap::from([("POST".to_string(), vec!["write".to_string()])]),
        };
        let mut s = FilterState { token: Some(token("transactions", None)), ..Default::default() };
        assert_eq!(f.run(&req("GET", "/", &[]), &mut s).await, Outcome::Continue);
        assert_eq!(
            f.run(&req("POST", "/", &[]), &mut s).await,
            Outcome::Respond(Refusal::InsufficientScope("transactions write".into()))
        );
        s.token = Some(token("transactions write", None));
        assert_eq!(f.run(&req("POST", "/", &[]), &mut s).await, Outcome::Continue);
    }
}
