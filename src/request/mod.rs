//! The request layer: everything that happens to one HTTP request on a terminated connection. The
//! pingora `ProxyHttp` phases ([`proxy`]) use the normalisation step ([`normalize`]), route choice
//! ([`route`]) and its upstream's backends ([`upstream`]), header hygiene ([`headers`]), CORS ([`cors`]) and the filter chain ([`filters`]), which
//! rests on introspection ([`introspect`], with [`claims`] checks, [`client_auth`] and [`discovery`],
//! and purges of its cache: [`purge`]), rate limits ([`limit`]), the gateway's own JWTs
//! ([`issuer`]), remote key sets ([`jwks`]) and the gateway's answers ([`respond`]). Nothing here
//! knows about sockets or TLS handshakes.

pub mod access_log;
pub mod claims;
pub mod client_auth;
pub mod cors;
pub mod discovery;
pub mod dpop;
pub mod filters;
pub mod forwarded;
pub mod headers;
pub mod introspect;
pub mod issuer;
pub mod jwks;
pub mod limit;
pub mod normalize;
pub mod partners;
pub mod proxy;
pub mod purge;
pub mod respond;
pub mod route;
pub mod upstream;
