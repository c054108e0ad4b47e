//! Token introspection against the identity server, behind a cache that coalesces concurrent misses.
//!
//! `POST` with the token form-encoded and the client's authentication ([`client_auth`]), in one of
//! three response modes: the reference's (`Accept: application/jwt`; 200 answers the access token as
//! a JWT, verified against the identity server's keys when `verify` is on; 204 says the token is not
//! active), RFC 7662 JSON, or RFC 9701 signed JSON; in the last two the gateway issues the JWT
//! itself (`issuer`). In every mode the token's own claims pass [`claims::check`] (exp, nbf,
//! token_type, aud). The cache is keyed by SHA-256 of the token (never the token itself), an entry's
//! lifetime is fixed when it is inserted (reads never extend it) and is the smallest of the
//! configured maximum, the JWT's `exp` and the response's `Cache-Control: max-age`; a `no-store`
//! answer is not kept unless `cache.ignore_no_store` says so. Errors are never cached: a
//! dependency outage must not outlive the outage.
//!
//! While the purge subscription of a cluster is down, a cached answer may have missed a purge, so
//! the cache is not read; answers then go to a second cache whose entries live at most
//! `cluster.outage_cache_ttl`: one call per token answers the requests of that short while (the
//! identity server stays shielded), and a token revoked meanwhile is served that long at most.
//!
//! [`client_auth`]: crate::request::client_auth

use crate::config::{IntrospectionConfig, Problem, ResponseMode};
use crate::metrics;
use crate::pki::{error_chain, pinned_client, PkiError};
use crate::reason::{IdentityAnswer as Bad, IdentityDown, Introspection, Token};
use crate::request::claims::{self, ClaimError};
use crate::request::client_auth::ClientAuthenticator;
use crate::request::issuer::TokenIssuer;
use crate::request::jwks::{max_age, JwksError, RemoteJwks};
use crate::request::purge::PurgeLog;
use crate::token::{jwt_payload, unix_now, Claims, PurgeTarget};
use crate::trace::{ChildSpan, RequestTrace};
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
    /// Active at the identity server, but refused by one of the gateway's checks (the reason).
    Refused(Token),
}

/// What one introspection call found out, and how long it may be kept.
#[derive(Debug)]
struct Answer {
    state: TokenState,
    ttl: Duration,
}

/// A cached answer, with the moment it was asked for: a purge made after that moment voids it.
#[derive(Debug)]
struct Entry {
    state: TokenState,
    ttl: Duration,
    asked: Instant,
}

impl Entry {
    fn thumbprint(&self) -> Option<&str> {
        match &self.state {
            TokenState::Active(t) => t.claims.bound_thumbprint(),
            _ => None,
        }
    }
}

/// How a lookup was answered, for the access log and metrics.
pub use crate::reason::Cache as CacheResult;

/// Why introspection gave no answer. Never cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectError {
    /// Connect failure or timeout, or a 5xx: the identity server is down (503).
    Unavailable(IdentityDown),
    /// An answer the gateway cannot use: wrong status, not a JWT (502).
    BadAnswer(Bad),
}

struct FixedLifetime;

impl Expiry<[u8; 32], Arc<Entry>> for FixedLifetime {
    /// Counted from when the identity server was asked, not from when its answer arrived: no
    /// entry then outlives its purge record (see [`PurgeLog`]).
    fn expire_after_create(&self, _key: &[u8; 32], value: &Arc<Entry>, _now: std::time::Instant) -> Option<Duration> {
        Some(value.ttl.saturating_sub(value.asked.elapsed()))
    }
    // expire_after_read and expire_after_update keep the default: the lifetime set at creation.
}

