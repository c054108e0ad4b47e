//! The client's side of DPoP (RFC 9449 §4.2): an ES256 (P-256) key and the proofs made with it.
//! The development client (`devstack`'s `dpop-proof`), the examples and the tests use it; the
//! gateway only verifies proofs, so its library holds no signer.
//!
//! The key's RFC 7638 thumbprint is computed here on its own, not with the gateway's
//! `jwk_thumbprint`: this crate depends on nothing of the gateway, and the gateway's tests compare
//! its thumbprints with an independent computation.

use base64::Engine;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use serde_json::Value;

/// An ES256 key and its public JWK.
pub struct ProofKey {
    pkey: PKey<Private>,
    /// The public key as the proofs' `jwk` header carries it.
    pub jwk: Value,
}

impl ProofKey {
    /// A new P-256 key.
    pub fn generate() -> Result<Self, ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        Self::from_ec(EcKey::generate(&group)?)
    }

    /// A P-256 key from PEM (PKCS#8 or SEC1).
    pub fn from_pem(pem: &[u8]) -> Result<Self, ErrorStack> {
        Self::from_ec(PKey::private_key_from_pem(pem)?.ec_key()?)
    }

    fn from_ec(ec: EcKey<Private>) -> Result<Self, ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let mut ctx = BigNumContext::new()?;
        let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
        ec.public_key().affine_coordinates(&group, &mut x, &mut y, &mut ctx)?;
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": b64url(&x.to_vec_padded(32)?), "y": b64url(&y.to_vec_padded(32)?),
        });
        Ok(ProofKey { pkey: PKey::from_ec_key(ec)?, jwk })
    }

    /// The private key as PKCS#8 PEM.
    pub fn pem(&self) -> Result<Vec<u8>, ErrorStack> {
        self.pkey.private_key_to_pem_pkcs8()
    }

    /// RFC 7638 thumbprint: the `cnf.jkt` of tokens bound to this key.
    pub fn jkt(&self) -> String {
        let s = |k: &str| self.jwk.get(k).and_then(Value::as_str).unwrap_or_default();
        // The required members of an EC key in lexicographic order, without white space; serde_json's
        // map is ordered by key (no `preserve_order`), which is what RFC 7638 asks.
        let canonical = serde_json::json!({ "crv": s("crv"), "kty": s("kty"), "x": s("x"), "y": s("y") });
        b64url(&openssl::sha::sha256(canonical.to_string().as_bytes()))
    }

    /// A compact ES256 JWS of `header` and `claims` (any header: the tests forge some).
    pub fn sign(&self, header: &Value, claims: &Value) -> Result<String, ErrorStack> {
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &self.pkey)?;
        let der = signer.sign_oneshot_to_vec(input.as_bytes())?;
        // JWS (RFC 7518 §3.4) carries R and S as two 32-byte numbers, not OpenSSL's DER.
        let sig = EcdsaSig::from_der(&der)?;
        let mut raw = sig.r().to_vec_padded(32)?;
        raw.extend(sig.s().to_vec_padded(32)?);
        Ok(format!("{input}.{}", b64url(&raw)))
    }

    /// A proof for `htm` `htu`; with the access token's `ath` when `token` is given, and any
    /// `extra` claims (`nonce`, or overrides). Empty when OpenSSL cannot sign.
    pub fn proof(&self, htm: &str, htu: &str, token: Option<&str>, extra: &Value) -> String {
        let header = serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk });
        let mut claims = serde_json::json!({
            "jti": uuid::Uuid::new_v4().to_string(), "htm": htm, "htu": htu, "iat": unix_now(),
        });
        if let Some(t) = token {
            claims["ath"] = b64url(&openssl::sha::sha256(t.as_bytes())).into();
        }
        for (k, v) in extra.as_object().into_iter().flatten() {
            claims[k] = v.clone();
        }
        self.sign(&header, &claims).unwrap_or_default()
    }
}

/// Unpadded base64url (RFC 7515 §2).
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the Unix epoch, as `iat` carries them (0 before it).
fn unix_now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_its_pem_and_keeps_its_thumbprint() {
        let key = ProofKey::generate().unwrap();
        let again = ProofKey::from_pem(&key.pem().unwrap()).unwrap();
        assert_eq!(again.jwk, key.jwk);
        assert_eq!(again.jkt(), key.jkt());
        assert_eq!(key.jkt().len(), 43, "base64url of 32 bytes");
    }

    #[test]
    fn a_proof_carries_the_key_the_request_and_the_token_hash() {
        let key = ProofKey::generate().unwrap();
        let proof = key.proof("POST", "https://h/p", Some("tok"), &serde_json::json!({ "nonce": "n" }));
        let parts: Vec<&str> = proof.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |p: &str| -> Value {
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        };
        let (header, claims) = (decode(parts[0]), decode(parts[1]));
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["jwk"], key.jwk);
        assert_eq!((claims["htm"].as_str(), claims["htu"].as_str()), (Some("POST"), Some("https://h/p")));
        assert_eq!(claims["ath"], b64url(&openssl::sha::sha256(b"tok")));
        assert_eq!(claims["nonce"], "n");
        assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
    }
}
