//! The validated configuration model: typed values with their defaults filled in, and nothing
//! else (no runtime object is made here; the build step in `app` does that).

use super::closed::*;
use crate::header_name::HeaderPattern;
use crate::host::HostPattern;
use pingora_core::server::configuration::ServerConf;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The four TLS 1.2 suites the FAPI 2.0 Security Profile allows.
pub const FAPI_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
pub const DEFAULT_TLS13_SUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: String,
    pub client_hello_timeout: Duration,
    pub max_client_hello_bytes: usize,
    pub handshake_timeout: Duration,
    pub unknown_sni: UnknownSni,
    pub keepalive_timeout: Duration,
    pub h2_idle_timeout: Duration,
    pub max_connection_age: Duration,
    pub revocation_grace: Duration,
    pub max_connection_age_grace: Duration,
    pub header_timeout: Duration,
    pub max_request_header_bytes: usize,
    pub body_timeout: Duration,
    pub body_min_rate_bytes: u64,
    pub body_min_rate_window: Duration,
    pub max_connections: usize,
    pub anonymous_max_connections: usize,
    pub anonymous_idle_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub hosts: Vec<HostPattern>,
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub client_crl: Option<PathBuf>,
    pub crl_reload_interval: Duration,
    pub crl_expired: CrlExpired,
    pub expiry_warning: Duration,
    pub verify_depth: u32,
    pub min_version: TlsVersion,
    pub tls12_ciphers: String,
    pub tls13_ciphersuites: String,
    pub http2: bool,
    pub extra_certificates: Vec<ExtraCertificate>,
    /// Hosts whose clients may connect without a certificate.
    pub optional_client_certificate: Vec<HostPattern>,
}

impl TlsConfig {
    /// Every host name TLS is terminated for: the default certificate's and the extra ones'.
    pub fn all_hosts(&self) -> impl Iterator<Item = &HostPattern> {
        self.hosts.iter().chain(self.extra_certificates.iter().flat_map(|c| c.hosts.iter()))
    }
}

/// A certificate served instead of the default one when the SNI matches one of `hosts`.
#[derive(Debug, Clone)]
pub struct ExtraCertificate {
    pub hosts: Vec<HostPattern>,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PassthroughRoute {
    pub sni: HostPattern,
    pub upstream: String,
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone)]
pub struct PassthroughConfig {
    pub routes: Vec<PassthroughRoute>,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// At least `min_rate_bytes` in every `min_rate_window`, both directions together.
    pub min_rate_bytes: u64,
    pub min_rate_window: Duration,
}

/// Concurrent holdings of one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerSourceLimits {
    pub tunnels: usize,
    pub connections: usize,
    pub handshakes: usize,
    /// IPv6 addresses count per prefix of this length.
    pub ipv6_prefix: u8,
}

/// A token bucket: `per_second` on average, bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub per_source: PerSourceLimits,
    pub log_interval: Duration,
    pub introspection_misses: Option<RateConfig>,
    pub per_partner_requests: usize,
    /// The request body limit of routes that set none.
    pub max_body_bytes: u64,
}

/// One configured backend: `host:port` (a name counts every address it resolves to) and its
/// weight among the upstream's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddress {
    pub address: String,
    pub weight: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    /// HTTP checks: the path asked for and the status that means healthy.
    pub path: String,
    pub status: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: usize,
    pub unhealthy_after: usize,
}

/// Passive ejection: `failures` consecutive connect failures or timeouts take a backend out of
/// rotation for `duration` (`failures` 0: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionConfig {
    pub failures: u32,
    pub duration: Duration,
}