pub struct Introspector {
    cfg: IntrospectionConfig,
    endpoint: url::Url,
    client: reqwest::Client,
    auth: ClientAuthenticator,
    cache: Cache<[u8; 32], Arc<Entry>>,
    /// The answers taken while the purge subscription is down, kept at most `outage_ttl`.
    outage: Cache<[u8; 32], Arc<Entry>>,
    outage_ttl: Duration,
    /// Every active answer for its own lifetime, whatever purges or outages do to the caches: a
    /// token with one is not an introspection miss of the partner's (see [`Introspector::knows`]).
    seen: Cache<[u8; 32], Arc<Entry>>,
    /// Signs the JWT in `json` and `rfc9701` modes.
    issuer: Option<Arc<TokenIssuer>>,
    /// The identity server's keys: `rfc9701` answers, or verified JWTs in `jwt` mode.
    remote_jwks: Option<RemoteJwks>,
    purges: Arc<PurgeLog>,
}

impl Introspector {
    /// Reads the client's credentials, builds the HTTP client (trusting only the configured CA)
    /// and the cache. `cfg` is complete: discovery, if any, has filled it in.
    pub fn new(cfg: IntrospectionConfig, issuer: Option<Arc<TokenIssuer>>) -> Result<Self, Problem> {
        let key = format!("introspection.{}", cfg.name);
        let endpoint = cfg
            .endpoint
            .clone()
            .ok_or_else(|| Problem::new(format!("{key}.endpoint"), "discovery found no introspection_endpoint"))?;
        // RFC 7523 §3: the assertion names the server; its issuer identifier when known.
        let audience = cfg.issuer.clone().unwrap_or_else(|| endpoint.to_string());
        let (auth, identity) = ClientAuthenticator::build(&cfg.client_id, &cfg.client_auth, &key, &audience)?;
        let client = http_client(&cfg, &endpoint, identity).map_err(|e| Problem::new(format!("{key}.ca"), e))?;
        let cache = Cache::builder().max_capacity(cfg.max_entries).expire_after(FixedLifetime).build();
        let outage = Cache::builder().max_capacity(cfg.max_entries).expire_after(FixedLifetime).build();
        let seen = Cache::builder().max_capacity(cfg.max_entries).expire_after(FixedLifetime).build();
        let signed = cfg.mode == ResponseMode::Rfc9701 || cfg.verify_jwt;
        let remote_jwks = match (&cfg.jwks_url, signed) {
            (Some(url), true) => Some(RemoteJwks::new(url.to_string(), client.clone(), cfg.jwks)),
            (None, true) => return Err(Problem::new(format!("{key}.jwks_url"), "discovery found no jwks_uri")),
            _ => None,
        };
        if signed && cfg.issuer.is_none() {
            return Err(Problem::new(format!("{key}.issuer"), "discovery found no issuer"));
        }
        // No entry lives longer than the longer of the two lifetimes; a second more for the
        // cache's own clock, which may read a little behind ours.
        let purges = Arc::new(PurgeLog::new(cfg.max_ttl.max(cfg.negative_ttl) + Duration::from_secs(1)));
        let outage_ttl = Duration::ZERO;
        Ok(Introspector { cfg, endpoint, client, auth, cache, outage, outage_ttl, seen, issuer, remote_jwks, purges })
    }

