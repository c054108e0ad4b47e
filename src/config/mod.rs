//! The gateway's validated configuration model, built from the YAML schema in [`schema`].
//!
//! `load` reads one file, checks every key (files exist and parse, keys match certificates, URLs,
//! durations, names that refer to other sections) and returns either a model that the services can
//! use without further checks or the complete list of problems, each naming the file and the key.

pub mod schema;

use crate::tls;
use pingora_core::server::configuration::ServerConf;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The four TLS 1.2 suites the FAPI 2.0 Security Profile allows.
pub const FAPI_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
pub const DEFAULT_TLS13_SUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/// Every problem found in one configuration file, each as `FILE: KEY: message`.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.0 {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// A host name or a `*.domain` wildcard, compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches exactly one more label.
    Wildcard(String),
    Any,
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        if lower == "*" {
            return Ok(HostPattern::Any);
        }
        let (wild, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower.clone()),
        };
        let ok = !rest.is_empty()
            && rest.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !ok {
            return Err(format!("{text:?} is not a host name or *.domain wildcard"));
        }
        Ok(if wild { HostPattern::Wildcard(format!(".{rest}")) } else { HostPattern::Exact(rest) })
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(name),
            HostPattern::Wildcard(suffix) => {
                name.len() > suffix.len()
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && !name[..name.len() - suffix.len()].contains('.')
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    Terminate,
    Close,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: String,
    pub client_hello_timeout: Duration,
    pub max_client_hello_bytes: usize,
    pub handshake_timeout: Duration,
    pub unknown_sni: UnknownSni,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub hosts: Vec<HostPattern>,
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub client_crl: Option<PathBuf>,
    pub crl_reload_interval: Duration,
    pub verify_depth: u32,
    pub tls13_only: bool,
    pub tls12_ciphers: String,
    pub tls13_ciphersuites: String,
    pub http2: bool,
    pub extra_certificates: Vec<ExtraCertificate>,
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
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// `host:port`, resolved when the service starts.
    pub address: String,
    pub tls: bool,
    pub sni: String,
    /// CA certificates (PEM file contents) the upstream's certificate must chain to.
    pub ca: Option<PathBuf>,
    pub host_header: Option<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    pub name: String,
    pub endpoint: url::Url,
    pub client_id: String,
    pub client_secret: String,
    pub ca: PathBuf,
    pub resolve: Option<SocketAddr>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_ttl: Duration,
    pub max_entries: u64,
    pub negative_ttl: Duration,
    pub mode: ResponseMode,
}

/// How the identity server answers introspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseMode {
    /// The reference's protocol: `Accept: application/jwt`, 200 = the access token as a JWT, 204 = inactive.
    Jwt,
    /// RFC 7662 JSON; the gateway issues the JWT.
    Json,
    /// RFC 9701 signed JSON, verified against the identity server's JWKS; the gateway issues the JWT.
    Rfc9701 { jwks_url: url::Url, issuer: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    Ps256,
    Es256,
}

#[derive(Debug, Clone)]
pub struct SigningKeyConfig {
    pub kid: String,
    pub key: PathBuf,
    pub alg: SigningAlg,
}

#[derive(Debug, Clone)]
pub struct TokenIssuerConfig {
    pub issuer: String,
    pub audience: String,
    pub lifetime: Duration,
    pub keys: Vec<SigningKeyConfig>,
    pub jwks_address: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub enum FilterConfig {
    PhantomToken { introspection: String },
    CertBinding,
    Scope { required: Vec<String>, methods: BTreeMap<String, Vec<String>> },
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub host: HostPattern,
    pub path_prefix: String,
    pub upstream: Arc<UpstreamConfig>,
    pub filters: Vec<FilterConfig>,
    pub forward_client_cert: bool,
    pub cors: Option<CorsConfig>,
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

#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConf,
    pub listener: ListenerConfig,
    pub tls: TlsConfig,
    pub passthrough: PassthroughConfig,
    pub introspection: BTreeMap<String, IntrospectionConfig>,
    pub routes: Vec<RouteConfig>,
    pub metrics: Option<SocketAddr>,
    pub strip_headers: Vec<String>,
    pub token_issuer: Option<TokenIssuerConfig>,
}

/// Collects problems while the model is built, so that one run reports all of them.
struct Check {
    file: String,
    dir: PathBuf,
    problems: Vec<String>,
}

impl Check {
    fn fail(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.problems.push(format!("{}: {key}: {msg}", self.file));
    }

