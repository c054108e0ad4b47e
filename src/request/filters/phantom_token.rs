//! The phantom-token filter: swaps an opaque access token for the JWT that introspection returns,
//! through the introspector's cache.

use super::{BuildContext, BuildError, CheckContext, Filter, FilterState, Outcome, Scheme, Section};
use crate::config::{Problem, RateKey};
use crate::metrics;
use crate::reason::{Limit, Request, SharedCheck, Token};
use crate::request::introspect::{IntrospectError, Introspector, TokenState};
use crate::request::limit::{retry_after, Denied, SharedLimit};
use crate::request::normalize::percent::{pieces, Piece};
use crate::request::respond::Refusal;
use crate::token::{cache_key, token_id};
use async_trait::async_trait;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The `phantom_token` section: the introspection section that answers for the route's tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub introspection: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no introspection named {0:?}")]
    UnknownIntrospection(String),
}

/// What the build step did not make for the filter.
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    #[error("no introspection {0}")]
    Introspector(String),
}

impl Config {
    pub fn validate(&self, introspection: &BTreeSet<String>) -> Result<(), ConfigError> {
        match introspection.contains(&self.introspection) {
            true => Ok(()),
            false => Err(ConfigError::UnknownIntrospection(self.introspection.clone())),
        }
    }
}

impl Section for Config {
    fn check(&self, ctx: &CheckContext) -> Vec<Problem> {
        let problem = self.validate(ctx.introspection).err();
        problem.map(|e| Problem::new("phantom_token.introspection", e)).into_iter().collect()
    }

    fn provides_token(&self) -> bool {
        true
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Filter>, BuildError> {
        let missing = || BuildError::new(Missing::Introspector(self.introspection.clone()));
        let introspector = ctx.parts.introspectors.get(&self.introspection).ok_or_else(missing)?;
        Ok(Box::new(PhantomToken {
            introspector: introspector.clone(),
            miss_limit: ctx.parts.miss_limit.clone(),
            accept_dpop: ctx.accepts.dpop,
            cache_series: metrics::CacheSeries::default(),
        }))
    }
}

pub struct PhantomToken {
    pub introspector: Arc<Introspector>,
    /// Bounds the introspection calls one partner can cause: garbage tokens are all misses.
    pub miss_limit: Option<Arc<SharedLimit>>,
    /// The route accepts the `DPoP` scheme besides `Bearer`.
    pub accept_dpop: bool,
    /// The introspector's token cache series, kept for this route's lookups.
    pub cache_series: metrics::CacheSeries,
}

#[async_trait]
impl Filter for PhantomToken {
    fn name(&self) -> &'static str {
        "phantom_token"
    }

    async fn run(&self, req: &RequestHeader, state: &mut FilterState) -> Outcome {
        let (scheme, token) = match access_token(req, self.accept_dpop) {
            Ok(t) => t,
            Err(refusal) => return Outcome::Respond(refusal),
        };
        let key = cache_key(token);
        state.scheme = Some(scheme);
        state.token_hash = Some(key);
        state.token_id = Some(token_id(&key));
        if let Some(refusal) = self.over_miss_limit(&key, state).await {
            return Outcome::Respond(refusal);
        }
        let (result, how) = self.introspector.lookup(token, key, state.trace.as_ref()).await;
        state.cache = Some(how);
        metrics::cache_lookup(&self.cache_series, self.introspector.name(), how, self.introspector.entry_count());
        match result {
            Ok(TokenState::Active(t)) => {
                state.token = Some(t);
                Outcome::Continue
            }
            Ok(TokenState::Inactive) => Outcome::Respond(Refusal::InvalidToken(Token::InactiveToken)),
            Ok(TokenState::Refused(reason)) => Outcome::Respond(Refusal::InvalidToken(reason)),
            Err(IntrospectError::Unavailable(r)) => Outcome::Respond(Refusal::IdentityUnavailable(r)),
            Err(IntrospectError::BadAnswer(r)) => Outcome::Respond(Refusal::IdentityBadAnswer(r)),
        }
    }
}

