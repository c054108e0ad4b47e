//! The `introspection` sections: each identity server's endpoint, how the gateway authenticates to
//! it, the answer's format and what is checked on it, and the token cache.

use crate::config::closed::{ClientAuthMethod, JwsAlg, MissingAudience, ResponseMode};
use crate::config::shared::Dur;
use crate::config::shared::{dur, socket_addr, Check};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const INTROSPECTION_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(5);
const INTROSPECTION_MAX_TTL: Duration = Duration::from_secs(300);
const INTROSPECTION_NEGATIVE_TTL: Duration = Duration::from_secs(5);
const INTROSPECTION_LEEWAY: Duration = Duration::from_secs(30);
const CACHE_MAX_ENTRIES: u64 = 100_000;

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

pub(in crate::config) fn validate(check: &mut Check, name: &str, i: &Introspection) -> Option<IntrospectionConfig> {
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

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{text:?}: {source}")]
    Parse { text: String, source: url::ParseError },
    #[error("{0:?}: must be an https URL")]
    NotHttps(String),
}

fn https_url(text: &str) -> Result<url::Url, UrlError> {
    let u = url::Url::parse(text).map_err(|source| UrlError::Parse { text: text.to_string(), source })?;
    if u.scheme() != "https" {
        return Err(UrlError::NotHttps(text.to_string()));
    }
    Ok(u)
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
fn not_for_mode(check: &mut Check, key: &str, i: &Introspection, mode: ResponseMode) {
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
fn required_trust(check: &mut Check, key: &str, mode: ResponseMode, i: &Introspection) {
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
fn resolve(check: &mut Check, key: &str, i: &Introspection, urls: [&Option<url::Url>; 3]) -> Option<SocketAddr> {
    let text = i.resolve.as_ref()?;
    let addr: SocketAddr = check.ok(&format!("{key}.resolve"), socket_addr(text))?;
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

fn client_auth(check: &mut Check, key: &str, i: &Introspection) -> Option<ClientAuth> {
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

fn jwks_policy(check: &mut Check, key: &str, j: &JwksCache) -> JwksPolicy {
    let d = JwksPolicy::default();
    let or = |v: Option<Dur>, default: Duration| v.map(|v| v.0).unwrap_or(default);
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
