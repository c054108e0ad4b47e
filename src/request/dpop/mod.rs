//! DPoP (RFC 9449): the proof a client sends with a DPoP-bound access token, checked as §4.3 and
//! §7.1 say, each failure with its own reason: one `DPoP` header; a JWS of type `dpop+jwt` signed
//! with an asymmetric algorithm of the configured list by the public key in its `jwk` header; `htm`
//! and `htu` naming this request (the URI compared after RFC 3986 normalisation, with the host the
//! client addressed); `iat` inside the window; a `jti` not seen before within it; `ath` the hash of
//! the access token; and, when nonces are on, a nonce this gateway (any replica) issued. The
//! binding itself (the token's `cnf.jkt` is the RFC 7638 thumbprint of `jwk`) is checked by the
//! binding filter with [`jwk_thumbprint`]. What is read before any key is trusted, and the form
//! `htu` is compared in, are [`parse`]'s.
//!
//! A proof takes its place in the replay cache (`replay`) only once it passed every other check,
//! the binding to the token's key included: a proof that proves nothing takes no place. Nonces are
//! `nonce`'s, the key's thumbprint and fit `jwk`'s. The client's side (making proofs) is not
//! here: the gateway never signs one (the `mtls-dpop-client` crate does, for the development stack
//! and the tests).

use crate::cluster::Cluster;
use crate::config::{DpopConfig, FailPolicy};
use crate::token::{b64url, same, unix_now};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use pingora_http::RequestHeader;
use serde_json::{Map, Value};
use std::sync::Arc;

mod jwk;
mod nonce;
pub mod parse;
mod replay;

pub use jwk::{alg_name, jwk_thumbprint};
pub use replay::{LocalReplayCache, ReplayCache, ReplayEntry};

// For `parse`, which names it `super::percent` so that its fuzz target can include both files.
use crate::request::normalize::percent;
use jwk::{key_fits, PRIVATE_MEMBERS};
use parse::{normalize_htu, normalize_uri, Json};

const MAX_JTI_BYTES: usize = 256;

/// Why a proof was refused: each is a refusal reason (a metric label).
pub use crate::reason::Proof as ProofError;

/// Why a proof was not accepted: a check failed, the proof is valid but made with another key than
/// the one the token is bound to, or the shared replay store could not be asked and its policy is
/// `closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofFailure {
    Proof(ProofError),
    KeyMismatch,
    ReplayStoreUnavailable,
}

/// What a valid proof proves: the thumbprint of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    pub jkt: String,
}

/// Checks proofs; one per process, shared by every route (the replay cache must be one).
pub struct DpopVerifier {
    cfg: DpopConfig,
    /// `algs="..."` of the challenges.
    algs: String,
    replay: Arc<dyn ReplayCache>,
    /// With a cluster, proof ids are remembered there, for every replica.
    cluster: Option<Arc<Cluster>>,
}

impl DpopVerifier {
    pub fn new(cfg: DpopConfig, replay: Arc<dyn ReplayCache>) -> Self {
        let algs = cfg.algs.iter().map(|a| alg_name(*a)).collect::<Vec<_>>().join(" ");
        DpopVerifier { cfg, algs, replay, cluster: None }
    }

    /// Remembers proof ids on the shared-state server, when there is one.
    pub fn with_cluster(self, cluster: Option<Arc<Cluster>>) -> Self {
        DpopVerifier { cluster, ..self }
    }

    /// An in-process replay cache sized by the configuration.
    pub fn local(cfg: DpopConfig) -> Self {
        let replay = Arc::new(LocalReplayCache::new(cfg.replay_entries));
        Self::new(cfg, replay)
    }

    /// This verifier's replay cache, for a new configuration with the same bound and a window
    /// no longer than this one's: its entries were kept for this one's `max_age`.
    pub fn replay_for(&self, cfg: &DpopConfig) -> Option<Arc<dyn ReplayCache>> {
        let same = cfg.max_age <= self.cfg.max_age && cfg.replay_entries == self.cfg.replay_entries;
        same.then(|| self.replay.clone())
    }

