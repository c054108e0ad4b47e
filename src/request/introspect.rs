//! Token introspection against the identity server, behind a cache that coalesces concurrent misses.
//!
//! `POST` with the token form-encoded and HTTP Basic client authentication, in one of three response
//! modes: the reference's (`Accept: application/jwt`; 200 answers the access token as a JWT, 204 says
//! the token is not active), RFC 7662 JSON, or RFC 9701 signed JSON; in the last two the gateway
//! issues the JWT itself (`issuer`). The cache is keyed by SHA-256 of the token (never the token itself), an
//! entry's lifetime is fixed when it is inserted (reads never extend it) and is the smallest of the
//! configured maximum, the JWT's `exp` and the response's `Cache-Control: max-age`. Errors are never
//! cached: a dependency outage must not outlive the outage.

use crate::config::{IntrospectionConfig, Problem, ResponseMode};
use crate::metrics;
use crate::pki::pinned_client;
use crate::request::issuer::TokenIssuer;
use crate::request::jwks::RemoteJwks;
use crate::token::{decode_claims, unix_now, Claims};
use jsonwebtoken::{Algorithm, Validation};
use moka::future::Cache;
use moka::Expiry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An active token: the `Authorization` value to forward (prepared once per cache entry) and the
/// decoded claims.
#[derive(Debug)]
pub struct ActiveToken {
    pub authorization: http::HeaderValue,
    pub claims: Claims,
}

impl ActiveToken {
    /// `None` when the JWT cannot be a header value (it came from outside: never trust its bytes).
    pub fn new(jwt: &str, claims: Claims) -> Option<Self> {
        let authorization = http::HeaderValue::from_str(&format!("Bearer {jwt}")).ok()?;
        Some(ActiveToken { authorization, claims })
    }
}

/// A cached introspection answer.
#[derive(Debug, Clone)]
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
    /// Signs the JWT in `json` and `rfc9701` modes.
    issuer: Option<Arc<TokenIssuer>>,
    /// The identity server's keys, in `rfc9701` mode.
    remote_jwks: Option<RemoteJwks>,
}

