//! Token introspection against the identity server, behind a cache that coalesces concurrent misses.
//!
//! The protocol is the reference's: `POST` with the token form-encoded, HTTP Basic client
//! authentication and `Accept: application/jwt`; 200 answers the access token as a JWT, 204 says the
//! token is not active. The cache is keyed by SHA-256 of the token (never the token itself), an
//! entry's lifetime is fixed when it is inserted (reads never extend it) and is the smallest of the
//! configured maximum, the JWT's `exp` and the response's `Cache-Control: max-age`. Errors are never
//! cached: a dependency outage must not outlive the outage.

use crate::config::IntrospectionConfig;
use crate::metrics;
use crate::tls::b64url;
use base64::Engine;
use moka::future::Cache;
use moka::Expiry;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The claims of an access token that the gateway itself reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Claims {
    pub exp: Option<i64>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub cnf: Option<Confirmation>,
}

/// RFC 8705 §3.1 confirmation claim.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
}

impl Claims {
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope.as_deref().unwrap_or("").split(' ').any(|s| s == wanted)
    }
}

/// An active token: the JWT to forward and its decoded claims.
#[derive(Debug)]
pub struct ActiveToken {
    pub jwt: String,
    pub claims: Claims,
}

/// A cached introspection answer.
#[derive(Debug)]
pub enum TokenState {
    Active(Arc<ActiveToken>),
    Inactive,
}

#[derive(Debug)]
struct Entry {
    state: TokenState,
    ttl: Duration,
}

/// How a lookup was answered, for the access log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    /// Another request's introspection call answered this one.
    Coalesced,
}

impl CacheResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Coalesced => "coalesced",
        }
    }
}

