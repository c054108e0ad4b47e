//! The YAML schema of the gateway's configuration file, as serde types and nothing more.
//!
//! Only `config::load` reads these; everything else uses the validated model in `config`.
//! Every struct denies unknown keys so that a typo is an error, not a silently ignored setting.

pub use crate::config::closed::{
    AccessFormat, ClientAuthMethod, CrlExpired, HealthCheckKind, HttpMethod, JwsAlg, MissingAudience, RateKey,
    ResponseMode, ScopeDefault, Selection, SigningAlg, TlsVersion, UnknownSni,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A duration written the human way: `250ms`, `5s`, `2m`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {text:?}: {e}")))
    }
}

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// `redis://host:port/db` or `rediss://` (TLS: the system's trusted CAs, or `ca`).
    pub url: String,
    /// A file holding the server's password (surrounding white space ignored).
    pub password_file: Option<String>,
    /// PEM CA file that the server's TLS certificate chains to (`rediss://` only).
    pub ca: Option<String>,
    /// PEM certificate and key the gateway presents when the server asks for one (`rediss://`
    /// only; both or neither).
    pub client_certificate: Option<String>,
    pub client_key: Option<String>,
    /// Put before every key and the purge channel, so that several gateways can share one server.
    pub key_prefix: Option<String>,
    /// Longest wait for one call; a request never waits longer for shared state.
    pub timeout: Option<Dur>,
    pub connect_timeout: Option<Dur>,
    /// What a rate limit does when the server does not answer: `open` (the replica's own limit
    /// applies, default) or `closed` (503).
    pub rate_limits: Option<FailPolicy>,
    /// What a DPoP replay check does when the server does not answer: `closed` (503, default) or
    /// `open` (the replica's own replay cache applies).
    pub replay: Option<FailPolicy>,
    /// While the purge subscription is down, how long one introspection answer is shared by the
    /// requests with the same token (0: only by concurrent ones).
    pub outage_cache_ttl: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailPolicy {
    Open,
    Closed,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dpop {
    /// Accepted proof algorithms; asymmetric only.
    pub algs: Option<Vec<String>>,
    /// Oldest accepted `iat`, counted back from now.
    pub max_age: Option<Dur>,
    /// Newest accepted `iat`: this far ahead of the gateway's clock.
    pub leeway: Option<Dur>,
    /// Bound of the replay cache of proof ids.
    pub replay_cache_entries: Option<u64>,
    /// Server nonces (RFC 9449 §9): every proof must carry a recent one. Off when absent.
    pub nonce: Option<DpopNonce>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopNonce {
    /// A file holding the secret (at least 32 bytes) that every replica shares.
    pub secret_file: String,
    /// How long one nonce window lasts; a nonce is accepted for one to two of them.
    pub lifetime: Option<Dur>,
}

/// Which callers' `traceparent` is believed, and where spans go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`); no export when absent.
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    /// Longest wait for one export call.
    pub export_timeout: Option<Dur>,
    /// How often finished spans are sent.
    pub export_interval: Option<Dur>,
    /// Client addresses or networks (`10.0.0.0/8`) whose trace context is continued.
    #[serde(default)]
    pub trusted_sources: Vec<String>,
    /// Partner names (from `partners`) whose trace context is continued.
    #[serde(default)]
    pub trusted_partners: Vec<String>,
    /// Share of new traces (no trusted parent) that are sampled, 0.0 to 1.0.
    pub sample_ratio: Option<f64>,
}

/// The admin listener always speaks TLS; callers present an admin client certificate with one of
/// `client_subjects`, or the bearer secret in `secret_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: String,
    pub certificate: String,
    pub key: String,
    /// The CA that admin client certificates chain to.
    pub client_ca: Option<String>,
    /// Subjects (RFC 4514, as `CN=gateway-admin,O=Example`) allowed to act.
    #[serde(default)]
    pub client_subjects: Vec<String>,
    /// A file holding the bearer secret (surrounding white space ignored).
    pub secret_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusals {
    /// Request body bytes read and discarded before a refusal is sent; a longer body gets the
    /// refusal and the connection (or HTTP/2 stream) is closed.
    pub drain_bytes: Option<usize>,
    /// The longest time spent reading that body.
    pub drain_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: String,
    pub client_hello_timeout: Option<Dur>,
    pub max_client_hello_bytes: Option<usize>,
    pub handshake_timeout: Option<Dur>,
    pub unknown_sni: Option<UnknownSni>,
    /// HTTP/1.1: how long an idle keep-alive connection is kept.
    pub keepalive_timeout: Option<Dur>,
    /// HTTP/2: how long a connection with no open stream is kept.
    pub h2_idle_timeout: Option<Dur>,
    /// Past this age a connection is ended gracefully (GOAWAY, or close after the next answer).
    pub max_connection_age: Option<Dur>,
    /// How long a connection whose certificate was revoked may finish its current request.
    pub revocation_grace: Option<Dur>,
    /// After `max_connection_age`, how long a connection may take to finish before it is closed.
    pub max_connection_age_grace: Option<Dur>,
    /// HTTP/1.1: the whole request header must arrive within this, counted from its first byte
    /// (from the handshake for a connection's first request). HTTP/2: the connection preface.
    pub header_timeout: Option<Dur>,
    /// The largest request header, both protocols.
    pub max_request_header_bytes: Option<usize>,
    /// While a request body is being received: the longest time without a byte of it.
    pub body_timeout: Option<Dur>,
    /// While a request body is being received: at least `bytes` in every `window`.
    pub body_min_rate: Option<MinRate>,
    /// TLS-terminated connections open at once, for the whole process.
    pub max_connections: Option<usize>,
    /// How many of those may be without a client certificate (optional-certificate hosts).
    pub anonymous_max_connections: Option<usize>,
    /// A connection without a client certificate that sends nothing for this long is ended
    /// gracefully (HTTP/1.1: also its keep-alive idle limit, when shorter).
    pub anonymous_idle_timeout: Option<Dur>,
    /// HTTP/2 streams one connection may have open at once.
    pub h2_max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Host names terminated here; `*.example.com` wildcards allowed.
    pub hosts: Vec<String>,
    pub certificate: String,
    pub key: String,
    pub client_ca: String,
    pub client_crl: Option<String>,
    pub crl_reload_interval: Option<Dur>,
    /// What an expired CRL means: refuse (default) or keep.
    pub crl_expired: Option<CrlExpired>,
    /// Warn this long before a CRL's nextUpdate or a certificate's notAfter.
    pub expiry_warning: Option<Dur>,
    pub verify_depth: Option<u32>,
    pub min_version: Option<TlsVersion>,
    pub tls12_ciphers: Option<String>,
    pub tls13_ciphersuites: Option<String>,
    pub http2: Option<bool>,
    /// More certificates, chosen by SNI; `certificate`/`key` above stay the default.
    #[serde(default)]
    pub certificates: Vec<ExtraCertificate>,
    /// Hosts (by SNI) whose clients may connect without a certificate (DPoP-only clients). A
    /// certificate presented is still verified against the CA and the CRL.
    #[serde(default)]
    pub optional_client_certificate: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraCertificate {
    pub hosts: Vec<String>,
    pub certificate: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passthrough {
    #[serde(default)]
    pub routes: Vec<PassthroughRoute>,
    pub connect_timeout: Option<Dur>,
    pub max_connections: Option<usize>,
    /// A tunnel that moves no byte in either direction for this long is closed.
    pub idle_timeout: Option<Dur>,
    /// No tunnel lives longer than this.
    pub max_lifetime: Option<Dur>,
    /// A tunnel must move at least `bytes` (both directions together) in every `window`.
    pub min_rate: Option<MinRate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinRate {
    pub bytes: u64,
    pub window: Dur,
}

/// Limits on what one client may hold or ask for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub per_source: PerSource,
    /// A cut is logged at most once per source, reason and interval.
    pub log_interval: Option<Dur>,
    /// Token bucket per client certificate (per source address without one) on introspection
    /// calls; cache hits are not counted.
    pub introspection_misses: Option<Rate>,
    /// IPv6 sources are counted per prefix of this length (one /64 is one source by default).
    pub ipv6_prefix: Option<u8>,
    /// Requests one partner (client certificate) may have in flight at once, for the process.
    pub per_partner_requests: Option<usize>,
    /// The request body limit of routes that set none (bytes).
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerSource {
    pub tunnels: Option<usize>,
    pub connections: Option<usize>,
    pub handshakes: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassthroughRoute {
    pub sni: String,
    pub upstream: String,
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// One backend of an upstream: `host:port`, or with a weight.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Backend {
    Address(String),
    Weighted { address: String, weight: usize },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<HealthCheckKind>,
    /// HTTP checks: the path asked for, and the status that means healthy.
    pub path: Option<String>,
    pub status: Option<u16>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    /// Consecutive successes that bring a backend back, and failures that take it out.
    pub healthy_after: Option<usize>,
    pub unhealthy_after: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ejection {
    /// Consecutive connect failures or timeouts that take a backend out of rotation (0: never).
    pub failures: Option<u32>,
    /// For how long; then it is tried again.
    pub duration: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// One backend; or `backends`, several. A name counts every address it resolves to.
    pub address: Option<String>,
    pub backends: Option<Vec<Backend>>,
    pub selection: Option<Selection>,
    pub health_check: Option<HealthCheck>,
    pub ejection: Option<Ejection>,
    /// How many backends one request may be tried on (a failed connection, or a failure of a
    /// method the route retries).
    pub max_attempts: Option<usize>,
    /// Mutual TLS to the API: the gateway's client certificate chain and key (PEM).
    pub client_certificate: Option<String>,
    pub client_key: Option<String>,
    pub tls: Option<bool>,
    pub sni: Option<String>,
    pub ca: Option<String>,
    pub host_header: Option<String>,
    pub connect_timeout: Option<Dur>,
    pub read_timeout: Option<Dur>,
    pub write_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    /// How often the address is looked up again (a restarted API may have a new one).
    pub resolve_interval: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Introspection {
    /// The identity server's issuer URL: RFC 8414 metadata (then OpenID Connect discovery) fills
    /// in `endpoint`, `jwks_url` and `issuer` at start; keys written here override it.
    pub discovery: Option<String>,
    pub endpoint: Option<String>,
    pub client_id: String,
    /// How the gateway authenticates to the introspection endpoint (default client_secret_basic).
    pub client_auth: Option<ClientAuthMethod>,
    /// The secret of client_secret_basic/post: inline, or from a file, or an environment variable.
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    /// private_key_jwt: the PEM key signing the client assertion; tls_client_auth: the certificate's key.
    pub client_key: Option<String>,
    /// tls_client_auth: the PEM client certificate presented to the identity server.
    pub client_certificate: Option<String>,
    pub ca: String,
    /// Connect here instead of resolving the identity server's host (like curl's `--resolve`).
    pub resolve: Option<String>,
    pub connect_timeout: Option<Dur>,
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub cache: Cache,
    pub response: Option<ResponseMode>,
    /// `rfc9701`: the identity server's JWKS, to verify signed introspection responses.
    pub jwks_url: Option<String>,
    /// `rfc9701`: the `iss` the signed responses must carry.
    pub issuer: Option<String>,
    /// `json`, `rfc9701`: the accepted values of the token's `aud`.
    pub audiences: Option<Vec<String>>,
    /// What a token without `aud` means when audiences are set (default refuse).
    pub missing_audience: Option<MissingAudience>,
    /// Clock skew allowed on `nbf` and `exp`.
    pub leeway: Option<Dur>,
    /// `jwt`: verify the identity server's JWT before trusting or forwarding it.
    pub verify: Option<Verify>,
    /// Lifetime and refetch rules of the identity server's JWKS.
    #[serde(default)]
    pub jwks: JwksCache,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub algorithms: Option<Vec<JwsAlg>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksCache {
    pub default_ttl: Option<Dur>,
    pub min_ttl: Option<Dur>,
    pub max_ttl: Option<Dur>,
    pub refetch_interval: Option<Dur>,
    pub max_stale: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    pub max_ttl: Option<Dur>,
    pub max_entries: Option<u64>,
    pub negative_ttl: Option<Dur>,
    /// Cache answers marked `Cache-Control: no-store` anyway (still for at most max_ttl).
    pub ignore_no_store: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub host: String,
    pub path_prefix: Option<String>,
    pub upstream: String,
    /// The methods this route accepts; others are answered 405 with `Allow`. All when absent.
    pub methods: Option<Vec<HttpMethod>>,
    /// serde_yaml reads enums from `!tags` only: `singleton_map` lets users write the usual one-key maps.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub forward_client_cert: bool,
    /// Pass `Upgrade` requests (WebSocket) through; after a 101 the connection is a raw tunnel.
    #[serde(default)]
    pub allow_upgrade: bool,
    /// Methods retried on another backend after the request was sent (the API may have acted on
    /// it): idempotent ones only. Default GET, HEAD, OPTIONS; never POST unless listed.
    pub retry_methods: Option<Vec<HttpMethod>>,
    /// The largest request body, in bytes (default `limits.max_body_bytes`).
    pub max_body_bytes: Option<u64>,
    /// CORS for trusted web origins; off when absent.
    pub cors: Option<Cors>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Exact origins, e.g. `https://portal.example.com`.
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Option<Vec<String>>,
    pub allowed_headers: Option<Vec<String>>,
    pub max_age: Option<Dur>,
}

/// One filter of a route's chain, written as a one-key map: `- phantom_token: { introspection: idsvr }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    PhantomToken(PhantomToken),
    CertBinding(CertBinding),
    Binding(Binding),
    Scope(Scope),
    RateLimit(RateLimit),
}

/// A token bucket per partner on every request of the route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: Option<u32>,
    #[serde(default)]
    pub key: RateKey,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhantomToken {
    pub introspection: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertBinding {}

/// Which sender constraints a route accepts; a token is checked the way it is bound.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub accept: Vec<BindingKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingKind {
    /// RFC 8705: `cnf."x5t#S256"` and the connection's client certificate.
    Certificate,
    /// RFC 9449: `cnf.jkt` and a DPoP proof.
    Dpop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub required: Vec<String>,
    /// Per HTTP method, scopes required on top of `required`.
    #[serde(default)]
    pub methods: BTreeMap<HttpMethod, Vec<String>>,
    /// For a method not in `methods`: `required` (the route's scopes suffice) or `deny`.
    #[serde(default)]
    pub default: ScopeDefault,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub address: String,
    /// How often `/readyz` probes the listener and the identity servers.
    pub probe_interval: Option<Dur>,
    /// How old the last successful probe may be for `/readyz` to answer 200.
    pub ready_window: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenIssuer {
    pub issuer: String,
    /// Longest lifetime of an issued JWT; never past the introspected token's `exp`.
    pub lifetime: Option<Dur>,
    /// The first key signs; every key is published in the JWKS (rotation).
    pub keys: Vec<SigningKey>,
    /// Internal plain-HTTP listener serving the JWKS at any path.
    pub jwks_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub kid: String,
    pub key: String,
    pub algorithm: Option<SigningAlg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    pub format: AccessFormat,
}
