//! Validation: reads one file, checks every key (files exist, URLs, durations, names that refer to
//! other sections, closed sets) and builds the model, or reports every problem, each once.

use super::closed::*;
use super::model::*;
use super::problems::Problems;
use super::schema;
use crate::header_name::HeaderPattern;
use crate::host::HostPattern;
use pingora_core::server::configuration::ServerConf;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What a key that is not written means: every default in one place.
const METRICS_PROBE_INTERVAL: Duration = Duration::from_secs(5);
const METRICS_READY_WINDOW: Duration = Duration::from_secs(30);
const TOKEN_ISSUER_LIFETIME: Duration = Duration::from_secs(300);
const LISTENER_CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const LISTENER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const LISTENER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
const LISTENER_ANONYMOUS_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
const LISTENER_H2_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
const LISTENER_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);
const LISTENER_REVOCATION_GRACE: Duration = Duration::from_secs(5);
const TLS_CONFIG_CRL_RELOAD_INTERVAL: Duration = Duration::from_secs(60);
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const PASSTHROUGH_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const PASSTHROUGH_MAX_LIFETIME: Duration = Duration::from_secs(600);
const LIMITS_LOG_INTERVAL: Duration = Duration::from_secs(10);
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(30);
const UPSTREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const UPSTREAM_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
const UPSTREAM_MAX_ATTEMPTS: usize = 3;
const EJECTION_FAILURES: u32 = 3;
const EJECTION_DURATION: Duration = Duration::from_secs(10);
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// nginx's `client_max_body_size` default, which the users come from: an API call's JSON body
/// is far below it, and a larger upload is a route's own decision.
const MAX_BODY_BYTES: u64 = 1024 * 1024;
const INTROSPECTION_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(5);
const INTROSPECTION_MAX_TTL: Duration = Duration::from_secs(300);
const DPOP_NONCE_LIFETIME: Duration = Duration::from_secs(300);
const CLUSTER_TIMEOUT: Duration = Duration::from_millis(50);
const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A token revoked while a replica cannot hear purges is served by it for at most this long.
const CLUSTER_OUTAGE_CACHE_TTL: Duration = Duration::from_secs(1);
const CLUSTER_OUTAGE_CACHE_TTL_MAX: Duration = Duration::from_secs(60);
const CLUSTER_KEY_PREFIX: &str = "mtls-gateway:";
const TRACING_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
const TRACING_EXPORT_INTERVAL: Duration = Duration::from_secs(2);
const TRACING_SERVICE_NAME: &str = "mtls-gateway";
const INTROSPECTION_NEGATIVE_TTL: Duration = Duration::from_secs(5);
const INTROSPECTION_LEEWAY: Duration = Duration::from_secs(30);
const CORS_MAX_AGE: Duration = Duration::from_secs(600);
const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024;
const VERIFY_DEPTH: u32 = 2;
const PER_SOURCE_CONNECTIONS: usize = 1024;
const PER_SOURCE_HANDSHAKES: usize = 128;
const CACHE_MAX_ENTRIES: u64 = 100_000;
const LISTENER_MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);
const LISTENER_HEADER_TIMEOUT: Duration = Duration::from_secs(20);
const LISTENER_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's default `large_client_header_buffers` allow 32 KiB; HTTP/2 in pingora allows 64 KiB.
const MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;
const BODY_MIN_RATE: (u64, Duration) = (1024, Duration::from_secs(10));
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
const IPV6_PREFIX: u8 = 64;
const TLS_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
const PER_PARTNER_REQUESTS: usize = 256;
const INTROSPECTION_MISSES: RateConfig = RateConfig { per_second: 20, burst: 100 };

/// Collects problems while the model is built, and resolves paths relative to the file.
struct Check {
    dir: PathBuf,
    problems: Problems,
    /// What is allowed but probably a mistake: printed by `-t`, logged at WARN on start and reload.
    warnings: Vec<String>,
}

impl Check {
    fn fail(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.problems.fail(key, msg);
    }

