//! The build step: turns the validated model into the runtime parts (the TLS acceptor, the token
//! issuer, one introspector per section, the routes with their filter chains and upstream peers).
//! `-t` and serving both call [`build`], so `-t` proves exactly what serving would use, and every
//! problem is reported at once, as `FILE: key: message`. Discovery of identity servers happens
//! here too, so `-t` reports what it found.

use crate::admin::{self, AdminParts};
use crate::cluster::Cluster;
use crate::config::{Config, DpopConfig, IntrospectionConfig, Problem, Problems, TokenIssuerConfig};
use crate::connection::crl::SharedAcceptor;
use crate::connection::hop::HopDoor;
use crate::connection::tls::build_acceptor;
use crate::request::discovery;
use crate::request::dpop::DpopVerifier;
use crate::request::filters::{self, build_chain, ChainParts};
use crate::request::headers::StripList;
use crate::request::introspect::Introspector;
use crate::request::issuer::TokenIssuer;
use crate::request::limit::SharedLimit;
use crate::request::normalize::Normalizer;
use crate::request::proxy::Routing;
use crate::request::route::Route;
use crate::request::upstream::Upstream;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Everything the services are made of.
pub struct App {
    pub config: Config,
    pub acceptor: SharedAcceptor,
    pub routing: Routing,
    /// Signs the JWTs of json and rfc9701 modes; its JWKS is served on `token_issuer.jwks_address`.
    pub issuer: Option<Arc<TokenIssuer>>,
    /// What the build found out (discovery results, kept caches), for `-t` and reloads to print.
    pub report: Vec<String>,
    /// One per introspection section, shared by the routes: what a reload or a purge works on.
    pub introspectors: BTreeMap<String, Arc<Introspector>>,
    /// The admin listener's TLS and authentication, when an `admin:` section is written.
    pub admin: Option<AdminParts>,
    /// The DPoP proof checks (and their replay cache), when a route accepts DPoP.
    pub dpop: Option<Arc<DpopVerifier>>,
    /// The handle to the shared-state server, when a `cluster` section is written.
    pub cluster: Option<Arc<Cluster>>,
    /// The trusted hop's listener, when a `trusted_hop` section is written.
    pub hop: Option<Arc<HopDoor>>,
}

/// What a reload carries over from the configuration being replaced: the token caches.
#[derive(Default)]
pub struct Kept {
    pub introspectors: BTreeMap<String, Arc<Introspector>>,
    pub token_issuer: Option<TokenIssuerConfig>,
    /// Its replay cache is kept while the window and the bound stay the same: a reload must not
    /// let a proof be used twice.
    pub dpop: Option<Arc<DpopVerifier>>,
    /// `Some` on a reload: the running process's connection (or its absence) stays, whatever the
    /// new file says; `None` on the first build.
    pub cluster: Option<Option<Arc<Cluster>>>,
}

/// Reads and validates one configuration file, the routes' filters with the rest: `config` is a
/// lower layer that does not know the filters, so they are handed to it here.
pub fn load(path: &std::path::Path) -> Result<Config, Problems> {
    crate::config::load(path, &filters::Rules)
}

/// Builds every runtime part of `config`, or reports every problem found.
pub fn build(config: Config) -> Result<App, Problems> {
    build_keeping(config, &Kept::default())
}

