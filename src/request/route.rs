//! Route choice: each configured route with its filter chain and its upstream, and the first
//! route whose host and path prefix match a request.

use crate::config::{HttpMethod, RouteConfig};
use crate::request::dpop::DpopVerifier;
use crate::request::filters::{Accepts, Chain, Filter};
use crate::request::respond::{Challenge, Refusal};
use crate::request::upstream::Upstream;
use std::sync::Arc;

pub struct Route {
    pub cfg: RouteConfig,
    /// `host/prefix`, for logs and metric labels (configured text, never request data).
    pub label: String,
    pub chain: Vec<Box<dyn Filter>>,
    /// The sender constraints its chain accepts.
    pub accepts: Accepts,
    /// Its backends and their connection settings, shared with the other routes to it.
    pub upstream: Arc<Upstream>,
    /// The methods accepted when the route limits them (`HEAD` with `GET`), and their `Allow` value.
    allowed: Option<(Vec<HttpMethod>, String)>,
    /// The schemes its refusals challenge with.
    pub challenge: Challenge,
    /// The DPoP checks, when the route accepts DPoP: its answers carry their nonces.
    pub dpop: Option<Arc<DpopVerifier>>,
    /// Its request series, kept so that a request does not look them up by label.
    pub series: crate::metrics::RouteSeries,
}

impl Route {
    pub fn new(cfg: RouteConfig, chain: Chain, upstream: Arc<Upstream>) -> Self {
        let allowed = cfg.methods.as_ref().map(|listed| {
            let mut methods = listed.clone();
            // RFC 9110 §9.3.2: HEAD is GET without the body; a route that serves one serves both.
            if methods.contains(&HttpMethod::GET) {
                methods.push(HttpMethod::HEAD);
            }
            methods.sort();
            methods.dedup();
            let allow = methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
            (methods, allow)
        });
        let label = format!("{}{}", cfg.host, cfg.path_prefix);
        let Chain { filters: chain, accepts } = chain;
        let series = crate::metrics::RouteSeries::new();
        Route { label, chain, accepts, upstream, cfg, allowed, challenge: Challenge::default(), dpop: None, series }
    }

    /// A route that accepts DPoP: `DPoP` challenges (and `Bearer` ones unless it accepts nothing
    /// else), and nonces on its answers when they are on.
    pub fn with_dpop(mut self, verifier: Arc<DpopVerifier>) -> Self {
        self.challenge = Challenge {
            bearer: self.accepts.certificate,
            dpop_algs: Some(verifier.algs().to_string()),
            used_dpop: false,
        };
        self.dpop = Some(verifier);
        self
    }

    /// Whether a request with this method may be sent again to another backend after it was sent.
    pub fn retries(&self, method: &http::Method) -> bool {
        HttpMethod::exact(method.as_str()).is_some_and(|m| self.cfg.retry_methods.contains(&m))
    }

    /// 405 with `Allow` for a method this route does not accept.
    pub fn method_refusal(&self, method: &http::Method) -> Option<Refusal> {
        let (methods, allow) = self.allowed.as_ref()?;
        let accepted = HttpMethod::exact(method.as_str()).is_some_and(|m| methods.contains(&m));
        (!accepted).then(|| Refusal::MethodNotAllowed(allow.clone()))
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        self.cfg.host.matches(host) && path.starts_with(&self.cfg.path_prefix)
    }
}

/// The index of the first route for this host and path.
pub fn find(routes: &[Route], host: &str, path: &str) -> Option<usize> {
    routes.iter().position(|r| r.matches(host, path))
}

/// A plain-TCP upstream named `api` with 1 s timeouts, for the request layer's unit tests.
#[cfg(test)]
pub(crate) fn test_upstream(address: &str) -> Arc<crate::config::UpstreamConfig> {
    use crate::config::{BackendAddress, EjectionConfig, Selection, UpstreamConfig};
    let d = std::time::Duration::from_secs(1);
    Arc::new(UpstreamConfig {
        name: "api".into(),
        backends: vec![BackendAddress { address: address.into(), weight: 1 }],
        selection: Selection::RoundRobin,
        health_check: None,
        ejection: EjectionConfig { failures: 3, duration: d },
        max_attempts: 3,
        client_identity: None,
        tls: false,
        sni: "api".into(),
        ca: None,
        host_header: None,
        connect_timeout: d,
        read_timeout: d,
        write_timeout: d,
        idle_timeout: d,
        resolve_interval: d,
    })
}