    fn ok<T, E: std::fmt::Display>(&mut self, key: &str, r: Result<T, E>) -> Option<T> {
        self.problems.ok(key, r)
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
pub fn load(path: &Path) -> Result<Config, Problems> {
    let mut problems = Problems::new(path);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.whole_file(format!("cannot read the file: {e}"));
            return Err(problems);
        }
    };
    let raw: schema::File = match serde_yaml::from_str(&text) {
        Ok(raw) => raw,
        Err(e) => {
            problems.whole_file(e);
            return Err(problems);
        }
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut check = Check { dir, problems, warnings: Vec::new() };
    let config = model(&mut check, raw, path);
    check.problems.or(config)
}

fn model(check: &mut Check, raw: schema::File, path: &Path) -> Option<Config> {
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
    // References are checked against every name written, so that one broken section is one problem.
    let names = Names {
        upstreams: raw.upstreams.keys().cloned().collect(),
        introspection: raw.introspection.keys().cloned().collect(),
    };
    let limits = limits(check, &raw.limits, passthrough.max_connections);
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .filter_map(|(n, r)| route(check, n, r, (&upstreams, &names), limits.max_body_bytes))
        .collect::<Vec<_>>();
    if raw.routes.is_empty() {
        check.fail("routes", "at least one route is needed");
    }
    let routes_accept_dpop = routes
        .iter()
        .any(|r: &RouteConfig| r.filters.iter().any(|f| matches!(f, FilterConfig::Binding { dpop: true, .. })));
    let metrics = raw.metrics.as_ref().and_then(|m| {
        let address = check.ok("metrics.address", m.address.parse().map_err(|e| format!("{:?}: {e}", m.address)))?;
        Some(OpsConfig {
            address,
            probe_interval: dur(m.probe_interval, METRICS_PROBE_INTERVAL),
            ready_window: dur(m.ready_window, METRICS_READY_WINDOW),
        })
    });
    let strip_headers = header_patterns(check, &raw.strip_headers);
    let refusals = refusals(check, &raw.refusals);
    let files = crate::fdlimit::hard();
    if let Some(l) = &listener {
        if !crate::fdlimit::fits(files, l.max_connections, passthrough.max_connections) {
            check.warnings.push(format!(
                "listener.max_connections ({}) and passthrough.max_connections ({}) need more descriptors than \
                 the file limit ({files}) leaves: at that point the kernel, not the gateway, refuses connections",
                l.max_connections, passthrough.max_connections
            ));
        }
    }
    let token_issuer = raw.token_issuer.as_ref().and_then(|t| token_issuer(check, t));
    let admin = raw.admin.as_ref().and_then(|a| admin(check, a));
    for (name, i) in &raw.introspection {
        let mode = i.response.unwrap_or_default();
        if mode != ResponseMode::Jwt && raw.token_issuer.is_none() {
            check.fail(&format!("introspection.{name}.response"), "json and rfc9701 need a token_issuer section");
        }
    }
    Some(Config {
        path: path.to_path_buf(),
        server: server?,
        listener: listener?,
        tls,
        passthrough,
        introspection,
        routes,
        metrics,
        strip_headers,
        refusals,
        limits,
        access_format: raw.access_log.as_ref().map(|a| a.format).unwrap_or_default(),
        token_issuer,
        admin,
        partners: partners(check, &raw.partners),
        tracing: tracing(check, &raw.tracing, &raw.partners),
        dpop: dpop(check, raw.dpop.as_ref(), routes_accept_dpop),
        cluster: raw.cluster.as_ref().and_then(|c| cluster(check, c)),
        warnings: std::mem::take(&mut check.warnings),
    })
}

/// Fails closed: no way to authenticate, or subjects without the CA that vouches for them, is an
/// error, never an open listener.
fn admin(check: &mut Check, a: &schema::Admin) -> Option<AdminConfig> {
    let address = check.ok("admin.address", a.address.parse().map_err(|e| format!("{:?}: {e}", a.address)));
    let client_ca = a.client_ca.as_ref().map(|p| check.file("admin.client_ca", p));
    let secret_file = a.secret_file.as_ref().map(|p| check.file("admin.secret_file", p));
    match (a.client_subjects.is_empty(), &client_ca, &secret_file) {
        (true, None, None) => check.fail("admin", "needs client_subjects (with client_ca) or secret_file"),
        (true, Some(_), _) => check.fail("admin.client_subjects", "client_ca is set but no subject is allowed"),
        (false, None, _) => check.fail("admin.client_ca", "client_subjects need the CA their certificates chain to"),
        _ => {}
    }
    for (i, subject) in a.client_subjects.iter().enumerate() {
        if subject.trim().is_empty() || !subject.contains('=') {
            check.fail(&format!("admin.client_subjects[{i}]"), format!("{subject:?} is not a subject like CN=name"));
        }
    }
    let certificate = check.file("admin.certificate", &a.certificate);
    let key = check.file("admin.key", &a.key);
    Some(AdminConfig {
        address: address?,
        certificate,
        key,
        client_ca,
        client_subjects: a.client_subjects.clone(),
        secret_file,
    })
}

struct Names {
    upstreams: BTreeSet<String>,
    introspection: BTreeSet<String>,
}

fn token_issuer(check: &mut Check, t: &schema::TokenIssuer) -> Option<TokenIssuerConfig> {
    if t.keys.is_empty() {
        check.fail("token_issuer.keys", "at least one key is needed");
    }
    let keys = t
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| SigningKeyConfig {
            kid: k.kid.clone(),
            key: check.file(&format!("token_issuer.keys[{i}].key"), &k.key),
            alg: k.algorithm.unwrap_or_default(),
        })
        .collect::<Vec<_>>();
    let jwks_address = match &t.jwks_address {
        Some(a) => Some(check.ok("token_issuer.jwks_address", a.parse().map_err(|e| format!("{a:?}: {e}")))?),
        None => None,
    };
    Some(TokenIssuerConfig {
        issuer: t.issuer.clone(),
        lifetime: dur(t.lifetime, TOKEN_ISSUER_LIFETIME),
        keys,
        jwks_address,
    })
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
    if let (serde_yaml::Value::Mapping(given), Some(serde_yaml::Value::Mapping(known))) = (raw, known) {
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
    let max_hello = l.max_client_hello_bytes.unwrap_or(MAX_CLIENT_HELLO_BYTES);
    if !(512..=256 * 1024).contains(&max_hello) {
        check.fail("listener.max_client_hello_bytes", "must be between 512 and 262144");
    }
    let header_bytes = l.max_request_header_bytes.unwrap_or(MAX_REQUEST_HEADER_BYTES);
    if !(1024..=1024 * 1024).contains(&header_bytes) {
        check.fail("listener.max_request_header_bytes", "must be between 1024 and 1048576");
    }
    let body_rate = l.body_min_rate.as_ref().map_or(BODY_MIN_RATE, |r| (r.bytes, r.window.0));
    let streams = l.h2_max_concurrent_streams.unwrap_or(H2_MAX_CONCURRENT_STREAMS);
    if streams == 0 {
        check.fail("listener.h2_max_concurrent_streams", "must be at least 1");
    }
    if l.max_connections == Some(0) {
        check.fail("listener.max_connections", "must be at least 1");
    }
    let max_connections = l.max_connections.unwrap_or_else(|| crate::fdlimit::default_share(crate::fdlimit::hard()));
    // A quarter by default: anonymous clients need nothing but a handshake to hold a slot.
    let anonymous = l.anonymous_max_connections.unwrap_or((max_connections / 4).max(1));
    if anonymous == 0 || anonymous > max_connections {
        check.fail("listener.anonymous_max_connections", "must be between 1 and listener.max_connections");
    }
    Some(ListenerConfig {
        address: l.address.clone(),
        client_hello_timeout: dur(l.client_hello_timeout, LISTENER_CLIENT_HELLO_TIMEOUT),
        max_client_hello_bytes: max_hello,
        handshake_timeout: dur(l.handshake_timeout, LISTENER_HANDSHAKE_TIMEOUT),
        unknown_sni: l.unknown_sni.unwrap_or_default(),
        keepalive_timeout: dur(l.keepalive_timeout, LISTENER_KEEPALIVE_TIMEOUT),
        h2_idle_timeout: dur(l.h2_idle_timeout, LISTENER_H2_IDLE_TIMEOUT),
        max_connection_age: dur(l.max_connection_age, LISTENER_MAX_CONNECTION_AGE),
        revocation_grace: dur(l.revocation_grace, LISTENER_REVOCATION_GRACE),
        max_connection_age_grace: dur(l.max_connection_age_grace, LISTENER_MAX_CONNECTION_AGE_GRACE),
        header_timeout: nonzero(check, "listener.header_timeout", dur(l.header_timeout, LISTENER_HEADER_TIMEOUT)),
        max_request_header_bytes: header_bytes,
        body_timeout: nonzero(check, "listener.body_timeout", dur(l.body_timeout, LISTENER_BODY_TIMEOUT)),
        body_min_rate_bytes: body_rate.0,
        body_min_rate_window: nonzero(check, "listener.body_min_rate.window", body_rate.1),
        max_connections,
        anonymous_max_connections: anonymous,
        anonymous_idle_timeout: nonzero(
            check,
            "listener.anonymous_idle_timeout",
            dur(l.anonymous_idle_timeout, LISTENER_ANONYMOUS_IDLE_TIMEOUT),
        ),
        h2_max_concurrent_streams: streams,
    })
}

/// Partner names become metric labels: short, plain, and none of the names the gateway uses for
/// everyone else.
fn partners(check: &mut Check, map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    for (subject, name) in map {
        let plain = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !plain || name == "other" || name == "none" {
            check.fail(
                &format!("partners.{subject}"),
                format!("{name:?}: a partner name is 1-64 of [A-Za-z0-9-_.], not other or none"),
            );
        }
    }
    map.clone()
}

/// The section's defaults apply when a route accepts DPoP and the section is absent. Symmetric
/// algorithms (anyone holding the key could have made the proof) and `none` are refused.
fn dpop(check: &mut Check, d: Option<&schema::Dpop>, needed: bool) -> Option<DpopConfig> {
    let d = match (d, needed) {
        (None, false) => return None,
        (None, true) => return Some(DpopConfig::default()),
        (Some(d), _) => d,
    };
    let defaults = DpopConfig::default();
    let mut algs = Vec::new();
    for (i, name) in d.algs.iter().flatten().enumerate() {
        let key = format!("dpop.algs[{i}]");
        match name.parse::<jsonwebtoken::Algorithm>() {
            Ok(a) if !matches!(a, jsonwebtoken::Algorithm::HS256 | jsonwebtoken::Algorithm::HS384 | jsonwebtoken::Algorithm::HS512) => algs.push(a),
            _ => check.fail(&key, format!("{name:?}: an asymmetric JWS algorithm (ES256, ES384, PS256, PS384, PS512, RS256, RS384, RS512, EdDSA)")),
        }
    }
    if d.algs.as_ref().is_some_and(Vec::is_empty) {
        check.fail("dpop.algs", "names at least one algorithm");
    }
    let nonce = d.nonce.as_ref().and_then(|n| {
        let path = check.file("dpop.nonce.secret_file", &n.secret_file);
        let secret = std::fs::read(&path).ok()?;
        let secret = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
        if secret.len() < 32 {
            check.fail("dpop.nonce.secret_file", format!("{}: the secret needs at least 32 bytes", path.display()));
        }
        let lifetime = nonzero(check, "dpop.nonce.lifetime", dur(n.lifetime, DPOP_NONCE_LIFETIME));
        Some(NonceConfig { secret, lifetime })
    });
    let replay_entries = d.replay_cache_entries.unwrap_or(defaults.replay_entries);
    if replay_entries == 0 {
        check.fail("dpop.replay_cache_entries", "must be at least 1");
    }
    Some(DpopConfig {
        algs: if d.algs.is_some() { algs } else { defaults.algs },
        max_age: nonzero(check, "dpop.max_age", dur(d.max_age, defaults.max_age)),
        leeway: dur(d.leeway, defaults.leeway),
        replay_entries,
        nonce,
    })
}

/// A password goes in a file, never in the URL written in the configuration.
fn cluster(check: &mut Check, c: &schema::Cluster) -> Option<ClusterConfig> {
    // The URL is not echoed: it may hold the password that it must not hold.
    let url = url::Url::parse(&c.url).map_err(|e| format!("not a URL: {e}")).and_then(|u| {
        match u.scheme() {
            "redis" | "rediss" if u.host_str().is_some() => {}
            _ => return Err("a redis://host:port or rediss://host:port URL".to_string()),
        }
        if u.password().is_some() {
            return Err("put the password in password_file, not in the URL".to_string());
        }
        Ok(u)
    });
    let url = check.ok("cluster.url", url);
    let password_file = c.password_file.as_ref().map(|p| check.file("cluster.password_file", p));
    let ca = c.ca.as_ref().map(|p| check.file("cluster.ca", p));
    let client_identity = match (&c.client_certificate, &c.client_key) {
        (Some(cert), Some(key)) => {
            Some((check.file("cluster.client_certificate", cert), check.file("cluster.client_key", key)))
        }
        (None, None) => None,
        (Some(_), None) => {
            check.fail("cluster.client_key", "client_certificate needs its key");
            None
        }
        (None, Some(_)) => {
            check.fail("cluster.client_certificate", "client_key needs its certificate");
            None
        }
    };
    let tls_only = [("cluster.ca", ca.is_some()), ("cluster.client_certificate", client_identity.is_some())];
    if let Some(u) = &url {
        for (key, set) in tls_only {
            if set && u.scheme() != "rediss" {
                check.fail(key, "applies to TLS only: use a rediss:// URL");
            }
        }
    }
    let timeout = nonzero(check, "cluster.timeout", dur(c.timeout, CLUSTER_TIMEOUT));
    if timeout > Duration::from_secs(1) {
        check
            .warnings
            .push(format!("cluster.timeout {timeout:?}: every request may wait this long when the server is slow"));
    }
    let outage_cache_ttl = dur(c.outage_cache_ttl, CLUSTER_OUTAGE_CACHE_TTL);
    if outage_cache_ttl > CLUSTER_OUTAGE_CACHE_TTL_MAX {
        check.fail("cluster.outage_cache_ttl", "at most 60s: a purged token may be served this long in an outage");
    }
    Some(ClusterConfig {
        url: url?,
        password_file,
        ca,
        client_identity,
        key_prefix: c.key_prefix.clone().unwrap_or_else(|| CLUSTER_KEY_PREFIX.to_string()),
        timeout,
        connect_timeout: nonzero(check, "cluster.connect_timeout", dur(c.connect_timeout, CLUSTER_CONNECT_TIMEOUT)),
        rate_limits: c.rate_limits.unwrap_or(FailPolicy::Open),
        replay: c.replay.unwrap_or(FailPolicy::Closed),
        outage_cache_ttl,
    })
}

/// Trust is named explicitly: addresses and networks, or partner names that `partners` defines.
fn tracing(check: &mut Check, t: &schema::Tracing, partners: &BTreeMap<String, String>) -> TracingConfig {
    let otlp = t.otlp_endpoint.as_ref().and_then(|e| {
        let url = url::Url::parse(e).map_err(|err| format!("{e:?}: {err}"));
        let url = url.and_then(|u| match u.scheme() {
            "http" | "https" => Ok(u),
            other => Err(format!("{e:?}: the OTLP/HTTP endpoint needs http or https, not {other}")),
        });
        let endpoint = check.ok("tracing.otlp_endpoint", url)?;
        Some(OtlpConfig {
            endpoint,
            service_name: t.service_name.clone().unwrap_or_else(|| TRACING_SERVICE_NAME.to_string()),
            timeout: nonzero(check, "tracing.export_timeout", dur(t.export_timeout, TRACING_EXPORT_TIMEOUT)),
            interval: nonzero(check, "tracing.export_interval", dur(t.export_interval, TRACING_EXPORT_INTERVAL)),
        })
    });
    if t.otlp_endpoint.is_none() && (t.service_name.is_some() || t.export_timeout.is_some()) {
        check.warnings.push("tracing: service_name and export_timeout have no effect without otlp_endpoint".into());
    }
    let mut trusted_sources = Vec::new();
    for (i, s) in t.trusted_sources.iter().enumerate() {
        let net = s.parse::<ipnet::IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        if let Some(net) = check.ok(&format!("tracing.trusted_sources[{i}]"), net.map_err(|e| format!("{s:?}: {e}"))) {
            trusted_sources.push(net);
        }
    }
    let known: BTreeSet<&String> = partners.values().collect();
    for (i, p) in t.trusted_partners.iter().enumerate() {
        if !known.contains(p) {
            check.fail(&format!("tracing.trusted_partners[{i}]"), format!("{p:?} is not a name in partners"));
        }
    }
    let ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        check.fail("tracing.sample_ratio", format!("{ratio} is not between 0.0 and 1.0"));
    }
    TracingConfig { otlp, trusted_sources, trusted_partners: t.trusted_partners.clone(), sample_ratio: ratio }
}