    pub fn algs(&self) -> &str {
        &self.algs
    }

    /// Whether answers carry a `DPoP-Nonce`.
    pub fn uses_nonces(&self) -> bool {
        self.cfg.nonce.is_some()
    }

    /// The nonce to send now, when nonces are on.
    pub fn fresh_nonce(&self) -> Option<String> {
        nonce::fresh(self.cfg.nonce.as_ref()?, unix_now())
    }

    /// Checks the request's proof for an access token whose SHA-256 is `token_hash` and that is
    /// bound to the key thumbprint `bound_jkt`. The proof takes its place in the replay cache
    /// last, once it passed every other check: a proof by another key is refused without one.
    pub async fn verify(
        &self,
        req: &RequestHeader,
        token_hash: &[u8; 32],
        bound_jkt: &str,
    ) -> Result<Proven, ProofFailure> {
        let (proven, entry) = self.check(req, Some(token_hash)).map_err(ProofFailure::Proof)?;
        if !same(proven.jkt.as_bytes(), bound_jkt.as_bytes()) {
            return Err(ProofFailure::KeyMismatch);
        }
        self.first_use(entry).await?;
        Ok(proven)
    }

    /// Checks the proof of a token request (RFC 9449 §5), which has no access token and so no
    /// `ath`: what an authorization server does (the development identity server uses it). Its
    /// replay cache is this process's.
    pub fn verify_token_request(&self, req: &RequestHeader) -> Result<Proven, ProofError> {
        let (proven, entry) = self.check(req, None)?;
        if !self.replay.first_use(entry) {
            return Err(ProofError::Replayed);
        }
        Ok(proven)
    }

    /// The proof's id has not been used within the window: asked of the cluster when there is
    /// one, with the `cluster.replay` policy when it does not answer.
    async fn first_use(&self, entry: ReplayEntry) -> Result<(), ProofFailure> {
        let local = || match self.replay.first_use(entry) {
            true => Ok(()),
            false => Err(ProofFailure::Proof(ProofError::Replayed)),
        };
        let Some(cluster) = &self.cluster else { return local() };
        match cluster.first_use(&entry.key, entry.ttl).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ProofFailure::Proof(ProofError::Replayed)),
            Err(_) if cluster.config().replay == FailPolicy::Open => local(),
            Err(_) => Err(ProofFailure::ReplayStoreUnavailable),
        }
    }

    /// Every check but the replay one; what the proof proves, with its replay-cache entry.
    fn check(&self, req: &RequestHeader, token_hash: Option<&[u8; 32]>) -> Result<(Proven, ReplayEntry), ProofError> {
        let proof = single_proof(req)?;
        let (header, claims) = self.signed_parts(proof)?;
        let jwk = header.get("jwk").and_then(Value::as_object).ok_or(ProofError::Jwk)?;
        let now = unix_now();
        check_request(&claims, req)?;
        self.check_time(&claims, now)?;
        if let Some(hash) = token_hash {
            let ath = claims.get("ath").and_then(Value::as_str).ok_or(ProofError::Ath)?;
            if !same(ath.as_bytes(), b64url(hash).as_bytes()) {
                return Err(ProofError::Ath);
            }
        }
        self.check_nonce(&claims, now)?;
        let jkt = jwk_thumbprint(jwk).ok_or(ProofError::Jwk)?;
        let jti = claims.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES);
        let jti = jti.ok_or(ProofError::Jti)?;
        let entry = self.replay_entry(&jkt, jti, &claims);
        Ok((Proven { jkt }, entry))
    }

    /// The proof's place in the replay cache, kept until its `iat` leaves the window.
    fn replay_entry(&self, jkt: &str, jti: &str, claims: &Json) -> ReplayEntry {
        let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or_default();
        ReplayEntry::for_proof(jkt, jti, iat, self.cfg.max_age)
    }

    /// The header and the claims of a proof whose signature verifies with its own `jwk`.
    fn signed_parts(&self, proof: &str) -> Result<(Json, Json), ProofError> {
        let parts = parse::split(proof).ok_or(ProofError::Malformed)?;
        let header = parse::decode_json(parts.header).ok_or(ProofError::Malformed)?;
        let typ = header.get("typ").and_then(Value::as_str).ok_or(ProofError::Typ)?;
        if !typ.eq_ignore_ascii_case("dpop+jwt") {
            return Err(ProofError::Typ);
        }
        let alg_text = header.get("alg").and_then(Value::as_str).ok_or(ProofError::Alg)?;
        let alg = self.cfg.algs.iter().copied().find(|a| alg_name(*a) == alg_text).ok_or(ProofError::Alg)?;
        let jwk_value = header.get("jwk").and_then(Value::as_object).ok_or(ProofError::Jwk)?;
        if PRIVATE_MEMBERS.iter().any(|m| jwk_value.contains_key(*m)) {
            return Err(ProofError::PrivateKey);
        }
        if !key_fits(jwk_value, alg) {
            return Err(ProofError::Jwk);
        }
        let jwk: Jwk = serde_json::from_value(Value::Object(jwk_value.clone())).map_err(|_| ProofError::Jwk)?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| ProofError::Jwk)?;
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Map<String, Value>>(proof, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
                    ProofError::Signature
                }
                _ => ProofError::Malformed,
            }
        })?;
        Ok((header, data.claims))
    }

    fn check_time(&self, claims: &Map<String, Value>, now: i64) -> Result<(), ProofError> {
        let iat = claims.get("iat").and_then(Value::as_i64).ok_or(ProofError::Iat)?;
        let oldest = now - self.cfg.max_age.as_secs() as i64;
        let newest = now + self.cfg.leeway.as_secs() as i64;
        if iat < oldest || iat > newest {
            return Err(ProofError::Iat);
        }
        Ok(())
    }

    fn check_nonce(&self, claims: &Map<String, Value>, now: i64) -> Result<(), ProofError> {
        let Some(n) = &self.cfg.nonce else { return Ok(()) };
        let given = claims.get("nonce").and_then(Value::as_str).ok_or(ProofError::Nonce)?;
        if nonce::is_valid(n, given, now) {
            Ok(())
        } else {
            Err(ProofError::Nonce)
        }
    }
}

