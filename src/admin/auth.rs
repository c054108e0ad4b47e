//! Who may call the admin listener: a client certificate (verified by the TLS handshake against
//! `admin.client_ca`) whose subject is allowed, or the bearer secret, compared in constant time.
//! The caller is named in logs by subject, or by a hash prefix of the secret; never the secret.

use crate::config::{AdminConfig, Problem};
use crate::token::{same, token_id, ClientCert};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The shortest secret accepted: a guessable secret would make the listener an open door.
const MIN_SECRET_BYTES: usize = 16;

pub struct Auth {
    subjects: Vec<String>,
    secret: Option<Vec<u8>>,
    /// How the secret is named in logs: `token_id` of its SHA-256.
    secret_id: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth {{ subjects: {:?}, secret: {} }}", self.subjects, self.secret.is_some())
    }
}

/// Who asked, for the log line of every action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Subject(String),
    /// The bearer secret, by a hash prefix.
    Secret(String),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Subject(s) => write!(f, "subject={s:?}"),
            Caller::Secret(id) => write!(f, "bearer secret sha256={id}"),
        }
    }
}

/// Why a call is refused: 401 without usable credentials, 403 for a certificate not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    NoCredentials,
    WrongSecret,
    SubjectNotAllowed(String),
}

impl Denied {
    pub fn status(&self) -> u16 {
        match self {
            Denied::SubjectNotAllowed(_) => 403,
            _ => 401,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Denied::NoCredentials => "no admin certificate and no bearer secret".into(),
            Denied::WrongSecret => "wrong bearer secret".into(),
            Denied::SubjectNotAllowed(s) => format!("certificate subject {s:?} is not an admin"),
        }
    }
}

impl Auth {
    /// Reads the secret file, so that `-t` proves it can be read.
    pub fn new(cfg: &AdminConfig) -> Result<Self, Problem> {
        let secret = cfg.secret_file.as_deref().map(read_secret).transpose()?;
        let secret_id = secret.as_deref().map(|s| token_id(&cache_key_bytes(s))).unwrap_or_default();
        Ok(Auth { subjects: cfg.client_subjects.clone(), secret, secret_id })
    }

    /// Checks the verified client certificate (if any) and the `Authorization` header (if any).
    /// An allowed certificate suffices; otherwise the secret must match.
    pub fn check(&self, client: Option<&ClientCert>, authorization: Option<&[u8]>) -> Result<Caller, Denied> {
        if let Some(c) = client.filter(|c| self.subjects.contains(&c.subject)) {
            return Ok(Caller::Subject(c.subject.clone()));
        }
        match (bearer(authorization), &self.secret) {
            (Some(given), Some(secret)) if same(given, secret) => Ok(Caller::Secret(self.secret_id.clone())),
            (Some(_), _) => Err(Denied::WrongSecret),
            (None, _) => match client {
                Some(c) => Err(Denied::SubjectNotAllowed(c.subject.clone())),
                None => Err(Denied::NoCredentials),
            },
        }
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, Problem> {
    let text =
        std::fs::read(path).map_err(|e| Problem::new("admin.secret_file", format!("{}: {e}", path.display())))?;
    let secret = text.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        let msg = format!("{} must hold a secret of at least {MIN_SECRET_BYTES} bytes", path.display());
        return Err(Problem::new("admin.secret_file", msg));
    }
    Ok(secret)
}

fn cache_key_bytes(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// The credentials of `Authorization: Bearer …` (scheme case-insensitive).
fn bearer(header: Option<&[u8]>) -> Option<&[u8]> {
    let header = header?;
    let (scheme, rest) = header.split_at(header.iter().position(|b| *b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii()).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(subjects: &[&str], secret: Option<&str>) -> Auth {
        let secret = secret.map(|s| s.as_bytes().to_vec());
        let secret_id = secret.as_deref().map(|s| token_id(&cache_key_bytes(s))).unwrap_or_default();
        Auth { subjects: subjects.iter().map(|s| s.to_string()).collect(), secret, secret_id }
    }

    fn cert(subject: &str) -> ClientCert {
        ClientCert::from_der(b"der", subject.into()).unwrap()
    }

    #[test]
    fn an_allowed_subject_or_the_secret_admits_a_caller() {
        let a = auth(&["CN=gateway-admin"], Some("0123456789abcdef"));
        let admin = cert("CN=gateway-admin");
        assert_eq!(a.check(Some(&admin), None), Ok(Caller::Subject("CN=gateway-admin".into())));
        let ok = a.check(None, Some(b"Bearer 0123456789abcdef")).unwrap();
        assert!(matches!(&ok, Caller::Secret(id) if id.len() == 8), "{ok:?}");
        assert!(!ok.to_string().contains("0123456789abcdef"), "the secret is never shown");
        assert_eq!(a.check(None, Some(b"bearer 0123456789abcdef")).map(|_| ()), Ok(()), "scheme case");
        let partner = cert("CN=demo-partner");
        assert_eq!(a.check(Some(&partner), None), Err(Denied::SubjectNotAllowed("CN=demo-partner".into())));
        assert!(a.check(Some(&partner), Some(b"Bearer 0123456789abcdef")).is_ok(), "the secret still works");
    }

    #[test]
    fn anything_else_is_refused() {
        let a = auth(&["CN=gateway-admin"], Some("0123456789abcdef"));
        assert_eq!(a.check(None, None), Err(Denied::NoCredentials));
        assert_eq!(a.check(None, Some(b"Bearer 0123456789abcdeX")), Err(Denied::WrongSecret));
        assert_eq!(a.check(None, Some(b"Bearer 0123456789abcdef0")), Err(Denied::WrongSecret));
        assert_eq!(a.check(None, Some(b"Basic 0123456789abcdef")), Err(Denied::NoCredentials));
        assert_eq!(a.check(None, Some(b"Bearer ")), Err(Denied::NoCredentials));
        let no_secret = auth(&["CN=gateway-admin"], None);
        assert_eq!(no_secret.check(None, Some(b"Bearer anything")), Err(Denied::WrongSecret));
        assert_eq!(Denied::SubjectNotAllowed("x".into()).status(), 403);
        assert_eq!(Denied::WrongSecret.status(), 401);
    }
}