/// Why introspection gave no answer. Never cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectError {
    /// Connect failure or timeout, or a 5xx: the identity server is down (503).
    Unavailable(&'static str),
    /// An answer the gateway cannot use: wrong status, not a JWT (502).
    BadAnswer(&'static str),
}

struct FixedLifetime;

impl Expiry<[u8; 32], Arc<Entry>> for FixedLifetime {
    fn expire_after_create(&self, _key: &[u8; 32], value: &Arc<Entry>, _now: std::time::Instant) -> Option<Duration> {
        Some(value.ttl)
    }
    // expire_after_read and expire_after_update keep the default: the lifetime set at creation.
}

pub struct Introspector {
    cfg: IntrospectionConfig,
    client: reqwest::Client,
    cache: Cache<[u8; 32], Arc<Entry>>,
}

impl Introspector {
    pub fn new(cfg: IntrospectionConfig) -> Result<Self, String> {
        let client = http_client(&cfg)?;
        let cache = Cache::builder().max_capacity(cfg.max_entries).expire_after(FixedLifetime).build();
        Ok(Introspector { cfg, client, cache })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Looks a token up: from the cache, or by one introspection call shared by every concurrent
    /// request for the same token.
    pub async fn lookup(&self, token: &str) -> (Result<TokenState, IntrospectError>, CacheResult) {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(entry) = self.cache.get(&key).await {
            return (Ok(entry.state.clone_state()), CacheResult::Hit);
        }
        // A miss: one caller runs the init future, every concurrent caller for this key waits for it.
        let ran = AtomicBool::new(false);
        let init = async {
            ran.store(true, Ordering::Relaxed);
            self.introspect(token).await.map(Arc::new)
        };
        let result = self.cache.entry(key).or_try_insert_with(init).await;
        let how = if ran.load(Ordering::Relaxed) { CacheResult::Miss } else { CacheResult::Coalesced };
        let state = match result {
            Ok(entry) => Ok(entry.into_value().state.clone_state()),
            Err(e) => Err((*e).clone()),
        };
        (state, how)
    }

    async fn introspect(&self, token: &str) -> Result<Entry, IntrospectError> {
        let started = Instant::now();
        let result = self.call(token).await;
        let label = match &result {
            Ok(e) if matches!(e.state, TokenState::Active(_)) => "active",
            Ok(_) => "inactive",
            Err(IntrospectError::Unavailable(r)) | Err(IntrospectError::BadAnswer(r)) => r,
        };
        metrics::introspection(&self.cfg.name, label, started.elapsed());
        result
    }

    async fn call(&self, token: &str) -> Result<Entry, IntrospectError> {
        let response = self
            .client
            .post(self.cfg.endpoint.clone())
            .basic_auth(&self.cfg.client_id, Some(&self.cfg.client_secret))
            .header(reqwest::header::ACCEPT, "application/jwt")
            .form(&[("token", token)])
            .send()
            .await
            .map_err(|e| {
                log::warn!("introspection {}: {}", self.cfg.name, error_chain(&e));
                IntrospectError::Unavailable(if e.is_timeout() { "introspection_timeout" } else { "introspection_unreachable" })
            })?;
        let status = response.status().as_u16();
        let max_age = max_age(response.headers());
        match status {
            204 => Ok(Entry { state: TokenState::Inactive, ttl: self.cfg.negative_ttl }),
            200 => {
                let body = response.text().await.map_err(|_| IntrospectError::Unavailable("introspection_read_failed"))?;
                self.active_entry(body.trim(), max_age)
            }
            500..=599 => Err(IntrospectError::Unavailable("introspection_5xx")),
            _ => {
                log::warn!("introspection {}: unexpected status {status}", self.cfg.name);
                Err(IntrospectError::BadAnswer("introspection_unexpected_status"))
            }
        }
    }

    fn active_entry(&self, jwt: &str, max_age: Option<Duration>) -> Result<Entry, IntrospectError> {
        let claims = decode_claims(jwt).ok_or(IntrospectError::BadAnswer("introspection_not_a_jwt"))?;
        let Some(left) = claims.exp.and_then(seconds_until) else {
            // Expired (or no exp at all): the token is not usable, remember that briefly.
            return Ok(Entry { state: TokenState::Inactive, ttl: self.cfg.negative_ttl });
        };
        let mut ttl = self.cfg.max_ttl.min(left);
        if let Some(age) = max_age {
            ttl = ttl.min(age);
        }
        let token = ActiveToken { jwt: jwt.to_string(), claims };
        Ok(Entry { state: TokenState::Active(Arc::new(token)), ttl })
    }
}

impl TokenState {
    fn clone_state(&self) -> TokenState {
        match self {
            TokenState::Active(t) => TokenState::Active(t.clone()),
            TokenState::Inactive => TokenState::Inactive,
        }
    }
}

fn http_client(cfg: &IntrospectionConfig) -> Result<reqwest::Client, String> {
    let pem = std::fs::read(&cfg.ca).map_err(|e| format!("{}: {e}", cfg.ca.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: {e}", cfg.ca.display()))?;
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(certs)
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let (Some(addr), Some(host)) = (cfg.resolve, cfg.endpoint.host_str()) {
        builder = builder.resolve(host, addr);
    }
    builder.build().map_err(|e| e.to_string())
}

/// The payload of a compact JWS, decoded but not verified: it came straight from the identity
/// server over verified TLS, and the API verifies the signature itself.
pub fn decode_claims(jwt: &str) -> Option<Claims> {
    let mut parts = jwt.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn seconds_until(exp: i64) -> Option<Duration> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    (exp > now).then(|| Duration::from_secs((exp - now) as u64))
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|d| {
        // Only max-age shortens an entry's life; the token's exp and the configured maximum always apply.
        let d = d.trim().to_ascii_lowercase();
        d.strip_prefix("max-age=").and_then(|s| s.parse().ok()).map(Duration::from_secs)
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A short, non-reversible identifier of a token for logs.
pub fn token_id(token: &str) -> String {
    b64url(&Sha256::digest(token.as_bytes()))[..8].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"PS256"}"#), enc(payload))
    }

    #[test]
    fn decodes_cnf_and_scope() {
        let c = decode_claims(&jwt(r#"{"exp":1,"scope":"a transactions","cnf":{"x5t#S256":"x-_y"}}"#)).unwrap();
        assert!(c.has_scope("transactions"));
        assert!(!c.has_scope("trans"));
        assert_eq!(c.cnf.unwrap().x5t_s256.unwrap(), "x-_y");
        assert!(decode_claims("not-a-jwt").is_none());
        assert!(decode_claims("a.b.c.d").is_none());
    }

    #[test]
    fn max_age_is_read() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("cache-control", "public, max-age=42".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::from_secs(42)));
        h.insert("cache-control", "no-cache, max-age=0".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::ZERO));
        h.insert("cache-control", "no-store".parse().unwrap());
        assert_eq!(max_age(&h), None);
    }
}