/// Exactly one `DPoP` header, of a bounded size.
fn single_proof(req: &RequestHeader) -> Result<&str, ProofError> {
    let mut values = req.headers.get_all("dpop").iter();
    let value = values.next().ok_or(ProofError::Missing)?;
    if values.next().is_some() {
        return Err(ProofError::Multiple);
    }
    let text = value.to_str().map_err(|_| ProofError::Malformed)?;
    parse::split(text).ok_or(ProofError::Malformed)?;
    Ok(text)
}

/// `htm` is this request's method; `htu` its URI without query and fragment.
fn check_request(claims: &Map<String, Value>, req: &RequestHeader) -> Result<(), ProofError> {
    let htm = claims.get("htm").and_then(Value::as_str).ok_or(ProofError::Htm)?;
    if htm != req.method.as_str() {
        return Err(ProofError::Htm);
    }
    let htu = claims.get("htu").and_then(Value::as_str).ok_or(ProofError::Htu)?;
    let expected = request_uri(req).ok_or(ProofError::Htu)?;
    match normalize_htu(htu) {
        Some(given) if given == expected => Ok(()),
        _ => Err(ProofError::Htu),
    }
}

/// The URI the client addressed: `https`, the host (and port) of `Host` or `:authority`, the path.
pub fn request_uri(req: &RequestHeader) -> Option<String> {
    let authority = match req.headers.get(http::header::HOST) {
        Some(h) => h.to_str().ok()?.to_string(),
        None => req.uri.authority()?.as_str().to_string(),
    };
    normalize_uri(&format!("https://{authority}{}", req.uri.path()))
}

#[cfg(test)]
pub(crate) mod test_support {
    use mtls_dpop_client::ProofKey;
    use serde_json::Value;

    /// Test keys: a new one each time, with the tests' shorthand for proofs.
    pub struct Key(pub ProofKey);