fn nonzero(check: &mut Check, key: &str, d: Duration) -> Duration {
    if d.is_zero() {
        check.fail(key, "must be longer than zero");
    }
    d
}

fn dur(d: Option<schema::Dur>, default: Duration) -> Duration {
    d.map(|d| d.0).unwrap_or(default)
}

fn hosts(check: &mut Check, key: &str, list: &[String]) -> Vec<HostPattern> {
    list.iter().enumerate().filter_map(|(i, h)| check.ok(&format!("{key}[{i}]"), HostPattern::parse(h))).collect()
}

fn tls_config(check: &mut Check, t: &schema::Tls) -> TlsConfig {
    let extra_certificates = t
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| ExtraCertificate {
            hosts: hosts(check, &format!("tls.certificates[{i}].hosts"), &c.hosts),
            certificate: check.file(&format!("tls.certificates[{i}].certificate"), &c.certificate),
            key: check.file(&format!("tls.certificates[{i}].key"), &c.key),
        })
        .collect();
    TlsConfig {
        hosts: hosts(check, "tls.hosts", &t.hosts),
        certificate: check.file("tls.certificate", &t.certificate),
        key: check.file("tls.key", &t.key),
        client_ca: check.file("tls.client_ca", &t.client_ca),
        client_crl: t.client_crl.as_ref().map(|p| check.file("tls.client_crl", p)),
        crl_reload_interval: dur(t.crl_reload_interval, TLS_CONFIG_CRL_RELOAD_INTERVAL),
        crl_expired: t.crl_expired.unwrap_or_default(),
        expiry_warning: dur(t.expiry_warning, TLS_EXPIRY_WARNING),
        verify_depth: t.verify_depth.unwrap_or(VERIFY_DEPTH),
        min_version: t.min_version.unwrap_or_default(),
        tls12_ciphers: t.tls12_ciphers.clone().unwrap_or_else(|| FAPI_TLS12_CIPHERS.to_string()),
        tls13_ciphersuites: t.tls13_ciphersuites.clone().unwrap_or_else(|| DEFAULT_TLS13_SUITES.to_string()),
        http2: t.http2.unwrap_or(true),
        extra_certificates,
        optional_client_certificate: hosts(check, "tls.optional_client_certificate", &t.optional_client_certificate),
    }
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
    let (min_rate_bytes, min_rate_window) = match &p.min_rate {
        Some(r) => (r.bytes, r.window.0),
        None => (512, Duration::from_secs(30)),
    };
    if min_rate_window.is_zero() {
        check.fail("passthrough.min_rate.window", "must be longer than zero");
    }
    PassthroughConfig {
        routes,
        connect_timeout: dur(p.connect_timeout, PASSTHROUGH_CONNECT_TIMEOUT),
        max_connections: p.max_connections.unwrap_or_else(|| crate::fdlimit::default_share(crate::fdlimit::hard())),
        idle_timeout: dur(p.idle_timeout, PASSTHROUGH_IDLE_TIMEOUT),
        max_lifetime: dur(p.max_lifetime, PASSTHROUGH_MAX_LIFETIME),
        min_rate_bytes,
        min_rate_window,
    }
}

