//! The `token_issuer` section: the keys that sign the JWTs the gateway issues in the `json` and
//! `rfc9701` introspection modes, and where their JWKS is served.

use crate::config::closed::SigningAlg;
use crate::config::shared::Dur;
use crate::config::shared::{dur, socket_addr, Check};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const TOKEN_ISSUER_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenIssuer {
    pub issuer: String,
    /// Longest lifetime of an issued JWT; never past the introspected token's `exp`.
    pub lifetime: Option<Dur>,
    /// The first key signs; every key is published in the JWKS (rotation).
    pub keys: Vec<SigningKey>,
    /// Internal plain-HTTP listener serving the JWKS at any path.
    pub jwks_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub kid: String,
    pub key: String,
    pub algorithm: Option<SigningAlg>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SigningKeyConfig {
    pub kid: String,
    pub key: PathBuf,
    pub alg: SigningAlg,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenIssuerConfig {
    pub issuer: String,
    pub lifetime: Duration,
    pub keys: Vec<SigningKeyConfig>,
    pub jwks_address: Option<SocketAddr>,
}

pub(in crate::config) fn validate(check: &mut Check, t: &TokenIssuer) -> Option<TokenIssuerConfig> {
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
        Some(a) => Some(check.ok("token_issuer.jwks_address", socket_addr(a))?),
        None => None,
    };
    Some(TokenIssuerConfig {
        issuer: t.issuer.clone(),
        lifetime: dur(t.lifetime, TOKEN_ISSUER_LIFETIME),
        keys,
        jwks_address,
    })
}
