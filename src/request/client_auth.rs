//! How the gateway authenticates itself to an introspection endpoint: `client_secret_basic`,
//! `client_secret_post` (RFC 6749 §2.3.1), `private_key_jwt` (RFC 7523 client assertion) or
//! `tls_client_auth` (RFC 8705, a client certificate on the TLS connection). Secrets and keys are
//! read once, by the build step, so `-t` proves they can be read; none of them is ever logged.

use crate::config::{ClientAuth, Problem, Secret};
use crate::pki::{read_key, PkiError};
use crate::token::unix_now;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::pkey::Id;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Why a key or certificate cannot authenticate the gateway, or an assertion cannot be signed.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// OpenSSL could not re-encode the key.
    #[error(transparent)]
    Encode(#[from] openssl::error::ErrorStack),
    /// jsonwebtoken refused the key or could not sign.
    #[error(transparent)]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("{}: only EC P-256 and RSA keys can sign client assertions", .0.display())]
    AssertionKeyType(PathBuf),
    #[error("{} with {}: {source}", certificate.display(), key.display())]
    Identity { certificate: PathBuf, key: PathBuf, source: reqwest::Error },
}

/// The credentials of one introspection section, ready to put on each request.
pub struct ClientAuthenticator {
    client_id: String,
    method: Method,
}

enum Method {
    Basic(String),
    Post(String),
    /// Signs a fresh assertion for `audience` per request (a `jti` may be used only once).
    Jwt {
        key: EncodingKey,
        alg: Algorithm,
        audience: String,
    },
    /// The certificate is on the HTTP client; the form only names the client.
    Tls,
}

impl ClientAuthenticator {
    /// Reads the secret or key of `auth`; for `tls_client_auth` also returns the identity to put on
    /// the HTTP client. `key` is the section's key path (for problems), `audience` the assertion's.
    pub fn build(
        client_id: &str,
        auth: &ClientAuth,
        key: &str,
        audience: &str,
    ) -> Result<(Self, Option<reqwest::Identity>), Problem> {
        let (method, identity) = match auth {
            ClientAuth::SecretBasic(s) => (Method::Basic(secret(s, key)?), None),
            ClientAuth::SecretPost(s) => (Method::Post(secret(s, key)?), None),
            ClientAuth::PrivateKeyJwt { key: path } => {
                let (k, alg) = assertion_key(path).map_err(|e| Problem::new(format!("{key}.client_key"), e))?;
                (Method::Jwt { key: k, alg, audience: audience.to_string() }, None)
            }
            ClientAuth::TlsClientAuth { certificate, key: key_path } => {
                let identity = identity(certificate, key_path)
                    .map_err(|e| Problem::new(format!("{key}.client_certificate"), e))?;
                (Method::Tls, Some(identity))
            }
        };
        Ok((ClientAuthenticator { client_id: client_id.to_string(), method }, identity))
    }

    /// Adds the credentials to `request` and the form fields to `form`.
    pub fn apply(
        &self,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
    ) -> Result<reqwest::RequestBuilder, ClientAuthError> {
        match &self.method {
            Method::Basic(secret) => {
                // RFC 6749 §2.3.1: both parts are form-encoded before Basic encoding.
                let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                return Ok(request.basic_auth(enc(&self.client_id), Some(enc(secret))));
            }
            Method::Post(secret) => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", secret.clone()));
            }
            Method::Jwt { key, alg, audience } => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                form.push(("client_assertion", self.assertion(key, *alg, audience)?));
            }
            Method::Tls => form.push(("client_id", self.client_id.clone())),
        }
        Ok(request)
    }

    /// RFC 7523 §3: iss = sub = client_id, the server as aud, short-lived, never reused.
    fn assertion(&self, key: &EncodingKey, alg: Algorithm, audience: &str) -> Result<String, ClientAuthError> {
        let now = unix_now();
        let claims = json!({
            "iss": self.client_id, "sub": self.client_id, "aud": audience,
            "iat": now, "exp": now + 60, "jti": uuid::Uuid::new_v4().to_string(),
        });
        Ok(jsonwebtoken::encode(&Header::new(alg), &claims, key)?)
    }
}

fn secret(s: &Secret, key: &str) -> Result<String, Problem> {
    let value = match s {
        Secret::Inline(v) => Ok(v.clone()),
        Secret::File(p) => {
            std::fs::read_to_string(p).map(|t| t.trim_end_matches(['\r', '\n']).to_string()).map_err(|e| {
                Problem::new(format!("{key}.client_secret_file"), format!("cannot read {}: {e}", p.display()))
            })
        }
        Secret::Env(var) => std::env::var(var)
            .map_err(|e| Problem::new(format!("{key}.client_secret_env"), format!("environment variable {var}: {e}"))),
    }?;
    if value.is_empty() {
        return Err(Problem::new(format!("{key}.client_secret"), "the secret is empty"));
    }
    Ok(value)
}

/// ES256 for a P-256 key, PS256 for an RSA key: the algorithms FAPI 2.0 allows.
fn assertion_key(path: &Path) -> Result<(EncodingKey, Algorithm), ClientAuthError> {
    let pkey = read_key(path)?;
    let pem = pkey.private_key_to_pem_pkcs8()?;
    match pkey.id() {
        Id::EC => Ok((EncodingKey::from_ec_pem(&pem)?, Algorithm::ES256)),
        Id::RSA => Ok((EncodingKey::from_rsa_pem(&pem)?, Algorithm::PS256)),
        _ => Err(ClientAuthError::AssertionKeyType(path.into())),
    }
}

fn identity(certificate: &Path, key: &Path) -> Result<reqwest::Identity, ClientAuthError> {
    let (chain, pem) = crate::pki::pem_identity(certificate, key)?;
    reqwest::Identity::from_pkcs8_pem(&chain, &pem).map_err(|source| ClientAuthError::Identity {
        certificate: certificate.into(),
        key: key.into(),
        source,
    })
}