/// Defaults keep one address to a small share: 1/32 of the tunnel slots every partner shares.
fn limits(check: &mut Check, l: &schema::Limits, max_tunnels: usize) -> LimitsConfig {
    let per_source = PerSourceLimits {
        tunnels: l.per_source.tunnels.unwrap_or((max_tunnels / 32).max(1)),
        connections: l.per_source.connections.unwrap_or(PER_SOURCE_CONNECTIONS),
        handshakes: l.per_source.handshakes.unwrap_or(PER_SOURCE_HANDSHAKES),
        ipv6_prefix: l.ipv6_prefix.unwrap_or(IPV6_PREFIX),
    };
    if !(16..=128).contains(&per_source.ipv6_prefix) {
        check.fail("limits.ipv6_prefix", "must be between 16 and 128");
    }
    for (key, v) in [
        ("tunnels", per_source.tunnels),
        ("connections", per_source.connections),
        ("handshakes", per_source.handshakes),
    ] {
        if v == 0 {
            check.fail(&format!("limits.per_source.{key}"), "must be at least 1");
        }
    }
    LimitsConfig {
        per_source,
        log_interval: dur(l.log_interval, LIMITS_LOG_INTERVAL),
        per_partner_requests: match l.per_partner_requests {
            Some(0) => {
                check.fail("limits.per_partner_requests", "must be at least 1");
                1
            }
            n => n.unwrap_or(PER_PARTNER_REQUESTS),
        },
        // On by default: a partner whose tokens are cached never reaches it, and a flood of
        // made-up tokens cannot reach the identity server at more than this per certificate.
        introspection_misses: Some(match l.introspection_misses {
            Some(r) => rate(check, "limits.introspection_misses", r.per_second, r.burst),
            None => INTROSPECTION_MISSES,
        }),
        max_body_bytes: l.max_body_bytes.unwrap_or(MAX_BODY_BYTES),
    }
}

fn rate(check: &mut Check, key: &str, per_second: u32, burst: Option<u32>) -> RateConfig {
    if per_second == 0 {
        check.fail(&format!("{key}.per_second"), "must be at least 1");
    }
    let burst = burst.unwrap_or(per_second.max(1));
    if burst == 0 {
        check.fail(&format!("{key}.burst"), "must be at least 1");
    }
    RateConfig { per_second: per_second.max(1), burst: burst.max(1) }
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
    let backends = backends(check, &key, u);
    let tls = u.tls.unwrap_or(true);
    let host = backends.first().and_then(|b| b.address.rsplit_once(':')).map(|(h, _)| h.to_string());
    let ca = u.ca.as_ref().map(|p| check.file(&format!("{key}.ca"), p));
    if tls && ca.is_none() {
        check.fail(&format!("{key}.ca"), "a CA file is required to verify the upstream's TLS certificate");
    }
    let client_identity = client_identity(check, &key, u, tls);
    let max_attempts = u.max_attempts.unwrap_or(UPSTREAM_MAX_ATTEMPTS);
    if max_attempts == 0 {
        check.fail(&format!("{key}.max_attempts"), "must be at least 1");
    }
    Some(UpstreamConfig {
        name: name.to_string(),
        backends,
        selection: u.selection.unwrap_or_default(),
        health_check: u.health_check.as_ref().map(|h| health_check(check, &key, h)),
        ejection: EjectionConfig {
            failures: u.ejection.as_ref().and_then(|e| e.failures).unwrap_or(EJECTION_FAILURES),
            duration: dur(u.ejection.as_ref().and_then(|e| e.duration), EJECTION_DURATION),
        },
        max_attempts: max_attempts.max(1),
        client_identity,
        tls,
        sni: u.sni.clone().or(host).unwrap_or_default(),
        ca,
        host_header: u.host_header.clone(),
        connect_timeout: dur(u.connect_timeout, UPSTREAM_CONNECT_TIMEOUT),
        read_timeout: dur(u.read_timeout, UPSTREAM_READ_TIMEOUT),
        write_timeout: dur(u.write_timeout, UPSTREAM_WRITE_TIMEOUT),
        idle_timeout: dur(u.idle_timeout, UPSTREAM_IDLE_TIMEOUT),
        resolve_interval: dur(u.resolve_interval, UPSTREAM_RESOLVE_INTERVAL),
    })
}

/// `address` (one backend) or `backends` (several), exactly one of them.
fn backends(check: &mut Check, key: &str, u: &schema::Upstream) -> Vec<BackendAddress> {
    let listed: Vec<(String, usize)> = match (&u.address, &u.backends) {
        (Some(a), None) => vec![(a.clone(), 1)],
        (None, Some(list)) => list
            .iter()
            .map(|b| match b {
                schema::Backend::Address(a) => (a.clone(), 1),
                schema::Backend::Weighted { address, weight } => (address.clone(), *weight),
            })
            .collect(),
        (Some(_), Some(_)) => {
            check.fail(&format!("{key}.backends"), "write either address or backends, not both");
            return Vec::new();
        }
        (None, None) => {
            check.fail(&format!("{key}.address"), "an upstream needs an address or backends");
            return Vec::new();
        }
    };
    if listed.is_empty() {
        check.fail(&format!("{key}.backends"), "lists no backend");
    }
    let mut out = Vec::new();
    for (i, (address, weight)) in listed.into_iter().enumerate() {
        let at = if u.address.is_some() { format!("{key}.address") } else { format!("{key}.backends[{i}]") };
        if weight == 0 {
            check.fail(&format!("{at}.weight"), "must be at least 1");
        }
        if let Some(address) = check.ok(&at, host_port(&address)) {
            out.push(BackendAddress { address, weight: weight.max(1) });
        }
    }
    out
}

