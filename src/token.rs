//! Token and certificate facts that both layers share: the claims the gateway reads, what a TLS
//! handshake proved about the client (its `x5t#S256` thumbprint and RFC 9440 `Client-Cert` value,
//! computed once per connection), cache keys and log ids of tokens, what a purge names by them
//! ([`PurgeTarget`], also the message replicas exchange), base64url, and a constant-time
//! comparison.

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The claims of an access token that the gateway itself reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Claims {
    pub exp: Option<i64>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub cnf: Option<Confirmation>,
}

/// Confirmation claim: RFC 8705 §3.1 (`x5t#S256`) and RFC 9449 §6 (`jkt`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
    #[serde(default)]
    pub jkt: Option<String>,
}

impl Claims {
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope.as_deref().unwrap_or("").split(' ').any(|s| s == wanted)
    }

    /// The certificate thumbprint the token is bound to, if any.
    pub fn bound_thumbprint(&self) -> Option<&str> {
        self.cnf.as_ref().and_then(|c| c.x5t_s256.as_deref())
    }

    /// The DPoP key thumbprint the token is bound to, if any.
    pub fn bound_jkt(&self) -> Option<&str> {
        self.cnf.as_ref().and_then(|c| c.jkt.as_deref())
    }
}

/// The claims of a compact JWS, decoded but not verified.
pub fn decode_claims(jwt: &str) -> Option<Claims> {
    serde_json::from_value(serde_json::Value::Object(jwt_payload(jwt)?)).ok()
}