    fn ok<T>(&mut self, key: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.fail(key, e)).ok()
    }

    /// Resolves a path relative to the configuration file's folder and checks it can be read.
    fn file(&mut self, key: &str, path: &str) -> PathBuf {
        let p = self.dir.join(path);
        if let Err(e) = std::fs::metadata(&p) {
            self.fail(key, format!("cannot read {}: {e}", p.display()));
        }
        p
    }
}

/// Reads and validates one configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{file}: cannot read the file: {e}")]))?;
    let raw: schema::File = serde_yaml::from_str(&text).map_err(|e| ConfigErrors(vec![format!("{file}: {e}")]))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut check = Check { file, dir, problems: Vec::new() };
    let config = build(&mut check, raw, path);
    match config {
        Some(c) if check.problems.is_empty() => Ok(c),
        _ => Err(ConfigErrors(check.problems)),
    }
}

fn build(check: &mut Check, raw: schema::File, path: &Path) -> Option<Config> {
    let server = server_conf(check, raw.pingora);
    let listener = listener(check, &raw.listener);
    let tls = tls_config(check, &raw.tls);
    let passthrough = passthrough(check, &raw.passthrough);
    let upstreams: BTreeMap<String, Arc<UpstreamConfig>> = raw
        .upstreams
        .iter()
        .filter_map(|(name, u)| upstream(check, name, u).map(|u| (name.clone(), Arc::new(u))))
        .collect();
    let introspection: BTreeMap<String, IntrospectionConfig> = raw
        .introspection
        .iter()
        .filter_map(|(name, i)| introspection(check, name, i).map(|i| (name.clone(), i)))
        .collect();
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .filter_map(|(n, r)| route(check, n, r, &upstreams, &introspection, raw.upstreams.keys().collect()))
        .collect::<Vec<_>>();
    if raw.routes.is_empty() {
        check.fail("routes", "at least one route is needed");
    }
    let metrics = raw
        .metrics
        .as_ref()
        .and_then(|m| check.ok("metrics.address", m.address.parse().map_err(|e| format!("{:?}: {e}", m.address))));
    let strip_headers = header_names(check, &raw.strip_headers);
    let token_issuer = raw.token_issuer.as_ref().and_then(|t| token_issuer(check, t));
    for (name, i) in &introspection {
        if i.mode != ResponseMode::Jwt && token_issuer.is_none() {
            check.fail(&format!("introspection.{name}.response"), "json and rfc9701 need a token_issuer section");
        }
    }
    Some(Config {
        path: path.to_path_buf(),
        server: server?,
        listener: listener?,
        tls: tls?,
        passthrough,
        introspection,
        routes,
        metrics,
        strip_headers,
        token_issuer,
    })
}

fn token_issuer(check: &mut Check, t: &schema::TokenIssuer) -> Option<TokenIssuerConfig> {
    let keys = t
        .keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let alg = match k.algorithm.as_deref() {
                None | Some("PS256") => SigningAlg::Ps256,
                Some("ES256") => SigningAlg::Es256,
                Some(other) => {
                    check.fail(&format!("token_issuer.keys[{i}].algorithm"), format!("{other:?}: expected PS256 or ES256"));
                    return None;
                }
            };
            Some(SigningKeyConfig { kid: k.kid.clone(), key: check.file(&format!("token_issuer.keys[{i}].key"), &k.key), alg })
        })
        .collect::<Vec<_>>();
    let jwks_address = match &t.jwks_address {
        Some(a) => Some(check.ok("token_issuer.jwks_address", a.parse().map_err(|e| format!("{a:?}: {e}")))?),
        None => None,
    };
    let cfg = TokenIssuerConfig {
        issuer: t.issuer.clone(),
        audience: t.audience.clone(),
        lifetime: dur(t.lifetime, 300),
        keys,
        jwks_address,
    };
    if check.problems.is_empty() {
        // Load the keys now: a wrong key type or an unreadable file stops the gateway before serving.
        if let Err(e) = crate::issuer::TokenIssuer::new(&cfg) {
            check.fail("token_issuer", e);
        }
    }
    Some(cfg)
}