    pub fn es256() -> Key {
        Key(ProofKey::generate().unwrap())
    }

    impl Key {
        pub fn jkt(&self) -> String {
            self.0.jkt()
        }

        pub fn jwk(&self) -> &Value {
            &self.0.jwk
        }

        pub fn sign(&self, header: &Value, claims: &Value) -> String {
            self.0.sign(header, claims).unwrap()
        }

        pub fn proof(&self, htm: &str, htu: &str, token: &str, extra: Value) -> String {
            self.0.proof(htm, htu, Some(token), &extra)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::nonce::{nonce_for, window_of};
    use super::test_support::*;
    use super::*;
    use crate::config::NonceConfig;
    use crate::request::dpop::parse::decode_json;
    use sha2::{Digest, Sha256};
    use std::time::Duration;

    const TOKEN: &str = "opaque-token";
    const HTU: &str = "https://api.example.com/api/transactions";

    fn cfg() -> DpopConfig {
        DpopConfig::default()
    }

    fn req(method: &str, path: &str, host: &str, proofs: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        r.insert_header("host", host).unwrap();
        for p in proofs {
            r.append_header("dpop", *p).unwrap();
        }
        r
    }

    fn hash() -> [u8; 32] {
        Sha256::digest(TOKEN.as_bytes()).into()
    }

    /// The thumbprint of the key in the request's proof: these tests' token is bound to it.
    fn proof_jkt(r: &RequestHeader) -> String {
        let proof = r.headers.get("dpop").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let header = decode_json(proof.split('.').next().unwrap_or_default()).unwrap_or_default();
        header.get("jwk").and_then(Value::as_object).and_then(jwk_thumbprint).unwrap_or_default()
    }

    fn check(v: &DpopVerifier, r: &RequestHeader) -> Result<Proven, ProofError> {
        check_bound(v, r, &proof_jkt(r)).map_err(|f| match f {
            ProofFailure::Proof(e) => e,
            f => panic!("{f:?}"),
        })
    }

    fn check_bound(v: &DpopVerifier, r: &RequestHeader, jkt: &str) -> Result<Proven, ProofFailure> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(v.verify(r, &hash(), jkt))
    }

    #[test]
    fn a_fresh_proof_passes_once_and_names_its_key() {
        let key = es256();
        let v = DpopVerifier::local(cfg());
        let proof = key.proof("POST", HTU, TOKEN, Value::Null);
        let r = req("POST", "/api/transactions?x=1", "api.example.com", &[&proof]);
        assert_eq!(check(&v, &r), Ok(Proven { jkt: key.jkt() }));
        assert_eq!(check(&v, &r), Err(ProofError::Replayed));
    }

    #[test]
    fn htu_is_compared_after_normalisation_with_the_addressed_host() {
        let key = es256();
        let v = DpopVerifier::local(cfg());
        for (htu, host, path) in [
            ("HTTPS://API.Example.com:443/api/%7Etransactions", "api.example.com", "/api/~transactions"),
            ("https://api.example.com:8443/api/x?q=1#f", "api.example.com:8443", "/api/x"),
            ("https://api.example.com/api/a%2fb", "api.example.com", "/api/a%2Fb"),
        ] {
            let proof = key.proof("GET", htu, TOKEN, Value::Null);
            assert!(check(&v, &req("GET", path, host, &[&proof])).is_ok(), "{htu} for {host}{path}");
        }
        for (htu, host, path) in [
            ("https://api.example.com/api/y", "api.example.com", "/api/x"),
            ("https://other.example.com/api/x", "api.example.com", "/api/x"),
            ("https://api.example.com:8443/api/x", "api.example.com", "/api/x"),
            ("http://api.example.com/api/x", "api.example.com", "/api/x"),
            ("not a uri", "api.example.com", "/api/x"),
        ] {
            let proof = key.proof("GET", htu, TOKEN, Value::Null);
            assert_eq!(check(&v, &req("GET", path, host, &[&proof])), Err(ProofError::Htu), "{htu}");
        }
    }

