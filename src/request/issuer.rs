//! Gateway-issued access tokens, for identity servers that answer introspection with RFC 7662 JSON
//! or RFC 9701 signed JSON instead of the access token as a JWT. The gateway maps the introspection
//! claims into a JWT signed with its own key (PS256 or ES256), which the APIs verify against the
//! JWKS the gateway serves on an internal listener.

use crate::config::{Problem, SigningAlg, TokenIssuerConfig};
use crate::request::claims::Checked;
use crate::token::{b64url, unix_now, Claims};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::error::ErrorStack;
use openssl::pkey::{Id, PKey, Private};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Why a signing key cannot be used, or a token cannot be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a PEM private key: {source}", path.display())]
    NotKey { path: PathBuf, source: ErrorStack },
    #[error("{}: {source}", path.display())]
    Jwk { path: PathBuf, source: JwkError },
    #[error("the token has expired")]
    Expired,
    /// jsonwebtoken refused the key or could not sign.
    #[error(transparent)]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error(transparent)]
    Claims(#[from] serde_json::Error),
}

/// Why a key has no public JWK for an algorithm.
#[derive(Debug, thiserror::Error)]
pub enum JwkError {
    #[error(transparent)]
    OpenSsl(#[from] ErrorStack),
    #[error("ES256 needs a P-256 key")]
    NotP256,
    #[error("the key type does not fit {0}")]
    KeyType(SigningAlg),
}

pub struct TokenIssuer {
    cfg: TokenIssuerConfig,
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwks: Value,
}

impl TokenIssuer {
    /// Loads every configured key; the first one signs, all are published (rotation).
    pub fn new(cfg: &TokenIssuerConfig) -> Result<Self, Vec<Problem>> {
        let mut public = Vec::new();
        let mut signer = None;
        let mut problems = Vec::new();
        for (i, k) in cfg.keys.iter().enumerate() {
            let at = format!("token_issuer.keys[{i}].key");
            match load_key(k.key.as_path(), &k.kid, k.alg) {
                Ok((jwk, alg, key)) => {
                    public.push(jwk);
                    signer.get_or_insert((k.kid.clone(), alg, key));
                }
                Err(e) => problems.push(Problem::new(at, e)),
            }
        }
        match signer {
            Some((kid, alg, key)) if problems.is_empty() => {
                Ok(TokenIssuer { cfg: cfg.clone(), kid, alg, key, jwks: json!({ "keys": public }) })
            }
            None if problems.is_empty() => Err(vec![Problem::new("token_issuer.keys", "at least one key is needed")]),
            _ => Err(problems),
        }
    }

    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// Maps RFC 7662 claims of an active token, already checked (`checked`), into a signed JWT and
    /// the claims the filters read. `exp` is never later than the introspected token's, and `aud`
    /// is the token's own (never rewritten into another API's).
    pub fn issue(&self, intro: &Map<String, Value>, checked: &Checked) -> Result<(String, Claims), IssuerError> {
        let now = unix_now();
        let cap = now + self.cfg.lifetime.as_secs() as i64;
        let exp = checked.exp.map_or(cap, |e| e.min(cap));
        if exp <= now {
            return Err(IssuerError::Expired);
        }
        let client_id = intro.get("client_id").cloned().unwrap_or(Value::Null);
        let sub = intro.get("sub").cloned().filter(|s| s.is_string()).unwrap_or_else(|| client_id.clone());
        let mut claims = json!({
            "iss": self.cfg.issuer, "sub": sub, "client_id": client_id,
            "iat": now, "nbf": now, "exp": exp, "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(aud) = &checked.aud {
            claims["aud"] = aud.clone();
        }
        for copied in ["scope", "cnf"] {
            if let Some(v) = intro.get(copied) {
                claims[copied] = v.clone();
            }
        }
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)?;
        let parsed: Claims = serde_json::from_value(claims)?;
        Ok((jwt, parsed))
    }
}

/// One signing key: its public JWK, and the algorithm and key to sign with.
fn load_key(path: &Path, kid: &str, alg: SigningAlg) -> Result<(Value, Algorithm, EncodingKey), IssuerError> {
    let pem = std::fs::read(path).map_err(|source| IssuerError::Read { path: path.into(), source })?;
    let pkey = PKey::private_key_from_pem(&pem).map_err(|source| IssuerError::NotKey { path: path.into(), source })?;
    let jwk = public_jwk(&pkey, kid, alg).map_err(|source| IssuerError::Jwk { path: path.into(), source })?;
    let (alg, key) = encoding_key(&pem, alg)?;
    Ok((jwk, alg, key))
}

fn encoding_key(pem: &[u8], alg: SigningAlg) -> Result<(Algorithm, EncodingKey), IssuerError> {
    match alg {
        SigningAlg::PS256 => Ok((Algorithm::PS256, EncodingKey::from_rsa_pem(pem)?)),
        SigningAlg::ES256 => Ok((Algorithm::ES256, EncodingKey::from_ec_pem(pem)?)),
    }
}

/// The public half of a key as a JWK.
pub fn public_jwk(key: &PKey<Private>, kid: &str, alg: SigningAlg) -> Result<Value, JwkError> {
    match (alg, key.id()) {
        (SigningAlg::PS256, Id::RSA) => {
            let rsa = key.rsa()?;
            Ok(json!({ "kty": "RSA", "kid": kid, "use": "sig", "alg": "PS256",
                       "n": b64url(&rsa.n().to_vec()), "e": b64url(&rsa.e().to_vec()) }))
        }
        (SigningAlg::ES256, Id::EC) => {
            let ec = key.ec_key()?;
            if ec.group().curve_name() != Some(openssl::nid::Nid::X9_62_PRIME256V1) {
                return Err(JwkError::NotP256);
            }
            let mut ctx = openssl::bn::BigNumContext::new()?;
            let (mut x, mut y) = (openssl::bn::BigNum::new()?, openssl::bn::BigNum::new()?);
            ec.public_key().affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
            let pad = |n: &openssl::bn::BigNum| n.to_vec_padded(32);
            Ok(json!({ "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                       "x": b64url(&pad(&x)?), "y": b64url(&pad(&y)?) }))
        }
        _ => Err(JwkError::KeyType(alg)),
    }
}

/// Serves the gateway's public keys as a JWKS on the internal listener.
/// The signing keys in force; a reload replaces them.
pub type SharedIssuer = std::sync::Arc<arc_swap::ArcSwap<TokenIssuer>>;

pub struct JwksApp(pub SharedIssuer);

#[async_trait::async_trait]
impl pingora_core::apps::http_app::ServeHttp for JwksApp {
    async fn response(&self, _s: &mut pingora_core::protocols::http::ServerSession) -> http::Response<Vec<u8>> {
        let body = self.0.load().jwks().to_string().into_bytes();
        http::Response::builder()
            .status(200)
            .header("content-type", "application/jwk-set+json")
            .header("content-length", body.len())
            .header("cache-control", "max-age=300")
            .body(body)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningKeyConfig;
    use std::time::Duration;

    fn issuer(alg: SigningAlg) -> (TokenIssuer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let key = match alg {
            SigningAlg::PS256 => PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap(),
            SigningAlg::ES256 => {
                let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
                PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap()
            }
        };
        std::fs::write(&path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let cfg = TokenIssuerConfig {
            issuer: "https://gw".into(),
            lifetime: Duration::from_secs(60),
            keys: vec![SigningKeyConfig { kid: "k1".into(), key: path, alg }],
            jwks_address: None,
        };
        (TokenIssuer::new(&cfg).unwrap(), dir)
    }

    fn intro(exp_in: i64) -> Map<String, Value> {
        let now = unix_now();
        json!({ "active": true, "client_id": "partner-client", "scope": "transactions",
                "exp": now + exp_in, "cnf": { "x5t#S256": "abc-_" }, "username": "not copied" })
        .as_object()
        .unwrap()
        .clone()
    }

    fn checked(intro: &Map<String, Value>) -> Checked {
        Checked { exp: intro["exp"].as_i64(), aud: Some(json!("api")) }
    }

    #[test]
    fn issued_tokens_verify_against_the_published_jwks_and_never_outlive_the_token() {
        for alg in [SigningAlg::PS256, SigningAlg::ES256] {
            let (issuer, _dir) = issuer(alg);
            let (jwt, claims) = issuer.issue(&intro(30), &checked(&intro(30))).unwrap();
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(issuer.jwks().clone()).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
            let mut v = jsonwebtoken::Validation::new(if alg == SigningAlg::PS256 {
                Algorithm::PS256
            } else {
                Algorithm::ES256
            });
            v.set_audience(&["api"]);
            v.set_issuer(&["https://gw"]);
            let decoded = jsonwebtoken::decode::<Value>(&jwt, &key, &v).unwrap().claims;
            assert_eq!(decoded["cnf"]["x5t#S256"], "abc-_");
            assert_eq!(decoded["sub"], "partner-client");
            assert!(decoded.get("username").is_none());
            assert_eq!(decoded["exp"], intro(30)["exp"], "capped by the token's exp");
            assert!(claims.has_scope("transactions"));
            // A token with a long life gets the configured lifetime instead.
            let (_, long) = issuer.issue(&intro(3600), &checked(&intro(3600))).unwrap();
            assert!(long.exp.unwrap() < intro(61)["exp"].as_i64().unwrap());
            assert!(issuer.issue(&intro(-5), &checked(&intro(-5))).is_err(), "expired tokens are not issued");
        }
    }

    #[test]
    fn the_audience_is_the_tokens_never_a_configured_one() {
        let (issuer, _dir) = issuer(SigningAlg::ES256);
        let payload = |jwt: &str| crate::token::jwt_payload(jwt).unwrap();
        let other = Checked { exp: intro(30)["exp"].as_i64(), aud: Some(json!("other-api")) };
        assert_eq!(payload(&issuer.issue(&intro(30), &other).unwrap().0)["aud"], "other-api");
        let none = Checked { exp: intro(30)["exp"].as_i64(), aud: None };
        assert!(payload(&issuer.issue(&intro(30), &none).unwrap().0).get("aud").is_none());
    }
}
