//! The `admin` section: the internal TLS listener for cache purges and ending connections, and who
//! may call it.

use crate::config::shared::{socket_addr, Check};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The admin listener always speaks TLS; callers present an admin client certificate with one of
/// `client_subjects`, or the bearer secret in `secret_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: String,
    pub certificate: String,
    pub key: String,
    /// The CA that admin client certificates chain to.
    pub client_ca: Option<String>,
    /// Subjects (RFC 4514, as `CN=gateway-admin,O=Example`) allowed to act.
    #[serde(default)]
    pub client_subjects: Vec<String>,
    /// A file holding the bearer secret (surrounding white space ignored).
    pub secret_file: Option<String>,
}

/// The internal admin listener: TLS always; an admin client certificate with an allowed subject,
/// or the bearer secret, authenticates a call (at least one of them is configured).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// With `client_subjects`: the CA admin client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    pub client_subjects: Vec<String>,
    /// Read by the build step, so that `-t` proves it can be read.
    pub secret_file: Option<PathBuf>,
}

/// Fails closed: no way to authenticate, or subjects without the CA that vouches for them, is an
/// error, never an open listener.
pub(in crate::config) fn validate(check: &mut Check, a: &Admin) -> Option<AdminConfig> {
    let address = check.ok("admin.address", socket_addr(&a.address));
    let client_ca = a.client_ca.as_ref().map(|p| check.file("admin.client_ca", p));
    let secret_file = a.secret_file.as_ref().map(|p| check.file("admin.secret_file", p));
    match (a.client_subjects.is_empty(), &client_ca, &secret_file) {
        (true, None, None) => check.fail("admin", "needs client_subjects (with client_ca) or secret_file"),
        (true, Some(_), _) => check.fail("admin.client_subjects", "client_ca is set but no subject is allowed"),
        (false, None, _) => check.fail("admin.client_ca", "client_subjects need the CA their certificates chain to"),
        _ => {}
    }
    for (i, subject) in a.client_subjects.iter().enumerate() {
        if subject.trim().is_empty() || !subject.contains('=') {
            check.fail(&format!("admin.client_subjects[{i}]"), format!("{subject:?} is not a subject like CN=name"));
        }
    }
    let certificate = check.file("admin.certificate", &a.certificate);
    let key = check.file("admin.key", &a.key);
    Some(AdminConfig {
        address: address?,
        certificate,
        key,
        client_ca,
        client_subjects: a.client_subjects.clone(),
        secret_file,
    })
}
