//! The validated configuration model: typed values with their defaults filled in, and nothing
//! else (no runtime object is made here; the build step in `app` does that). Each section's part
//! of the model lives with its schema and validation in `config::sections`; [`Config`] gathers
//! them.

use super::closed::AccessFormat;
pub use crate::config::sections::{
    admin::AdminConfig,
    cluster::{ClusterConfig, FailPolicy},
    dpop::{DpopConfig, NonceConfig},
    introspection::{ClaimRules, ClientAuth, IntrospectionConfig, JwksPolicy, Secret},
    limits::{LimitsConfig, PerSourceLimits, RateConfig, RateError},
    listener::ListenerConfig,
    metrics::OpsConfig,
    passthrough::{PassthroughConfig, PassthroughRoute},
    refusals::RefusalsConfig,
    revocation::{CrlConfig, OcspConfig, RevocationConfig, RevocationPolicy},
    route::{CorsConfig, RouteConfig},
    tls::{ExtraCertificate, TlsConfig, DEFAULT_TLS13_SUITES, FAPI_TLS12_CIPHERS},
    token_issuer::{SigningKeyConfig, TokenIssuerConfig},
    tracing::{OtlpConfig, TracingConfig},
    trusted_hop::{ForwardedFormat, TrustedHopConfig},
    upstream::{BackendAddress, ClientIdentity, EjectionConfig, HealthCheckConfig, UpstreamConfig},
};
use crate::header_name::HeaderPattern;
use pingora_core::server::configuration::ServerConf;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    /// Allowed but probably a mistake (see `validate`): `-t` prints them, start and reload log them.
    pub warnings: Vec<String>,
    pub server: ServerConf,
    pub listener: ListenerConfig,
    pub tls: TlsConfig,
    pub passthrough: PassthroughConfig,
    pub introspection: BTreeMap<String, IntrospectionConfig>,
    pub routes: Vec<RouteConfig>,
    pub metrics: Option<OpsConfig>,
    /// Headers stripped from every request on top of the built-in families.
    pub strip_headers: Vec<HeaderPattern>,
    pub refusals: RefusalsConfig,
    pub limits: LimitsConfig,
    pub access_format: AccessFormat,
    pub token_issuer: Option<TokenIssuerConfig>,
    pub admin: Option<AdminConfig>,
    /// Client certificate subject → partner name (a metric label).
    pub partners: BTreeMap<String, String>,
    pub tracing: TracingConfig,
    /// Set when a route accepts DPoP (defaults filled in), or when the section is written.
    pub dpop: Option<DpopConfig>,
    pub cluster: Option<ClusterConfig>,
    /// OCSP and fetched CRLs for the client certificates, when the section is written.
    pub revocation: Option<RevocationConfig>,
    /// The listener for a TLS-terminating balancer that forwards client certificates.
    pub trusted_hop: Option<TrustedHopConfig>,
}