/// As [`build`], taking over the caches of `kept` whose introspection section (and the token
/// issuer that signs their JWTs) did not change.
pub fn build_keeping(config: Config, kept: &Kept) -> Result<App, Problems> {
    let mut problems = Problems::new(&config.path);
    let acceptor = build_acceptor(&config.tls).map_err(|ps| ps.into_iter().for_each(|p| problems.add(p))).ok();
    let hop = match config.trusted_hop.clone() {
        Some(h) => HopDoor::new(h).map(Arc::new).map_err(|p| problems.add(p)).ok(),
        None => None,
    };
    let issuer = match &config.token_issuer {
        Some(t) => TokenIssuer::new(t).map(Arc::new).map_err(|ps| ps.into_iter().for_each(|p| problems.add(p))).ok(),
        None => None,
    };
    let mut introspectors = BTreeMap::new();
    let mut report = Vec::new();
    // The running connection's setting: a change of the cluster section waits for a restart.
    let outage_ttl = match &kept.cluster {
        Some(running) => running.as_ref().map(|c| c.config().outage_cache_ttl),
        None => config.cluster.as_ref().map(|c| c.outage_cache_ttl),
    };
    let outage_ttl = outage_ttl.unwrap_or(Duration::ZERO);
    for (name, i) in &config.introspection {
        let built = discovered(i.clone(), &mut report)
            .and_then(|i| Introspector::new(i, issuer.clone()))
            .map(|i| i.with_outage_ttl(outage_ttl));
        match built {
            Ok(mut intro) => {
                let same_issuer = kept.token_issuer == config.token_issuer;
                if let (true, Some(old)) = (same_issuer, kept.introspectors.get(name)) {
                    if intro.keep_cache_of(old) {
                        report.push(format!("introspection.{name}: unchanged, its token cache is kept"));
                    }
                }
                introspectors.insert(name.clone(), Arc::new(intro));
            }
            Err(p) => problems.add(p),
        }
    }
    let admin = config
        .admin
        .as_ref()
        .and_then(|a| admin::build(a).map_err(|ps| ps.into_iter().for_each(|p| problems.add(p))).ok());
    let dpop = config.dpop.clone().map(|cfg| dpop_verifier(cfg, kept, &mut report));
    // The connection to the shared-state server is the process's: a reload keeps it (a change of
    // the section waits for a restart, see reload::FixedSetting).
    let cluster = match &kept.cluster {
        Some(running) => running.clone(),
        None => config.cluster.clone().and_then(|c| Cluster::new(c).map_err(|p| problems.add(p)).ok()),
    };
    let dpop = dpop.map(|d| Arc::new(d.with_cluster(cluster.clone())));
    let miss_limit = config
        .limits
        .introspection_misses
        .map(|r| Arc::new(SharedLimit::new(r, "introspection_misses", cluster.clone())));
    let parts =
        ChainParts { introspectors: introspectors.clone(), miss_limit, dpop: dpop.clone(), cluster: cluster.clone() };
    let routes = routes(&config, &parts, &mut problems);
    let normalizer = Normalizer {
        strip: StripList::new(&strip_list(&config)),
        default_hosts: config.tls.hosts.clone(),
        certificate_optional: config.tls.optional_client_certificate.clone(),
        max_header_bytes: config.listener.max_request_header_bytes,
    };
    let routing = Routing::new(routes, normalizer, config.refusals)
        .with_access_format(config.access_format)
        .with_partner_requests(config.limits.per_partner_requests)
        .with_ipv6_prefix(config.limits.per_source.ipv6_prefix)
        .with_partners(crate::request::partners::Partners::new(&config.partners))
        .with_tracing(crate::trace::Tracing::new(config.tracing.clone()));
    let acceptor = problems.or(acceptor)?;
    let acceptor = Arc::new(ArcSwap::from_pointee(acceptor));
    Ok(App { acceptor, routing, issuer, config, report, introspectors, admin, dpop, cluster, hop })
}

/// The DPoP checks of `cfg`, on the previous replay cache when its window and bound are the same.
fn dpop_verifier(cfg: DpopConfig, kept: &Kept, report: &mut Vec<String>) -> DpopVerifier {
    match kept.dpop.as_ref().and_then(|old| old.replay_for(&cfg)) {
        Some(replay) => {
            report.push("dpop: the replay cache is kept".to_string());
            DpopVerifier::new(cfg, replay)
        }
        None => DpopVerifier::local(cfg),
    }
}

/// Fills in what discovery finds and the section does not say; keys written in the section win.
fn discovered(mut cfg: IntrospectionConfig, report: &mut Vec<String>) -> Result<IntrospectionConfig, Problem> {
    let Some(issuer) = cfg.discovery.clone() else {
        return Ok(cfg);
    };
    let key = format!("introspection.{}.discovery", cfg.name);
    let found = block_on(discover(&cfg, &issuer)).map_err(|e| Problem::new(&key, e))?;
    report.push(format!(
        "{key}: {} gives issuer {}, introspection_endpoint {}, jwks_uri {}",
        found.source,
        found.issuer,
        found.introspection_endpoint.as_ref().map_or("-", |u| u.as_str()),
        found.jwks_uri.as_ref().map_or("-", |u| u.as_str()),
    ));
    cfg.endpoint = cfg.endpoint.or(found.introspection_endpoint);
    cfg.jwks_url = cfg.jwks_url.or(found.jwks_uri);
    cfg.issuer = cfg.issuer.or(Some(found.issuer));
    // The section's resolve port must fit discovered URLs as it must fit written ones.
    if let Some(addr) = cfg.resolve {
        for u in [&cfg.endpoint, &cfg.jwks_url].into_iter().flatten() {
            if u.port().is_some_and(|p| p != addr.port()) {
                return Err(Problem::new(&key, format!("{u} has another port than resolve {addr}")));
            }
        }
    }
    Ok(cfg)
}

/// A client of its own for discovery: it runs on a short-lived runtime of its own, before the
/// servers' runtimes exist, and must not leave pooled connections bound to it.
async fn discover(cfg: &IntrospectionConfig, issuer: &url::Url) -> Result<discovery::Metadata, DiscoverError> {
    let mut builder = crate::pki::pinned_client(&cfg.ca)?.connect_timeout(cfg.connect_timeout).timeout(cfg.timeout);
    if let (Some(addr), Some(host)) = (cfg.resolve, issuer.host_str()) {
        builder = builder.resolve(host, addr);
    }
    let client = builder.build()?;
    Ok(discovery::discover(&client, issuer).await?)
}

