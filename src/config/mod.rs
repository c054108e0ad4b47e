//! The gateway's configuration: the YAML schema ([`schema`]) and its closed sets ([`closed`]),
//! the validated model ([`model`]), the validation that builds it ([`validate`]) and how problems
//! are reported ([`problems`]). No runtime object is made here: the build step in `app` does that.

mod closed;
pub mod model;
pub mod problems;
pub mod schema;
mod validate;

pub use crate::header_name::HeaderPattern;
pub use closed::{
    AccessFormat, ClientAuthMethod, CrlExpired, HealthCheckKind, HttpMethod, JwsAlg, MissingAudience, RateKey,
    ResponseMode, ScopeDefault, Selection, SigningAlg, TlsVersion, UnknownSni,
};
pub use model::*;
pub use problems::{Problem, Problems};
pub use validate::load;