/// The gateway's client certificate chain and key for mutual TLS to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// The configured backends, resolved when the service starts and every `resolve_interval`.
    pub backends: Vec<BackendAddress>,
    pub selection: Selection,
    pub health_check: Option<HealthCheckConfig>,
    pub ejection: EjectionConfig,
    /// Backends one request may be tried on.
    pub max_attempts: usize,
    pub client_identity: Option<ClientIdentity>,
    pub tls: bool,
    pub sni: String,
    /// CA certificates the upstream's certificate must chain to.
    pub ca: Option<PathBuf>,
    pub host_header: Option<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub resolve_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IntrospectionConfig {
    pub name: String,
    /// The issuer URL whose metadata fills in what is not written (`endpoint`, `jwks_url`, `issuer`).
    pub discovery: Option<url::Url>,
    /// `None` only with `discovery`, which must then find one.
    pub endpoint: Option<url::Url>,
    pub client_id: String,
    pub client_auth: ClientAuth,
    pub ca: PathBuf,
    pub resolve: Option<SocketAddr>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_ttl: Duration,
    pub max_entries: u64,
    pub negative_ttl: Duration,
    pub ignore_no_store: bool,
    pub mode: ResponseMode,
    /// `rfc9701`: the keys of the signed answers; `jwt` with verification: the keys of the tokens.
    pub jwks_url: Option<url::Url>,
    /// `rfc9701`: the `iss` of the signed answers; `jwt` with verification: the tokens' `iss`.
    pub issuer: Option<String>,
    /// `jwt`: verify the identity server's JWT (written `verify:`, or found by discovery).
    pub verify_jwt: bool,
    /// Algorithms accepted on the identity server's signatures.
    pub algorithms: Vec<JwsAlg>,
    pub claims: ClaimRules,
    pub jwks: JwksPolicy,
}

/// The checks on an introspected token's own claims (every mode).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimRules {
    /// Accepted `aud` values; empty = `aud` is not checked (and forwarded as it is).
    pub audiences: Vec<String>,
    pub missing_audience: MissingAudience,
    /// Clock skew allowed on `nbf` and `exp`.
    pub leeway: Duration,
}

/// How long keys of a remote JWKS are trusted and how often they may be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksPolicy {
    /// Lifetime of a set whose response carries no usable `max-age`.
    pub default_ttl: Duration,
    /// Bounds on a `max-age`: a server can neither make us refetch constantly nor keep keys for days.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// Least time between two fetches that a token forced (unknown kid, failed signature).
    pub refetch_interval: Duration,
    /// Longest time the last good set is used while refreshes fail.
    pub max_stale: Duration,
}

impl Default for JwksPolicy {
    fn default() -> Self {
        JwksPolicy {
            default_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            refetch_interval: Duration::from_secs(2),
            max_stale: Duration::from_secs(3600),
        }
    }
}

/// How the gateway authenticates to the introspection endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAuth {
    SecretBasic(Secret),
    SecretPost(Secret),
    /// RFC 7523: a JWT signed with this PEM key.
    PrivateKeyJwt {
        key: PathBuf,
    },
    /// RFC 8705: this PEM certificate and key on the TLS connection.
    TlsClientAuth {
        certificate: PathBuf,
        key: PathBuf,
    },
}