    /// How long an answer taken while the purge subscription is down is shared (`cluster`'s
    /// `outage_cache_ttl`; zero without a cluster, whose caches are always trusted).
    pub fn with_outage_ttl(self, outage_ttl: Duration) -> Self {
        Introspector { outage_ttl, ..self }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Takes over `previous`'s cached answers when its section is the same, so that a reload that
    /// does not touch this identity server keeps every token cached. Credentials, client and keys
    /// stay this build's own: a rotated secret file is read anew.
    pub fn keep_cache_of(&mut self, previous: &Introspector) -> bool {
        if previous.cfg != self.cfg {
            return false;
        }
        self.cache = previous.cache.clone();
        self.outage = previous.outage.clone();
        self.seen = previous.seen.clone();
        // The purges that guard those entries come along with them.
        self.purges = previous.purges.clone();
        true
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Whether a lookup of this token would be answered from the cache, or the token got an active
    /// answer still within its lifetime: asking again for it because the cache is bypassed or was
    /// emptied (an outage of the purge subscription, and the purge of everything once it is back)
    /// is not a miss of the partner's. Made-up tokens are never active, so they stay misses.
    pub fn knows(&self, key: &[u8; 32]) -> bool {
        self.cache.contains_key(key) || self.seen.contains_key(key)
    }

    /// Looks a token up by its `cache_key`: from the cache, or by one introspection call shared by
    /// every concurrent request for the same token.
    pub async fn lookup(
        &self,
        token: &str,
        key: [u8; 32],
        trace: Option<&RequestTrace>,
    ) -> (Result<TokenState, IntrospectError>, CacheResult) {
        // The purge subscription is down: a cached answer may have missed a purge. Ask again,
        // and keep the answer only for the outage's short while.
        let (cache, cap) = match crate::cluster::cache_trusted() {
            true => (&self.cache, None),
            false => (&self.outage, Some(self.outage_ttl)),
        };
        if let Some(entry) = cache.get(&key).await {
            if !self.purges.voids(entry.asked, &key, entry.thumbprint()) {
                return (Ok(entry.state.clone()), CacheResult::Hit);
            }
            // Asked for before a purge and cached after it went through the entries: it goes.
            cache.invalidate(&key).await;
        }
        // A miss: one caller runs the init future, every concurrent caller for this key waits for it.
        let ran = AtomicBool::new(false);
        let init = async {
            ran.store(true, Ordering::Relaxed);
            let entry = Arc::new(self.introspect(token, trace).await?);
            if matches!(entry.state, TokenState::Active(_)) {
                self.seen.insert(key, entry.clone()).await;
            }
            Ok::<_, IntrospectError>(match cap {
                Some(cap) => {
                    Arc::new(Entry { state: entry.state.clone(), ttl: entry.ttl.min(cap), asked: entry.asked })
                }
                None => entry,
            })
        };
        let result = cache.entry(key).or_try_insert_with(init).await;
        let how = if ran.load(Ordering::Relaxed) { CacheResult::Miss } else { CacheResult::Coalesced };
        let state = match result {
            Ok(entry) => Ok(entry.into_value().state.clone()),
            Err(e) => Err((*e).clone()),
        };
        (state, how)
    }

    /// Removes the cached answers `target` matches, and voids those still on their way; how many
    /// were removed. Requests that joined a call already in flight share its answer.
    pub async fn purge(&self, target: &PurgeTarget) -> u64 {
        self.purges.record(target.clone());
        let mut count = 0;
        for cache in [&self.cache, &self.outage] {
            count += purge_from(cache, target).await;
        }
        count
    }

    /// How many cached answers `target` matches now (to ask before an ambiguous purge).
    pub fn count(&self, target: &PurgeTarget) -> u64 {
        self.cache.iter().filter(|(k, e)| target.matches(k, e.thumbprint())).count() as u64
    }

    async fn introspect(&self, token: &str, trace: Option<&RequestTrace>) -> Result<Entry, IntrospectError> {
        let started = Instant::now();
        let span = trace.map(|t| t.child("introspection"));
        let result =
            self.call(token, span.as_ref()).await.map(|a| Entry { state: a.state, ttl: a.ttl, asked: started });
        let label = match &result {
            Ok(e) => match e.state {
                TokenState::Active(_) => Introspection::Active,
                TokenState::Inactive => Introspection::Inactive,
                TokenState::Refused(r) => Introspection::Refused(r),
            },
            Err(IntrospectError::Unavailable(r)) => Introspection::Down(*r),
            Err(IntrospectError::BadAnswer(r)) => Introspection::BadAnswer(*r),
        };
        metrics::introspection(&self.cfg.name, label, started.elapsed());
        let label = label.as_str();
        if let Some(mut span) = span {
            if span.recording() {
                span.set(opentelemetry::KeyValue::new("mtls_gateway.introspection", self.cfg.name.clone()));
                span.set(opentelemetry::KeyValue::new("mtls_gateway.result", label));
            }
            span.end(result.is_err().then_some(label));
        }
        result
    }

    async fn call(&self, token: &str, span: Option<&ChildSpan>) -> Result<Answer, IntrospectError> {
        let accept = match self.cfg.mode {
            ResponseMode::Jwt => "application/jwt",
            ResponseMode::Json => "application/json",
            ResponseMode::Rfc9701 => "application/token-introspection+jwt",
        };
        let mut form = vec![("token", token.to_string())];
        let mut request = self.client.post(self.endpoint.clone()).header(reqwest::header::ACCEPT, accept);
        if let Some(span) = span {
            request = request.header("traceparent", span.traceparent());
            if let Some(state) = span.tracestate() {
                request = request.header("tracestate", state);
            }
        }
        let request = self.auth.apply(request, &mut form).map_err(|e| {
            log::warn!("introspection {}: cannot authenticate: {e}", self.cfg.name);
            IntrospectError::BadAnswer(Bad::ClientAuth)
        })?;
        let response = request.form(&form).send().await.map_err(|e| {
            log::warn!("introspection {}: {}", self.cfg.name, error_chain(&e));
            IntrospectError::Unavailable(if e.is_timeout() { IdentityDown::Timeout } else { IdentityDown::Unreachable })
        })?;
        let status = response.status().as_u16();
        let life = Life::of(response.headers(), self.cfg.ignore_no_store);
        match status {
            204 if self.cfg.mode == ResponseMode::Jwt => Ok(self.inactive(life)),
            200 => {
                let body = response.text().await.map_err(|_| IntrospectError::Unavailable(IdentityDown::ReadFailed))?;
                match &self.cfg.mode {
                    ResponseMode::Jwt => self.jwt_entry(body.trim(), life).await,
                    ResponseMode::Json => self.json_entry(&body, life),
                    ResponseMode::Rfc9701 => self.rfc9701_entry(body.trim(), life).await,
                }
            }
            500..=599 => Err(IntrospectError::Unavailable(IdentityDown::ServerError)),
            _ => {
                log::warn!("introspection {}: unexpected status {status}", self.cfg.name);
                Err(IntrospectError::BadAnswer(Bad::UnexpectedStatus))
            }
        }
    }

    fn inactive(&self, life: Life) -> Answer {
        Answer { state: TokenState::Inactive, ttl: life.cap(self.cfg.negative_ttl) }
    }

    /// A token the identity server calls active but that fails one of the gateway's own checks.
    fn refused(&self, reason: Token, life: Life) -> Answer {
        log::info!("introspection {}: token refused: {}", self.cfg.name, reason.as_str());
        Answer { state: TokenState::Refused(reason), ttl: life.cap(self.cfg.negative_ttl) }
    }

    /// The reference's protocol: the body is the access token as a JWT. It is verified against
    /// the identity server's keys when verification is on; unsigned (`alg: none`) JWTs are never
    /// accepted, verified or not.
    async fn jwt_entry(&self, jwt: &str, life: Life) -> Result<Answer, IntrospectError> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| IntrospectError::BadAnswer(Bad::BadHeader))?;
        let payload = match &self.remote_jwks {
            Some(jwks) => self.verified(jwks, jwt, header.alg, None).await?,
            None => jwt_payload(jwt).ok_or(IntrospectError::BadAnswer(Bad::NotAJwt))?,
        };
        let checked = match claims::check(&payload, &self.cfg.claims, unix_now()) {
            Ok(c) => c,
            Err(ClaimError::Refused(r)) => return Ok(self.refused(r, life)),
            Err(ClaimError::Unusable(r)) => return Err(IntrospectError::BadAnswer(r)),
        };
        let claims: Claims = serde_json::from_value(serde_json::Value::Object(payload))
            .map_err(|_| IntrospectError::BadAnswer(Bad::NotAJwt))?;
        self.entry(jwt, Claims { exp: checked.exp, ..claims }, life)
    }

