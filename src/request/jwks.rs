//! A remote JSON Web Key Set: fetched over verified TLS, cached for a lifetime, and used to verify
//! JWS signatures. Shared by the gateway (RFC 9701 answers, verified JWTs in jwt mode) and
//! `example-api`, so every verifier of the project survives an identity server's key rotation
//! the same way:
//!
//! - the set lives for the response's `Cache-Control: max-age`, clamped to `[min_ttl, max_ttl]`,
//!   or `default_ttl` when the server says nothing;
//! - a token naming an unknown `kid`, or a signature that fails with a known `kid` (a new key
//!   published under the old `kid`), triggers one refetch and one retry;
//! - refetches are single-flight and at most one per `refetch_interval`, so a flood of bad
//!   tokens costs the identity server one request per interval;
//! - a refresh replaces the whole set (removed keys are dropped at once);
//! - a failed refresh keeps the last good set, but never past `max_stale` after it was fetched.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, TokenData, Validation};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

pub use crate::config::JwksPolicy;

/// One fetch's result: the set, and the response's `max-age` if it gave one.
pub struct Fetched {
    pub set: JwkSet,
    pub max_age: Option<Duration>,
}

/// Why a fetch of the set failed; the last good set stays in force.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Send(reqwest::Error),
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    #[error("not a JWKS: {0}")]
    NotJwks(reqwest::Error),
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send>>;
/// Fetches the set; injectable so that the cache's rules are tested without a network.
pub type FetchFn = Arc<dyn Fn() -> FetchFuture + Send + Sync>;

/// Why a JWT could not be verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// The header cannot be parsed (includes `alg: none` and unknown algorithms).
    BadHeader,
    NoKid,
    /// No key with this `kid`, even after a refetch (or no set could ever be fetched).
    UnknownKey,
    /// Verification failed with the key; the kind says why (signature, issuer, audience, ...).
    Invalid(jsonwebtoken::errors::ErrorKind),
}

impl JwksError {
    /// A short, stable reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        use jsonwebtoken::errors::ErrorKind as K;
        match self {
            JwksError::BadHeader => "bad_header",
            JwksError::NoKid => "no_kid",
            JwksError::UnknownKey => "unknown_key",
            JwksError::Invalid(K::InvalidSignature) => "bad_signature",
            JwksError::Invalid(K::InvalidIssuer) => "bad_issuer",
            JwksError::Invalid(K::InvalidAudience) => "bad_audience",
            JwksError::Invalid(K::InvalidAlgorithm) => "bad_alg",
            JwksError::Invalid(K::ExpiredSignature) => "expired",
            JwksError::Invalid(K::ImmatureSignature) => "not_yet_valid",
            JwksError::Invalid(K::MissingRequiredClaim(_)) => "missing_claim",
            JwksError::Invalid(_) => "bad_jwt",
        }
    }
}

#[derive(Default)]
struct State {
    keys: Arc<HashMap<String, DecodingKey>>,
    /// When the current set was fetched; `None` before the first success.
    fetched: Option<Instant>,
    /// When the current set should be refreshed.
    fresh_until: Option<Instant>,
    /// The last fetch attempt, successful or not (rate limit of refetches).
    attempted: Option<Instant>,
    /// Counts attempts, so that a caller who waited for another's refresh does not refetch.
    generation: u64,
}

pub struct RemoteJwks {
    name: String,
    fetch: FetchFn,
    policy: JwksPolicy,
    state: Mutex<State>,
    /// Held while fetching: concurrent refreshes wait for the one in flight.
    refreshing: tokio::sync::Mutex<()>,
}

impl RemoteJwks {
    /// A set fetched from `url` with `client` (which decides what TLS is trusted).
    pub fn new(url: String, client: reqwest::Client, policy: JwksPolicy) -> Self {
        let name = url.clone();
        let fetch: FetchFn = Arc::new(move || Box::pin(http_fetch(client.clone(), url.clone())));
        Self::with_fetch(name, fetch, policy)
    }

    pub fn with_fetch(name: String, fetch: FetchFn, policy: JwksPolicy) -> Self {
        RemoteJwks { name, fetch, policy, state: Mutex::new(State::default()), refreshing: tokio::sync::Mutex::new(()) }
    }