    #[test]
    fn htu_that_only_a_lenient_parser_reads_is_refused() {
        let key = es256();
        let v = DpopVerifier::local(cfg());
        for htu in [
            "https://u:p@api.example.com/api/x",
            "https://api.example.com\\api/x",
            "https://api.example.com/api/x\t",
            "https://api.example.com/api/\r\nx",
            "https://api.example.com/api/ x",
            "https://api.example.com:/api/x",
        ] {
            let proof = key.proof("GET", htu, TOKEN, Value::Null);
            assert_eq!(check(&v, &req("GET", "/api/x", "api.example.com", &[&proof])), Err(ProofError::Htu), "{htu:?}");
        }
    }

    #[test]
    fn each_broken_proof_has_its_reason() {
        let key = es256();
        let other = es256();
        let v = DpopVerifier::local(cfg());
        let good_header = serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk() });
        let claims = |extra: Value| {
            let mut c = serde_json::json!({ "jti": uuid::Uuid::new_v4().to_string(), "htm": "POST", "htu": HTU,
                "iat": unix_now(), "ath": b64url(&hash()) });
            for (k, val) in extra.as_object().into_iter().flatten() {
                c[k] = val.clone();
            }
            c
        };
        let mut private = key.jwk().clone();
        private["d"] = "AAAA".into();
        let p384 = serde_json::json!({ "kty": "EC", "crv": "P-384", "x": key.jwk()["x"], "y": key.jwk()["y"] });
        let unsigned = format!(
            "{}.{}.",
            b64url(br#"{"typ":"dpop+jwt","alg":"none"}"#),
            b64url(claims(Value::Null).to_string().as_bytes())
        );
        let forged = {
            let p = key.sign(&good_header, &claims(Value::Null));
            let sig = other.sign(&good_header, &claims(Value::Null));
            format!("{}.{}", p.rsplit_once('.').unwrap().0, sig.rsplit_once('.').unwrap().1)
        };
        let cases: Vec<(String, ProofError)> = vec![
            (unsigned, ProofError::Alg),
            (
                key.sign(&serde_json::json!({ "typ": "jwt", "alg": "ES256", "jwk": key.jwk() }), &claims(Value::Null)),
                ProofError::Typ,
            ),
            (
                key.sign(
                    &serde_json::json!({ "typ": "dpop+jwt", "alg": "HS256", "jwk": key.jwk() }),
                    &claims(Value::Null),
                ),
                ProofError::Alg,
            ),
            (
                key.sign(&serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256" }), &claims(Value::Null)),
                ProofError::Jwk,
            ),
            (
                key.sign(
                    &serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": private }),
                    &claims(Value::Null),
                ),
                ProofError::PrivateKey,
            ),
            (
                key.sign(&serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": p384 }), &claims(Value::Null)),
                ProofError::Jwk,
            ),
            (forged, ProofError::Signature),
            (key.sign(&good_header, &claims(serde_json::json!({ "htm": "GET" }))), ProofError::Htm),
            (key.sign(&good_header, &claims(serde_json::json!({ "iat": unix_now() - 3600 }))), ProofError::Iat),
            (key.sign(&good_header, &claims(serde_json::json!({ "iat": unix_now() + 3600 }))), ProofError::Iat),
            (key.sign(&good_header, &claims(serde_json::json!({ "ath": b64url(&[0; 32]) }))), ProofError::Ath),
            (key.sign(&good_header, &claims(serde_json::json!({ "jti": "" }))), ProofError::Jti),
            ("a.b".to_string(), ProofError::Malformed),
        ];
        for (proof, want) in cases {
            let r = req("POST", "/api/transactions", "api.example.com", &[&proof]);
            assert_eq!(check(&v, &r), Err(want), "{proof}");
        }
        let p = key.proof("POST", HTU, TOKEN, Value::Null);
        assert_eq!(check(&v, &req("POST", "/api/transactions", "api.example.com", &[])), Err(ProofError::Missing));
        let two = req("POST", "/api/transactions", "api.example.com", &[&p, &p]);
        assert_eq!(check(&v, &two), Err(ProofError::Multiple));
    }

    #[test]
    fn nonces_from_any_replica_with_the_secret_pass_and_others_do_not() {
        let nonce =
            NonceConfig { secret: b"0123456789abcdef0123456789abcdef".to_vec(), lifetime: Duration::from_secs(60) };
        let a = DpopVerifier::local(DpopConfig { nonce: Some(nonce.clone()), ..cfg() });
        let b = DpopVerifier::local(DpopConfig { nonce: Some(nonce), ..cfg() });
        let key = es256();
        let r = |n: Value| {
            req("GET", "/api/x", "api.example.com", &[&key.proof("GET", "https://api.example.com/api/x", TOKEN, n)])
        };
        assert_eq!(check(&a, &r(Value::Null)), Err(ProofError::Nonce), "no nonce");
        assert_eq!(check(&a, &r(serde_json::json!({ "nonce": "made-up" }))), Err(ProofError::Nonce));
        let issued = a.fresh_nonce().unwrap();
        assert!(check(&b, &r(serde_json::json!({ "nonce": issued }))).is_ok(), "another replica's nonce");
        let old =
            nonce_for(b"0123456789abcdef0123456789abcdef", window_of(unix_now(), Duration::from_secs(60)) - 2).unwrap();
        assert_eq!(check(&a, &r(serde_json::json!({ "nonce": old }))), Err(ProofError::Nonce), "expired");
        let other =
            NonceConfig { secret: b"another secret of thirty-two by.".to_vec(), lifetime: Duration::from_secs(60) };
        let c = DpopVerifier::local(DpopConfig { nonce: Some(other), ..cfg() });
        assert_eq!(check(&c, &r(serde_json::json!({ "nonce": a.fresh_nonce().unwrap() }))), Err(ProofError::Nonce));
    }

    #[test]
    fn a_proof_id_is_kept_until_its_iat_leaves_the_window() {
        let key = es256();
        let v = DpopVerifier::local(cfg());
        let now = unix_now();
        for (iat, at_least, at_most) in [(now + 5, 65_000, 66_000), (now, 60_000, 61_000), (now - 59, 1, 2_000)] {
            let proof = key.proof("POST", HTU, TOKEN, serde_json::json!({ "iat": iat }));
            let (_, entry) = v.check(&req("POST", "/api/transactions", "api.example.com", &[&proof]), None).unwrap();
            let ms = entry.ttl.as_millis();
            assert!((at_least..=at_most).contains(&ms), "iat {}: kept {ms} ms", iat - now);
        }
        let c = LocalReplayCache::new(10);
        let entry = ReplayEntry { key: [7; 32], ttl: Duration::from_millis(50) };
        assert!(c.first_use(entry));
        assert!(!c.first_use(ReplayEntry { ttl: Duration::from_secs(60), ..entry }), "still kept");
        std::thread::sleep(Duration::from_millis(80));
        assert!(c.first_use(entry), "the entry expired with the lifetime it was inserted with");
    }

    /// A proof made with another key than the token's takes no place in the replay cache, so that
    /// such proofs cannot push out the id of a proof that was accepted.
    #[test]
    fn only_a_proof_of_the_tokens_key_is_remembered() {
        let (victim, attacker) = (es256(), es256());
        let replay = Arc::new(LocalReplayCache::new(5));
        let v = DpopVerifier::new(cfg(), replay.clone());
        let r = |key: &Key| {
            req("POST", "/api/transactions", "api.example.com", &[&key.proof("POST", HTU, TOKEN, Value::Null)])
        };
        let captured = r(&victim);
        assert!(check_bound(&v, &captured, &victim.jkt()).is_ok());
        for _ in 0..50 {
            assert_eq!(check_bound(&v, &r(&attacker), &victim.jkt()), Err(ProofFailure::KeyMismatch));
        }
        assert_eq!(replay.entries(), 1, "only the accepted proof is kept");
        assert_eq!(check_bound(&v, &captured, &victim.jkt()), Err(ProofFailure::Proof(ProofError::Replayed)));
    }
}
