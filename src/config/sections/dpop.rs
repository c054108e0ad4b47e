//! The `dpop` section: RFC 9449 proof checks for the routes whose `binding` accepts `dpop`.

use crate::config::shared::Dur;
use crate::config::shared::{dur, nonzero, Check};
use serde::Deserialize;
use std::time::Duration;

const DPOP_NONCE_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dpop {
    /// Accepted proof algorithms; asymmetric only.
    pub algs: Option<Vec<String>>,
    /// Oldest accepted `iat`, counted back from now.
    pub max_age: Option<Dur>,
    /// Newest accepted `iat`: this far ahead of the gateway's clock.
    pub leeway: Option<Dur>,
    /// Bound of the replay cache of proof ids.
    pub replay_cache_entries: Option<u64>,
    /// Server nonces (RFC 9449 §9): every proof must carry a recent one. Off when absent.
    pub nonce: Option<DpopNonce>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopNonce {
    /// A file holding the secret (at least 32 bytes) that every replica shares.
    pub secret_file: String,
    /// How long one nonce window lasts; a nonce is accepted for one to two of them.
    pub lifetime: Option<Dur>,
}

/// RFC 9449 proof checks.
#[derive(Debug, Clone, PartialEq)]
pub struct DpopConfig {
    pub algs: Vec<jsonwebtoken::Algorithm>,
    pub max_age: Duration,
    pub leeway: Duration,
    pub replay_entries: u64,
    pub nonce: Option<NonceConfig>,
}

impl Default for DpopConfig {
    fn default() -> Self {
        use jsonwebtoken::Algorithm;
        DpopConfig {
            algs: vec![Algorithm::ES256, Algorithm::PS256, Algorithm::EdDSA],
            max_age: Duration::from_secs(60),
            leeway: Duration::from_secs(5),
            replay_entries: 100_000,
            nonce: None,
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct NonceConfig {
    pub secret: Vec<u8>,
    pub lifetime: Duration,
}

/// The secret never reaches a log line.
impl std::fmt::Debug for NonceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceConfig").field("secret", &"<redacted>").field("lifetime", &self.lifetime).finish()
    }
}

/// The section's defaults apply when a route accepts DPoP and the section is absent. Symmetric
/// algorithms (anyone holding the key could have made the proof) and `none` are refused.
pub(in crate::config) fn validate(check: &mut Check, d: Option<&Dpop>, needed: bool) -> Option<DpopConfig> {
    let d = match (d, needed) {
        (None, false) => return None,
        (None, true) => return Some(DpopConfig::default()),
        (Some(d), _) => d,
    };
    let defaults = DpopConfig::default();
    let mut algs = Vec::new();
    for (i, name) in d.algs.iter().flatten().enumerate() {
        let key = format!("dpop.algs[{i}]");
        match name.parse::<jsonwebtoken::Algorithm>() {
            Ok(a) if !matches!(a, jsonwebtoken::Algorithm::HS256 | jsonwebtoken::Algorithm::HS384 | jsonwebtoken::Algorithm::HS512) => algs.push(a),
            _ => check.fail(&key, format!("{name:?}: an asymmetric JWS algorithm (ES256, ES384, PS256, PS384, PS512, RS256, RS384, RS512, EdDSA)")),
        }
    }
    if d.algs.as_ref().is_some_and(Vec::is_empty) {
        check.fail("dpop.algs", "names at least one algorithm");
    }
    let nonce = d.nonce.as_ref().and_then(|n| {
        let path = check.file("dpop.nonce.secret_file", &n.secret_file);
        let secret = std::fs::read(&path).ok()?;
        let secret = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
        if secret.len() < 32 {
            check.fail("dpop.nonce.secret_file", format!("{}: the secret needs at least 32 bytes", path.display()));
        }
        let lifetime = nonzero(check, "dpop.nonce.lifetime", dur(n.lifetime, DPOP_NONCE_LIFETIME));
        Some(NonceConfig { secret, lifetime })
    });
    let replay_entries = d.replay_cache_entries.unwrap_or(defaults.replay_entries);
    if replay_entries == 0 {
        check.fail("dpop.replay_cache_entries", "must be at least 1");
    }
    Some(DpopConfig {
        algs: if d.algs.is_some() { algs } else { defaults.algs },
        max_age: nonzero(check, "dpop.max_age", dur(d.max_age, defaults.max_age)),
        leeway: dur(d.leeway, defaults.leeway),
        replay_entries,
        nonce,
    })
}