    /// Verifies a compact JWS with the key its header names and `validation`; on an unknown
    /// `kid` or a failed signature, refetches the set once (if allowed) and tries again.
    pub async fn verify<T: DeserializeOwned>(&self, jwt: &str, v: &Validation) -> Result<TokenData<T>, JwksError> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| JwksError::BadHeader)?;
        let kid = header.kid.ok_or(JwksError::NoKid)?;
        let (keys, generation) = self.current().await;
        let first = match keys.get(&kid) {
            Some(key) => jsonwebtoken::decode::<T>(jwt, key, v).map_err(|e| JwksError::Invalid(e.into_kind())),
            None => Err(JwksError::UnknownKey),
        };
        let retry = matches!(
            &first,
            Err(JwksError::UnknownKey) | Err(JwksError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidSignature))
        );
        if !retry {
            return first;
        }
        if !self.refresh(generation, true).await {
            return first;
        }
        let (keys, _) = self.current().await;
        let key = keys.get(&kid).ok_or(JwksError::UnknownKey)?;
        jsonwebtoken::decode::<T>(jwt, key, v).map_err(|e| JwksError::Invalid(e.into_kind()))
    }

    /// The usable keys (refreshed first if their lifetime is over) and the state's generation.
    async fn current(&self) -> (Arc<HashMap<String, DecodingKey>>, u64) {
        let (stale, generation) = self.peek(|s| (s.fresh_until.is_none_or(|t| Instant::now() >= t), s.generation));
        if stale {
            self.refresh(generation, false).await;
        }
        self.peek(|s| {
            let too_old = s.fetched.is_none_or(|t| t.elapsed() > self.policy.max_stale);
            (if too_old { Arc::default() } else { s.keys.clone() }, s.generation)
        })
    }

    fn peek<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        match self.state.lock() {
            Ok(s) => f(&s),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Fetches the set unless another caller did since `seen` or the last attempt is too recent.
    /// Returns whether a newer set than the caller's may now be in place.
    async fn refresh(&self, seen: u64, forced: bool) -> bool {
        let _flight = self.refreshing.lock().await;
        let (generation, attempted) = self.peek(|s| (s.generation, s.attempted));
        if generation != seen {
            return true; // someone refreshed while this caller waited
        }
        // Forced refetches are rate-limited; so are lifetime refreshes after a failure, so that a
        // down server is not asked once per request.
        if attempted.is_some_and(|t| t.elapsed() < self.policy.refetch_interval) {
            return false;
        }
        let result = (self.fetch)().await;
        let now = Instant::now();
        match result {
            Ok(fetched) => {
                let keys = Arc::new(decoding_keys(&fetched.set));
                let ttl =
                    fetched.max_age.unwrap_or(self.policy.default_ttl).clamp(self.policy.min_ttl, self.policy.max_ttl);
                log::info!("JWKS {}: {} key(s), next refresh in {}s", self.name, keys.len(), ttl.as_secs());
                self.update(|s| {
                    *s = State {
                        keys,
                        fetched: Some(now),
                        fresh_until: Some(now + ttl),
                        attempted: Some(now),
                        generation: seen + 1,
                    }
                });
            }
            Err(e) => {
                let why = if forced { "refetch" } else { "refresh" };
                log::warn!("JWKS {}: {why} failed, keeping the last good set: {e}", self.name);
                self.update(|s| {
                    s.attempted = Some(now);
                    s.generation = seen + 1;
                });
            }
        }
        true
    }
}

/// Keys usable for signatures, by `kid`; keys without one or of an unknown type are skipped.
fn decoding_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter(|k| !matches!(k.common.public_key_use, Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)))
        .filter_map(|k| Some((k.common.key_id.clone()?, DecodingKey::from_jwk(k).ok()?)))
        .collect()
}

async fn http_fetch(client: reqwest::Client, url: String) -> Result<Fetched, FetchError> {
    let response = client.get(&url).send().await.map_err(FetchError::Send)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status()));
    }
    let max_age = max_age(response.headers());
    let set = response.json::<JwkSet>().await.map_err(FetchError::NotJwks)?;
    Ok(Fetched { set, max_age })
}

