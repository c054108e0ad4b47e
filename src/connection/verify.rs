//! Why a client certificate was refused, said out loud. OpenSSL refuses a handshake with a bare
//! alert; without this, an expired CRL (a publisher that stopped) refused every partner and
//! nothing in the log or the metrics said why.
//!
//! The acceptor's verify callback names the reason of each refusal (`expired`, `revoked`,
//! `unknown_ca`, `crl_expired`, `crl_missing`, ...), counts it in
//! `gateway_handshake_refusals_total{reason}` and logs it at most once per reason and minute,
//! with the subject and issuer of the certificate at fault. It also applies the expired-CRL
//! policy: `tls.crl_expired: refuse` keeps OpenSSL's answer (every client of that issuer is
//! refused, now loudly), `keep` accepts certificates that the expired CRL does not list and
//! raises the alarm on each.

use crate::config::CrlExpired;
use crate::connection::limits::Throttle;
use crate::pki::{issuer_dn, subject_dn};
use crate::reason::HandshakeRefusal;
use openssl::x509::{X509Ref, X509StoreContextRef};
use std::sync::LazyLock;
use std::time::Duration;

/// OpenSSL's `X509_V_ERR_*` codes the reasons are told apart by (stable across versions).
const UNABLE_TO_GET_ISSUER_CERT: i32 = 2;
const UNABLE_TO_GET_CRL: i32 = 3;
const CERT_NOT_YET_VALID: i32 = 9;
const CERT_HAS_EXPIRED: i32 = 10;
const CRL_NOT_YET_VALID: i32 = 11;
pub const CRL_HAS_EXPIRED: i32 = 12;
const DEPTH_ZERO_SELF_SIGNED_CERT: i32 = 18;
const SELF_SIGNED_CERT_IN_CHAIN: i32 = 19;
const UNABLE_TO_GET_ISSUER_CERT_LOCALLY: i32 = 20;
const UNABLE_TO_VERIFY_LEAF_SIGNATURE: i32 = 21;
const CERT_CHAIN_TOO_LONG: i32 = 22;
const CERT_REVOKED: i32 = 23;

/// How often one reason is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The reason name of an OpenSSL verification error.
pub fn reason(code: i32) -> HandshakeRefusal {
    match code {
        CERT_HAS_EXPIRED => HandshakeRefusal::Expired,
        CERT_NOT_YET_VALID => HandshakeRefusal::NotYetValid,
        CERT_REVOKED => HandshakeRefusal::Revoked,
        CRL_HAS_EXPIRED => HandshakeRefusal::CrlExpired,
        CRL_NOT_YET_VALID => HandshakeRefusal::CrlNotYetValid,
        UNABLE_TO_GET_CRL => HandshakeRefusal::CrlMissing,
        UNABLE_TO_GET_ISSUER_CERT
        | UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | DEPTH_ZERO_SELF_SIGNED_CERT
        | SELF_SIGNED_CERT_IN_CHAIN
        | UNABLE_TO_VERIFY_LEAF_SIGNATURE => HandshakeRefusal::UnknownCa,
        CERT_CHAIN_TOO_LONG => HandshakeRefusal::ChainTooLong,
        _ => HandshakeRefusal::InvalidCertificate,
    }
}

/// The verify callback of the acceptor: `preverify` is OpenSSL's own verdict for the certificate
/// at hand. Returns the verdict to use.
pub fn verify(preverify: bool, ctx: &mut X509StoreContextRef, policy: CrlExpired) -> bool {
    if preverify {
        return true;
    }
    let code = ctx.error().as_raw();
    let reason = reason(code);
    let cert = ctx.current_cert();
    if code == CRL_HAS_EXPIRED && policy == CrlExpired::Keep {
        crate::metrics::crl_expired_accepted();
        report(None, cert, "accepted under tls.crl_expired: keep");
        return true;
    }
    crate::metrics::handshake_refusal(reason);
    report(Some(reason), cert, "handshake refused");
    false
}

/// Logs a refusal (`None`: a certificate kept under an expired CRL) at most once per reason and
/// interval, with the certificate's names.
fn report(refusal: Option<HandshakeRefusal>, cert: Option<&X509Ref>, what: &str) {
    let reason = refusal.map_or(HandshakeRefusal::CRL_EXPIRED_KEPT, HandshakeRefusal::as_str);
    static THROTTLE: LazyLock<Throttle<&'static str>> = LazyLock::new(|| Throttle::new(LOG_INTERVAL));
    let Some(suppressed) = THROTTLE.admit(reason) else { return };
    let subject = cert.map(subject_dn).unwrap_or_else(|| "-".into());
    let issuer = cert.map(issuer_dn).unwrap_or_else(|| "-".into());
    let line = format!(
        "client certificate {what}: reason={reason} subject=\"{subject}\" issuer=\"{issuer}\" also_since_last_line={suppressed}"
    );
    use HandshakeRefusal::{CrlExpired, CrlMissing, CrlNotYetValid};
    match refusal {
        // Every client of the issuer meets these: the CRL bundle needs attention, not the partner.
        None | Some(CrlExpired | CrlMissing | CrlNotYetValid) => {
            log::error!(target: "tls", "{line}")
        }
        _ => log::warn!(target: "tls", "{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_the_issue_names_has_its_code() {
        assert_eq!(reason(CERT_HAS_EXPIRED).as_str(), "expired");
        assert_eq!(reason(CERT_REVOKED).as_str(), "revoked");
        assert_eq!(reason(UNABLE_TO_GET_ISSUER_CERT_LOCALLY).as_str(), "unknown_ca");
        assert_eq!(reason(CRL_HAS_EXPIRED).as_str(), "crl_expired");
        assert_eq!(reason(UNABLE_TO_GET_CRL).as_str(), "crl_missing");
        assert_eq!(reason(9999).as_str(), "invalid_certificate");
    }
}