fn health_check(check: &mut Check, key: &str, h: &schema::HealthCheck) -> HealthCheckConfig {
    let key = format!("{key}.health_check");
    let path = h.path.clone().unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') {
        check.fail(&format!("{key}.path"), "must start with /");
    }
    let status = h.status.unwrap_or(200);
    if !(100..=599).contains(&status) {
        check.fail(&format!("{key}.status"), "must be an HTTP status");
    }
    let (healthy_after, unhealthy_after) = (h.healthy_after.unwrap_or(1), h.unhealthy_after.unwrap_or(2));
    if healthy_after == 0 || unhealthy_after == 0 {
        check.fail(&key, "healthy_after and unhealthy_after must be at least 1");
    }
    HealthCheckConfig {
        kind: h.kind.unwrap_or_default(),
        path,
        status,
        interval: nonzero(check, &format!("{key}.interval"), dur(h.interval, HEALTH_CHECK_INTERVAL)),
        timeout: nonzero(check, &format!("{key}.timeout"), dur(h.timeout, HEALTH_CHECK_TIMEOUT)),
        healthy_after: healthy_after.max(1),
        unhealthy_after: unhealthy_after.max(1),
    }
}

/// Both files or neither; only over TLS.
fn client_identity(check: &mut Check, key: &str, u: &schema::Upstream, tls: bool) -> Option<ClientIdentity> {
    match (&u.client_certificate, &u.client_key) {
        (None, None) => None,
        (Some(cert), Some(k)) => {
            if !tls {
                check.fail(&format!("{key}.client_certificate"), "needs tls: a client certificate is sent over TLS");
            }
            let certificate = check.file(&format!("{key}.client_certificate"), cert);
            let key_file = check.file(&format!("{key}.client_key"), k);
            Some(ClientIdentity { certificate, key: key_file })
        }
        (Some(_), None) => {
            check.fail(&format!("{key}.client_key"), "client_certificate needs its client_key");
            None
        }
        (None, Some(_)) => {
            check.fail(&format!("{key}.client_certificate"), "client_key needs its client_certificate");
            None
        }
    }
}

fn https_url(text: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if u.scheme() != "https" {
        return Err(format!("{text:?}: must be an https URL"));
    }
    Ok(u)
}

fn introspection(check: &mut Check, name: &str, i: &schema::Introspection) -> Option<IntrospectionConfig> {
    let key = format!("introspection.{name}");
    let url = |check: &mut Check, k: &str, v: &Option<String>| match v {
        Some(text) => check.ok(&format!("{key}.{k}"), https_url(text)),
        None => None,
    };
    let discovery = url(check, "discovery", &i.discovery);
    let endpoint = url(check, "endpoint", &i.endpoint);
    if i.endpoint.is_none() && i.discovery.is_none() {
        check.fail(&format!("{key}.endpoint"), "an endpoint is needed (or discovery to find it)");
    }
    let mode = i.response.unwrap_or_default();
    not_for_mode(check, &key, i, mode);
    let verify = i.verify.as_ref();
    let (jwks_text, issuer, audiences) = match mode {
        ResponseMode::Jwt => (
            verify.and_then(|v| v.jwks_url.clone()),
            verify.and_then(|v| v.issuer.clone()),
            // Checked on the JWT's claims whether or not its signature is verified here.
            verify.and_then(|v| v.audiences.clone()).or_else(|| i.audiences.clone()),
        ),
        _ => (i.jwks_url.clone(), i.issuer.clone(), i.audiences.clone()),
    };
    if mode == ResponseMode::Jwt && i.audiences.is_some() && verify.is_some_and(|v| v.audiences.is_some()) {
        check.fail(&format!("{key}.audiences"), "also written under verify: keep one");
    }
    let jwks_key = if mode == ResponseMode::Jwt { "verify.jwks_url" } else { "jwks_url" };
    let jwks_url = url(check, jwks_key, &jwks_text);
    required_trust(check, &key, mode, i);
    let resolve = resolve(check, &key, i, [&discovery, &endpoint, &jwks_url]);
    let client_auth = client_auth(check, &key, i)?;
    let algorithms = match verify.and_then(|v| v.algorithms.clone()) {
        Some(a) if a.is_empty() => {
            check.fail(&format!("{key}.verify.algorithms"), "at least one algorithm is needed");
            a
        }
        Some(a) => a,
        None => vec![JwsAlg::PS256, JwsAlg::RS256, JwsAlg::ES256, JwsAlg::EdDSA],
    };
    let cache = &i.cache;
    Some(IntrospectionConfig {
        name: name.to_string(),
        verify_jwt: mode == ResponseMode::Jwt && (verify.is_some() || discovery.is_some()),
        discovery,
        endpoint,
        client_id: i.client_id.clone(),
        client_auth,
        ca: check.file(&format!("{key}.ca"), &i.ca),
        resolve,
        connect_timeout: dur(i.connect_timeout, INTROSPECTION_CONNECT_TIMEOUT),
        timeout: dur(i.timeout, INTROSPECTION_TIMEOUT),
        max_ttl: dur(cache.max_ttl, INTROSPECTION_MAX_TTL),
        max_entries: cache.max_entries.unwrap_or(CACHE_MAX_ENTRIES),
        negative_ttl: dur(cache.negative_ttl, INTROSPECTION_NEGATIVE_TTL),
        ignore_no_store: cache.ignore_no_store.unwrap_or(false),
        mode,
        jwks_url,
        issuer,
        algorithms,
        claims: ClaimRules {
            audiences: audiences_of(check, &key, audiences),
            missing_audience: i.missing_audience.unwrap_or_default(),
            leeway: dur(i.leeway, INTROSPECTION_LEEWAY),
        },
        jwks: jwks_policy(check, &key, &i.jwks),
    })
}

/// The audiences a token must name. None written is allowed, loudly: a token issued for another
/// API would pass. `["*"]` says "any audience" on purpose and stays quiet.
fn audiences_of(check: &mut Check, key: &str, audiences: Option<Vec<String>>) -> Vec<String> {
    match audiences {
        Some(a) if a == ["*"] => Vec::new(),
        Some(a) if !a.is_empty() => {
            if a.iter().any(|x| x == "*") {
                check.fail(&format!("{key}.audiences"), "\"*\" (any audience) cannot be listed with others");
            }
            a
        }
        _ => {
            check.warnings.push(format!(
                "{key}.audiences: none set, so a token issued for any other API passes; \
                 list this API's audiences, or write [\"*\"] to accept any"
            ));
            Vec::new()
        }
    }
}

