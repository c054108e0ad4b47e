//! The YAML schema of the gateway's configuration file, as serde types and nothing more: the
//! document ([`File`]) and the small types that several sections share. Each section's own types
//! live with its validation in `config::sections`, and are named here too.
//!
//! Only `config::load` reads these; everything else uses the validated model in `config`.
//! Every struct denies unknown keys so that a typo is an error, not a silently ignored setting.

pub use crate::config::closed::{
    AccessFormat, ClientAuthMethod, CrlExpired, HealthCheckKind, HttpMethod, JwsAlg, MissingAudience, RateKey,
    ResponseMode, ScopeDefault, Selection, SigningAlg, TlsVersion, UnknownSni,
};
pub use crate::config::sections::{
    access_log::AccessLog,
    admin::Admin,
    cluster::{Cluster, FailPolicy},
    dpop::{Dpop, DpopNonce},
    introspection::{Cache, Introspection, JwksCache, Verify},
    limits::{Limits, PerSource, Rate},
    listener::Listener,
    metrics::Metrics,
    passthrough::{Passthrough, PassthroughRouteSection},
    refusals::Refusals,
    revocation::Revocation,
    route::{Cors, Route},
    tls::{ExtraCertificateSection, Tls},
    token_issuer::{SigningKey, TokenIssuer},
    tracing::Tracing,
    trusted_hop::TrustedHop,
    upstream::{Backend, Ejection, HealthCheck, Upstream},
};
pub use crate::config::shared::{Dur, MinRate};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// pingora's own `ServerConf` keys (threads, pid_file, upgrade_sock, ...).
    #[serde(default)]
    pub pingora: Option<serde_yaml::Value>,
    pub listener: Listener,
    pub tls: Tls,
    #[serde(default)]
    pub passthrough: Passthrough,
    pub upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub introspection: BTreeMap<String, Introspection>,
    pub routes: Vec<Route>,
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub limits: Limits,
    /// `text` (default) or `json` access-log lines.
    pub access_log: Option<AccessLog>,
    /// Signs the JWTs the gateway issues in `json` and `rfc9701` introspection modes.
    #[serde(default)]
    pub token_issuer: Option<TokenIssuer>,
    /// Extra request headers to strip from every client request, on top of the built-in families:
    /// exact names, or prefixes written `x-acme-*`.
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// How refusals reach clients that are still sending a request body.
    #[serde(default)]
    pub refusals: Refusals,
    /// The internal admin listener (cache purge, ending connections); off when absent.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Partner names for the per-partner metrics, by client certificate subject (RFC 4514, most
    /// specific first, as the access log writes it). Other subjects count as `other`.
    #[serde(default)]
    pub partners: BTreeMap<String, String>,
    /// W3C trace context and OTLP export; propagation only when absent.
    #[serde(default)]
    pub tracing: Tracing,
    /// DPoP proof checks (RFC 9449) for routes whose `binding` accepts `dpop`.
    #[serde(default)]
    pub dpop: Option<Dpop>,
    /// Shared state for several replicas on a Redis-protocol server; in process when absent.
    #[serde(default)]
    pub cluster: Option<Cluster>,
    /// OCSP and fetched CRLs for the client certificates; off when absent.
    #[serde(default)]
    pub revocation: Option<Revocation>,
    /// An L7 load balancer in front that forwards the partners' certificates; off when absent.
    #[serde(default)]
    pub trusted_hop: Option<TrustedHop>,
}
