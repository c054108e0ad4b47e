//! The revocation status of client certificates, checked by the gateway itself after OpenSSL's
//! handshake verification (CA, expiry and the local `tls.client_crl` stay there): by OCSP
//! (RFC 6960, [`ocsp`]) and by CRLs fetched over HTTP(S) from the certificates' distribution
//! points or from configured URLs ([`crl`]). OpenSSL's verify callback cannot wait on the network,
//! so the check runs on the connection's task between the handshake and the first request, bounded
//! by `revocation.timeout`; a refusal is recorded on the connection's [`ClientCert`] and every
//! request on it is answered with it.
//!
//! Policy: `revoked` (by OCSP or a CRL) and OCSP `unknown` are answers and always refuse (401).
//! When no usable answer can be had (responder or CRL server unreachable, an answer that fails
//! verification or is stale), `hard` refuses (503) and `soft` serves, counts
//! (`gateway_revocation_soft_served_total`) and logs. Each mechanism that is on is asked; under
//! `hard` each must answer. An expired fetched CRL follows `tls.crl_expired`.
//!
//! The background [`RevocationService`] refreshes the fetched CRLs and checks the certificates of
//! open connections again after each CRL change and every `revocation.recheck_interval`; a
//! certificate found revoked or unknown ends its connections as a reloaded CRL does.
//!
//! [`ClientCert`]: crate::token::ClientCert

pub mod crl;
pub mod ocsp;
mod service;

pub use service::{LiveCertificates, RevocationService};

use crate::config::{CrlExpired, Problem, RevocationConfig, RevocationPolicy, TlsConfig};
use crate::pki::{issuer_dn, subject_dn};
use crate::reason::CertStatus;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509Ref, X509};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What the revocation check says of one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Good,
    Refused(CertStatus),
}

/// What one mechanism (OCSP or CRLs) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Good,
    Revoked,
    /// OCSP only: the responder does not know the certificate.
    Unknown,
    /// No usable answer (unreachable, failed verification, stale).
    Unavailable,
    /// CRLs only: the issuer's CRL is past its `nextUpdate`.
    Expired,
    /// The mechanism has nothing to say of this certificate (no responder, no CRL source).
    NotApplicable,
}

/// The client CA certificates: where issuers are looked up, and the store OCSP responses and
/// CRLs are verified against.
pub struct Anchors {
    pub certs: Vec<X509>,
    pub store: X509Store,
}

impl Anchors {
    fn read(path: &std::path::Path) -> Result<Anchors, Problem> {
        let keyed = |e: &dyn std::fmt::Display| Problem::new("tls.client_ca", e);
        let certs = crate::pki::read_certs(path).map_err(|e| keyed(&e))?;
        let mut b = X509StoreBuilder::new().map_err(|e| keyed(&e))?;
        for c in &certs {
            b.add_cert(c.clone()).map_err(|e| keyed(&e))?;
        }
        Ok(Anchors { certs, store: b.build() })
    }

    /// The certificate that issued `cert`: by name among `chain` then the anchors, and proven by
    /// the signature.
    pub fn issuer_of(&self, cert: &X509Ref, chain: &[X509]) -> Option<X509> {
        let name = cert.issuer_name();
        chain
            .iter()
            .chain(&self.certs)
            .filter(|c| c.subject_name().try_cmp(name).is_ok_and(|o| o.is_eq()))
            .find(|c| c.public_key().and_then(|k| cert.verify(&k)).unwrap_or(false))
            .cloned()
    }
}

/// The revocation checks of the process, shared by the router, the background service and
/// `/readyz`.
pub struct Revocation {
    cfg: Option<RevocationConfig>,
    crl_expired: CrlExpired,
    client_ca: PathBuf,
    anchors: arc_swap::ArcSwap<Anchors>,
    ocsp: Option<ocsp::Ocsp>,
    crls: Option<crl::Crls>,
}

impl Revocation {
    /// From the `revocation` section (off when `None`) and the client CA of `tls`.
    pub fn new(cfg: Option<&RevocationConfig>, tls: &TlsConfig) -> Result<Revocation, Problem> {
        let Some(section) = cfg else { return Ok(Revocation::disabled()) };
        let anchors = Anchors::read(&tls.client_ca)?;
        let client = |timeout: Duration| http_client(timeout).map_err(|e| Problem::new("revocation", e));
        let ocsp = match &section.ocsp {
            Some(o) => Some(ocsp::Ocsp::new(o.clone(), section, client(section.timeout)?)),
            None => None,
        };
        let crls = match &section.crl {
            Some(c) => Some(crl::Crls::new(c.clone(), section, client(section.timeout.max(CRL_FETCH_TIMEOUT))?)),
            None => None,
        };
        Ok(Revocation {
            cfg: Some(section.clone()),
            crl_expired: tls.crl_expired,
            client_ca: tls.client_ca.clone(),
            anchors: arc_swap::ArcSwap::from_pointee(anchors),
            ocsp,
            crls,
        })
    }

