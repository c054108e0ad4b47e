//! What the verifier needs to know of a proof's key: its RFC 7638 thumbprint (what a DPoP-bound
//! token's `cnf.jkt` names), whether it fits the proof's algorithm, and the algorithms' JOSE names.

use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::token::b64url;

/// Members of a JWK that only a private key has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037).
pub(super) const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// RFC 7638: SHA-256 over the required members in lexicographic order, base64url.
pub fn jwk_thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    let canonical = match s("kty")? {
        "EC" => serde_json::json!({ "crv": s("crv")?, "kty": "EC", "x": s("x")?, "y": s("y")? }),
        "RSA" => serde_json::json!({ "e": s("e")?, "kty": "RSA", "n": s("n")? }),
        "OKP" => serde_json::json!({ "crv": s("crv")?, "kty": "OKP", "x": s("x")? }),
        _ => return None,
    };
    // serde_json's map is ordered by key (no `preserve_order`), which is what RFC 7638 asks.
    Some(b64url(&Sha256::digest(canonical.to_string().as_bytes())))
}

/// The key's type and curve fit the algorithm (a P-384 key cannot sign ES256); RSA keys have at
/// least 2048 bits.
pub(super) fn key_fits(jwk: &Map<String, Value>, alg: Algorithm) -> bool {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    match alg {
        Algorithm::ES256 => s("kty") == Some("EC") && s("crv") == Some("P-256"),
        Algorithm::ES384 => s("kty") == Some("EC") && s("crv") == Some("P-384"),
        Algorithm::EdDSA => s("kty") == Some("OKP") && s("crv") == Some("Ed25519"),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let n = s("n").and_then(|n| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(n).ok());
            s("kty") == Some("RSA") && n.is_some_and(|n| n.len() >= 256)
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => false,
    }
}

pub fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1.
        let jwk = serde_json::json!({
            "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        });
        assert_eq!(jwk_thumbprint(jwk.as_object().unwrap()).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }
}
