//! The connection layer: everything before an HTTP request exists. The SNI router on the one
//! external port ([`router`]), its ClientHello parser ([`sni`]), raw TCP passthrough
//! ([`passthrough`]), the mutual-TLS acceptor ([`tls`]) and its reload in the background ([`crl`]),
//! per-source limits ([`limits`]), the registry of open connections a reload can end ([`live`]) and
//! the serve path: the single-threaded loops connections are served on, the HTTP/1.1 keep-alive
//! loop and the drain, the gateway's own copies of pingora's ([`serve`]).
//! Nothing here knows about HTTP requests: the router hands terminated streams to any pingora app.

pub mod crl;
pub mod expiry;
pub mod forwarded;
pub mod hop;
pub mod limits;
pub mod live;
pub mod passthrough;
pub mod router;
pub mod serve;
pub mod shares;
pub mod sni;
pub mod tls;
pub mod verify;
pub mod watchdog;

// Their old paths, which the rest of the crate uses.
pub use serve::{drain, workers};