    /// Off: no check at all.
    pub fn disabled() -> Revocation {
        Revocation {
            cfg: None,
            crl_expired: CrlExpired::Refuse,
            client_ca: PathBuf::new(),
            #[allow(clippy::expect_used)] // allocation of an empty store; not on a request path
            anchors: arc_swap::ArcSwap::from_pointee(Anchors {
                certs: Vec::new(),
                store: X509StoreBuilder::new().expect("an empty X509 store").build(),
            }),
            ocsp: None,
            crls: None,
        }
    }

    /// Whether anything is configured (false: [`Revocation::check`] is an immediate `Good`).
    pub fn enabled(&self) -> bool {
        self.cfg.is_some()
    }

    pub fn policy(&self) -> RevocationPolicy {
        self.cfg.as_ref().map(|c| c.policy).unwrap_or_default()
    }

    /// Checks one certificate already verified against the client CA: `chain` is what the client
    /// sent after the leaf (may be empty; the issuer is then looked up among the client CA
    /// certificates). By OCSP and by CRLs from the distribution points and configured URLs, as
    /// configured. Waits on the network at most `revocation.timeout`; never blocks a thread.
    /// Unavailability under the soft policy returns `Good` (after counting and logging it).
    pub async fn check(&self, leaf: &X509, chain: &[X509]) -> Verdict {
        if !self.enabled() {
            return Verdict::Good;
        }
        let (ocsp, crl) = self.answers(leaf, chain).await;
        self.decide(leaf, ocsp, crl)
    }

    /// The check of a certificate whose connection is open: `Some` (counted and logged) only for
    /// an answer about the certificate (revoked, unknown), which ends its connections; an outage
    /// or an expired CRL never ends a live connection, and is not counted again here.
    pub async fn recheck(&self, leaf: &X509, chain: &[X509]) -> Option<CertStatus> {
        if !self.enabled() {
            return None;
        }
        let (ocsp, crl) = self.answers(leaf, chain).await;
        let status = answered(ocsp, crl)?;
        self.refuse(leaf, status);
        Some(status)
    }

    /// What OCSP and the CRLs say, asked at the same time, each within the timeout.
    async fn answers(&self, leaf: &X509, chain: &[X509]) -> (Answer, Answer) {
        let timeout = self.cfg.as_ref().map_or(Duration::ZERO, |c| c.timeout);
        let anchors = self.anchors.load_full();
        let issuer = anchors.issuer_of(leaf, chain);
        let ocsp = async {
            match (&self.ocsp, &issuer) {
                (None, _) => Answer::NotApplicable,
                (Some(o), Some(issuer)) => o.status(leaf, issuer, &anchors).await,
                (Some(_), None) => Answer::Unavailable,
            }
        };
        let crl = async {
            match &self.crls {
                None => Answer::NotApplicable,
                Some(c) => c.status(leaf, chain, &anchors).await,
            }
        };
        // Each bounds its own requests by the timeout; this bound is the client's promise.
        let bound = timeout + Duration::from_millis(250);
        let (ocsp, crl) = tokio::join!(tokio::time::timeout(bound, ocsp), tokio::time::timeout(bound, crl));
        (ocsp.unwrap_or(Answer::Unavailable), crl.unwrap_or(Answer::Unavailable))
    }

    /// One verdict from both answers: an answer about the certificate wins; then, under `hard`,
    /// any mechanism without an answer refuses.
    fn decide(&self, leaf: &X509Ref, ocsp: Answer, crl: Answer) -> Verdict {
        let refused = match (ocsp, crl) {
            (_, Answer::Expired) if self.crl_expired == CrlExpired::Refuse => {
                answered(ocsp, crl).or(Some(CertStatus::CrlExpired))
            }
            _ => answered(ocsp, crl),
        };
        if let Some(status) = refused {
            return self.refuse(leaf, status);
        }
        if crl == Answer::Expired {
            crate::metrics::crl_expired_accepted();
            report(leaf, "accepted under tls.crl_expired: keep", "fetched_crl_expired_kept");
        }
        let missing = [(ocsp, CertStatus::OcspUnavailable), (crl, CertStatus::CrlUnavailable)]
            .into_iter()
            .filter(|(a, _)| *a == Answer::Unavailable)
            .map(|(_, s)| s);
        for status in missing {
            if self.policy() == RevocationPolicy::Hard {
                return self.refuse(leaf, status);
            }
            crate::metrics::revocation_soft_served(status);
            report(leaf, "served without a revocation answer (revocation.policy: soft)", status.as_str());
        }
        Verdict::Good
    }

