//! The per-route filter chain run in `request_filter`: phantom token, certificate binding, scope.
//!
//! Each filter is built from its configuration section by [`build_chain`] and answers `Continue`
//! or `Respond(refusal)`. Filters see the request header and the per-request state only, so they
//! are unit-tested without any network or pingora session. A new filter is one file here, one
//! variant of `config::schema::Filter` (and its model), and one arm in [`build_chain`].

mod binding;
mod cert_binding;
mod phantom_token;
mod rate_limit;
mod scope;

pub use binding::Binding;
pub use cert_binding::CertBinding;
pub use phantom_token::{bearer_token, PhantomToken};
pub use rate_limit::RateLimit;
pub use scope::Scope;

use crate::config::{FilterConfig, RateKey};
use crate::request::dpop::DpopVerifier;
use crate::request::introspect::{ActiveToken, CacheResult, Introspector};
use crate::request::limit::SharedLimit;
use crate::request::respond::Refusal;
use crate::token::ClientCert;
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

/// The authorization scheme the token came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    /// RFC 9449 §7.1: `Authorization: DPoP <token>`.
    Dpop,
}

/// Per-request facts the filters read and write.
#[derive(Debug, Default)]
pub struct FilterState {
    /// This connection's verified client certificate, if there is one.
    pub client: Option<Arc<ClientCert>>,
    /// The token the phantom-token filter found active.
    pub token: Option<Arc<ActiveToken>>,
    pub cache: Option<CacheResult>,
    /// Short id of the presented token (a hash prefix), for logs.
    pub token_id: Option<String>,
    /// The client's address, as a rate-limit key for connections without a certificate.
    pub source: Option<String>,
    /// The request's trace, which the introspection call continues.
    pub trace: Option<crate::trace::RequestTrace>,
    /// The scheme of the presented token.
    pub scheme: Option<Scheme>,
    /// SHA-256 of the presented token (the cache key; a DPoP proof's `ath`).
    pub token_hash: Option<[u8; 32]>,
    /// The thumbprint of the key a valid DPoP proof of this request proved (the token's `cnf.jkt`).
    pub proven_jkt: Option<String>,
}

impl FilterState {
    /// Who a rate limit counts this request against: the certificate (by `key`), or the source
    /// address when there is none.
    pub fn partner(&self, key: RateKey) -> Option<&String> {
        match (&self.client, key) {
            (Some(c), RateKey::Thumbprint) => Some(&c.thumbprint),
            (Some(c), RateKey::Subject) => Some(&c.subject),
            (None, _) => self.source.as_ref(),
        }
    }
}

/// What the filters of every route share: one introspector (and cache) per section, and the
/// limit on introspection calls.
pub struct ChainParts {
    pub introspectors: BTreeMap<String, Arc<Introspector>>,
    pub miss_limit: Option<Arc<SharedLimit>>,
    /// The process's DPoP proof checks, when a route accepts DPoP.
    pub dpop: Option<Arc<DpopVerifier>>,
    /// The shared-state server, when several replicas count together.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Whether a route's filters accept DPoP-bound tokens.
pub fn accepts_dpop(configs: &[FilterConfig]) -> bool {
    configs.iter().any(|c| matches!(c, FilterConfig::Binding { dpop: true, .. }))
}

#[async_trait]
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;
    async fn run(&self, req: &RequestHeader, state: &mut FilterState) -> Outcome;
}

/// Builds a route's chain; the model has already checked that every introspection name exists.
/// `route` names the route's rate-limit buckets on a shared-state server.
pub fn build_chain(configs: &[FilterConfig], parts: &ChainParts, route: &str) -> Result<Vec<Box<dyn Filter>>, String> {
    let dpop = accepts_dpop(configs);
    configs
        .iter()
        .map(|c| -> Result<Box<dyn Filter>, String> {
            Ok(match c {
                FilterConfig::PhantomToken { introspection } => {
                    let i = parts
                        .introspectors
                        .get(introspection)
                        .ok_or_else(|| format!("no introspection {introspection}"))?;
                    Box::new(PhantomToken {
                        introspector: i.clone(),
                        miss_limit: parts.miss_limit.clone(),
                        accept_dpop: dpop,
                    })
                }
                FilterConfig::CertBinding => Box::new(CertBinding::new()),
                FilterConfig::Binding { certificate, dpop } => {
                    let verifier = match dpop {
                        true => Some(parts.dpop.clone().ok_or("dpop is accepted but no DPoP checks were built")?),
                        false => None,
                    };
                    Box::new(Binding { certificate: *certificate, dpop: verifier })
                }
                FilterConfig::Scope { required, methods, default } => {
                    Box::new(Scope { required: required.clone(), methods: methods.clone(), default: *default })
                }
                FilterConfig::RateLimit { rate, key } => {
                    Box::new(RateLimit { limiter: SharedLimit::new(*rate, route, parts.cluster.clone()), key: *key })
                }
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::token::{Claims, Confirmation};

    pub fn req(method: &str, uri: &str, auth: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
        for a in auth {
            r.append_header("authorization", *a).unwrap();
        }
        r
    }

    pub fn token(scope: &str, x5t: Option<&str>) -> Arc<ActiveToken> {
        token_with(scope, x5t.map(|x| Confirmation { x5t_s256: Some(x.into()), ..Default::default() }))
    }

    pub fn token_with(scope: &str, cnf: Option<Confirmation>) -> Arc<ActiveToken> {
        let claims = Claims { exp: Some(i64::MAX), scope: Some(scope.into()), sub: None, cnf };
        Arc::new(ActiveToken::new("h.p.s", claims).unwrap())
    }

    pub fn client(thumbprint: &str) -> Arc<ClientCert> {
        let mut c = ClientCert::from_der(b"test", "CN=t".into()).unwrap();
        c.thumbprint = thumbprint.into();
        Arc::new(c)
    }
}
