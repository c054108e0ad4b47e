//! TLS for the terminated API hosts: the server acceptors that demand (or, for the optional hosts,
//! ask for) and verify client certificates (FAPI 2.0 defaults), and what the handshake leaves
//! behind for the HTTP layer.
//!
//! `build_acceptor` is called by the build step only, for `-t`, for serving and for every CRL or
//! certificate reload, so a file that validates is a file that serves.

use crate::config::{AdminConfig, Problem, TlsConfig, TlsVersion, FAPI_TLS12_CIPHERS};
use crate::connection::forwarded::ForwardedVerifier;
use crate::host::HostPattern;
use crate::pki::{read_certs, read_crls, read_key, subject_dn};
use crate::token::{ClientCert, ConnectionFacts};
use async_trait::async_trait;
use openssl::ssl::{
    select_next_proto, AlpnError, NameType, SniError, SslAcceptor, SslAcceptorBuilder, SslContext, SslFiletype,
    SslMethod, SslOptions, SslVerifyMode, SslVersion,
};
use openssl::x509::store::{X509Lookup, X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use std::any::Any;
use std::path::Path;
use std::sync::Arc;

/// The acceptors of the terminated hosts, one per client-certificate policy. They are separate
/// TLS contexts on purpose: each has its own session cache, ticket keys and session id context,
/// so a session made without a certificate on an optional host can never be resumed on a host
/// that demands one (with one shared context it could: resumption skips the certificate demand).
pub struct Acceptors {
    /// Every host not listed in `tls.optional_client_certificate`, and connections without SNI.
    pub required: SslAcceptor,
    /// The `tls.optional_client_certificate` hosts; `None` when there are none.
    pub optional: Option<SslAcceptor>,
    optional_hosts: Vec<HostPattern>,
    /// The same verification for the certificates a trusted hop forwards.
    pub forwarded: Arc<ForwardedVerifier>,
}

impl Acceptors {
    /// The acceptor for a ClientHello with this server name. The router peeks the name before the
    /// handshake; the optional acceptor checks it again (see [`Policy::Optional`]).
    pub fn for_sni(&self, sni: Option<&str>) -> &SslAcceptor {
        match (&self.optional, sni) {
            (Some(optional), Some(name)) if self.optional_hosts.iter().any(|h| h.matches(name)) => optional,
            _ => &self.required,
        }
    }
}

/// Whether a client certificate is demanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// Demanded and verified: a handshake without one fails.
    Required,
    /// Asked for and, when sent, verified the same way; its absence is allowed. Only for the
    /// optional hosts: a handshake for any other name fails, whatever the router decided.
    Optional,
}

impl Policy {
    /// Sessions of one policy never resume under the other.
    fn session_id_context(self) -> &'static [u8] {
        match self {
            Policy::Required => b"mtls-gateway",
            Policy::Optional => b"mtls-gateway-optional-cert",
        }
    }

    fn verify_mode(self) -> SslVerifyMode {
        match self {
            Policy::Required => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            Policy::Optional => SslVerifyMode::PEER,
        }
    }
}

/// Checks the files of a TLS section first, so that each problem names its key, then builds the
/// acceptors. Every problem found is returned.
pub fn build_acceptor(cfg: &TlsConfig) -> Result<Acceptors, Vec<Problem>> {
    let mut problems = Vec::new();
    let pairs = std::iter::once(("tls".to_string(), &cfg.certificate, &cfg.key)).chain(
        cfg.extra_certificates
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("tls.certificates[{i}]"), &c.certificate, &c.key)),
    );
    for (key, cert, private) in pairs {
        if let Err(e) = check_pair(&key, cert, private) {
            problems.push(e);
        }
    }
    if let Err(e) = read_certs(&cfg.client_ca) {
        problems.push(Problem::new("tls.client_ca", e));
    }
    if let Some(crl) = &cfg.client_crl {
        if let Err(e) = read_crls(crl) {
            problems.push(Problem::new("tls.client_crl", e));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let required = acceptor(cfg, Policy::Required).map_err(|p| vec![p])?;
    let optional = match cfg.optional_client_certificate.is_empty() {
        true => None,
        false => Some(acceptor(cfg, Policy::Optional).map_err(|p| vec![p])?),
    };
    let forwarded = Arc::new(ForwardedVerifier::new(cfg).map_err(|p| vec![p])?);
    Ok(Acceptors { required, optional, optional_hosts: cfg.optional_client_certificate.clone(), forwarded })
}

/// A certificate file and the private key that must match it; `key` names their config section.
fn check_pair(key: &str, cert: &Path, private: &Path) -> Result<(), Problem> {
    let certs = read_certs(cert).map_err(|e| Problem::new(format!("{key}.certificate"), e))?;
    let pkey = read_key(private).map_err(|e| Problem::new(format!("{key}.key"), e))?;
    if certs[0].public_key().map(|p| p.public_eq(&pkey)).unwrap_or(false) {
        return Ok(());
    }
    Err(Problem::new(
        format!("{key}.key"),
        format!("{} does not match the certificate {}", private.display(), cert.display()),
    ))
}

fn keyed(key: &str) -> impl Fn(openssl::error::ErrorStack) -> Problem + '_ {
    move |e| Problem::new(key, e)
}

