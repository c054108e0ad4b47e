//! The `routes` section: host and path prefix, the upstream, methods, CORS, body limit, and the
//! filter chain.

use super::limits::{rate, RateConfig};
use super::upstream::UpstreamConfig;
use crate::config::closed::{HttpMethod, RateKey, ScopeDefault};
use crate::config::load::dur;
use crate::config::load::{Check, Names};
use crate::config::schema::Dur;
use crate::host::HostPattern;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const CORS_MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub host: String,
    pub path_prefix: Option<String>,
    pub upstream: String,
    /// The methods this route accepts; others are answered 405 with `Allow`. All when absent.
    pub methods: Option<Vec<HttpMethod>>,
    /// serde_yaml reads enums from `!tags` only: `singleton_map` lets users write the usual one-key maps.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub forward_client_cert: bool,
    /// Pass `Upgrade` requests (WebSocket) through; after a 101 the connection is a raw tunnel.
    #[serde(default)]
    pub allow_upgrade: bool,
    /// Methods retried on another backend after the request was sent (the API may have acted on
    /// it): idempotent ones only. Default GET, HEAD, OPTIONS; never POST unless listed.
    pub retry_methods: Option<Vec<HttpMethod>>,
    /// The largest request body, in bytes (default `limits.max_body_bytes`).
    pub max_body_bytes: Option<u64>,
    /// CORS for trusted web origins; off when absent.
    pub cors: Option<Cors>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Exact origins, e.g. `https://portal.example.com`.
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Option<Vec<String>>,
    pub allowed_headers: Option<Vec<String>>,
    pub max_age: Option<Dur>,
}

/// One filter of a route's chain, written as a one-key map: `- phantom_token: { introspection: idsvr }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    PhantomToken(PhantomToken),
    CertBinding(CertBinding),
    Binding(Binding),
    Scope(Scope),
    RateLimit(RateLimit),
}

/// A token bucket per partner on every request of the route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: Option<u32>,
    #[serde(default)]
    pub key: RateKey,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhantomToken {
    pub introspection: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertBinding {}

/// Which sender constraints a route accepts; a token is checked the way it is bound.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub accept: Vec<BindingKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingKind {
    /// RFC 8705: `cnf."x5t#S256"` and the connection's client certificate.
    Certificate,
    /// RFC 9449: `cnf.jkt` and a DPoP proof.
    Dpop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub required: Vec<String>,
    /// Per HTTP method, scopes required on top of `required`.
    #[serde(default)]
    pub methods: BTreeMap<HttpMethod, Vec<String>>,
    /// For a method not in `methods`: `required` (the route's scopes suffice) or `deny`.
    #[serde(default)]
    pub default: ScopeDefault,
}

#[derive(Debug, Clone)]
pub enum FilterConfig {
    PhantomToken {
        introspection: String,
    },
    CertBinding,
    /// `accept` of the `binding` filter.
    Binding {
        certificate: bool,
        dpop: bool,
    },
    Scope {
        required: Vec<String>,
        methods: BTreeMap<HttpMethod, Vec<String>>,
        default: ScopeDefault,
    },
    RateLimit {
        rate: RateConfig,
        key: RateKey,
    },
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub host: HostPattern,
    pub path_prefix: String,
    pub upstream: Arc<UpstreamConfig>,
    /// The methods this route accepts (`HEAD` comes with `GET`); `None` for all implemented ones.
    pub methods: Option<Vec<HttpMethod>>,
    pub filters: Vec<FilterConfig>,
    pub forward_client_cert: bool,
    /// `Upgrade` requests are refused unless this is set: after a 101 nothing more is checked.
    pub allow_upgrade: bool,
    pub cors: Option<CorsConfig>,
    /// Methods retried on another backend after the request was sent.
    pub retry_methods: Vec<HttpMethod>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: u64,
}

/// CORS for trusted web origins, with the header values ready to send.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub origins: Vec<String>,
    pub methods: String,
    pub headers: String,
    pub max_age: String,
}

impl CorsConfig {
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }
}

