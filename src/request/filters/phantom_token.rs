//! The phantom-token filter: swaps an opaque access token for the JWT that introspection returns,
//! through the introspector's cache.

use super::{Filter, FilterState, Outcome};
use crate::config::RateKey;
use crate::metrics;
use crate::request::introspect::{IntrospectError, Introspector, TokenState};
use crate::request::limit::{retry_after, Limiter};
use crate::request::respond::Refusal;
use crate::token::{cache_key, token_id};
use async_trait::async_trait;
use pingora_http::RequestHeader;
use std::sync::Arc;

pub struct PhantomToken {
    pub introspector: Arc<Introspector>,
    /// Bounds the introspection calls one partner can cause: garbage tokens are all misses.
    pub miss_limit: Option<Arc<Limiter>>,
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
        let key = cache_key(token);
        state.token_id = Some(token_id(&key));
        if let Some(refusal) = self.over_miss_limit(&key, state) {
            return Outcome::Respond(refusal);
        }
        let (result, how) = self.introspector.lookup(token, key).await;
        state.cache = Some(how);
        metrics::cache_lookup(self.introspector.name(), how.as_str(), self.introspector.entry_count());
        match result {
            Ok(TokenState::Active(t)) => {
                state.token = Some(t);
                Outcome::Continue
            }
            Ok(TokenState::Inactive) => Outcome::Respond(Refusal::InvalidToken("inactive_token")),
            Ok(TokenState::Refused(reason)) => Outcome::Respond(Refusal::InvalidToken(reason)),
            Err(IntrospectError::Unavailable(r)) => Outcome::Respond(Refusal::IdentityUnavailable(r)),
            Err(IntrospectError::BadAnswer(r)) => Outcome::Respond(Refusal::IdentityBadAnswer(r)),
        }
    }
}

impl PhantomToken {
    /// A 429 when this token is not cached and the partner has used up its introspection calls.
    /// Cache hits are never limited.
    fn over_miss_limit(&self, key: &[u8; 32], state: &FilterState) -> Option<Refusal> {
        let limiter = self.miss_limit.as_ref()?;
        if self.introspector.is_cached(key) {
            return None;
        }
        let partner = state.partner(RateKey::Thumbprint)?;
        let wait = limiter.check(partner).err()?;
        metrics::rate_limited("introspection_misses");
        Some(Refusal::RateLimited { limit: "introspection_misses", retry_after: retry_after(wait) })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::filters::test_support::req;

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
}
