//! mtls-gateway: an API gateway on Pingora for mutual TLS and certificate-bound access tokens
//! (RFC 8705). One external port; identity-server TLS passes through by SNI, API TLS is terminated
//! in-process and every request runs a phantom-token and certificate-binding filter chain.

pub mod config;
pub mod filters;
pub mod introspect;
pub mod metrics;
pub mod passthrough;
pub mod proxy;
pub mod respond;
pub mod router;
pub mod sni;
pub mod tls;

pub mod devkit;
pub mod jwks;
pub mod issuer;
