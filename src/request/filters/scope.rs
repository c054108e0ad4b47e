//! The scope filter: the token must carry the route's scopes, and the method's. Runs on every
//! request, cached token or not, so a cached introspection answer never stands in for a decision.

use super::{Filter, FilterState, Outcome};
use crate::request::respond::Refusal;
use async_trait::async_trait;
use pingora_http::RequestHeader;
use std::collections::BTreeMap;

pub struct Scope {
    pub required: Vec<String>,
    /// Per upper-case HTTP method, scopes required on top of `required`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::filters::test_support::{req, token};

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