/// pingora's `ServerConf` ignores unknown keys; find them by comparing with what it serializes back.
fn server_conf(check: &mut Check, raw: Option<serde_yaml::Value>) -> Option<ServerConf> {
    let raw = raw.unwrap_or(serde_yaml::Value::Mapping(Default::default()));
    let conf: ServerConf = match serde_yaml::from_value(raw.clone()) {
        Ok(c) => c,
        Err(e) => {
            check.fail("pingora", e);
            return None;
        }
    };
    let known = serde_yaml::to_value(&conf).ok();
    if let (Some(serde_yaml::Value::Mapping(given)), Some(serde_yaml::Value::Mapping(known))) = (Some(raw), known) {
        for key in given.keys() {
            if !known.contains_key(key) {
                check.fail(&format!("pingora.{}", key.as_str().unwrap_or("?")), "unknown key");
            }
        }
    }
    Some(conf)
}

fn listener(check: &mut Check, l: &schema::Listener) -> Option<ListenerConfig> {
    check.ok("listener.address", l.address.parse::<SocketAddr>().map_err(|e| format!("{:?}: {e}", l.address)));
    let unknown_sni = match l.unknown_sni.as_deref() {
        None | Some("terminate") => UnknownSni::Terminate,
        Some("close") => UnknownSni::Close,
        Some(other) => {
            check.fail("listener.unknown_sni", format!("{other:?}: expected terminate or close"));
            UnknownSni::Close
        }
    };
    let max_hello = l.max_client_hello_bytes.unwrap_or(16 * 1024);
    if !(512..=256 * 1024).contains(&max_hello) {
        check.fail("listener.max_client_hello_bytes", "must be between 512 and 262144");
    }
    Some(ListenerConfig {
        address: l.address.clone(),
        client_hello_timeout: dur(l.client_hello_timeout, 5),
        max_client_hello_bytes: max_hello,
        handshake_timeout: dur(l.handshake_timeout, 10),
        unknown_sni,
    })
}

fn dur(d: Option<schema::Dur>, default_secs: u64) -> Duration {
    d.map(|d| d.0).unwrap_or(Duration::from_secs(default_secs))
}

fn tls_config(check: &mut Check, t: &schema::Tls) -> Option<TlsConfig> {
    let hosts: Vec<HostPattern> = t
        .hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| check.ok(&format!("tls.hosts[{i}]"), HostPattern::parse(h)))
        .collect();
    let tls13_only = match t.min_version.as_deref() {
        None | Some("1.2") => false,
        Some("1.3") => true,
        Some(v) => {
            check.fail("tls.min_version", format!("{v:?}: expected \"1.2\" or \"1.3\""));
            false
        }
    };
    let cfg = TlsConfig {
        hosts,
        certificate: check.file("tls.certificate", &t.certificate),
        key: check.file("tls.key", &t.key),
        client_ca: check.file("tls.client_ca", &t.client_ca),
        client_crl: t.client_crl.as_ref().map(|p| check.file("tls.client_crl", p)),
        crl_reload_interval: dur(t.crl_reload_interval, 60),
        verify_depth: t.verify_depth.unwrap_or(2),
        tls13_only,
        tls12_ciphers: t.tls12_ciphers.clone().unwrap_or_else(|| FAPI_TLS12_CIPHERS.to_string()),
        tls13_ciphersuites: t.tls13_ciphersuites.clone().unwrap_or_else(|| DEFAULT_TLS13_SUITES.to_string()),
        http2: t.http2.unwrap_or(true),
        extra_certificates: t
            .certificates
            .iter()
            .enumerate()
            .map(|(i, c)| ExtraCertificate {
                hosts: c
                    .hosts
                    .iter()
                    .enumerate()
                    .filter_map(|(j, h)| check.ok(&format!("tls.certificates[{i}].hosts[{j}]"), HostPattern::parse(h)))
                    .collect(),
                certificate: check.file(&format!("tls.certificates[{i}].certificate"), &c.certificate),
                key: check.file(&format!("tls.certificates[{i}].key"), &c.key),
            })
            .collect(),
    };
    if check.problems.is_empty() {
        // Build the real acceptor once: this catches key mismatches, bad CA or CRL files and cipher strings.
        for (key, msg) in tls::check_settings(&cfg) {
            check.fail(&key, msg);
        }
    }
    Some(cfg)
}