/// The payload of a compact JWS as a JSON object, decoded but not verified.
pub fn jwt_payload(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = jwt.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What one TLS connection carries for the HTTP layer, set by the handshake callback: the server
/// name it was opened for, the client certificate if one was presented, and the count of
/// exchanges the connection's watchdog reads.
#[derive(Debug)]
pub struct ConnectionFacts {
    /// The server name (SNI) of this connection's handshake, lower case. Every request on the
    /// connection must be for that host (421 otherwise), with or without a certificate.
    pub sni: Option<String>,
    pub client: Option<std::sync::Arc<ClientCert>>,
    pub exchanges: std::sync::Arc<Exchanges>,
    /// The connection is the trusted hop's (a TLS-terminating balancer): `client` is `None`, and
    /// each request carries its partner's certificate in the configured header.
    pub via_hop: bool,
}

/// What the request layer tells the connection layer about the requests on one connection: how
/// many request headers were read, and how many request bodies are still arriving. The
/// connection's watchdog times the header of an HTTP/1.1 exchange and every body with them.
#[derive(Debug, Default)]
pub struct Exchanges {
    headers: std::sync::atomic::AtomicU64,
    bodies_pending: std::sync::atomic::AtomicU64,
    /// The connection's switch for acknowledging the client's bytes at once, on while a body is
    /// awaited (set by the connection layer after the handshake).
    eager_ack: std::sync::OnceLock<std::sync::Arc<AtomicBool>>,
}

impl Exchanges {
    pub fn header_read(&self) {
        self.headers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn headers(&self) -> u64 {
        self.headers.load(Ordering::Relaxed)
    }

    /// The connection's acknowledgement switch (see `connection::workers::ReadCount::eager_ack`).
    pub fn link_eager_ack(&self, switch: std::sync::Arc<AtomicBool>) {
        let _ = self.eager_ack.set(switch);
    }

    pub fn body_started(&self) {
        self.bodies_pending.fetch_add(1, Ordering::Relaxed);
        if let Some(switch) = self.eager_ack.get() {
            switch.store(true, Ordering::Relaxed);
        }
    }

    pub fn body_ended(&self) {
        let before = self.bodies_pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if let (Ok(1), Some(switch)) = (before, self.eager_ack.get()) {
            switch.store(false, Ordering::Relaxed);
        }
    }

    pub fn bodies_pending(&self) -> u64 {
        self.bodies_pending.load(Ordering::Relaxed)
    }
}

/// What the TLS handshake proved about a connection's client, computed once per connection.
#[derive(Debug)]
pub struct ClientCert {
    /// Subject in RFC 4514 order, for logs and subject matching.
    pub subject: String,
    /// RFC 8705 `x5t#S256` of the leaf certificate.
    pub thumbprint: String,
    /// RFC 9440 `Client-Cert` value: the leaf's DER as a structured-field byte sequence.
    pub client_cert_header: http::HeaderValue,
    /// Set when a reloaded CA or CRL no longer accepts this certificate: the connection is being
    /// ended, and no further request on it may pass.
    revoked: AtomicBool,
    /// The certificate's `notAfter`, seconds since the epoch (for the partner expiry gauge).
    pub not_after: Option<i64>,
    /// Set when the revocation check (OCSP, fetched CRLs) refused the certificate: every request
    /// on the connection is answered with this.
    refused: std::sync::OnceLock<crate::reason::CertStatus>,
}

impl ClientCert {
    pub fn from_der(der: &[u8], subject: String) -> Option<Self> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let client_cert_header = http::HeaderValue::from_str(&format!(":{b64}:")).ok()?;
        let revoked = AtomicBool::new(false);
        let refused = std::sync::OnceLock::new();
        Some(ClientCert { subject, thumbprint: thumbprint(der), client_cert_header, revoked, not_after: None, refused })
    }

    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Records the revocation check's refusal (the first one stays).
    pub fn refuse(&self, status: crate::reason::CertStatus) {
        let _ = self.refused.set(status);
    }

    /// The revocation check's refusal, if any.
    pub fn refused(&self) -> Option<crate::reason::CertStatus> {
        self.refused.get().copied()
    }
}

/// RFC 8705 §3.1: base64url (no padding) of the SHA-256 of the certificate's DER.
pub fn thumbprint(der: &[u8]) -> String {
    b64url(&Sha256::digest(der))
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The cache key of a token: its SHA-256, so that no cache ever holds a token.
pub fn cache_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A short, non-reversible identifier of a token for logs: a prefix of its cache key.
pub fn token_id(key: &[u8; 32]) -> String {
    b64url(&key[..6])
}

/// The shortest token id accepted: the access log's `token=` (6 bytes of the cache key). A
/// shorter prefix would purge by accident what it happens to match.
pub const MIN_TOKEN_ID_CHARS: usize = 8;

/// What one purge removes; also what a purge message between replicas carries (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeTarget {
    /// One token, by its cache key (SHA-256 of the token).
    Key([u8; 32]),
    /// Tokens whose cache key, in base64url, starts with this: the access log's `token=`.
    IdPrefix(String),
    /// Active tokens bound (`cnf."x5t#S256"`) to this certificate thumbprint.
    Thumbprint(String),
    All,
}

impl PurgeTarget {
    /// Whether an entry with this cache key and bound thumbprint is purged.
    pub fn matches(&self, key: &[u8; 32], thumbprint: Option<&str>) -> bool {
        match self {
            PurgeTarget::Key(k) => k == key,
            PurgeTarget::IdPrefix(p) => b64url(key).starts_with(p.as_str()),
            PurgeTarget::Thumbprint(t) => thumbprint == Some(t.as_str()),
            PurgeTarget::All => true,
        }
    }

    /// How the target is named in logs: never the token itself.
    pub fn describe(&self) -> String {
        match self {
            PurgeTarget::Key(k) => format!("token_id={}", crate::token::token_id(k)),
            PurgeTarget::IdPrefix(p) => format!("token_id={p}"),
            PurgeTarget::Thumbprint(t) => format!("thumbprint={t}"),
            PurgeTarget::All => "all".to_string(),
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Constant-time comparison; `openssl::memcmp::eq` panics on unequal lengths, this does not.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"PS256"}"#), enc(payload))
    }

    #[test]
    fn thumbprint_is_base64url_without_padding() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        assert_eq!(thumbprint(b"abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }

    #[test]
    fn decodes_cnf_and_scope() {
        let c = decode_claims(&jwt(r#"{"exp":1,"scope":"a transactions","cnf":{"x5t#S256":"x-_y"}}"#)).unwrap();
        assert!(c.has_scope("transactions"));
        assert!(!c.has_scope("trans"));
        assert_eq!(c.bound_thumbprint(), Some("x-_y"));
        assert!(decode_claims("not-a-jwt").is_none());
        assert!(decode_claims("a.b.c.d").is_none());
    }

    #[test]
    fn client_cert_values_are_ready_to_send() {
        let c = ClientCert::from_der(b"abc", "CN=x".into()).unwrap();
        assert_eq!(c.client_cert_header.to_str().unwrap(), ":YWJj:");
        assert_eq!(c.thumbprint, thumbprint(b"abc"));
        assert!(!same(b"a", b"ab") && same(b"ab", b"ab"));
    }

    #[test]
    fn targets_match_what_they_name() {
        let key = crate::token::cache_key("a-token");
        let id = crate::token::token_id(&key);
        assert!(PurgeTarget::Key(key).matches(&key, None));
        assert!(!PurgeTarget::Key([0; 32]).matches(&key, None));
        assert!(PurgeTarget::IdPrefix(id.clone()).matches(&key, None));
        assert!(PurgeTarget::IdPrefix(b64url(&key)).matches(&key, None), "the whole key is a prefix too");
        assert!(!PurgeTarget::IdPrefix("AAAAAAAA".into()).matches(&[1; 32], None));
        assert!(PurgeTarget::Thumbprint("x".into()).matches(&key, Some("x")));
        assert!(!PurgeTarget::Thumbprint("x".into()).matches(&key, None));
        assert!(PurgeTarget::All.matches(&key, None));
        assert_eq!(PurgeTarget::Key(key).describe(), format!("token_id={id}"));
    }
}