/// Why an identity server's metadata could not be discovered at start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Ca(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Client(#[from] reqwest::Error),
    /// No runtime to run the discovery on.
    #[error(transparent)]
    Runtime(#[from] std::io::Error),
    #[error(transparent)]
    Metadata(#[from] discovery::DiscoveryError),
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T, DiscoverError>>) -> Result<T, DiscoverError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(f)
}

/// The configured patterns, and the trusted hop's certificate header: only the hop's own
/// connections may carry it, and there it is read before the strip.
fn strip_list(config: &Config) -> Vec<crate::header_name::HeaderPattern> {
    let mut list = config.strip_headers.clone();
    if let Some(hop) = &config.trusted_hop {
        list.extend(crate::header_name::HeaderPattern::parse(&hop.header).ok());
    }
    list
}

fn routes(config: &Config, parts: &ChainParts, problems: &mut Problems) -> Vec<Route> {
    let mut routes = Vec::new();
    // One per upstream, whatever the number of routes to it: its health and balance are shared.
    let mut upstreams: BTreeMap<String, Arc<Upstream>> = BTreeMap::new();
    for (n, r) in config.routes.iter().enumerate() {
        let label = format!("{}{}", r.host, r.path_prefix);
        let chain =
            build_chain(&r.filters, parts, &label).map_err(|e| problems.fail(&format!("routes[{n}].filters"), e));
        let upstream = match upstreams.get(&r.upstream.name) {
            Some(u) => Ok(u.clone()),
            None => Upstream::new(r.upstream.clone()).map(Arc::new).map_err(|p| problems.add(p)),
        };
        if let Ok(u) = &upstream {
            upstreams.insert(r.upstream.name.clone(), u.clone());
        }
        if let (Ok(chain), Ok(upstream)) = (chain, upstream) {
            let route = Route::new(r.clone(), chain, upstream);
            routes.push(match (&parts.dpop, route.accepts.dpop) {
                (Some(verifier), true) => route.with_dpop(verifier.clone()),
                _ => route,
            });
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_files::{local, set};

    /// Every problem `-t` would report of `conf/local.yaml` changed by `change`, the filters' with
    /// the rest.
    fn problems(change: impl FnOnce(&mut serde_yaml::Value)) -> Vec<String> {
        let (_dir, path) = local(change);
        match load(&path) {
            Ok(_) => Vec::new(),
            Err(p) => p.lines().to_vec(),
        }
    }

    #[test]
    fn the_shipped_local_file_is_valid_with_its_filters() {
        assert_eq!(problems(|_| {}), Vec::<String>::new());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_path() {
        let p = problems(|d| set(d, &["routes", "0", "filters", "1", "cert_binding", "strict"], true.into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("routes[0].filters[1].cert_binding: unknown field `strict`"), "{p:?}");
    }

    #[test]
    fn a_bad_reference_is_one_problem_where_it_is_written() {
        let p = problems(|d| set(d, &["introspection", "idsvr", "endpoint"], "http://x".into()));
        assert_eq!(p.len(), 1, "no follow-on error at the route that uses it: {p:?}");
        let p = problems(|d| set(d, &["routes", "0", "filters", "0", "phantom_token", "introspection"], "nope".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("routes[0].filters[0].phantom_token.introspection: no introspection named \"nope\""));
        let p = problems(|d| set(d, &["introspection", "idsvr", "response"], "json".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("introspection.idsvr.response: json and rfc9701 need a token_issuer section"));
    }

    #[test]
    fn methods_header_patterns_and_drain_bounds_are_checked_where_written() {
        let yaml = |t: &str| serde_yaml::from_str::<serde_yaml::Value>(t).unwrap();
        let valid = problems(|d| {
            set(d, &["routes", "0", "methods"], yaml("[GET, POST]"));
            set(d, &["routes", "0", "filters", "2", "scope", "methods"], yaml("{DELETE: [admin]}"));
            set(d, &["routes", "0", "filters", "2", "scope", "default"], "deny".into());
            set(d, &["strip_headers"], yaml("[x-acme-*, X_Tenant]"));
            set(d, &["refusals"], yaml("{drain_bytes: 1024, drain_timeout: 2s}"));
        });
        assert_eq!(valid, Vec::<String>::new());
        let p = problems(|d| set(d, &["routes", "0", "methods"], yaml("[GET, delete]")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("routes[0].methods[1]: unknown variant `delete`"), "{p:?}");
        let p = problems(|d| set(d, &["routes", "0", "filters", "2", "scope", "methods"], yaml("{delete: [admin]}")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("unknown variant `delete`"), "{p:?}");
        let p = problems(|d| set(d, &["strip_headers"], yaml("[x-acme-*, c*, 'bad name', '*']")));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("strip_headers[1]: \"c*\" would strip content-length"), "{p:?}");
        assert!(p[1].contains("strip_headers[2]:") && p[2].contains("strip_headers[3]:"), "{p:?}");
        let p = problems(|d| set(d, &["refusals", "drain_bytes"], 1_000_000_000.into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("refusals.drain_bytes: must be at most"), "{p:?}");
    }
}