impl PhantomToken {
    /// A 429 when this token is a miss (see [`Introspector::knows`]) and the partner has used up
    /// its introspection calls. Cache hits and tokens known active are never limited.
    async fn over_miss_limit(&self, key: &[u8; 32], state: &FilterState) -> Option<Refusal> {
        let limiter = self.miss_limit.as_ref()?;
        // A token known active, even while the outage of the purge subscription keeps its answer
        // from being served, is not a miss: asking again for it is the outage's cost.
        if self.introspector.knows(key) {
            return None;
        }
        let partner = state.partner(RateKey::Thumbprint)?;
        match limiter.take(partner).await.err()? {
            Denied::Over(wait) => {
                metrics::rate_limited(Limit::IntrospectionMisses);
                Some(Refusal::RateLimited { limit: Limit::IntrospectionMisses, retry_after: retry_after(wait) })
            }
            Denied::Unavailable => Some(Refusal::SharedStateUnavailable(SharedCheck::IntrospectionMisses)),
        }
    }
}

/// RFC 6750 §2.1: `Authorization: Bearer <token68>`, scheme case-insensitive. Tokens in the query
/// string (§2.3) are refused, as FAPI 2.0 requires.
pub fn bearer_token(req: &RequestHeader) -> Result<&str, Refusal> {
    access_token(req, false).map(|(_, t)| t)
}

/// The token and its scheme: `Bearer`, or `DPoP` (RFC 9449 §7.1) where the route accepts it.
pub fn access_token(req: &RequestHeader, accept_dpop: bool) -> Result<(Scheme, &str), Refusal> {
    if req.uri.query().is_some_and(query_names_access_token) {
        return Err(Refusal::InvalidRequest(Request::TokenInQuery));
    }
    let mut values = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Refusal::NoToken);
    };
    if values.next().is_some() {
        return Err(Refusal::InvalidRequest(Request::SeveralAuthorizations));
    }
    let text = value.to_str().map_err(|_| Refusal::InvalidToken(Token::MalformedAuthorization))?;
    let (scheme, token) = text.split_once(' ').ok_or(Refusal::InvalidToken(Token::MalformedAuthorization))?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if accept_dpop && scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(Refusal::InvalidToken(Token::NotBearer));
    };
    let token = token.trim_start_matches(' ');
    if !is_token68(token) {
        return Err(Refusal::InvalidToken(Token::MalformedToken));
    }
    Ok((scheme, token))
}

/// Whether any parameter of a query string could be read as `access_token` by some server: `&` or
/// `;` separators, with or without a value, percent-encoded (also twice), in any case, and with
/// PHP's renaming of `.`, ` ` and `[` to `_` or its `name[]` arrays.
fn query_names_access_token(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let raw = pair.split('=').next().unwrap_or_default();
        let decoded = decode_repeatedly(raw);
        let name = decoded.split('=').next().unwrap_or_default().trim().to_ascii_lowercase();
        let array = name.split('[').next().unwrap_or_default();
        let renamed: String = name.chars().map(|c| if matches!(c, ' ' | '.' | '[') { '_' } else { c }).collect();
        array == "access_token" || renamed == "access_token"
    })
}

/// Percent-decodes (and reads `+` as a space) until nothing changes, at most four times.
fn decode_repeatedly(text: &str) -> String {
    let mut current = text.replace('+', " ");
    for _ in 0..4 {
        let next = percent_decode(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// Decodes every escape; a stray `%` stays as written (lenient: this only looks for a name).
fn percent_decode(text: &str) -> String {
    let out: Vec<u8> = pieces(text.as_bytes())
        .map(|p| match p {
            Piece::Raw(b) | Piece::Escaped(b) => b,
            Piece::StrayPercent => b'%',
        })
        .collect();
    String::from_utf8_lossy(&out).into_owned()
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

    #[test]
    fn every_spelling_of_a_query_token_is_found() {
        for q in [
            "access_token=abc",
            "access_token",
            "a=1&access_token",
            "a=1;access_token=abc",
            "%61ccess_token=abc",
            "access%5Ftoken=abc",
            "%2561ccess_token=abc",
            "ACCESS_TOKEN=abc",
            "access.token=abc",
            "access+token=abc",
            "access%20token=abc",
            "access_token[]=abc",
            "access[token=abc",
            "+access_token=abc",
        ] {
            assert!(query_names_access_token(q), "{q}");
        }
        for q in ["access_tokens=1", "my_access_token=1", "a=access_token", "token=abc", "", "%zz"] {
            assert!(!query_names_access_token(q), "{q}");
        }
    }
}