/// `max-age` of a `Cache-Control` header; `no-store`/`no-cache` say nothing about how long keys
/// stay valid, so they fall back to the default lifetime like an absent header.
pub fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|d| {
        let d = d.trim().to_ascii_lowercase();
        d.strip_prefix("max-age=").and_then(|s| s.parse().ok()).map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An EC P-256 key: its signer and its public JWK under `kid`.
    fn key(kid: &str) -> (EncodingKey, jsonwebtoken::jwk::Jwk) {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let pkey = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        let jwk = crate::request::issuer::public_jwk(&pkey, kid, crate::config::SigningAlg::ES256).unwrap();
        let pem = pkey.private_key_to_pem_pkcs8().unwrap();
        (EncodingKey::from_ec_pem(&pem).unwrap(), serde_json::from_value(jwk).unwrap())
    }

    fn sign(k: &EncodingKey, kid: &str) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &serde_json::json!({ "sub": "x" }), k).unwrap()
    }

    fn validation() -> Validation {
        let mut v = Validation::new(Algorithm::ES256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_aud = false;
        v
    }

    /// A fake server: answers the sets (or failures) of `script` in turn, repeating the last one,
    /// and counts the calls. Each answer waits one scheduler turn, like a real fetch.
    /// One answer of the fake server: the keys and a max-age, or a failure.
    type Answer = Result<(Vec<jsonwebtoken::jwk::Jwk>, Option<u64>), ()>;

    fn server(script: Vec<Answer>) -> (FetchFn, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let fetch: FetchFn = Arc::new(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let answer = script[n.min(script.len() - 1)].clone();
            Box::pin(async move {
                tokio::task::yield_now().await;
                let (keys, max_age) =
                    answer.map_err(|_| FetchError::Status(reqwest::StatusCode::SERVICE_UNAVAILABLE))?;
                Ok(Fetched { set: JwkSet { keys }, max_age: max_age.map(Duration::from_secs) })
            })
        });
        (fetch, calls)
    }

    fn jwks(fetch: FetchFn) -> RemoteJwks {
        RemoteJwks::with_fetch("test".into(), fetch, JwksPolicy::default())
    }

    async fn ok(j: &RemoteJwks, jwt: &str) -> Result<(), JwksError> {
        j.verify::<serde_json::Value>(jwt, &validation()).await.map(|_| ())
    }

    #[tokio::test(start_paused = true)]
    async fn keys_live_for_max_age_within_bounds() {
        let (k1, j1) = key("k1");
        let (fetch, calls) = server(vec![Ok((vec![j1.clone()], Some(100))), Ok((vec![j1], Some(1_000_000)))]);
        let j = jwks(fetch);
        let jwt = sign(&k1, "k1");
        assert_eq!(ok(&j, &jwt).await, Ok(()));
        tokio::time::advance(Duration::from_secs(99)).await;
        assert_eq!(ok(&j, &jwt).await, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "cached for max-age");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(ok(&j, &jwt).await, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "refreshed after max-age");
        // A huge max-age is capped at max_ttl.
        tokio::time::advance(JwksPolicy::default().max_ttl + Duration::from_secs(1)).await;
        assert_eq!(ok(&j, &jwt).await, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_key_under_the_same_kid_is_refetched_once_and_removed_keys_are_dropped() {
        let (old, j_old) = key("k1");
        let (new, j_new) = key("k1");
        let (k2, j2) = key("k2");
        let (fetch, calls) = server(vec![Ok((vec![j_old, j2], None)), Ok((vec![j_new], None))]);
        let j = jwks(fetch);
        assert_eq!(ok(&j, &sign(&old, "k1")).await, Ok(()));
        assert_eq!(ok(&j, &sign(&k2, "k2")).await, Ok(()));
        tokio::time::advance(Duration::from_secs(3)).await; // past refetch_interval
        assert_eq!(ok(&j, &sign(&new, "k1")).await, Ok(()), "signature failure -> refetch -> retry");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            ok(&j, &sign(&old, "k1")).await,
            Err(JwksError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidSignature))
        );
        assert_eq!(ok(&j, &sign(&k2, "k2")).await, Err(JwksError::UnknownKey), "k2 left the set");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "bad tokens right after a fetch cause no more fetches");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(ok(&j, &sign(&old, "k1")).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one refetch per interval, not per token");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_refreshes_are_one_fetch() {
        let (k1, j1) = key("k1");
        let (fetch, calls) = server(vec![Ok((vec![j1], None))]);
        let j = jwks(fetch);
        let jwt = sign(&k1, "k1");
        // join! polls every future once before any fetch completes: all ten miss at once.
        let r = tokio::join!(
            ok(&j, &jwt),
            ok(&j, &jwt),
            ok(&j, &jwt),
            ok(&j, &jwt),
            ok(&j, &jwt),
            ok(&j, &jwt),
            ok(&j, &jwt),
            ok(&j, &jwt),
            ok(&j, &jwt),
            ok(&j, &jwt)
        );
        assert!([r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9].iter().all(|r| r.is_ok()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_last_good_set_until_max_stale() {
        let (k1, j1) = key("k1");
        let (fetch, calls) = server(vec![Ok((vec![j1], Some(60))), Err(())]);
        let j = jwks(fetch);
        let jwt = sign(&k1, "k1");
        assert_eq!(ok(&j, &jwt).await, Ok(()));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(ok(&j, &jwt).await, Ok(()), "refresh failed: last good set still used");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(ok(&j, &jwt).await, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a down server is not asked on every request");
        tokio::time::advance(JwksPolicy::default().max_stale).await;
        assert_eq!(ok(&j, &jwt).await, Err(JwksError::UnknownKey), "too old: no key is trusted");
    }

    #[tokio::test]
    async fn alg_none_and_missing_kids_are_refused_without_a_fetch() {
        let (fetch, calls) = server(vec![Err(())]);
        let j = jwks(fetch);
        let enc = |s: &str| crate::token::b64url(s.as_bytes());
        let none = format!("{}.{}.", enc(r#"{"alg":"none","kid":"k1"}"#), enc(r#"{"sub":"x"}"#));
        assert_eq!(ok(&j, &none).await, Err(JwksError::BadHeader));
        let (k, _) = key("k1");
        let mut h = Header::new(Algorithm::ES256);
        h.kid = None;
        let no_kid = jsonwebtoken::encode(&h, &serde_json::json!({}), &k).unwrap();
        assert_eq!(ok(&j, &no_kid).await, Err(JwksError::NoKid));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