    fn refuse(&self, leaf: &X509Ref, status: CertStatus) -> Verdict {
        crate::metrics::revocation_refusal(status);
        report(leaf, "client certificate refused", status.as_str());
        Verdict::Refused(status)
    }

    /// Fetches the configured CRL URLs once, before serving (on a runtime of its own: the
    /// servers' do not run yet). Returns the URLs that could not be fetched, with why.
    pub fn prefetch(&self) -> Vec<String> {
        let Some(crls) = &self.crls else { return Vec::new() };
        let anchors = self.anchors.load_full();
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return vec![format!("no runtime to fetch the CRLs on: {e}")],
        };
        let timeout = self.cfg.as_ref().map_or(Duration::ZERO, |c| c.timeout).max(CRL_FETCH_TIMEOUT);
        match http_client(timeout) {
            Ok(client) => rt.block_on(crls.prefetch(&client, &anchors)),
            Err(e) => vec![format!("no HTTP client to fetch the CRLs with: {e}")],
        }
    }

    /// The client CA file changed: issuers and signatures are checked against the new one.
    fn reread_anchors(&self) {
        match Anchors::read(&self.client_ca) {
            Ok(a) => self.anchors.store(Arc::new(a)),
            Err(p) => {
                log::error!(target: "tls", "revocation: {}: keeping the previous client CA: {}", p.key, p.message)
            }
        }
    }

    /// Whether this replica can serve as far as revocation goes: under `hard`, every configured
    /// CRL URL has been fetched once (until then every certificate without a CRL is refused).
    pub fn ready(&self) -> bool {
        match (&self.crls, self.policy()) {
            (Some(c), RevocationPolicy::Hard) => c.all_configured_fetched(),
            _ => true,
        }
    }

    /// What `/readyz` reports: the policy, each OCSP responder met and each CRL source.
    pub fn readiness(&self) -> serde_json::Value {
        let Some(cfg) = &self.cfg else { return serde_json::Value::Null };
        let policy = match cfg.policy {
            RevocationPolicy::Hard => "hard",
            RevocationPolicy::Soft => "soft",
        };
        serde_json::json!({
            "policy": policy,
            "ready": self.ready(),
            "ocsp_responders": self.ocsp.as_ref().map(ocsp::Ocsp::states),
            "crls": self.crls.as_ref().map(crl::Crls::states),
        })
    }
}

/// The refusal an answer about the certificate gives: revoked by either, then unknown.
fn answered(ocsp: Answer, crl: Answer) -> Option<CertStatus> {
    match (ocsp, crl) {
        (Answer::Revoked, _) => Some(CertStatus::OcspRevoked),
        (_, Answer::Revoked) => Some(CertStatus::CrlRevoked),
        (Answer::Unknown, _) => Some(CertStatus::OcspUnknown),
        _ => None,
    }
}

/// A CRL can be large: its fetch gets at least this, more than one connection waits for it.
const CRL_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The client responders and CRL servers are asked with: no proxy from the environment (as the
/// gateway's other clients), a few redirects (CRL servers move files), everything within `timeout`.
fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::limited(3))
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
}

/// How often one reason is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Logs a refusal or a soft pass at WARN, at most once per reason and interval, with the
/// certificate's names (never anything secret).
fn report(cert: &X509Ref, what: &str, reason: &'static str) {
    // The reasons are a handful of fixed words: the map stays small.
    /// Per reason: when its last line was written, and how many were held back since.
    type Last = HashMap<&'static str, (Option<Instant>, u64)>;
    static LAST: LazyLock<Mutex<Last>> = LazyLock::new(Mutex::default);
    let suppressed = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let entry = last.entry(reason).or_insert((None, 0));
        if entry.0.is_some_and(|at| at.elapsed() < LOG_INTERVAL) {
            entry.1 += 1;
            return;
        }
        std::mem::replace(entry, (Some(Instant::now()), 0)).1
    };
    log::warn!(
        target: "tls",
        "{what}: reason={reason} subject=\"{}\" issuer=\"{}\" also_since_last_line={suppressed}",
        subject_dn(cert),
        issuer_dn(cert)
    );
}