fn passthrough(check: &mut Check, p: &schema::Passthrough) -> PassthroughConfig {
    let routes = p
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let sni = check.ok(&format!("passthrough.routes[{i}].sni"), HostPattern::parse(&r.sni))?;
            check.ok(&format!("passthrough.routes[{i}].upstream"), host_port(&r.upstream))?;
            Some(PassthroughRoute { sni, upstream: r.upstream.clone(), proxy_protocol: r.proxy_protocol })
        })
        .collect();
    PassthroughConfig {
        routes,
        connect_timeout: dur(p.connect_timeout, 3),
        max_connections: p.max_connections.unwrap_or(4096),
    }
}

/// Checks `host:port` syntax only: names are resolved when the services start (a compose network's
/// names do not resolve where `-t` runs).
fn host_port(text: &str) -> Result<String, String> {
    let bad = || format!("{text:?} is not host:port");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(text.to_string())
}

fn upstream(check: &mut Check, name: &str, u: &schema::Upstream) -> Option<UpstreamConfig> {
    let key = format!("upstreams.{name}");
    let address = check.ok(&format!("{key}.address"), host_port(&u.address));
    let tls = u.tls.unwrap_or(true);
    let host = u.address.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default();
    let ca = u.ca.as_ref().map(|p| check.file(&format!("{key}.ca"), p));
    if let Some(ca) = &ca {
        check.ok(&format!("{key}.ca"), tls::read_certs(ca).map(|_| ()));
    }
    if tls && ca.is_none() {
        check.fail(&format!("{key}.ca"), "a CA file is required to verify the upstream's TLS certificate");
    }
    Some(UpstreamConfig {
        name: name.to_string(),
        address: address?,
        tls,
        sni: u.sni.clone().unwrap_or(host),
        ca,
        host_header: u.host_header.clone(),
        connect_timeout: dur(u.connect_timeout, 2),
        read_timeout: dur(u.read_timeout, 30),
        write_timeout: dur(u.write_timeout, 30),
        idle_timeout: dur(u.idle_timeout, 60),
    })
}

fn introspection(check: &mut Check, name: &str, i: &schema::Introspection) -> Option<IntrospectionConfig> {
    let key = format!("introspection.{name}");
    let endpoint = check.ok(
        &format!("{key}.endpoint"),
        url::Url::parse(&i.endpoint).map_err(|e| format!("{:?}: {e}", i.endpoint)).and_then(|u| {
            if u.scheme() == "https" { Ok(u) } else { Err(format!("{:?}: must be an https URL", i.endpoint)) }
        }),
    );
    let ca = check.file(&format!("{key}.ca"), &i.ca);
    check.ok(&format!("{key}.ca"), tls::read_certs(&ca).map(|_| ()));
    let resolve = match &i.resolve {
        Some(r) => Some(check.ok(&format!("{key}.resolve"), r.parse().map_err(|e| format!("{r:?}: {e}")))?),
        None => None,
    };
    let cache = &i.cache;
    let mode = response_mode(check, &key, i)?;
    Some(IntrospectionConfig {
        name: name.to_string(),
        endpoint: endpoint?,
        client_id: i.client_id.clone(),
        client_secret: i.client_secret.clone(),
        ca,
        resolve,
        connect_timeout: dur(i.connect_timeout, 2),
        timeout: dur(i.timeout, 5),
        max_ttl: dur(cache.max_ttl, 300),
        max_entries: cache.max_entries.unwrap_or(100_000),
        negative_ttl: dur(cache.negative_ttl, 5),
        mode,
    })
}

fn response_mode(check: &mut Check, key: &str, i: &schema::Introspection) -> Option<ResponseMode> {
    match i.response.as_deref() {
        None | Some("jwt") => Some(ResponseMode::Jwt),
        Some("json") => Some(ResponseMode::Json),
        Some("rfc9701") => {
            let Some(url) = &i.jwks_url else {
                check.fail(&format!("{key}.jwks_url"), "rfc9701 needs the identity server's JWKS URL");
                return None;
            };
            let jwks_url = check.ok(&format!("{key}.jwks_url"), url::Url::parse(url).map_err(|e| format!("{url:?}: {e}")))?;
            Some(ResponseMode::Rfc9701 { jwks_url, issuer: i.issuer.clone() })
        }
        Some(other) => {
            check.fail(&format!("{key}.response"), format!("{other:?}: expected jwt, json or rfc9701"));
            None
        }
    }
}

