//! The per-route filter chain run in `request_filter`: phantom token, sender binding, scope, rate
//! limit.
//!
//! A filter is one module here. It owns its configuration section (`Config`: the serde type of
//! what is written under its name, unknown keys denied), the checks of that section and its
//! constructor (both through [`Section`]), and the filter itself, which answers `Continue` or
//! `Respond(refusal)` from the request header and the per-request state only, so that it is
//! unit-tested without any network or pingora session. [`FilterConfig`] lists the filters: adding
//! one is its module, one variant there and its arm in [`FilterConfig::section`], the one match
//! over the filters (docs/architecture.md, "How to add a filter", shows the whole change for a small one).
//!
//! `config` is a lower layer and never names these types. A route's model keeps its filter
//! sections as written; `config::load` is handed [`Rules`] (a `config::FilterRules`) by its caller
//! and so checks the filters with the rest of the file, each problem named by its key; then
//! [`build_chain`] reads the sections again, known good by then, and builds the chain.

mod binding;
mod cert_binding;
mod phantom_token;
mod rate_limit;
mod scope;

pub use binding::{Binding, BindingKind};
pub use cert_binding::CertBinding;
pub use phantom_token::{bearer_token, PhantomToken};
pub use rate_limit::RateLimit;
pub use scope::Scope;

use crate::config::{FilterRules, Problem, RateKey, RouteFilters};
use crate::request::dpop::DpopVerifier;
use crate::request::introspect::{ActiveToken, CacheResult, Introspector};
use crate::request::limit::SharedLimit;
use crate::request::respond::Refusal;
use crate::token::ClientCert;
use async_trait::async_trait;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One filter of a route's chain, written as a one-key map: `- phantom_token: { introspection: idsvr }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterConfig {
    PhantomToken(phantom_token::Config),
    CertBinding(cert_binding::Config),
    Binding(binding::Config),
    Scope(scope::Config),
    RateLimit(rate_limit::Config),
}

impl FilterConfig {
    /// The filter's own section: the one match over the filters.
    fn section(&self) -> &dyn Section {
        match self {
            FilterConfig::PhantomToken(c) => c,
            FilterConfig::CertBinding(c) => c,
            FilterConfig::Binding(c) => c,
            FilterConfig::Scope(c) => c,
            FilterConfig::RateLimit(c) => c,
        }
    }
}

/// What a filter's configuration section does besides being read: its checks, what it tells of
/// the chain, and its constructor. Each filter module implements it for its `Config`.
pub trait Section {
    /// Problems with the section as written, each keyed below the filter's entry
    /// (`phantom_token.introspection`). `-t` reports them with the file and the route.
    fn check(&self, _ctx: &CheckContext) -> Vec<Problem> {
        Vec::new()
    }

    /// It finds the request's token: the filters that read one must come after it.
    fn provides_token(&self) -> bool {
        false
    }

    /// It reads the token that `phantom_token` found.
    fn reads_token(&self) -> bool {
        false
    }

    /// The sender constraints it accepts.
    fn accepts(&self) -> Accepts {
        Accepts::default()
    }

    /// The filter, from a section that passed [`Section::check`].
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Filter>, BuildError>;
}

/// What a section's checks may look at besides the section.
pub struct CheckContext<'a> {
    /// The introspection sections written in the file.
    pub introspection: &'a BTreeSet<String>,
}

/// What a filter is built from besides its section.
pub struct BuildContext<'a> {
    pub parts: &'a ChainParts,
    /// Names the route's rate-limit buckets on a shared-state server.
    pub route: &'a str,
    /// What the route's whole chain accepts.
    pub accepts: Accepts,
}

/// The sender constraints a route accepts: certificate binding (RFC 8705), DPoP (RFC 9449).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accepts {
    pub certificate: bool,
    pub dpop: bool,
}

/// A filter that cannot be built from its checked section: a part the build step makes for it
/// is missing (its own building failed and was reported). Each module's error says which.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BuildError(Box<dyn std::error::Error + Send + Sync>);

impl BuildError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        BuildError(Box::new(e))
    }
}

/// Why a route's chain was not built.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A section that the checks at load would have refused.
    #[error("{0}")]
    Section(#[from] serde_yaml::Error),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// A problem of a chain's order.
#[derive(Debug, thiserror::Error)]
enum OrderError {
    /// `cert_binding`, `binding` and `scope` read the claims that `phantom_token` produces.
    #[error("needs a phantom_token filter before it")]
    NoTokenBefore,
}

/// The filters' checks, which `config::load` runs with the rest of the file.
pub struct Rules;

/// The routes' filters and nothing else of the file (the rest is `config`'s to read).
#[derive(Deserialize)]
struct FiltersOfFile {
    #[serde(default)]
    routes: Vec<FiltersOfRoute>,
}

#[derive(Deserialize)]
struct FiltersOfRoute {
    /// serde_yaml reads enums from `!tags` only: `singleton_map` lets users write the usual one-key maps.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    filters: Vec<FilterConfig>,
}

impl FilterRules for Rules {
    fn check(&self, text: &str, introspection: &BTreeSet<String>) -> Result<Vec<RouteFilters>, serde_yaml::Error> {
        let file: FiltersOfFile = serde_yaml::from_str(text)?;
        let ctx = CheckContext { introspection };
        Ok(file.routes.iter().map(|r| check_chain(&r.filters, &ctx)).collect())
    }
}

/// Every problem of one route's filters, keyed below the route (`filters[1].scope`): each
/// section's, then the order's.
fn check_chain(configs: &[FilterConfig], ctx: &CheckContext) -> RouteFilters {
    let mut problems = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        for p in c.section().check(ctx) {
            problems.push(Problem::new(format!("filters[{i}].{}", p.key), p.message));
        }
    }
    let first_token = configs.iter().position(|c| c.section().provides_token());
    for (i, c) in configs.iter().enumerate() {
        if c.section().reads_token() && first_token.is_none_or(|t| t > i) {
            problems.push(Problem::new(format!("filters[{i}]"), OrderError::NoTokenBefore));
        }
    }
    RouteFilters { problems, accepts_dpop: accepts(configs).dpop }
}

/// What a chain of these filters accepts: what any of them does.
fn accepts(configs: &[FilterConfig]) -> Accepts {
    configs.iter().map(|c| c.section().accepts()).fold(Accepts::default(), |a, b| Accepts {
        certificate: a.certificate || b.certificate,
        dpop: a.dpop || b.dpop,
    })
}

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

#[async_trait]
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;
    async fn run(&self, req: &RequestHeader, state: &mut FilterState) -> Outcome;
}

/// A route's filters, and what they accept.
pub struct Chain {
    pub filters: Vec<Box<dyn Filter>>,
    pub accepts: Accepts,
}

/// Builds a route's chain from its sections as written (checked at load: every introspection
/// name exists). `route` names the route's rate-limit buckets on a shared-state server.
pub fn build_chain(sections: &[serde_yaml::Value], parts: &ChainParts, route: &str) -> Result<Chain, ChainError> {
    let configs: Vec<FilterConfig> =
        serde_yaml::with::singleton_map_recursive::deserialize(serde_yaml::Value::Sequence(sections.to_vec()))?;
    let ctx = BuildContext { parts, route, accepts: accepts(&configs) };
    let filters = configs.iter().map(|c| c.section().build(&ctx)).collect::<Result<_, _>>()?;
    Ok(Chain { filters, accepts: ctx.accepts })
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