/// Seconds since the epoch.
fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Reads a response body up to `max` bytes.
async fn body(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, FetchError> {
    let status = resp.status();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > max {
            return Err(FetchError::TooLarge(max));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Why a responder or a CRL server gave nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Http(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer over {0} bytes")]
    TooLarge(usize),
    #[error("the answer does not parse: {0}")]
    Parse(String),
    #[error("the answer fails verification: {0}")]
    Verify(String),
    #[error("the answer is stale or not yet valid")]
    Stale,
    #[error("no issuer certificate for it among the client CA certificates")]
    NoIssuer,
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        FetchError::Http(crate::pki::error_chain(&e))
    }
}

impl FetchError {
    /// Whether the answer came but is not usable, rather than no answer at all.
    pub fn is_invalid(&self) -> bool {
        matches!(self, FetchError::Parse(_) | FetchError::Verify(_) | FetchError::Stale | FetchError::NoIssuer)
    }
}

/// What `/readyz` says of one responder or CRL server.
#[derive(Debug, Clone, Default)]
pub struct SourceHealth {
    pub last_ok: Option<SystemTime>,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
}

impl SourceHealth {
    fn ok(&mut self) {
        self.last_ok = Some(SystemTime::now());
    }

    fn failed(&mut self, e: &FetchError) {
        self.last_error = Some(e.to_string());
        self.last_error_at = Some(SystemTime::now());
    }

    fn json(&self) -> serde_json::Value {
        let ago = |t: Option<SystemTime>| t.and_then(|t| t.elapsed().ok()).map(|d| d.as_millis() as u64);
        let reachable = match (self.last_ok, self.last_error_at) {
            (Some(ok), Some(err)) => ok >= err,
            (Some(_), None) => true,
            _ => false,
        };
        serde_json::json!({
            "reachable": reachable,
            "last_ok_ms_ago": ago(self.last_ok),
            "last_error": self.last_error,
            "last_error_ms_ago": ago(self.last_error_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OcspConfig;
    use Answer::*;

    fn revocation(policy: RevocationPolicy, crl_expired: CrlExpired) -> Revocation {
        let ocsp = OcspConfig {
            responder: None,
            override_responder: false,
            max_cache: Duration::from_secs(60),
            min_cache: Duration::from_secs(60),
            leeway: Duration::from_secs(60),
            cache_entries: 10,
        };
        let cfg = RevocationConfig {
            policy,
            timeout: Duration::from_secs(1),
            failure_cache: Duration::from_secs(1),
            recheck_interval: Duration::from_secs(60),
            ocsp: Some(ocsp),
            crl: None,
        };
        Revocation { cfg: Some(cfg), crl_expired, ..Revocation::disabled() }
    }

    fn leaf() -> X509 {
        let key = openssl::pkey::PKey::ec_gen("prime256v1").unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "unit").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256()).unwrap();
        b.build()
    }

    #[test]
    fn answers_refuse_under_both_policies_outages_only_under_hard() {
        let leaf = leaf();
        for policy in [RevocationPolicy::Hard, RevocationPolicy::Soft] {
            let r = revocation(policy, CrlExpired::Refuse);
            assert_eq!(r.decide(&leaf, Revoked, Good), Verdict::Refused(CertStatus::OcspRevoked));
            assert_eq!(r.decide(&leaf, Good, Revoked), Verdict::Refused(CertStatus::CrlRevoked));
            assert_eq!(r.decide(&leaf, Unknown, NotApplicable), Verdict::Refused(CertStatus::OcspUnknown));
            assert_eq!(r.decide(&leaf, Unavailable, Revoked), Verdict::Refused(CertStatus::CrlRevoked));
            assert_eq!(r.decide(&leaf, Good, NotApplicable), Verdict::Good);
            assert_eq!(r.decide(&leaf, NotApplicable, NotApplicable), Verdict::Good);
        }
        let (hard, soft) = (
            revocation(RevocationPolicy::Hard, CrlExpired::Refuse),
            revocation(RevocationPolicy::Soft, CrlExpired::Refuse),
        );
        assert_eq!(hard.decide(&leaf, Unavailable, Good), Verdict::Refused(CertStatus::OcspUnavailable));
        assert_eq!(hard.decide(&leaf, Good, Unavailable), Verdict::Refused(CertStatus::CrlUnavailable));
        assert_eq!(soft.decide(&leaf, Unavailable, Unavailable), Verdict::Good);
    }

    #[test]
    fn an_expired_fetched_crl_follows_tls_crl_expired() {
        let leaf = leaf();
        let refuse = revocation(RevocationPolicy::Soft, CrlExpired::Refuse);
        assert_eq!(refuse.decide(&leaf, Good, Expired), Verdict::Refused(CertStatus::CrlExpired));
        assert_eq!(refuse.decide(&leaf, Revoked, Expired), Verdict::Refused(CertStatus::OcspRevoked));
        let keep = revocation(RevocationPolicy::Hard, CrlExpired::Keep);
        assert_eq!(keep.decide(&leaf, Good, Expired), Verdict::Good);
    }

    #[test]
    fn a_disabled_check_is_good_at_once() {
        let r = Revocation::disabled();
        assert!(!r.enabled());
        let verdict = tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(r.check(&leaf(), &[]));
        assert_eq!(verdict, Verdict::Good);
    }
}