pub(in crate::config) fn validate(
    check: &mut Check,
    n: usize,
    r: &Route,
    (upstreams, names): (&BTreeMap<String, Arc<UpstreamConfig>>, &Names),
    default_body_bytes: u64,
) -> Option<RouteConfig> {
    let key = format!("routes[{n}]");
    let host = check.ok(&format!("{key}.host"), HostPattern::parse(&r.host));
    let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_string());
    if !path_prefix.starts_with('/') {
        check.fail(&format!("{key}.path_prefix"), "must start with /");
    }
    if !names.upstreams.contains(&r.upstream) {
        check.fail(&format!("{key}.upstream"), format!("no upstream named {:?}", r.upstream));
    }
    let filters = r
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| filter(check, &format!("{key}.filters[{i}]"), f, names))
        .collect::<Vec<_>>();
    check_filter_order(check, &key, &filters);
    let cors = r.cors.as_ref().map(|c| cors(check, &key, c));
    if r.methods.as_ref().is_some_and(Vec::is_empty) {
        check.fail(&format!("{key}.methods"), "lists no method: remove the key to accept every method");
    }
    Some(RouteConfig {
        host: host?,
        path_prefix,
        upstream: upstreams.get(&r.upstream).cloned()?,
        methods: r.methods.clone(),
        filters,
        forward_client_cert: r.forward_client_cert,
        allow_upgrade: r.allow_upgrade,
        cors,
        retry_methods: retry_methods(check, &key, r),
        max_body_bytes: r.max_body_bytes.unwrap_or(default_body_bytes),
    })
}

/// RFC 9110 §9.2.2: only an idempotent method may be sent twice; the safe ones by default.
fn retry_methods(check: &mut Check, key: &str, r: &Route) -> Vec<HttpMethod> {
    let Some(listed) = &r.retry_methods else { return vec![HttpMethod::GET, HttpMethod::HEAD, HttpMethod::OPTIONS] };
    for m in listed {
        if !m.is_idempotent() {
            check.fail(
                &format!("{key}.retry_methods"),
                format!("{} is not idempotent: it is never retried", m.as_str()),
            );
        }
    }
    listed.clone()
}

fn cors(check: &mut Check, key: &str, c: &Cors) -> CorsConfig {
    for (i, o) in c.allowed_origins.iter().enumerate() {
        let ok = url::Url::parse(o).is_ok_and(|u| u.origin().ascii_serialization() == *o);
        if !ok || o == "null" {
            check.fail(
                &format!("{key}.cors.allowed_origins[{i}]"),
                format!("{o:?} is not an origin like https://portal.example.com"),
            );
        }
    }
    let methods = c.allowed_methods.clone().unwrap_or_else(|| vec!["GET".into(), "POST".into()]);
    let headers = c
        .allowed_headers
        .clone()
        .unwrap_or_else(|| vec!["authorization".into(), "content-type".into(), "x-fapi-interaction-id".into()]);
    CorsConfig {
        origins: c.allowed_origins.clone(),
        methods: methods.join(", "),
        headers: headers.join(", "),
        max_age: dur(c.max_age, CORS_MAX_AGE).as_secs().to_string(),
    }
}

fn filter(check: &mut Check, key: &str, f: &Filter, names: &Names) -> FilterConfig {
    match f {
        Filter::PhantomToken(p) => {
            if !names.introspection.contains(&p.introspection) {
                check.fail(
                    &format!("{key}.phantom_token.introspection"),
                    format!("no introspection named {:?}", p.introspection),
                );
            }
            FilterConfig::PhantomToken { introspection: p.introspection.clone() }
        }
        Filter::CertBinding(_) => FilterConfig::CertBinding,
        Filter::Binding(b) => {
            if b.accept.is_empty() {
                check.fail(&format!("{key}.binding.accept"), "names certificate, dpop or both");
            }
            FilterConfig::Binding {
                certificate: b.accept.contains(&BindingKind::Certificate),
                dpop: b.accept.contains(&BindingKind::Dpop),
            }
        }
        Filter::Scope(s) => {
            FilterConfig::Scope { required: s.required.clone(), methods: s.methods.clone(), default: s.default }
        }
        Filter::RateLimit(r) => FilterConfig::RateLimit {
            rate: rate(check, &format!("{key}.rate_limit"), r.per_second, r.burst),
            key: r.key,
        },
    }
}

/// `cert_binding` and `scope` read the claims that `phantom_token` produces, so it must come first.
fn check_filter_order(check: &mut Check, key: &str, filters: &[FilterConfig]) {
    let first_token = filters.iter().position(|f| matches!(f, FilterConfig::PhantomToken { .. }));
    for (i, f) in filters.iter().enumerate() {
        let needs_token =
            matches!(f, FilterConfig::CertBinding | FilterConfig::Binding { .. } | FilterConfig::Scope { .. });
        if needs_token && first_token.is_none_or(|t| t > i) {
            check.fail(&format!("{key}.filters[{i}]"), "needs a phantom_token filter before it");
        }
    }
}
