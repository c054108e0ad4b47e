//! TLS for the terminated API host: the server acceptor that demands and verifies client
//! certificates (FAPI 2.0 defaults), and what the handshake leaves behind for the HTTP layer.
//!
//! The same `build_acceptor` is used by `-t` validation and by the running listener, so a file that
//! validates is a file that serves.

use crate::config::{HostPattern, TlsConfig};
use async_trait::async_trait;
use base64::Engine;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{
    select_next_proto, AlpnError, NameType, SniError, SslAcceptor, SslAcceptorBuilder, SslContext, SslFiletype, SslMethod,
    SslOptions, SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509Lookup;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Crl, X509};
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use sha2::{Digest, Sha256};
use std::any::Any;
use std::path::Path;
use std::sync::Arc;

/// What the gateway knows about the verified client certificate of one connection.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// DER of the leaf certificate, for an RFC 9440 `Client-Cert` header.
    pub der: Vec<u8>,
    /// Subject in RFC 4514 order, for logs.
    pub subject: String,
}

/// RFC 8705 §3.1: base64url (no padding) of the SHA-256 of the certificate's DER.
pub fn thumbprint(der: &[u8]) -> String {
    b64url(&Sha256::digest(der))
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads every PEM certificate in a file; an empty file is an error.
pub fn read_certs(path: &Path) -> Result<Vec<X509>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Subject DN in RFC 4514 order (most specific RDN first), e.g. `CN=demo-partner,O=Example`.
pub fn subject_dn(cert: &X509) -> String {
    let entries: Vec<String> = cert
        .subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?").to_string();
            let key = if e.object().nid() == Nid::COMMONNAME { "CN".to_string() } else { key };
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={}", escape_dn_value(&value))
        })
        .collect();
    entries.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let leading = i == 0 && (c == ' ' || c == '#');
        if leading || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Checks a TLS section and names the key of each problem.
pub fn check_settings(cfg: &TlsConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let pairs = std::iter::once(("tls".to_string(), &cfg.certificate, &cfg.key)).chain(
        cfg.extra_certificates.iter().enumerate().map(|(i, c)| (format!("tls.certificates[{i}]"), &c.certificate, &c.key)),
    );
    for (key, cert, private) in pairs {
        if let Err(e) = check_pair(&key, cert, private) {
            problems.push(e);
        }
    }
    if let Err(e) = read_certs(&cfg.client_ca) {
        problems.push(("tls.client_ca".to_string(), e));
    }
    if let Some(crl) = &cfg.client_crl {
        if let Err(e) = read_crl(crl) {
            problems.push(("tls.client_crl".to_string(), e));
        }
    }
    if problems.is_empty() {
        if let Err(e) = build_acceptor(cfg) {
            problems.push(e);
        }
    }
    problems
}

/// A certificate file and the private key that must match it; `key` names their config section.
fn check_pair(key: &str, cert: &Path, private: &Path) -> Result<(), (String, String)> {
    let certs = read_certs(cert).map_err(|e| (format!("{key}.certificate"), e))?;
    let pkey = read_key(private).map_err(|e| (format!("{key}.key"), e))?;
    if certs[0].public_key().map(|p| p.public_eq(&pkey)).unwrap_or(false) {
        return Ok(());
    }
    Err((format!("{key}.key"), format!("{} does not match the certificate {}", private.display(), cert.display())))
}

fn read_key(path: &Path) -> Result<PKey<openssl::pkey::Private>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PKey::private_key_from_pem(&pem).map_err(|e| format!("{} is not a PEM private key: {e}", path.display()))
}

fn read_crl(path: &Path) -> Result<X509Crl, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    X509Crl::from_pem(&pem).map_err(|e| format!("{} is not a PEM CRL: {e}", path.display()))
}

fn keyed(key: &str) -> impl Fn(openssl::error::ErrorStack) -> (String, String) + '_ {
    move |e| (key.to_string(), e.to_string())
}

