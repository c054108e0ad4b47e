//! The trusted hop's door: a TLS listener of its own for an L7 load balancer (or API firewall)
//! that terminates the partners' TLS and forwards each partner's certificate in a header.
//!
//! Trust is given to the connection, never to a header: only peers in `trusted_hop.sources` may
//! connect (others are cut before the handshake), and with `trusted_hop.hop_ca` the hop must
//! present a certificate of that CA with one of `trusted_hop.hop_subjects`. The connection's facts
//! say `via_hop`; the request layer then reads the forwarded certificate and verifies it itself
//! (`request::forwarded`). On every other connection the header is stripped like any identity
//! header, so a partner who writes it directly gains nothing.

use crate::config::{Problem, TrustedHopConfig, FAPI_TLS12_CIPHERS};
use crate::pki::{read_certs, subject_dn};
use crate::token::ConnectionFacts;
use async_trait::async_trait;
use openssl::ssl::{
    select_next_proto, AlpnError, SslAcceptor, SslFiletype, SslMethod, SslOptions, SslRef, SslVerifyMode, SslVersion,
};
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use std::any::Any;
use std::sync::Arc;

/// The hop listener's configuration and its TLS acceptor (built once: the section is fixed for
/// the process, see `reload::FIXED_SETTINGS`).
pub struct HopDoor {
    pub cfg: TrustedHopConfig,
    pub acceptor: SslAcceptor,
}

impl HopDoor {
    pub fn new(cfg: TrustedHopConfig) -> Result<Self, Problem> {
        let acceptor = acceptor(&cfg)?;
        Ok(HopDoor { cfg, acceptor })
    }

    /// Whether the hop's certificate (when `hop_ca` demands one) has a trusted subject. OpenSSL
    /// already verified it against `hop_ca`.
    pub fn trusts_certificate(&self, ssl: &SslRef) -> bool {
        if self.cfg.hop_ca.is_none() {
            return true;
        }
        let Some(cert) = ssl.peer_certificate() else { return false };
        let subject = subject_dn(&cert);
        self.cfg.hop_subjects.iter().any(|s| s.eq_ignore_ascii_case(&subject))
    }
}

fn keyed(key: &str) -> impl Fn(openssl::error::ErrorStack) -> Problem + '_ {
    move |e| Problem::new(key, e)
}

/// TLS 1.2 or later with the FAPI suites, no renegotiation, HTTP/2 and HTTP/1.1; with `hop_ca`, a
/// hop certificate from it demanded.
fn acceptor(cfg: &TrustedHopConfig) -> Result<SslAcceptor, Problem> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(keyed("trusted_hop"))?;
    b.set_read_ahead(true);
    b.set_certificate_chain_file(&cfg.certificate).map_err(keyed("trusted_hop.certificate"))?;
    b.set_private_key_file(&cfg.key, SslFiletype::PEM).map_err(keyed("trusted_hop.key"))?;
    b.check_private_key().map_err(keyed("trusted_hop.key"))?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(keyed("trusted_hop"))?;
    b.set_cipher_list(FAPI_TLS12_CIPHERS).map_err(keyed("trusted_hop"))?;
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::CIPHER_SERVER_PREFERENCE);
    b.set_session_id_context(b"mtls-gateway-hop").map_err(keyed("trusted_hop"))?;
    b.set_alpn_select_callback(|_, client| select_next_proto(b"\x02h2\x08http/1.1", client).ok_or(AlpnError::NOACK));
    if let Some(ca) = &cfg.hop_ca {
        read_certs(ca).map_err(|e| Problem::new("trusted_hop.hop_ca", e))?;
        b.set_ca_file(ca).map_err(keyed("trusted_hop.hop_ca"))?;
        let names = openssl::x509::X509Name::load_client_ca_file(ca).map_err(keyed("trusted_hop.hop_ca"))?;
        b.set_client_ca_list(names);
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(b.build())
}

/// Handshake callback of the hop's connections: no client certificate of their own (the hop's is
/// not a partner's), marked `via_hop`.
pub struct KeepHopFacts;

#[async_trait]
impl TlsAccept for KeepHopFacts {
    async fn handshake_complete_callback(&self, _ssl: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(ConnectionFacts { sni: None, client: None, exchanges: Arc::default(), via_hop: true }))
    }
}
