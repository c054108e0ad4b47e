//! The gateway's configuration: one module per section of the file ([`sections`]: its YAML
//! schema, its validated model and the validation between them), the document and the closed sets
//! of values ([`schema`], [`closed`]), the whole model ([`model`]), the loader that runs every
//! section's validation ([`load`]) and how problems are reported ([`problems`]). No runtime object
//! is made here: the build step in `app` does that.

mod closed;
mod load;
pub mod model;
pub mod problems;
pub mod schema;
pub mod sections;
mod shared;

pub use crate::header_name::HeaderPattern;
pub use closed::{
    AccessFormat, ClientAuthMethod, CrlExpired, HealthCheckKind, HttpMethod, JwsAlg, MissingAudience, RateKey,
    ResponseMode, ScopeDefault, Selection, SigningAlg, TlsVersion, UnknownSni,
};
pub use load::load;
#[cfg(test)]
pub(crate) use load::test_files;
pub use model::*;
pub use problems::{Problem, Problems};
pub use sections::route::{FilterRules, RouteFilters};