/// Builds the server acceptor: certificate chain and key, client certificates required and verified
/// against the CA (and CRL), FAPI 2.0 protocol and cipher defaults, no renegotiation, ALPN, and
/// certificate selection by SNI for the extra certificates. On failure, names the key at fault.
pub fn build_acceptor(cfg: &TlsConfig) -> Result<SslAcceptor, (String, String)> {
    let mut b = server_builder(cfg, &cfg.certificate, &cfg.key, "tls")?;
    let mut by_name: Vec<(Vec<HostPattern>, SslContext)> = Vec::new();
    for (i, extra) in cfg.extra_certificates.iter().enumerate() {
        let key = format!("tls.certificates[{i}]");
        let ctx = server_builder(cfg, &extra.certificate, &extra.key, &key)?.build().into_context();
        by_name.push((extra.hosts.clone(), ctx));
    }
    if !by_name.is_empty() {
        b.set_servername_callback(move |ssl, _alert| {
            let name = ssl.servername(NameType::HOST_NAME).map(str::to_string);
            let chosen = name.and_then(|n| by_name.iter().find(|(hosts, _)| hosts.iter().any(|h| h.matches(&n))));
            if let Some((_, ctx)) = chosen {
                // Every context verifies clients the same way, so switching only changes the certificate.
                ssl.set_ssl_context(ctx).map_err(|_| SniError::ALERT_FATAL)?;
            }
            Ok(())
        });
    }
    Ok(b.build())
}

/// One certificate's acceptor builder with every shared setting applied.
fn server_builder(cfg: &TlsConfig, cert: &Path, key: &Path, name: &str) -> Result<SslAcceptorBuilder, (String, String)> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(keyed("tls"))?;
    b.set_certificate_chain_file(cert).map_err(keyed(&format!("{name}.certificate")))?;
    b.set_private_key_file(key, SslFiletype::PEM).map_err(keyed(&format!("{name}.key")))?;
    b.check_private_key().map_err(keyed(&format!("{name}.key")))?;
    let min = if cfg.tls13_only { SslVersion::TLS1_3 } else { SslVersion::TLS1_2 };
    b.set_min_proto_version(Some(min)).map_err(keyed("tls.min_version"))?;
    b.set_cipher_list(&cfg.tls12_ciphers).map_err(keyed("tls.tls12_ciphers"))?;
    b.set_ciphersuites(&cfg.tls13_ciphersuites).map_err(keyed("tls.tls13_ciphersuites"))?;
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::CIPHER_SERVER_PREFERENCE);
    client_verification(&mut b, cfg)?;
    // Without a session id context, resumed sessions with client auth fail with a handshake alert.
    b.set_session_id_context(b"mtls-gateway").map_err(keyed("tls"))?;
    let protos: &'static [u8] = if cfg.http2 { b"\x02h2\x08http/1.1" } else { b"\x08http/1.1" };
    b.set_alpn_select_callback(move |_, client| select_next_proto(protos, client).ok_or(AlpnError::NOACK));
    Ok(b)
}

fn client_verification(b: &mut SslAcceptorBuilder, cfg: &TlsConfig) -> Result<(), (String, String)> {
    b.set_ca_file(&cfg.client_ca).map_err(keyed("tls.client_ca"))?;
    let names = openssl::x509::X509Name::load_client_ca_file(&cfg.client_ca).map_err(keyed("tls.client_ca"))?;
    b.set_client_ca_list(names);
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    b.set_verify_depth(cfg.verify_depth);
    if let Some(crl) = &cfg.client_crl {
        let store = b.cert_store_mut();
        let lookup = store.add_lookup(X509Lookup::file()).map_err(keyed("tls.client_crl"))?;
        lookup.load_crl_file(crl, SslFiletype::PEM).map_err(keyed("tls.client_crl"))?;
        store.set_flags(X509VerifyFlags::CRL_CHECK).map_err(keyed("tls.client_crl"))?;
    }
    Ok(())
}

/// Handshake callback that keeps the verified leaf certificate for the HTTP layer.
pub struct KeepClientCert;

#[async_trait]
impl TlsAccept for KeepClientCert {
    async fn handshake_complete_callback(&self, ssl: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let cert = ssl.peer_certificate()?;
        let der = cert.to_der().ok()?;
        // Stored as Arc<ClientCert> so that each request takes a reference, not a copy of the DER.
        Some(Arc::new(Arc::new(ClientCert { der, subject: subject_dn(&cert) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_is_base64url_without_padding() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        assert_eq!(thumbprint(b"abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("a,b=c"), "a\\,b\\=c");
        assert_eq!(escape_dn_value("#x"), "\\#x");
    }
}