/// Builds one policy's acceptor: certificate chain and key, client certificates verified against
/// the CA (and CRL), FAPI 2.0 protocol and cipher defaults, no renegotiation, ALPN, and
/// certificate selection by SNI for the extra certificates. On failure, names the key at fault.
fn acceptor(cfg: &TlsConfig, policy: Policy) -> Result<SslAcceptor, Problem> {
    let mut b = server_builder(cfg, (&cfg.certificate, &cfg.key, "tls"), policy)?;
    let mut by_name: Vec<(Vec<HostPattern>, SslContext)> = Vec::new();
    for (i, extra) in cfg.extra_certificates.iter().enumerate() {
        let key = format!("tls.certificates[{i}]");
        let ctx = server_builder(cfg, (&extra.certificate, &extra.key, &key), policy)?.build().into_context();
        by_name.push((extra.hosts.clone(), ctx));
    }
    let optional = cfg.optional_client_certificate.clone();
    if by_name.is_empty() && policy == Policy::Required {
        return Ok(b.build());
    }
    b.set_servername_callback(move |ssl, _alert| {
        let name = ssl.servername(NameType::HOST_NAME).map(str::to_string);
        if policy == Policy::Optional && !name.as_ref().is_some_and(|n| optional.iter().any(|h| h.matches(n))) {
            // Only reached if the router's reading of the ClientHello and OpenSSL's disagree.
            return Err(SniError::ALERT_FATAL);
        }
        let chosen = name.as_ref().and_then(|n| by_name.iter().find(|(hosts, _)| hosts.iter().any(|h| h.matches(n))));
        if let Some((_, ctx)) = chosen {
            // Every context of one policy verifies clients the same way and has the same session
            // id context, so switching only changes the certificate.
            ssl.set_ssl_context(ctx).map_err(|_| SniError::ALERT_FATAL)?;
        }
        Ok(())
    });
    Ok(b.build())
}

/// One certificate's acceptor builder with every shared setting applied.
fn server_builder(
    cfg: &TlsConfig,
    (cert, key, name): (&Path, &Path, &str),
    policy: Policy,
) -> Result<SslAcceptorBuilder, Problem> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(keyed("tls"))?;
    // A record's header and body in one read: the connection's socket is not buffered below TLS
    // (connection::workers moves it to its loop as a plain stream).
    b.set_read_ahead(true);
    b.set_certificate_chain_file(cert).map_err(keyed(&format!("{name}.certificate")))?;
    b.set_private_key_file(key, SslFiletype::PEM).map_err(keyed(&format!("{name}.key")))?;
    b.check_private_key().map_err(keyed(&format!("{name}.key")))?;
    let min = match cfg.min_version {
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    };
    b.set_min_proto_version(Some(min)).map_err(keyed("tls.min_version"))?;
    b.set_cipher_list(&cfg.tls12_ciphers).map_err(keyed("tls.tls12_ciphers"))?;
    b.set_ciphersuites(&cfg.tls13_ciphersuites).map_err(keyed("tls.tls13_ciphersuites"))?;
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::CIPHER_SERVER_PREFERENCE);
    client_verification(&mut b, cfg, policy)?;
    // Without a session id context, resumed sessions with client auth fail with a handshake alert.
    b.set_session_id_context(policy.session_id_context()).map_err(keyed("tls"))?;
    let protos: &'static [u8] = if cfg.http2 { b"\x02h2\x08http/1.1" } else { b"\x08http/1.1" };
    b.set_alpn_select_callback(move |_, client| select_next_proto(protos, client).ok_or(AlpnError::NOACK));
    Ok(b)
}

