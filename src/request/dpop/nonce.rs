//! DPoP nonces (RFC 9449 §8), stateless: a nonce is a time window and the HMAC-SHA256 of that
//! window under a configured secret, so that replicas sharing the secret accept each other's
//! nonces and none of them keeps a list. The HMAC is OpenSSL's.
//!
//! The form is `base64url(window as 8 bytes big-endian || the first 16 bytes of the HMAC)`; a
//! gateway of another version with the same secret issues and accepts the same nonces.

use crate::config::NonceConfig;
use crate::token::{b64url, same};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use std::time::Duration;

/// The nonce to send at `now`; `None` only when OpenSSL fails to compute an HMAC.
pub(super) fn fresh(cfg: &NonceConfig, now: i64) -> Option<String> {
    nonce_for(&cfg.secret, window_of(now, cfg.lifetime))
}

/// Whether `given` is the nonce of the current window or of the one before: a nonce lives between
/// one and two lifetimes.
pub(super) fn is_valid(cfg: &NonceConfig, given: &str, now: i64) -> bool {
    let current = window_of(now, cfg.lifetime);
    [current, current.saturating_sub(1)]
        .iter()
        .any(|w| nonce_for(&cfg.secret, *w).is_some_and(|n| same(given.as_bytes(), n.as_bytes())))
}

/// The window `now` falls in: seconds since the epoch divided by the lifetime.
pub(super) fn window_of(now: i64, lifetime: Duration) -> u64 {
    now.max(0) as u64 / lifetime.as_secs().max(1)
}

/// `window` (8 bytes) and the first 16 bytes of its HMAC-SHA256, base64url.
pub(super) fn nonce_for(secret: &[u8], window: u64) -> Option<String> {
    let w = window.to_be_bytes();
    let mac = hmac_sha256(secret, &w).ok()?;
    let mut out = w.to_vec();
    out.extend_from_slice(mac.get(..16)?);
    Some(b64url(&out))
}

fn hmac_sha256(secret: &[u8], data: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let key = PKey::hmac(secret)?;
    Signer::new(MessageDigest::sha256(), &key)?.sign_oneshot_to_vec(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than SHA-256's block is hashed first.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First").unwrap();
        assert_eq!(hex(&mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    /// Nonces issued before the HMAC came from OpenSSL are still accepted, and the other way
    /// round: the form is pinned.
    #[test]
    fn the_nonce_form_is_stable() {
        assert_eq!(
            nonce_for(b"0123456789abcdef0123456789abcdef", 29_641_234).as_deref(),
            Some("AAAAAAHEShKnlfXY311OY8yjAtKSgIwv")
        );
        assert_eq!(nonce_for(&[b'x'; 100], 29_641_234).as_deref(), Some("AAAAAAHEShJ88SPQr2WENN8zfkRF99JQ"));
    }

    #[test]
    fn a_nonce_lives_for_its_window_and_the_next() {
        let cfg =
            NonceConfig { secret: b"0123456789abcdef0123456789abcdef".to_vec(), lifetime: Duration::from_secs(60) };
        let issued = fresh(&cfg, 6_000).unwrap();
        assert!(is_valid(&cfg, &issued, 6_000));
        assert!(is_valid(&cfg, &issued, 6_119), "the next window");
        assert!(!is_valid(&cfg, &issued, 6_120), "two windows on");
        assert!(!is_valid(&cfg, &issued, 5_999), "the window before");
        assert!(!is_valid(&cfg, "", 6_000));
    }
}