/// Keys that a mode would silently ignore are errors, so that nobody believes a check is on.
fn not_for_mode(check: &mut Check, key: &str, i: &schema::Introspection, mode: ResponseMode) {
    let given = |v: bool, name: &str| v.then(|| name.to_string());
    let wrong: Vec<String> = match mode {
        ResponseMode::Jwt => [given(i.jwks_url.is_some(), "jwks_url"), given(i.issuer.is_some(), "issuer")]
            .into_iter()
            .flatten()
            .collect(),
        ResponseMode::Json => [
            given(i.jwks_url.is_some(), "jwks_url"),
            given(i.issuer.is_some(), "issuer"),
            given(i.verify.is_some(), "verify"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        ResponseMode::Rfc9701 => given(i.verify.is_some(), "verify").into_iter().collect(),
    };
    let hint = match mode {
        ResponseMode::Jwt => "does not apply to response: jwt (write it under verify)",
        ResponseMode::Json => "does not apply to response: json (nothing is signed to verify)",
        ResponseMode::Rfc9701 => {
            "does not apply to response: rfc9701 (write jwks_url, issuer, audiences in the section)"
        }
    };
    for k in wrong {
        check.fail(&format!("{key}.{k}"), hint);
    }
}

/// rfc9701 answers are only as trustworthy as the issuer and keys they are checked against;
/// verifying a JWT without checking who issued it proves nothing either.
fn required_trust(check: &mut Check, key: &str, mode: ResponseMode, i: &schema::Introspection) {
    if i.discovery.is_some() {
        return;
    }
    match mode {
        ResponseMode::Rfc9701 => {
            if i.jwks_url.is_none() {
                check.fail(&format!("{key}.jwks_url"), "rfc9701 needs the identity server's JWKS URL (or discovery)");
            }
            if i.issuer.is_none() {
                check.fail(&format!("{key}.issuer"), "rfc9701 needs the identity server's issuer (or discovery)");
            }
        }
        ResponseMode::Jwt => {
            if let Some(v) = &i.verify {
                if v.jwks_url.is_none() {
                    check.fail(&format!("{key}.verify.jwks_url"), "verification needs the JWKS URL (or discovery)");
                }
                if v.issuer.is_none() {
                    check.fail(&format!("{key}.verify.issuer"), "verification needs the tokens' issuer (or discovery)");
                }
            }
        }
        ResponseMode::Json => {}
    }
}

/// reqwest connects to the URL's port when the URL names one, and to `resolve`'s port only when it
/// does not: a `resolve` port that differs from a written port would be silently ignored.
fn resolve(
    check: &mut Check,
    key: &str,
    i: &schema::Introspection,
    urls: [&Option<url::Url>; 3],
) -> Option<SocketAddr> {
    let text = i.resolve.as_ref()?;
    let addr: SocketAddr = check.ok(&format!("{key}.resolve"), text.parse().map_err(|e| format!("{text:?}: {e}")))?;
    for u in urls.into_iter().flatten() {
        if let Some(port) = u.port().filter(|p| *p != addr.port()) {
            check.fail(
                &format!("{key}.resolve"),
                format!("port {} differs from the port {port} of {u}; the URL's port would be used", addr.port()),
            );
        }
    }
    Some(addr)
}

fn client_auth(check: &mut Check, key: &str, i: &schema::Introspection) -> Option<ClientAuth> {
    let method = i.client_auth.unwrap_or_default();
    let secrets = [
        i.client_secret.as_ref().map(|s| ("client_secret", Secret::Inline(s.clone()))),
        i.client_secret_file
            .as_ref()
            .map(|p| ("client_secret_file", Secret::File(check.file(&format!("{key}.client_secret_file"), p)))),
        i.client_secret_env.as_ref().map(|v| ("client_secret_env", Secret::Env(v.clone()))),
    ];
    let mut secrets: Vec<(&str, Secret)> = secrets.into_iter().flatten().collect();
    let uses_secret = matches!(method, ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost);
    let mut misplaced: Vec<&str> = if uses_secret { Vec::new() } else { secrets.iter().map(|(k, _)| *k).collect() };
    if i.client_key.is_some() && uses_secret {
        misplaced.push("client_key");
    }
    if i.client_certificate.is_some() && method != ClientAuthMethod::TlsClientAuth {
        misplaced.push("client_certificate");
    }
    for k in misplaced {
        check.fail(&format!("{key}.{k}"), format!("does not apply to client_auth: {}", method_name(method)));
    }
    let need = |check: &mut Check, k: &str, v: &Option<String>| match v {
        Some(p) => Some(check.file(&format!("{key}.{k}"), p)),
        None => {
            check.fail(&format!("{key}.{k}"), format!("client_auth: {} needs it", method_name(method)));
            None
        }
    };
    match method {
        ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost => {
            if secrets.len() != 1 {
                let k = format!("{key}.client_secret");
                check.fail(&k, "give exactly one of client_secret, client_secret_file, client_secret_env");
                return None;
            }
            let (_, secret) = secrets.remove(0);
            Some(if method == ClientAuthMethod::ClientSecretBasic {
                ClientAuth::SecretBasic(secret)
            } else {
                ClientAuth::SecretPost(secret)
            })
        }
        ClientAuthMethod::PrivateKeyJwt => {
            Some(ClientAuth::PrivateKeyJwt { key: need(check, "client_key", &i.client_key)? })
        }
        ClientAuthMethod::TlsClientAuth => {
            let certificate = need(check, "client_certificate", &i.client_certificate);
            let key = need(check, "client_key", &i.client_key);
            Some(ClientAuth::TlsClientAuth { certificate: certificate?, key: key? })
        }
    }
}

fn method_name(m: ClientAuthMethod) -> &'static str {
    match m {
        ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
        ClientAuthMethod::ClientSecretPost => "client_secret_post",
        ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
        ClientAuthMethod::TlsClientAuth => "tls_client_auth",
    }
}

fn jwks_policy(check: &mut Check, key: &str, j: &schema::JwksCache) -> JwksPolicy {
    let d = JwksPolicy::default();
    let or = |v: Option<schema::Dur>, default: Duration| v.map(|v| v.0).unwrap_or(default);
    let p = JwksPolicy {
        default_ttl: or(j.default_ttl, d.default_ttl),
        min_ttl: or(j.min_ttl, d.min_ttl),
        max_ttl: or(j.max_ttl, d.max_ttl),
        refetch_interval: or(j.refetch_interval, d.refetch_interval),
        max_stale: or(j.max_stale, d.max_stale),
    };
    if p.min_ttl > p.max_ttl {
        check.fail(&format!("{key}.jwks.min_ttl"), "must not exceed jwks.max_ttl");
    }
    if p.max_stale < p.max_ttl {
        check.fail(&format!("{key}.jwks.max_stale"), "must be at least jwks.max_ttl");
    }
    p
}

fn route(
    check: &mut Check,
    n: usize,
    r: &schema::Route,
    (upstreams, names): (&BTreeMap<String, Arc<UpstreamConfig>>, &Names),
    default_body_bytes: u64,
) -> Option<RouteConfig> {
    let key = format!("routes[{n}]");
    let host = check.ok(&format!("{key}.host"), HostPattern::parse(&r.host));
    let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_string());
    if !path_prefix.starts_with('/') {
        check.fail(&format!("{key}.path_prefix"), "must start with /");
    }
    if !names.upstreams.contains(&r.upstream) {
        check.fail(&format!("{key}.upstream"), format!("no upstream named {:?}", r.upstream));
    }
    let filters = r
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| filter(check, &format!("{key}.filters[{i}]"), f, names))
        .collect::<Vec<_>>();
    check_filter_order(check, &key, &filters);
    let cors = r.cors.as_ref().map(|c| cors(check, &key, c));
    if r.methods.as_ref().is_some_and(Vec::is_empty) {
        check.fail(&format!("{key}.methods"), "lists no method: remove the key to accept every method");
    }
    Some(RouteConfig {
        host: host?,
        path_prefix,
        upstream: upstreams.get(&r.upstream).cloned()?,
        methods: r.methods.clone(),
        filters,
        forward_client_cert: r.forward_client_cert,
        allow_upgrade: r.allow_upgrade,
        cors,
        retry_methods: retry_methods(check, &key, r),
        max_body_bytes: r.max_body_bytes.unwrap_or(default_body_bytes),
    })
}