fn client_verification(b: &mut SslAcceptorBuilder, cfg: &TlsConfig, policy: Policy) -> Result<(), Problem> {
    b.set_ca_file(&cfg.client_ca).map_err(keyed("tls.client_ca"))?;
    let names = openssl::x509::X509Name::load_client_ca_file(&cfg.client_ca).map_err(keyed("tls.client_ca"))?;
    b.set_client_ca_list(names);
    // The callback names and counts every refusal, and applies the expired-CRL policy.
    let crl_expired = cfg.crl_expired;
    b.set_verify_callback(policy.verify_mode(), move |ok, ctx| crate::connection::verify::verify(ok, ctx, crl_expired));
    b.set_verify_depth(cfg.verify_depth);
    if let Some(crl) = &cfg.client_crl {
        let store = b.cert_store_mut();
        let lookup = store.add_lookup(X509Lookup::file()).map_err(keyed("tls.client_crl"))?;
        lookup.load_crl_file(crl, SslFiletype::PEM).map_err(keyed("tls.client_crl"))?;
        store.set_flags(X509VerifyFlags::CRL_CHECK).map_err(keyed("tls.client_crl"))?;
    }
    Ok(())
}

/// The client CA and CRL as a certificate store, to check the certificates of connections that are
/// already open against a reloaded CA or CRL (the acceptor only checks new handshakes).
pub fn verify_store(cfg: &TlsConfig) -> Result<X509Store, Problem> {
    let mut b = X509StoreBuilder::new().map_err(keyed("tls.client_ca"))?;
    for cert in read_certs(&cfg.client_ca).map_err(|e| Problem::new("tls.client_ca", e))? {
        b.add_cert(cert).map_err(keyed("tls.client_ca"))?;
    }
    if let Some(crl) = &cfg.client_crl {
        let lookup = b.add_lookup(X509Lookup::file()).map_err(keyed("tls.client_crl"))?;
        lookup.load_crl_file(crl, SslFiletype::PEM).map_err(keyed("tls.client_crl"))?;
        b.set_flags(X509VerifyFlags::CRL_CHECK).map_err(keyed("tls.client_crl"))?;
    }
    Ok(b.build())
}

/// The admin listener's TLS: TLS 1.2 or later with the FAPI suites, no renegotiation, and, when
/// `client_ca` is set, client certificates verified against it (demanded unless a bearer secret
/// may authenticate instead). A certificate from another CA fails the handshake. The admin
/// listener does its handshakes itself, with a timeout (pingora's TLS listener has none).
pub fn admin_acceptor(cfg: &AdminConfig) -> Result<SslAcceptor, Problem> {
    check_pair("admin", &cfg.certificate, &cfg.key)?;
    let mut s = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(keyed("admin"))?;
    s.set_certificate_chain_file(&cfg.certificate).map_err(keyed("admin.certificate"))?;
    s.set_private_key_file(&cfg.key, SslFiletype::PEM).map_err(keyed("admin.key"))?;
    s.check_private_key().map_err(keyed("admin.key"))?;
    s.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(keyed("admin"))?;
    s.set_cipher_list(FAPI_TLS12_CIPHERS).map_err(keyed("admin"))?;
    s.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::CIPHER_SERVER_PREFERENCE);
    s.set_session_id_context(b"mtls-gateway-admin").map_err(keyed("admin"))?;
    s.set_alpn_select_callback(|_, client| select_next_proto(b"\x08http/1.1", client).ok_or(AlpnError::NOACK));
    if let Some(ca) = &cfg.client_ca {
        read_certs(ca).map_err(|e| Problem::new("admin.client_ca", e))?;
        s.set_ca_file(ca).map_err(keyed("admin.client_ca"))?;
        let names = openssl::x509::X509Name::load_client_ca_file(ca).map_err(keyed("admin.client_ca"))?;
        s.set_client_ca_list(names);
        let demand =
            if cfg.secret_file.is_some() { SslVerifyMode::empty() } else { SslVerifyMode::FAIL_IF_NO_PEER_CERT };
        s.set_verify(SslVerifyMode::PEER | demand);
    }
    Ok(s.build())
}

/// Handshake callback that keeps the verified leaf certificate, and the SNI, for the HTTP layer,
/// with the connection's exchange counts ([`ConnectionFacts`]).
pub struct KeepClientCert;

#[async_trait]
impl TlsAccept for KeepClientCert {
    async fn handshake_complete_callback(&self, ssl: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let sni = ssl.servername(NameType::HOST_NAME).map(str::to_ascii_lowercase);
        Some(Arc::new(ConnectionFacts { sni, client: client_cert(ssl), exchanges: Arc::default(), via_hop: false }))
    }
}

/// The thumbprint and the Client-Cert value are computed here, once per connection; each request
/// then takes a reference (an Arc<ClientCert>), not a copy.
fn client_cert(ssl: &TlsRef) -> Option<Arc<ClientCert>> {
    let cert = ssl.peer_certificate()?;
    let der = cert.to_der().ok()?;
    let mut client = ClientCert::from_der(&der, subject_dn(&cert))?;
    client.not_after = crate::pki::unix(cert.not_after());
    Some(Arc::new(client))
}
