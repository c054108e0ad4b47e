//! The `tls` section: the server certificates, the client CA and CRL, and the protocol versions
//! and cipher suites (FAPI 2.0 by default).

use crate::config::closed::{CrlExpired, TlsVersion};
use crate::config::shared::Dur;
use crate::config::shared::{dur, hosts, Check};
use crate::host::HostPattern;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

const TLS_CONFIG_CRL_RELOAD_INTERVAL: Duration = Duration::from_secs(60);
const TLS_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
const VERIFY_DEPTH: u32 = 2;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Host names terminated here; `*.example.com` wildcards allowed.
    pub hosts: Vec<String>,
    pub certificate: String,
    pub key: String,
    pub client_ca: String,
    pub client_crl: Option<String>,
    pub crl_reload_interval: Option<Dur>,
    /// What an expired CRL means: refuse (default) or keep.
    pub crl_expired: Option<CrlExpired>,
    /// Warn this long before a CRL's nextUpdate or a certificate's notAfter.
    pub expiry_warning: Option<Dur>,
    pub verify_depth: Option<u32>,
    pub min_version: Option<TlsVersion>,
    pub tls12_ciphers: Option<String>,
    pub tls13_ciphersuites: Option<String>,
    pub http2: Option<bool>,
    /// More certificates, chosen by SNI; `certificate`/`key` above stay the default.
    #[serde(default)]
    pub certificates: Vec<ExtraCertificateSection>,
    /// Hosts (by SNI) whose clients may connect without a certificate (DPoP-only clients). A
    /// certificate presented is still verified against the CA and the CRL.
    #[serde(default)]
    pub optional_client_certificate: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraCertificateSection {
    pub hosts: Vec<String>,
    pub certificate: String,
    pub key: String,
}

/// The four TLS 1.2 suites the FAPI 2.0 Security Profile allows.
pub const FAPI_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

pub const DEFAULT_TLS13_SUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub hosts: Vec<HostPattern>,
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub client_crl: Option<PathBuf>,
    pub crl_reload_interval: Duration,
    pub crl_expired: CrlExpired,
    pub expiry_warning: Duration,
    pub verify_depth: u32,
    pub min_version: TlsVersion,
    pub tls12_ciphers: String,
    pub tls13_ciphersuites: String,
    pub http2: bool,
    pub extra_certificates: Vec<ExtraCertificate>,
    /// Hosts whose clients may connect without a certificate.
    pub optional_client_certificate: Vec<HostPattern>,
}

impl TlsConfig {
    /// Every host name TLS is terminated for: the default certificate's and the extra ones'.
    pub fn all_hosts(&self) -> impl Iterator<Item = &HostPattern> {
        self.hosts.iter().chain(self.extra_certificates.iter().flat_map(|c| c.hosts.iter()))
    }
}

/// A certificate served instead of the default one when the SNI matches one of `hosts`.
#[derive(Debug, Clone)]
pub struct ExtraCertificate {
    pub hosts: Vec<HostPattern>,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

pub(in crate::config) fn validate(check: &mut Check, t: &Tls) -> TlsConfig {
    let extra_certificates = t
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| ExtraCertificate {
            hosts: hosts(check, &format!("tls.certificates[{i}].hosts"), &c.hosts),
            certificate: check.file(&format!("tls.certificates[{i}].certificate"), &c.certificate),
            key: check.file(&format!("tls.certificates[{i}].key"), &c.key),
        })
        .collect();
    TlsConfig {
        hosts: hosts(check, "tls.hosts", &t.hosts),
        certificate: check.file("tls.certificate", &t.certificate),
        key: check.file("tls.key", &t.key),
        client_ca: check.file("tls.client_ca", &t.client_ca),
        client_crl: t.client_crl.as_ref().map(|p| check.file("tls.client_crl", p)),
        crl_reload_interval: dur(t.crl_reload_interval, TLS_CONFIG_CRL_RELOAD_INTERVAL),
        crl_expired: t.crl_expired.unwrap_or_default(),
        expiry_warning: dur(t.expiry_warning, TLS_EXPIRY_WARNING),
        verify_depth: t.verify_depth.unwrap_or(VERIFY_DEPTH),
        min_version: t.min_version.unwrap_or_default(),
        tls12_ciphers: t.tls12_ciphers.clone().unwrap_or_else(|| FAPI_TLS12_CIPHERS.to_string()),
        tls13_ciphersuites: t.tls13_ciphersuites.clone().unwrap_or_else(|| DEFAULT_TLS13_SUITES.to_string()),
        http2: t.http2.unwrap_or(true),
        extra_certificates,
        optional_client_certificate: hosts(check, "tls.optional_client_certificate", &t.optional_client_certificate),
    }
}
