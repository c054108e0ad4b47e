//! The `routes` section: host and path prefix, the upstream, methods, CORS, body limit, and the
//! filter chain.
//!
//! The filters are not known here. Each filter owns its section's type, its checks and its
//! constructor in `request::filters`, a higher layer that this one must not name. So a route keeps
//! its `filters` as the YAML written, and the loader is handed the filters' checks as a
//! [`FilterRules`] by its caller: `-t` still reports every problem of the file in one run, and no
//! import runs from `config` up to `request`.

use super::upstream::UpstreamConfig;
use crate::config::closed::HttpMethod;
use crate::config::problems::Problem;
use crate::config::shared::dur;
use crate::config::shared::Dur;
use crate::config::shared::{Check, Names};
use crate::host::HostPattern;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// The checks of the routes' filters, which belong to the filters (`request::filters`
/// implements this and its caller hands it to `config::load`).
pub trait FilterRules {
    /// Reads the `filters` of every route from the file's text, so that a mistake in one is a
    /// parse error with its path, line and column like any other, and checks each against the
    /// introspection sections written in the file. One entry per route, in the file's order.
    fn check(&self, text: &str, introspection: &BTreeSet<String>) -> Result<Vec<RouteFilters>, serde_yaml::Error>;
}

/// What the rest of the configuration needs to know of one route's filters.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RouteFilters {
    /// Problems, each with its key below the route (`filters[1].scope`).
    pub problems: Vec<Problem>,
    /// A filter accepts DPoP-bound tokens: the `dpop` section's defaults apply when it is absent.
    pub accepts_dpop: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub host: String,
    pub path_prefix: Option<String>,
    pub upstream: String,
    /// The methods this route accepts; others are answered 405 with `Allow`. All when absent.
    pub methods: Option<Vec<HttpMethod>>,
    /// Each filter as written (a one-key map, `- scope: {required: [a]}`): read and checked by the
    /// [`FilterRules`] that `load` is given.
    #[serde(default)]
    pub filters: Vec<serde_yaml::Value>,
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

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub host: HostPattern,
    pub path_prefix: String,
    pub upstream: Arc<UpstreamConfig>,
    /// The methods this route accepts (`HEAD` comes with `GET`); `None` for all implemented ones.
    pub methods: Option<Vec<HttpMethod>>,
    /// The filter sections as written, checked at load: `request::filters` builds the chain from them.
    pub filters: Vec<serde_yaml::Value>,
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
    (r, filters): (&Route, &RouteFilters),
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
    for p in &filters.problems {
        check.fail(&format!("{key}.{}", p.key), &p.message);
    }
    let cors = r.cors.as_ref().map(|c| cors(check, &key, c));
    if r.methods.as_ref().is_some_and(Vec::is_empty) {
        check.fail(&format!("{key}.methods"), "lists no method: remove the key to accept every method");
    }
    Some(RouteConfig {
        host: host?,
        path_prefix,
        upstream: upstreams.get(&r.upstream).cloned()?,
        methods: r.methods.clone(),
        filters: r.filters.clone(),
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
