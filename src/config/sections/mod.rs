//! One module per section of the configuration file, each with its YAML schema (serde types that
//! deny unknown keys), its validated model, the defaults of the keys not written, and the
//! validation that builds the model from the schema and names every problem by its key. The
//! loader (`config::load`) runs them in turn and checks what spans sections (names that refer to
//! other sections).

pub mod access_log;
pub mod admin;
pub mod cluster;
pub mod dpop;
pub mod introspection;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod partners;
pub mod passthrough;
pub mod pingora;
pub mod refusals;
pub mod revocation;
pub mod route;
pub mod strip_headers;
pub mod tls;
pub mod token_issuer;
pub mod tracing;
pub mod trusted_hop;
pub mod upstream;