/// Where a client secret comes from; read by the build step, so `-t` proves it can be read.
#[derive(Clone, PartialEq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
    Env(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Inline(..)"),
            Secret::File(p) => write!(f, "File({})", p.display()),
            Secret::Env(v) => write!(f, "Env({v})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SigningKeyConfig {
    pub kid: String,
    pub key: PathBuf,
    pub alg: SigningAlg,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenIssuerConfig {
    pub issuer: String,
    pub lifetime: Duration,
    pub keys: Vec<SigningKeyConfig>,
    pub jwks_address: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub enum FilterConfig {
    PhantomToken {
        introspection: String,
    },
    CertBinding,
    /// `accept` of the `binding` filter.
    Binding {
        certificate: bool,
        dpop: bool,
    },
    Scope {
        required: Vec<String>,
        methods: BTreeMap<HttpMethod, Vec<String>>,
        default: ScopeDefault,
    },
    RateLimit {
        rate: RateConfig,
        key: RateKey,
    },
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub host: HostPattern,
    pub path_prefix: String,
    pub upstream: Arc<UpstreamConfig>,
    /// The methods this route accepts (`HEAD` comes with `GET`); `None` for all implemented ones.
    pub methods: Option<Vec<HttpMethod>>,
    pub filters: Vec<FilterConfig>,
    pub forward_client_cert: bool,
    /// `Upgrade` requests are refused unless this is set: after a 101 nothing more is checked.
    pub allow_upgrade: bool,
    pub cors: Option<CorsConfig>,
    /// Methods retried on another backend after the request was sent.
    pub retry_methods: Vec<HttpMethod>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: u64,
}

/// CORS for trusted web origins, with the header values ready to send.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub origins: Vec<String>,
    pub methods: String,
    pub headers: String,
    pub max_age: String,
}

impl CorsConfig {
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }
}

/// The internal operations listener: metrics and health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpsConfig {
    pub address: SocketAddr,
    pub probe_interval: Duration,
    pub ready_window: Duration,
}

/// The internal admin listener: TLS always; an admin client certificate with an allowed subject,
/// or the bearer secret, authenticates a call (at least one of them is configured).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// With `client_subjects`: the CA admin client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    pub client_subjects: Vec<String>,
    /// Read by the build step, so that `-t` proves it can be read.
    pub secret_file: Option<PathBuf>,
}

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
}

pub use super::schema::FailPolicy;

/// The shared-state server and what each use does when it does not answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub url: url::Url,
    pub password_file: Option<PathBuf>,
    /// CA that the server's certificate chains to, instead of the system's (TLS only).
    pub ca: Option<PathBuf>,
    /// Certificate and key for a server that asks for client certificates (TLS only).
    pub client_identity: Option<(PathBuf, PathBuf)>,
    pub key_prefix: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub rate_limits: FailPolicy,
    pub replay: FailPolicy,
    /// How long an answer taken while the purge subscription is down may be served.
    pub outage_cache_ttl: Duration,
}

/// RFC 9449 proof checks.
#[derive(Debug, Clone, PartialEq)]
pub struct DpopConfig {
    pub algs: Vec<jsonwebtoken::Algorithm>,
    pub max_age: Duration,
    pub leeway: Duration,
    pub replay_entries: u64,
    pub nonce: Option<NonceConfig>,
}

impl Default for DpopConfig {
    fn default() -> Self {
        use jsonwebtoken::Algorithm;
        DpopConfig {
            algs: vec![Algorithm::ES256, Algorithm::PS256, Algorithm::EdDSA],
            max_age: Duration::from_secs(60),
            leeway: Duration::from_secs(5),
            replay_entries: 100_000,
            nonce: None,
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct NonceConfig {
    pub secret: Vec<u8>,
    pub lifetime: Duration,
}

/// The secret never reaches a log line.
impl std::fmt::Debug for NonceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceConfig").field("secret", &"<redacted>").field("lifetime", &self.lifetime).finish()
    }
}

/// W3C trace context: whose `traceparent` is continued, and the OTLP export (fixed for the
/// process: the exporter starts once).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    pub otlp: Option<OtlpConfig>,
    pub trusted_sources: Vec<ipnet::IpNet>,
    pub trusted_partners: Vec<String>,
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig { otlp: None, trusted_sources: Vec::new(), trusted_partners: Vec::new(), sample_ratio: 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    pub endpoint: url::Url,
    pub service_name: String,
    pub timeout: Duration,
    pub interval: Duration,
}

/// How much of a request body is read and discarded before a refusal, so that clients which are
/// still sending it read the answer instead of a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalsConfig {
    pub drain_bytes: usize,
    pub drain_timeout: Duration,
}

impl Default for RefusalsConfig {
    fn default() -> Self {
        RefusalsConfig { drain_bytes: 64 * 1024, drain_timeout: Duration::from_secs(5) }
    }
}