fn route(
    check: &mut Check,
    n: usize,
    r: &schema::Route,
    upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
    introspection: &BTreeMap<String, IntrospectionConfig>,
    upstream_names: Vec<&String>,
) -> Option<RouteConfig> {
    let key = format!("routes[{n}]");
    let host = check.ok(&format!("{key}.host"), HostPattern::parse(&r.host));
    let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_string());
    if !path_prefix.starts_with('/') {
        check.fail(&format!("{key}.path_prefix"), "must start with /");
    }
    let upstream = upstreams.get(&r.upstream).cloned();
    if upstream.is_none() && !upstream_names.contains(&&r.upstream) {
        check.fail(&format!("{key}.upstream"), format!("no upstream named {:?}", r.upstream));
    }
    let filters = r
        .filters
        .iter()
        .enumerate()
        .filter_map(|(i, f)| filter(check, &format!("{key}.filters[{i}]"), f, introspection))
        .collect::<Vec<_>>();
    check_filter_order(check, &key, &filters);
    let cors = r.cors.as_ref().map(|c| cors(check, &key, c));
    Some(RouteConfig {
        host: host?,
        path_prefix,
        upstream: upstream?,
        filters,
        forward_client_cert: r.forward_client_cert,
        cors,
    })
}

fn cors(check: &mut Check, key: &str, c: &schema::Cors) -> CorsConfig {
    for (i, o) in c.allowed_origins.iter().enumerate() {
        let ok = url::Url::parse(o).is_ok_and(|u| u.origin().ascii_serialization() == *o);
        if !ok || o == "null" {
            check.fail(&format!("{key}.cors.allowed_origins[{i}]"), format!("{o:?} is not an origin like https://portal.example.com"));
        }
    }
    let methods = c.allowed_methods.clone().unwrap_or_else(|| vec!["GET".into(), "POST".into()]);
    let headers = c.allowed_headers.clone().unwrap_or_else(|| {
        vec!["authorization".into(), "content-type".into(), "x-fapi-interaction-id".into()]
    });
    CorsConfig {
        origins: c.allowed_origins.clone(),
        methods: methods.join(", "),
        headers: headers.join(", "),
        max_age: dur(c.max_age, 600).as_secs().to_string(),
    }
}

fn filter(
    check: &mut Check,
    key: &str,
    f: &schema::Filter,
    introspection: &BTreeMap<String, IntrospectionConfig>,
) -> Option<FilterConfig> {
    let set = [f.phantom_token.is_some(), f.cert_binding.is_some(), f.scope.is_some()];
    if set.iter().filter(|s| **s).count() != 1 {
        check.fail(key, "set exactly one of phantom_token, cert_binding, scope");
        return None;
    }
    if let Some(p) = &f.phantom_token {
        if !introspection.contains_key(&p.introspection) {
            check.fail(&format!("{key}.phantom_token.introspection"), format!("no introspection named {:?}", p.introspection));
            return None;
        }
        return Some(FilterConfig::PhantomToken { introspection: p.introspection.clone() });
    }
    if let Some(s) = &f.scope {
        let methods = s.methods.iter().map(|(m, v)| (m.to_ascii_uppercase(), v.clone())).collect();
        return Some(FilterConfig::Scope { required: s.required.clone(), methods });
    }
    Some(FilterConfig::CertBinding)
}

/// `cert_binding` and `scope` read the claims that `phantom_token` produces, so it must come first.
fn check_filter_order(check: &mut Check, key: &str, filters: &[FilterConfig]) {
    let first_token = filters.iter().position(|f| matches!(f, FilterConfig::PhantomToken { .. }));
    for (i, f) in filters.iter().enumerate() {
        let needs_token = matches!(f, FilterConfig::CertBinding | FilterConfig::Scope { .. });
        if needs_token && first_token.is_none_or(|t| t > i) {
            check.fail(&format!("{key}.filters[{i}]"), "needs a phantom_token filter before it");
        }
    }
}

fn header_names(check: &mut Check, names: &[String]) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            check.ok(
                &format!("strip_headers[{i}]"),
                http::HeaderName::from_bytes(n.as_bytes())
                    .map(|h| h.as_str().to_string())
                    .map_err(|e| format!("{n:?}: {e}")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_one_label_only() {
        let p = HostPattern::parse("*.Example.com").unwrap();
        assert!(p.matches("api.example.com"));
        assert!(p.matches("API.EXAMPLE.COM"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("a.b.example.com"));
        assert!(!p.matches("evilexample.com"));
        assert!(HostPattern::parse("bad host").is_err());
        assert!(HostPattern::parse("*.").is_err());
    }
}