/// RFC 9110 §9.2.2: only an idempotent method may be sent twice; the safe ones by default.
fn retry_methods(check: &mut Check, key: &str, r: &schema::Route) -> Vec<HttpMethod> {
    let Some(listed) = &r.retry_methods else { return vec![HttpMethod::GET, HttpMethod::HEAD, HttpMethod::OPTIONS] };
    for m in listed {
        if !m.is_idempotent() {
            check.fail(
                &format!("{key}.retry_methods"),
                format!("{} is not idempotent: it is never retried", m.as_str()),
            );
        }
    }
    listed.clone()
}

fn cors(check: &mut Check, key: &str, c: &schema::Cors) -> CorsConfig {
    for (i, o) in c.allowed_origins.iter().enumerate() {
        let ok = url::Url::parse(o).is_ok_and(|u| u.origin().ascii_serialization() == *o);
        if !ok || o == "null" {
            check.fail(
                &format!("{key}.cors.allowed_origins[{i}]"),
                format!("{o:?} is not an origin like https://portal.example.com"),
            );
        }
    }
    let methods = c.allowed_methods.clone().unwrap_or_else(|| vec!["GET".into(), "POST".into()]);
    let headers = c
        .allowed_headers
        .clone()
        .unwrap_or_else(|| vec!["authorization".into(), "content-type".into(), "x-fapi-interaction-id".into()]);
    CorsConfig {
        origins: c.allowed_origins.clone(),
        methods: methods.join(", "),
        headers: headers.join(", "),
        max_age: dur(c.max_age, CORS_MAX_AGE).as_secs().to_string(),
    }
}

fn filter(check: &mut Check, key: &str, f: &schema::Filter, names: &Names) -> FilterConfig {
    match f {
        schema::Filter::PhantomToken(p) => {
            if !names.introspection.contains(&p.introspection) {
                check.fail(
                    &format!("{key}.phantom_token.introspection"),
                    format!("no introspection named {:?}", p.introspection),
                );
            }
            FilterConfig::PhantomToken { introspection: p.introspection.clone() }
        }
        schema::Filter::CertBinding(_) => FilterConfig::CertBinding,
        schema::Filter::Binding(b) => {
            if b.accept.is_empty() {
                check.fail(&format!("{key}.binding.accept"), "names certificate, dpop or both");
            }
            FilterConfig::Binding {
                certificate: b.accept.contains(&schema::BindingKind::Certificate),
                dpop: b.accept.contains(&schema::BindingKind::Dpop),
            }
        }
        schema::Filter::Scope(s) => {
            FilterConfig::Scope { required: s.required.clone(), methods: s.methods.clone(), default: s.default }
        }
        schema::Filter::RateLimit(r) => FilterConfig::RateLimit {
            rate: rate(check, &format!("{key}.rate_limit"), r.per_second, r.burst),
            key: r.key,
        },
    }
}

/// `cert_binding` and `scope` read the claims that `phantom_token` produces, so it must come first.
fn check_filter_order(check: &mut Check, key: &str, filters: &[FilterConfig]) {
    let first_token = filters.iter().position(|f| matches!(f, FilterConfig::PhantomToken { .. }));
    for (i, f) in filters.iter().enumerate() {
        let needs_token =
            matches!(f, FilterConfig::CertBinding | FilterConfig::Binding { .. } | FilterConfig::Scope { .. });
        if needs_token && first_token.is_none_or(|t| t > i) {
            check.fail(&format!("{key}.filters[{i}]"), "needs a phantom_token filter before it");
        }
    }
}

fn header_patterns(check: &mut Check, names: &[String]) -> Vec<HeaderPattern> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| check.ok(&format!("strip_headers[{i}]"), HeaderPattern::parse(n)))
        .collect()
}