impl Introspector {
    /// Builds the HTTP client (trusting only the configured CA) and the cache. The model has
    /// already checked that json and rfc9701 modes have an issuer.
    pub fn new(cfg: IntrospectionConfig, issuer: Option<Arc<TokenIssuer>>) -> Result<Self, Problem> {
        let key = format!("introspection.{}", cfg.name);
        let client = http_client(&cfg).map_err(|e| Problem::new(format!("{key}.ca"), e))?;
        let cache = Cache::builder().max_capacity(cfg.max_entries).expire_after(FixedLifetime).build();
        let remote_jwks = match (&cfg.mode, &cfg.jwks_url) {
            (ResponseMode::Rfc9701, Some(url)) => Some(RemoteJwks::new(url.to_string(), client.clone())),
            _ => None,
        };
        Ok(Introspector { cfg, client, cache, issuer, remote_jwks })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Whether a lookup of this key would be answered from the cache.
    pub fn is_cached(&self, key: &[u8; 32]) -> bool {
        self.cache.contains_key(key)
    }

    /// Looks a token up by its `cache_key`: from the cache, or by one introspection call shared by
    /// every concurrent request for the same token.
    pub async fn lookup(&self, token: &str, key: [u8; 32]) -> (Result<TokenState, IntrospectError>, CacheResult) {
        if let Some(entry) = self.cache.get(&key).await {
            return (Ok(entry.state.clone()), CacheResult::Hit);
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
            Ok(entry) => Ok(entry.into_value().state.clone()),
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
        let accept = match self.cfg.mode {
            ResponseMode::Jwt => "application/jwt",
            ResponseMode::Json => "application/json",
            ResponseMode::Rfc9701 => "application/token-introspection+jwt",
        };
        let response = self
            .client
            .post(self.cfg.endpoint.clone())
            .basic_auth(&self.cfg.client_id, Some(&self.cfg.client_secret))
            .header(reqwest::header::ACCEPT, accept)
            .form(&[("token", token)])
            .send()
            .await
            .map_err(|e| {
                log::warn!("introspection {}: {}", self.cfg.name, error_chain(&e));
                IntrospectError::Unavailable(if e.is_timeout() {
                    "introspection_timeout"
                } else {
                    "introspection_unreachable"
                })
            })?;
        let status = response.status().as_u16();
        let max_age = max_age(response.headers());
        match status {
            204 if self.cfg.mode == ResponseMode::Jwt => Ok(self.inactive()),
            200 => {
                let body =
                    response.text().await.map_err(|_| IntrospectError::Unavailable("introspection_read_failed"))?;
                match &self.cfg.mode {
                    ResponseMode::Jwt => self.jwt_entry(body.trim(), max_age),
                    ResponseMode::Json => self.json_entry(&body, max_age),
                    ResponseMode::Rfc9701 => self.rfc9701_entry(body.trim(), self.cfg.issuer.as_deref(), max_age).await,
                }
            }
            500..=599 => Err(IntrospectError::Unavailable("introspection_5xx")),
            _ => {
                log::warn!("introspection {}: unexpected status {status}", self.cfg.name);
                Err(IntrospectError::BadAnswer("introspection_unexpected_status"))
            }
        }
    }

    fn inactive(&self) -> Entry {
        Entry { state: TokenState::Inactive, ttl: self.cfg.negative_ttl }
    }

    /// The reference's protocol: the body is the access token as a JWT.
    fn jwt_entry(&self, jwt: &str, max_age: Option<Duration>) -> Result<Entry, IntrospectError> {
        let claims = decode_claims(jwt).ok_or(IntrospectError::BadAnswer("introspection_not_a_jwt"))?;
        self.entry(jwt, claims, max_age)
    }

    /// RFC 7662: `active` and the token's claims as JSON; the gateway issues the JWT.
    fn json_entry(&self, body: &str, max_age: Option<Duration>) -> Result<Entry, IntrospectError> {
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|_| IntrospectError::BadAnswer("introspection_not_json"))?;
        let map = value.as_object().ok_or(IntrospectError::BadAnswer("introspection_not_json"))?;
        self.issued_entry(map, max_age)
    }

    /// RFC 9701: a JWT signed by the identity server, addressed to this client, with the RFC 7662
    /// claims under `token_introspection`.
    async fn rfc9701_entry(
        &self,
        jwt: &str,
        iss: Option<&str>,
        max_age: Option<Duration>,
    ) -> Result<Entry, IntrospectError> {
        let bad = IntrospectError::BadAnswer;
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| bad("introspection_not_a_jwt"))?;
        if header.typ.as_deref() != Some("token-introspection+jwt") {
            return Err(bad("introspection_wrong_typ"));
        }
        if !matches!(header.alg, Algorithm::PS256 | Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) {
            return Err(bad("introspection_weak_alg"));
        }
        let kid = header.kid.ok_or(bad("introspection_no_kid"))?;
        let jwks = self.remote_jwks.as_ref().ok_or(bad("introspection_no_jwks"))?;
        let key = jwks.key(&kid).await.ok_or(bad("introspection_unknown_key"))?;
        let mut v = Validation::new(header.alg);
        v.set_audience(&[&self.cfg.client_id]);
        if let Some(iss) = iss {
            v.set_issuer(&[iss]);
        }
        v.validate_exp = false; // RFC 9701 responses carry iat, not exp
        v.set_required_spec_claims(&["iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(jwt, &key, &v)
            .map_err(|_| bad("introspection_bad_signature"))?;
        let inner = data.claims.get("token_introspection").and_then(|t| t.as_object());
        self.issued_entry(inner.ok_or(bad("introspection_no_claims"))?, max_age)
    }

    fn issued_entry(
        &self,
        intro: &serde_json::Map<String, serde_json::Value>,
        max_age: Option<Duration>,
    ) -> Result<Entry, IntrospectError> {
        if intro.get("active") != Some(&serde_json::Value::Bool(true)) {
            return Ok(self.inactive());
        }
        let issuer = self.issuer.as_ref().ok_or(IntrospectError::BadAnswer("no_token_issuer"))?;
        match issuer.issue(intro) {
            Ok((jwt, claims)) => self.entry(&jwt, claims, max_age),
            Err(e) => {
                log::debug!("introspection {}: not issuing a JWT: {e}", self.cfg.name);
                Ok(self.inactive())
            }
        }
    }

    /// Cache entry for an active token: its lifetime is the smallest of the configured maximum, the
    /// token's remaining life and the response's max-age. An expired token is inactive.
    fn entry(&self, jwt: &str, claims: Claims, max_age: Option<Duration>) -> Result<Entry, IntrospectError> {
        let Some(left) = claims.exp.and_then(seconds_until) else {
            return Ok(self.inactive());
        };
        let mut ttl = self.cfg.max_ttl.min(left);
        if let Some(age) = max_age {
            ttl = ttl.min(age);
        }
        let token = ActiveToken::new(jwt, claims).ok_or(IntrospectError::BadAnswer("introspection_not_a_jwt"))?;
        Ok(Entry { state: TokenState::Active(Arc::new(token)), ttl })
    }
}

fn http_client(cfg: &IntrospectionConfig) -> Result<reqwest::Client, String> {
    let mut builder = pinned_client(&cfg.ca)?
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.timeout)
        .pool_idle_timeout(Duration::from_secs(60));
    if let (Some(addr), Some(host)) = (cfg.resolve, cfg.endpoint.host_str()) {
        builder = builder.resolve(host, addr);
    }
    builder.build().map_err(|e| e.to_string())
}

fn seconds_until(exp: i64) -> Option<Duration> {
    let now = unix_now();
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

#[cfg(test)]
mod tests {
    use super::*;

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
