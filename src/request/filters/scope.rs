//! The scope filter: the token must carry the route's scopes, and the method's. Runs on every
//! request, cached token or not, so a cached introspection answer never stands in for a decision.
//!
//! Methods are looked up exactly: the normalisation step has already refused every method that is
//! not one of the implemented ones spelled in upper case, so `delete` cannot miss `DELETE` here.

use super::{BuildContext, BuildError, Filter, FilterState, Outcome, Section};
use crate::config::{HttpMethod, ScopeDefault};
use crate::request::respond::Refusal;
use async_trait::async_trait;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The `scope` section. Nothing in it can be wrong once it is read: methods are a closed set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub required: Vec<String>,
    /// Per HTTP method, scopes required on top of `required`.
    #[serde(default)]
    pub methods: BTreeMap<HttpMethod, Vec<String>>,
    /// For a method not in `methods`: `required` (the route's scopes suffice) or `deny`.
    #[serde(default)]
    pub default: ScopeDefault,
}

impl Section for Config {
    fn reads_token(&self) -> bool {
        true
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Filter>, BuildError> {
        Ok(Box::new(Scope { required: self.required.clone(), methods: self.methods.clone(), default: self.default }))
    }
}

pub struct Scope {
    pub required: Vec<String>,
    /// Per method, scopes required on top of `required`.
    pub methods: BTreeMap<HttpMethod, Vec<String>>,
    /// For a method not in `methods`: `required` alone, or refused.
    pub default: ScopeDefault,
}

#[async_trait]
impl Filter for Scope {
    fn name(&self) -> &'static str {
        "scope"
    }

    async fn run(&self, req: &RequestHeader, state: &mut FilterState) -> Outcome {
        let Some(token) = state.token.as_ref() else {
            return Outcome::Respond(Refusal::InvalidToken(crate::reason::Token::NoTokenClaims));
        };
        let per_method = match HttpMethod::exact(req.method.as_str()).and_then(|m| self.methods.get(&m)) {
            Some(scopes) => scopes.as_slice(),
            None if self.default == ScopeDefault::Deny => return Outcome::Respond(Refusal::MethodDenied),
            None => &[],
        };
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
            methods: BTreeMap::from([(HttpMethod::POST, vec!["write".to_string()])]),
            default: ScopeDefault::Required,
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

    #[tokio::test]
    async fn default_deny_refuses_every_method_not_listed() {
        let f = Scope {
            required: vec![],
            methods: BTreeMap::from([(HttpMethod::DELETE, vec!["admin".to_string()]), (HttpMethod::GET, vec![])]),
            default: ScopeDefault::Deny,
        };
        let mut s = FilterState { token: Some(token("transactions", None)), ..Default::default() };
        assert_eq!(f.run(&req("GET", "/", &[]), &mut s).await, Outcome::Continue);
        assert_eq!(f.run(&req("POST", "/", &[]), &mut s).await, Outcome::Respond(Refusal::MethodDenied));
        assert_eq!(
            f.run(&req("DELETE", "/", &[]), &mut s).await,
            Outcome::Respond(Refusal::InsufficientScope("admin".into()))
        );
        // Never reached in production (normalisation refuses it first); still no way through.
        assert_eq!(f.run(&req("delete", "/", &[]), &mut s).await, Outcome::Respond(Refusal::MethodDenied));
    }
}
