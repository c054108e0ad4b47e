//! Verifying a client certificate that did not come in a handshake: the one a trusted hop forwards
//! in a header. The gateway never relies on the hop's verification: it checks the certificate
//! against the same client CA, CRL file, verify depth, client-authentication purpose and expired-CRL
//! policy as its own acceptor does, and names the reason of a refusal with the handshake's words.
//!
//! A verifier is built with each acceptor (`tls::build_acceptor`), so a reloaded CA or CRL takes
//! effect on the hop's next request, and its cache of verified certificates starts empty then.

use crate::config::{CrlExpired, Problem, TlsConfig};
use crate::connection::verify::{reason, CRL_HAS_EXPIRED};
use crate::pki::{read_certs, read_crls, subject_dn};
use crate::reason::HandshakeRefusal;
use crate::token::ClientCert;
use openssl::ssl::SslFiletype;
use openssl::stack::Stack;
use openssl::x509::store::{X509Lookup, X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{CrlStatus, X509Crl, X509PurposeId, X509StoreContext, X509};
use std::sync::Arc;
use std::time::Duration;

/// How many verified certificates are kept, and for how long: a hop sends the same few partner
/// certificates on every request, and a signature check per request would cost more than the
/// request. Revocation by OCSP or fetched CRLs is asked again per request (it has its own cache).
const CACHE_ENTRIES: u64 = 10_000;
const CACHE_TTL: Duration = Duration::from_secs(300);

/// A forwarded certificate the gateway verified: its facts for the request layer, and the
/// certificates themselves for the revocation checks.
pub struct Verified {
    pub client: Arc<ClientCert>,
    pub leaf: X509,
    pub chain: Vec<X509>,
}

/// The outcome of one forwarded certificate, cached by the SHA-256 of what the hop sent.
pub type Outcome = Result<Arc<Verified>, HandshakeRefusal>;

pub struct ForwardedVerifier {
    /// The client CA, with the CRL file (and `CRL_CHECK`) when one is configured.
    store: X509Store,
    /// The client CA alone, for `crl_expired: keep`.
    ca_only: X509Store,
    crls: Vec<X509Crl>,
    crl_expired: CrlExpired,
    cache: moka::sync::Cache<[u8; 32], Outcome>,
}

fn keyed(key: &str) -> impl Fn(openssl::error::ErrorStack) -> Problem + '_ {
    move |e| Problem::new(key, e)
}

/// A store of the client CA (and the CRL file) verifying as the acceptor does.
fn store(cfg: &TlsConfig, with_crl: bool) -> Result<X509Store, Problem> {
    let mut b = X509StoreBuilder::new().map_err(keyed("tls.client_ca"))?;
    for cert in read_certs(&cfg.client_ca).map_err(|e| Problem::new("tls.client_ca", e))? {
        b.add_cert(cert).map_err(keyed("tls.client_ca"))?;
    }
    b.set_purpose(X509PurposeId::SSL_CLIENT).map_err(keyed("tls.client_ca"))?;
    let mut param = openssl::x509::verify::X509VerifyParam::new().map_err(keyed("tls.verify_depth"))?;
    param.set_depth(cfg.verify_depth as i32);
    b.set_param(&param).map_err(keyed("tls.verify_depth"))?;
    if let (true, Some(path)) = (with_crl, &cfg.client_crl) {
        let lookup = b.add_lookup(X509Lookup::file()).map_err(keyed("tls.client_crl"))?;
        lookup.load_crl_file(path, SslFiletype::PEM).map_err(keyed("tls.client_crl"))?;
        b.set_flags(X509VerifyFlags::CRL_CHECK).map_err(keyed("tls.client_crl"))?;
    }
    Ok(b.build())
}

impl ForwardedVerifier {
    pub fn new(cfg: &TlsConfig) -> Result<Self, Problem> {
        let crls = match &cfg.client_crl {
            Some(path) => read_crls(path).map_err(|e| Problem::new("tls.client_crl", e))?,
            None => Vec::new(),
        };
        Ok(ForwardedVerifier {
            store: store(cfg, true)?,
            ca_only: store(cfg, false)?,
            crls,
            crl_expired: cfg.crl_expired,
            cache: moka::sync::Cache::builder().max_capacity(CACHE_ENTRIES).time_to_live(CACHE_TTL).build(),
        })
    }

    /// The verified certificate for what the hop sent (`key`: its SHA-256), parsing it with `parse`
    /// only when it is not cached. `None`: `parse` found no certificate.
    pub fn verified(&self, key: [u8; 32], parse: impl FnOnce() -> Option<(X509, Vec<X509>)>) -> Option<Outcome> {
        self.verified_at(key, parse, now())
    }

