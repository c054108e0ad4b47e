//! The build step: turns the validated model into the runtime parts (the TLS acceptor, the token
//! issuer, one introspector per section, the routes with their filter chains and upstream peers).
//! `-t` and serving both call [`build`], so `-t` proves exactly what serving would use, and every
//! problem is reported at once, as `FILE: key: message`.

use crate::config::{Config, Problems};
use crate::connection::crl::SharedAcceptor;
use crate::connection::tls::build_acceptor;
use crate::request::filters::build_chain;
use crate::request::headers::StripList;
use crate::request::introspect::Introspector;
use crate::request::issuer::TokenIssuer;
use crate::request::normalize::Normalizer;
use crate::request::proxy::Gateway;
use crate::request::route::{upstream_peer, Route};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything the services are made of.
pub struct App {
    pub config: Config,
    pub acceptor: SharedAcceptor,
    pub gateway: Gateway,
    /// Signs the JWTs of json and rfc9701 modes; its JWKS is served on `token_issuer.jwks_address`.
    pub issuer: Option<Arc<TokenIssuer>>,
}

/// Builds every runtime part of `config`, or reports every problem found.
pub fn build(config: Config) -> Result<App, Problems> {
    let mut problems = Problems::new(&config.path);
    let acceptor = build_acceptor(&config.tls).map_err(|ps| ps.into_iter().for_each(|p| problems.add(p))).ok();
    let issuer = match &config.token_issuer {
        Some(t) => TokenIssuer::new(t).map(Arc::new).map_err(|ps| ps.into_iter().for_each(|p| problems.add(p))).ok(),
        None => None,
    };
    let mut introspectors = BTreeMap::new();
    for (name, i) in &config.introspection {
        match Introspector::new(i.clone(), issuer.clone()) {
            Ok(intro) => drop(introspectors.insert(name.clone(), Arc::new(intro))),
            Err(p) => problems.add(p),
        }
    }
    let routes = routes(&config, &introspectors, &mut problems);
    let normalizer =
        Normalizer { strip: StripList::new(&config.strip_headers), default_hosts: config.tls.hosts.clone() };
    let gateway = Gateway::new(routes, normalizer, config.refusals);
    let acceptor = problems.or(acceptor)?;
    Ok(App { acceptor: Arc::new(ArcSwap::from_pointee(acceptor)), gateway, issuer, config })
}

fn routes(config: &Config, introspectors: &BTreeMap<String, Arc<Introspector>>, problems: &mut Problems) -> Vec<Route> {
    let mut routes = Vec::new();
    for (n, r) in config.routes.iter().enumerate() {
        let chain =
            build_chain(&r.filters, introspectors).map_err(|e| problems.fail(&format!("routes[{n}].filters"), e));
        let peer = upstream_peer(&r.upstream).map_err(|p| problems.add(p));
        if let (Ok(chain), Ok(peer)) = (chain, peer) {
            routes.push(Route::new(r.clone(), chain, peer));
        }
    }
    routes
}