    /// RFC 7662: `active` and the token's claims as JSON; the gateway issues the JWT.
    fn json_entry(&self, body: &str, life: Life) -> Result<Answer, IntrospectError> {
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|_| IntrospectError::BadAnswer(Bad::NotJson))?;
        let map = value.as_object().ok_or(IntrospectError::BadAnswer(Bad::NotJson))?;
        self.issued_entry(map, life)
    }

    /// RFC 9701: a JWT signed by the identity server, addressed to this client, with the RFC 7662
    /// claims under `token_introspection`.
    async fn rfc9701_entry(&self, jwt: &str, life: Life) -> Result<Answer, IntrospectError> {
        let bad = IntrospectError::BadAnswer;
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| bad(Bad::NotAJwt))?;
        if header.typ.as_deref() != Some("token-introspection+jwt") {
            return Err(bad(Bad::WrongTyp));
        }
        let jwks = self.remote_jwks.as_ref().ok_or(bad(Bad::NoJwks))?;
        let outer = self.verified(jwks, jwt, header.alg, Some(&self.cfg.client_id)).await?;
        let inner = outer.get("token_introspection").and_then(|t| t.as_object());
        self.issued_entry(inner.ok_or(bad(Bad::NoClaims))?, life)
    }

    /// Verifies a JWT of the identity server: an accepted algorithm, its key (refetched once on
    /// rotation), the configured `iss` and, for RFC 9701 answers, `aud` = this client. The
    /// token's own claims (exp, nbf, aud) are checked by `claims::check` after this.
    async fn verified(
        &self,
        jwks: &RemoteJwks,
        jwt: &str,
        alg: Algorithm,
        aud: Option<&str>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, IntrospectError> {
        if !self.cfg.algorithms.iter().any(|a| a.algorithm() == alg) {
            return Err(IntrospectError::BadAnswer(Bad::BadAlg));
        }
        let mut v = Validation::new(alg);
        v.validate_exp = false; // RFC 9701 answers carry iat, not exp; tokens' exp is checked later
        v.validate_nbf = false;
        v.leeway = self.cfg.claims.leeway.as_secs();
        if let Some(iss) = &self.cfg.issuer {
            v.set_issuer(&[iss]);
        }
        match aud {
            Some(aud) => {
                v.set_audience(&[aud]);
                v.set_required_spec_claims(&["iss", "aud"]);
            }
            None => {
                v.validate_aud = false;
                v.set_required_spec_claims(&["iss"]);
            }
        }
        let data = jwks.verify::<serde_json::Map<String, serde_json::Value>>(jwt, &v).await.map_err(|e| {
            log::warn!("introspection {}: the identity server's JWT is not trusted: {}", self.cfg.name, e.reason());
            IntrospectError::BadAnswer(answer_reason(&e))
        })?;
        Ok(data.claims)
    }

    fn issued_entry(
        &self,
        intro: &serde_json::Map<String, serde_json::Value>,
        life: Life,
    ) -> Result<Answer, IntrospectError> {
        if intro.get("active") != Some(&serde_json::Value::Bool(true)) {
            return Ok(self.inactive(life));
        }
        let checked = match claims::check(intro, &self.cfg.claims, unix_now()) {
            Ok(c) => c,
            Err(ClaimError::Refused(r)) => return Ok(self.refused(r, life)),
            Err(ClaimError::Unusable(r)) => return Err(IntrospectError::BadAnswer(r)),
        };
        let issuer = self.issuer.as_ref().ok_or(IntrospectError::BadAnswer(Bad::NoTokenIssuer))?;
        match issuer.issue(intro, &checked) {
            Ok((jwt, claims)) => self.entry(&jwt, claims, life),
            Err(e) => {
                log::debug!("introspection {}: not issuing a JWT: {e}", self.cfg.name);
                Ok(self.inactive(life))
            }
        }
    }

    /// Cache entry for an active token: its lifetime is the smallest of the configured maximum, the
    /// token's remaining life and the response's max-age (zero for `no-store`). An expired token is
    /// inactive.
    fn entry(&self, jwt: &str, claims: Claims, life: Life) -> Result<Answer, IntrospectError> {
        let Some(left) = claims.exp.and_then(seconds_until) else {
            return Ok(self.inactive(life));
        };
        let ttl = life.cap(self.cfg.max_ttl.min(left));
        let token = ActiveToken::new(jwt, claims).ok_or(IntrospectError::BadAnswer(Bad::NotAJwt))?;
        Ok(Answer { state: TokenState::Active(Arc::new(token)), ttl })
    }
}

