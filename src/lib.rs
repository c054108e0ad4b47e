//! mtls-gateway: an API gateway on Pingora for mutual TLS and certificate-bound access tokens
//! (RFC 8705). One external port; identity-server TLS passes through by SNI, API TLS is terminated
//! in-process and every request runs a phantom-token and certificate-binding filter chain.
//!
//! Layers, each importing only those below it:
//! - [`app`]: the build step, model to runtime parts (used by `-t` and serving alike), and
//!   [`reload`], which runs it again on `SIGHUP` and swaps the parts in;
//! - [`connection`] and [`request`]: the two halves of the runtime, which never import each other,
//!   [`ops`], the internal listener for metrics and health, and [`admin`], the internal listener
//!   that purges token caches and ends connections;
//! - [`revocation`]: OCSP and fetched CRLs for client certificates, which the connection layer
//!   awaits after the handshake;
//! - [`config`]: the file schema and the validated model;
//! - [`host`], [`token`], [`pki`], [`metrics`]: shared leaves.

pub mod admin;
pub mod app;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod fdlimit;
pub mod header_name;
pub mod host;
pub mod metrics;
pub mod ops;
pub mod pki;
pub mod reason;
pub mod reload;
pub mod request;
pub mod revocation;
pub mod token;
pub mod trace;