    /// [`Self::verified`] at `now` (seconds since the epoch) for what the cache holds.
    fn verified_at(
        &self,
        key: [u8; 32],
        parse: impl FnOnce() -> Option<(X509, Vec<X509>)>,
        now: i64,
    ) -> Option<Outcome> {
        if let Some(hit) = self.cache.get(&key) {
            // A certificate that expired since it was verified is not served from the cache.
            return Some(match hit {
                Ok(v) if v.client.not_after.is_some_and(|t| t <= now) => Err(HandshakeRefusal::Expired),
                other => other,
            });
        }
        let (leaf, chain) = parse()?;
        let outcome = self.verify(&leaf, &chain).and_then(|()| {
            let der = leaf.to_der().map_err(|_| HandshakeRefusal::InvalidCertificate)?;
            let mut client =
                ClientCert::from_der(&der, subject_dn(&leaf)).ok_or(HandshakeRefusal::InvalidCertificate)?;
            client.not_after = crate::pki::unix(leaf.not_after());
            Ok(Arc::new(Verified { client: Arc::new(client), leaf, chain }))
        });
        self.cache.insert(key, outcome.clone());
        Some(outcome)
    }

    /// The acceptor's verdict on `leaf` sent with `chain`, with the expired-CRL policy applied.
    pub fn verify(&self, leaf: &X509, chain: &[X509]) -> Result<(), HandshakeRefusal> {
        match run(&self.store, leaf, chain) {
            Ok(()) => Ok(()),
            Err(code) if code == CRL_HAS_EXPIRED && self.crl_expired == CrlExpired::Keep => {
                run(&self.ca_only, leaf, chain).map_err(reason)?;
                if self.listed(leaf) {
                    return Err(HandshakeRefusal::Revoked);
                }
                crate::metrics::crl_expired_accepted();
                Ok(())
            }
            Err(code) => Err(reason(code)),
        }
    }

    /// Whether a CRL of the file (expired or not) lists `leaf` as revoked.
    fn listed(&self, leaf: &X509) -> bool {
        self.crls.iter().any(|crl| matches!(crl.get_by_cert(leaf), CrlStatus::Revoked(_)))
    }
}

fn now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map(|d| d.as_secs() as i64).unwrap_or(i64::MAX)
}

/// OpenSSL's verification of `leaf` with `chain` against `store`: the error code when it fails
/// (a failure to even run it is an invalid certificate: fail closed).
fn run(store: &X509Store, leaf: &X509, chain: &[X509]) -> Result<(), i32> {
    const INVALID: i32 = -1;
    let mut stack = Stack::new().map_err(|_| INVALID)?;
    for c in chain {
        stack.push(c.clone()).map_err(|_| INVALID)?;
    }
    let mut ctx = X509StoreContext::new().map_err(|_| INVALID)?;
    let verdict = ctx.init(store, leaf, &stack, |c| Ok(if c.verify_cert()? { None } else { Some(c.error().as_raw()) }));
    match verdict {
        Ok(None) => Ok(()),
        Ok(Some(code)) => Err(code),
        Err(_) => Err(INVALID),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_files::{local, set};
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::BasicConstraints;
    use openssl::x509::X509NameBuilder;

    fn key() -> PKey<Private> {
        PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap()).unwrap()
    }

    fn cert(cn: &str, key: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>, ca: bool) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap()).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map_or(&*name, |(c, _)| c.subject_name())).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
        if ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
        }
        b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256()).unwrap();
        b.build()
    }

    /// The routes' filters are the request layer's to check: taken as written.
    struct AnyFilters;

    impl crate::config::FilterRules for AnyFilters {
        fn check(
            &self,
            _: &str,
            _: &std::collections::BTreeSet<String>,
        ) -> Result<Vec<crate::config::RouteFilters>, serde_yaml::Error> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn a_cached_certificate_that_expired_since_is_refused() {
        let (ca_key, leaf_key) = (key(), key());
        let ca = cert("test CA", &ca_key, None, true);
        let leaf = cert("partner", &leaf_key, Some((&ca, &ca_key)), false);
        let (dir, path) = local(|d| set(d, &["tls", "client_crl"], serde_yaml::Value::Null));
        std::fs::write(dir.path().join("certs/root.pem"), ca.to_pem().unwrap()).unwrap();
        let cfg = crate::config::load(&path, &AnyFilters).unwrap_or_else(|p| panic!("{:?}", p.lines()));
        let verifier = ForwardedVerifier::new(&cfg.tls).unwrap();
        let first = verifier.verified([1; 32], || Some((leaf.clone(), Vec::new()))).unwrap();
        let not_after = first.as_ref().map(|v| v.client.not_after).unwrap().unwrap();
        let never = || -> Option<(X509, Vec<X509>)> { panic!("served from the cache") };
        assert!(verifier.verified_at([1; 32], never, not_after - 1).unwrap().is_ok());
        let later = verifier.verified_at([1; 32], never, not_after).unwrap();
        assert!(matches!(later, Err(HandshakeRefusal::Expired)));
        // Another CA's certificate is refused, and the refusal is what is cached.
        let stranger = cert("stranger", &leaf_key, None, false);
        assert!(verifier.verified([2; 32], || Some((stranger, Vec::new()))).unwrap().is_err());
    }
}
