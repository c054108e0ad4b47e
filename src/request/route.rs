//! Route choice: each configured route with its filter chain and its upstream peer, and the first
//! route whose host and path prefix match a request.

use crate::config::{FilterConfig, HttpMethod, Problem, RouteConfig, UpstreamConfig};
use crate::request::dpop::DpopVerifier;
use crate::request::filters::Filter;
use crate::request::respond::{Challenge, Refusal};
use arc_swap::ArcSwap;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::upstreams::peer::HttpPeer;
use std::hash::{Hash, Hasher};
use std::net::ToSocketAddrs;
use std::sync::Arc;

pub struct Route {
    pub cfg: RouteConfig,
    /// `host/prefix`, for logs and metric labels (configured text, never request data).
    pub label: String,
    pub chain: Vec<Box<dyn Filter>>,
    /// The pooled connection settings; replaced whole when the upstream's name resolves anew.
    peer: ArcSwap<HttpPeer>,
    /// The methods accepted when the route limits them (`HEAD` with `GET`), and their `Allow` value.
    allowed: Option<(Vec<HttpMethod>, String)>,
    /// The schemes its refusals challenge with.
    pub challenge: Challenge,
    /// The DPoP checks, when the route accepts DPoP: its answers carry their nonces.
    pub dpop: Option<Arc<DpopVerifier>>,
}

impl Route {
    pub fn new(cfg: RouteConfig, chain: Vec<Box<dyn Filter>>, peer: HttpPeer) -> Self {
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
        let peer = ArcSwap::from_pointee(peer);
        let label = format!("{}{}", cfg.host, cfg.path_prefix);
        Route { label, chain, peer, cfg, allowed, challenge: Challenge::default(), dpop: None }
    }

    /// A route that accepts DPoP: `DPoP` challenges (and `Bearer` ones unless it accepts nothing
    /// else), and nonces on its answers when they are on.
    pub fn with_dpop(mut self, verifier: Arc<DpopVerifier>) -> Self {
        let certificate = self
            .cfg
            .filters
            .iter()
            .any(|f| matches!(f, FilterConfig::CertBinding | FilterConfig::Binding { certificate: true, .. }));
        self.challenge =
            Challenge { bearer: certificate, dpop_algs: Some(verifier.algs().to_string()), used_dpop: false };
        self.dpop = Some(verifier);
        self
    }

    /// The upstream peer for one request.
    pub fn peer(&self) -> HttpPeer {
        HttpPeer::clone(&self.peer.load())
    }

    fn set_address(&self, addr: std::net::SocketAddr) {
        let current = self.peer.load();
        if current._address == PeerAddr::Inet(addr) {
            return;
        }
        let mut peer = HttpPeer::clone(&current);
        peer._address = PeerAddr::Inet(addr);
        self.peer.store(Arc::new(peer));
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

/// The pooled, verified TLS connection settings for one upstream API. Its address is filled in by
/// [`resolve`] when serving starts: `-t` must not need the upstream's name to resolve.
pub fn upstream_peer(u: &UpstreamConfig) -> Result<HttpPeer, Problem> {
    let unresolved = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let mut peer = HttpPeer::new(unresolved, u.tls, u.sni.clone());
    if let Some(ca) = &u.ca {
        let certs = crate::pki::read_certs(ca).map_err(|e| Problem::new(format!("upstreams.{}.ca", u.name), e))?;
        peer.options.ca = Some(Arc::new(certs.into_boxed_slice()));
    }
    peer.options.verify_cert = true;
    peer.options.verify_hostname = true;
    peer.options.connection_timeout = Some(u.connect_timeout);
    peer.options.total_connection_timeout = Some(u.connect_timeout * 2);
    peer.options.read_timeout = Some(u.read_timeout);
    peer.options.write_timeout = Some(u.write_timeout);
    peer.options.idle_timeout = Some(u.idle_timeout);
    // The pool key does not include the CA: keep upstreams with different trust apart.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (u.name.as_str(), u.ca.as_ref()).hash(&mut h);
    peer.group_key = h.finish();
    Ok(peer)
}

/// Resolves each route's upstream address, or names the upstream that does not resolve.
pub fn resolve(routes: &[Route]) -> Result<(), Problem> {
    for route in routes {
        let u = &route.cfg.upstream;
        let key = || format!("upstreams.{}.address", u.name);
        let addr = u
            .address
            .to_socket_addrs()
            .map_err(|e| Problem::new(key(), format!("cannot resolve {}: {e}", u.address)))?
            .next()
            .ok_or_else(|| Problem::new(key(), format!("{} resolves to no address", u.address)))?;
        route.set_address(addr);
    }
    Ok(())
}

/// Looks every upstream name up again (a restarted API may have a new address). A name that
/// fails keeps its last address: an outage of the resolver must not become an outage of the API.
pub async fn refresh(routes: &[Route]) {
    for route in routes {
        let u = &route.cfg.upstream;
        match tokio::net::lookup_host(u.address.as_str()).await.map(|mut a| a.next()) {
            Ok(Some(addr)) => route.set_address(addr),
            Ok(None) => log::warn!("upstreams.{}: {} resolves to no address; keeping the last one", u.name, u.address),
            Err(e) => log::warn!("upstreams.{}: cannot resolve {}: {e}; keeping the last one", u.name, u.address),
        }
    }
}

/// A plain-TCP upstream named `api` with 1 s timeouts, for the request layer's unit tests.
#[cfg(test)]
pub(crate) fn test_upstream(address: &str) -> Arc<UpstreamConfig> {
    let d = std::time::Duration::from_secs(1);
    Arc::new(UpstreamConfig {
        name: "api".into(),
        address: address.into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FilterConfig, RouteConfig};
    use crate::host::HostPattern;

    fn route(address: &str) -> Route {
        let upstream = test_upstream(address);
        let cfg = RouteConfig {
            host: HostPattern::parse("api.example.com").unwrap(),
            path_prefix: "/".into(),
            methods: None,
            upstream: upstream.clone(),
            filters: Vec::<FilterConfig>::new(),
            forward_client_cert: false,
            allow_upgrade: false,
            cors: None,
        };
        Route::new(cfg, Vec::new(), upstream_peer(&upstream).unwrap())
    }

    #[tokio::test]
    async fn a_new_address_is_picked_up_and_a_failed_lookup_keeps_the_last() {
        let r = route("localhost:4000");
        r.set_address(([10, 9, 8, 7], 4000).into());
        refresh(std::slice::from_ref(&r)).await;
        match r.peer()._address {
            PeerAddr::Inet(a) => assert!(a.ip().is_loopback() && a.port() == 4000, "{a}"),
            other => panic!("{other:?}"),
        }
        let gone = route("no-such-host.invalid:4000");
        gone.set_address(([10, 9, 8, 7], 4000).into());
        refresh(std::slice::from_ref(&gone)).await;
        assert_eq!(gone.peer()._address, PeerAddr::Inet(([10, 9, 8, 7], 4000).into()), "kept");
    }
}