/// Removes what `target` matches from one cache; how many entries that was.
async fn purge_from(cache: &Cache<[u8; 32], Arc<Entry>>, target: &PurgeTarget) -> u64 {
    if *target == PurgeTarget::All {
        let count = cache.iter().count() as u64;
        cache.invalidate_all();
        return count;
    }
    let keys: Vec<Arc<[u8; 32]>> =
        cache.iter().filter(|(k, e)| target.matches(k, e.thumbprint())).map(|(k, _)| k).collect();
    for key in &keys {
        cache.invalidate(key.as_ref()).await;
    }
    keys.len() as u64
}

/// How long the identity server lets an answer be kept: `max-age`, and `no-store` unless the
/// configuration overrides it.
#[derive(Debug, Clone, Copy)]
struct Life {
    max_age: Option<Duration>,
    no_store: bool,
}

impl Life {
    fn of(headers: &reqwest::header::HeaderMap, ignore_no_store: bool) -> Self {
        Life { max_age: max_age(headers), no_store: !ignore_no_store && no_store(headers) }
    }

    fn cap(self, ttl: Duration) -> Duration {
        if self.no_store {
            // Zero: concurrent requests still share this one answer, later ones ask again.
            return Duration::ZERO;
        }
        self.max_age.map_or(ttl, |age| ttl.min(age))
    }
}