fn refusals(check: &mut Check, r: &schema::Refusals) -> RefusalsConfig {
    let defaults = RefusalsConfig::default();
    let drain_bytes = r.drain_bytes.unwrap_or(defaults.drain_bytes);
    if drain_bytes > 16 * 1024 * 1024 {
        check.fail("refusals.drain_bytes", "must be at most 16777216 (16 MiB)");
    }
    RefusalsConfig { drain_bytes, drain_timeout: r.drain_timeout.map(|d| d.0).unwrap_or(defaults.drain_timeout) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `conf/local.yaml` in a temporary folder whose `../certs` holds (empty) files of the same
    /// names: the model only checks that files exist, the build step reads them.
    fn local(change: impl FnOnce(&mut serde_yaml::Value)) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::create_dir_all(dir.path().join("certs")).unwrap();
        for f in ["example.tls.pem", "example.tls.key", "root.pem", "root.crl.pem", "admin.secret"] {
            std::fs::write(dir.path().join("certs").join(f), "").unwrap();
        }
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/local.yaml")).unwrap();
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        change(&mut doc);
        let path = dir.path().join("conf/local.yaml");
        std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
        (dir, path)
    }

    fn problems(change: impl FnOnce(&mut serde_yaml::Value)) -> Vec<String> {
        let (_dir, path) = local(change);
        match load(&path) {
            Ok(_) => Vec::new(),
            Err(p) => p.lines().to_vec(),
        }
    }

    fn set(doc: &mut serde_yaml::Value, path: &[&str], value: serde_yaml::Value) {
        let mut cur = doc;
        for key in path {
            cur = match key.parse::<usize>() {
                Ok(i) => &mut cur[i],
                Err(_) => &mut cur[*key],
            };
        }
        *cur = value;
    }

    #[test]
    fn the_shipped_local_file_is_a_valid_model() {
        assert_eq!(problems(|_| {}), Vec::<String>::new());
    }

    #[test]
    fn the_admin_listener_is_off_by_default_and_never_open() {
        let (_dir, path) = local(|_| {});
        assert!(load(&path).unwrap().admin.is_none());
        let base = "{address: 127.0.0.1:9443, certificate: ../certs/example.tls.pem, key: ../certs/example.tls.key}";
        let with = |extra: &str| {
            let mut v: serde_yaml::Value = serde_yaml::from_str(base).unwrap();
            let extra: serde_yaml::Mapping = serde_yaml::from_str(extra).unwrap();
            v.as_mapping_mut().unwrap().extend(extra);
            problems(|d| set(d, &["admin"], v))
        };
        assert_eq!(with("{secret_file: ../certs/admin.secret}"), Vec::<String>::new());
        assert_eq!(with("{client_ca: ../certs/root.pem, client_subjects: [CN=gateway-admin]}"), Vec::<String>::new());
        let expect = [
            ("{}", "admin: needs client_subjects (with client_ca) or secret_file"),
            ("{client_subjects: [CN=gateway-admin]}", "admin.client_ca: client_subjects need the CA"),
            ("{client_ca: ../certs/root.pem}", "admin.client_subjects: client_ca is set but no subject"),
            ("{secret_file: ../certs/none}", "admin.secret_file: cannot read"),
            (
                "{secret_file: ../certs/admin.secret, client_subjects: [x], client_ca: ../certs/root.pem}",
                "admin.client_subjects[0]",
            ),
            ("{secret_file: ../certs/admin.secret, secret: x}", "unknown field `secret`"),
        ];
        for (extra, problem) in expect {
            let p = with(extra);
            assert!(p.len() == 1 && p[0].contains(problem), "{extra}: {p:?}");
        }
    }

    #[test]
    fn one_bad_enum_value_is_one_problem_listing_the_choices() {
        let p = problems(|d| set(d, &["listener", "unknown_sni"], "drop".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("listener.unknown_sni: unknown variant `drop`, expected `terminate` or `close` at line"),
            "{p:?}"
        );
        let p = problems(|d| set(d, &["introspection", "idsvr", "response"], "rfc7662".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("introspection.idsvr.response: unknown variant `rfc7662`"), "{p:?}");
        let p = problems(|d| set(d, &["tls", "min_version"], serde_yaml::from_str("1.3").unwrap()));
        assert_eq!(p, Vec::<String>::new(), "an unquoted 1.3 is accepted");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_path() {
        let p = problems(|d| set(d, &["routes", "0", "filters", "1", "cert_binding", "strict"], true.into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("routes[0].filters[1].cert_binding: unknown field `strict`"), "{p:?}");
    }

    #[test]
    fn a_missing_file_names_the_key_that_points_to_it() {
        let p = problems(|d| set(d, &["tls", "client_crl"], "../certs/none.crl.pem".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("local.yaml: tls.client_crl: cannot read ") && p[0].contains("none.crl.pem"), "{p:?}");
    }

    #[test]
    fn a_bad_reference_is_one_problem_where_it_is_written() {
        let p = problems(|d| set(d, &["introspection", "idsvr", "endpoint"], "http://x".into()));
        assert_eq!(p.len(), 1, "no follow-on error at the route that uses it: {p:?}");
        let p = problems(|d| set(d, &["routes", "0", "filters", "0", "phantom_token", "introspection"], "nope".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("routes[0].filters[0].phantom_token.introspection: no introspection named \"nope\""));
        let p = problems(|d| set(d, &["introspection", "idsvr", "response"], "json".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("introspection.idsvr.response: json and rfc9701 need a token_issuer section"));
    }

    #[test]
    fn rfc9701_needs_an_issuer_and_keys_a_mode_ignores_are_errors() {
        let p = problems(|d| {
            set(d, &["introspection", "idsvr", "response"], "rfc9701".into());
            set(d, &["introspection", "idsvr", "jwks_url"], "https://login.example.com/jwks".into());
        });
        assert!(p.iter().any(|l| l.contains("introspection.idsvr.issuer: rfc9701 needs")), "{p:?}");
        let p = problems(|d| set(d, &["introspection", "idsvr", "issuer"], "https://x".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("introspection.idsvr.issuer: does not apply to response: jwt (write it under verify)"));
        let p = problems(|d| {
            set(d, &["introspection", "idsvr", "response"], "json".into());
            set(d, &["introspection", "idsvr", "jwks_url"], "https://x/jwks".into());
        });
        assert!(
            p.iter().any(|l| l.contains("introspection.idsvr.jwks_url: does not apply to response: json")),
            "{p:?}"
        );
        let p = problems(|d| {
            set(d, &["introspection", "idsvr", "verify"], serde_yaml::from_str("{audiences: [a]}").unwrap())
        });
        assert!(p.iter().any(|l| l.contains("introspection.idsvr.verify.issuer: verification needs")), "{p:?}");
    }

    #[test]
    fn a_resolve_port_that_would_be_ignored_is_an_error() {
        let p = problems(|d| set(d, &["introspection", "idsvr", "resolve"], "127.0.0.1:9999".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("introspection.idsvr.resolve: port 9999 differs from the port 8444"), "{p:?}");
    }

    #[test]
    fn client_authentication_keys_must_fit_the_method() {
        let p = problems(|d| set(d, &["introspection", "idsvr", "client_auth"], "private_key_jwt".into()));
        assert!(p
            .iter()
            .any(|l| l.contains("introspection.idsvr.client_secret: does not apply to client_auth: private_key_jwt")));
        assert!(p.iter().any(|l| l.contains("introspection.idsvr.client_key: client_auth: private_key_jwt needs it")));
        let p = problems(|d| set(d, &["introspection", "idsvr", "client_secret_env"], "X".into()));
        assert!(p
            .iter()
            .any(|l| l.contains("give exactly one of client_secret, client_secret_file, client_secret_env")));
        let p = problems(|d| {
            set(d, &["introspection", "idsvr", "client_secret"], serde_yaml::Value::Null);
            set(d, &["introspection", "idsvr", "client_secret_file"], "../certs/none.secret".into());
        });
        assert!(p.iter().any(|l| l.contains("client_secret_file: cannot read")), "{p:?}");
    }

    #[test]
    fn methods_header_patterns_and_drain_bounds_are_checked_where_written() {
        let yaml = |t: &str| serde_yaml::from_str::<serde_yaml::Value>(t).unwrap();
        let valid = problems(|d| {
            set(d, &["routes", "0", "methods"], yaml("[GET, POST]"));
            set(d, &["routes", "0", "filters", "2", "scope", "methods"], yaml("{DELETE: [admin]}"));
            set(d, &["routes", "0", "filters", "2", "scope", "default"], "deny".into());
            set(d, &["strip_headers"], yaml("[x-acme-*, X_Tenant]"));
            set(d, &["refusals"], yaml("{drain_bytes: 1024, drain_timeout: 2s}"));
        });
        assert_eq!(valid, Vec::<String>::new());
        let p = problems(|d| set(d, &["routes", "0", "methods"], yaml("[GET, delete]")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("routes[0].methods[1]: unknown variant `delete`"), "{p:?}");
        let p = problems(|d| set(d, &["routes", "0", "filters", "2", "scope", "methods"], yaml("{delete: [admin]}")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("unknown variant `delete`"), "{p:?}");
        let p = problems(|d| set(d, &["strip_headers"], yaml("[x-acme-*, c*, 'bad name', '*']")));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("strip_headers[1]: \"c*\" would strip content-length"), "{p:?}");
        assert!(p[1].contains("strip_headers[2]:") && p[2].contains("strip_headers[3]:"), "{p:?}");
        let p = problems(|d| set(d, &["refusals", "drain_bytes"], 1_000_000_000.into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("refusals.drain_bytes: must be at most"), "{p:?}");
    }

    #[test]
    fn an_outage_cache_is_short_and_defaults_to_a_second() {
        let cluster = |more: &str| {
            serde_yaml::from_str::<serde_yaml::Value>(&format!("{{url: \"redis://127.0.0.1:6379\"{more}}}")).unwrap()
        };
        let (_dir, path) = local(|d| set(d, &["cluster"], cluster("")));
        let cfg = load(&path).map(|c| c.cluster.map(|c| c.outage_cache_ttl)).ok().flatten();
        assert_eq!(cfg, Some(Duration::from_secs(1)));
        assert_eq!(problems(|d| set(d, &["cluster"], cluster(", outage_cache_ttl: 0s"))), Vec::<String>::new());
        let p = problems(|d| set(d, &["cluster"], cluster(", outage_cache_ttl: 2m")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("cluster.outage_cache_ttl: at most 60s"), "{p:?}");
    }

    #[test]
    fn header_patterns_match_in_canonical_spelling() {
        let prefix = HeaderPattern::parse("X-Acme-*").unwrap();
        assert_eq!(prefix, HeaderPattern::Prefix("x-acme-".into()));
        assert!(prefix.matches(&crate::header_name::canonical_header_name("X_ACME_TENANT")));
        assert!(!prefix.matches("x-acmetenant"));
        assert_eq!(HeaderPattern::parse("Ssl_Client_Cert").unwrap(), HeaderPattern::Exact("ssl-client-cert".into()));
        assert!(HeaderPattern::parse("auth*").is_err(), "would strip authorization");
    }
}