/// The reason of an identity server JWT that is not trusted: always the answer's fault (502).
fn answer_reason(e: &JwksError) -> Bad {
    use jsonwebtoken::errors::ErrorKind as K;
    match e {
        JwksError::BadHeader => Bad::BadHeader,
        JwksError::NoKid => Bad::NoKid,
        JwksError::UnknownKey => Bad::UnknownKey,
        JwksError::Invalid(K::InvalidSignature) => Bad::BadSignature,
        JwksError::Invalid(K::InvalidIssuer) => Bad::BadIssuer,
        JwksError::Invalid(K::InvalidAudience) => Bad::BadAudience,
        JwksError::Invalid(K::InvalidAlgorithm) => Bad::BadAlg,
        JwksError::Invalid(K::MissingRequiredClaim(_)) => Bad::MissingClaim,
        JwksError::Invalid(_) => Bad::BadJwt,
    }
}

/// Why the HTTP client to the identity server cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error(transparent)]
    Ca(#[from] PkiError),
    #[error(transparent)]
    Build(#[from] reqwest::Error),
}

fn http_client(
    cfg: &IntrospectionConfig,
    endpoint: &url::Url,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, HttpClientError> {
    let mut builder = pinned_client(&cfg.ca)?
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.timeout)
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(addr) = cfg.resolve {
        for host in [Some(endpoint), cfg.discovery.as_ref(), cfg.jwks_url.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|u| u.host_str())
        {
            builder = builder.resolve(host, addr);
        }
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    Ok(builder.build()?)
}

fn seconds_until(exp: i64) -> Option<Duration> {
    let now = unix_now();
    (exp > now).then(|| Duration::from_secs((exp - now) as u64))
}

/// `no-store` in `Cache-Control`: the identity server asks that the answer not be kept.
fn no_store(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-store"))
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
        assert!(no_store(&h));
        h.insert("cache-control", "private, No-Store".parse().unwrap());
        assert!(no_store(&h));
        let off = Life::of(&h, true);
        assert_eq!(off.cap(Duration::from_secs(9)), Duration::from_secs(9), "ignore_no_store");
        assert_eq!(Life::of(&h, false).cap(Duration::from_secs(9)), Duration::ZERO);
    }
}
