//! CRLs fetched over HTTP(S): from `revocation.crl.urls` (before serving, then in the
//! background) and from the distribution points of the certificates met (the first time one is met
//! the client waits for it, up to `revocation.timeout`; concurrent waiters share one fetch). DER
//! or PEM. A CRL is used only once its signature verifies against the certificate that issued it
//! (found by the CRL's issuer name among the client CA certificates and the client's chain): a
//! root and issuing CA hierarchy works with both CAs in `tls.client_ca`. The last good CRL of a
//! source is kept while fetches fail; the background service fetches each source again every
//! `refresh_interval`, sooner when its `nextUpdate` comes.

use super::{Anchors, Answer, FetchError, SourceHealth};
use crate::config::{CrlConfig, RevocationConfig};
use crate::pki::name_dn;
use openssl::hash::MessageDigest;
use openssl::x509::{CrlStatus, X509Crl, X509Ref, X509};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;

/// The most distribution-point sources remembered: past it new ones are fetched but not kept.
const MAX_SOURCES: usize = 1024;

/// How a CRL fetch ended: the `result` label of `gateway_crl_fetches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlFetch {
    /// A verified CRL, new or the same as before.
    Ok,
    /// No answer: unreachable, an HTTP error, too large.
    Failed,
    /// An answer that does not parse or whose signature does not verify.
    Invalid,
}

impl CrlFetch {
    pub const ALL: &'static [CrlFetch] = &[CrlFetch::Ok, CrlFetch::Failed, CrlFetch::Invalid];

    pub const fn as_str(self) -> &'static str {
        match self {
            CrlFetch::Ok => "ok",
            CrlFetch::Failed => "failed",
            CrlFetch::Invalid => "invalid",
        }
    }
}

/// A verified CRL.
pub struct Fetched {
    crl: X509Crl,
    /// The certificate the signature verified with: later fetches of the same URL are verified
    /// with it too (it may be an issuing CA the client sent rather than one of `tls.client_ca`).
    signer: X509,
    issuer: String,
    next_update: Option<i64>,
    /// SHA-256 of the DER, to tell a new CRL from the same one fetched again.
    digest: Vec<u8>,
}

impl Fetched {
    fn expired(&self) -> bool {
        self.next_update.is_some_and(|n| n <= super::now())
    }
}

/// One URL a CRL is fetched from.
struct Source {
    url: Url,
    /// From `revocation.crl.urls` (else from a certificate's distribution point).
    configured: bool,
    state: Mutex<SourceState>,
    /// Held while a fetch runs: concurrent waiters for the first fetch share it.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SourceState {
    crl: Option<Arc<Fetched>>,
    health: SourceHealth,
    last_attempt: Option<Instant>,
    last_failed: bool,
}

pub struct Crls {
    cfg: CrlConfig,
    failure_cache: Duration,
    client: reqwest::Client,
    sources: Mutex<BTreeMap<String, Arc<Source>>>,
}

impl Crls {
    pub(super) fn new(cfg: CrlConfig, section: &RevocationConfig, client: reqwest::Client) -> Crls {
        let sources = cfg.urls.iter().map(|u| (u.to_string(), Arc::new(Source::new(u.clone(), true)))).collect();
        Crls { cfg, failure_cache: section.failure_cache, client, sources: Mutex::new(sources) }
    }

    fn sources(&self) -> Vec<Arc<Source>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The source of a distribution point, made the first time it is met.
    fn source(&self, url: &Url) -> Arc<Source> {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sources.get(url.as_str()) {
            return s.clone();
        }
        let s = Arc::new(Source::new(url.clone(), false));
        if sources.len() < MAX_SOURCES {
            sources.insert(url.to_string(), s.clone());
        }
        s
    }

    /// The status of `leaf` by the CRLs of its issuer.
    pub(super) async fn status(&self, leaf: &X509, chain: &[X509], anchors: &Anchors) -> Answer {
        let mut crls = Vec::new();
        let mut relevant = false;
        if self.cfg.distribution_points {
            for url in distribution_points(leaf) {
                relevant = true;
                let source = self.source(&url);
                // An indirect CRL (another issuer's) at a distribution point says nothing here.
                if let Some(f) = self.first_fetch(&source, chain, anchors).await.filter(|f| issued_by(f, leaf)) {
                    crls.push(f);
                }
            }
        }
        for s in self.sources().iter().filter(|s| s.configured) {
            let state = s.state.lock().unwrap_or_else(|p| p.into_inner());
            match &state.crl {
                Some(f) if issued_by(f, leaf) => crls.push(f.clone()),
                Some(_) => {}
                // Not fetched yet: it may be this issuer's.
                None => relevant = true,
            }
        }
        if crls.is_empty() {
            return if relevant { Answer::Unavailable } else { Answer::NotApplicable };
        }
        let revoked = crls.iter().any(|f| matches!(f.crl.get_by_serial(leaf.serial_number()), CrlStatus::Revoked(_)));
        match (revoked, crls.iter().all(|f| f.expired())) {
            (true, _) => Answer::Revoked,
            (false, true) => Answer::Expired,
            (false, false) => Answer::Good,
        }
    }

    /// The CRL of a source, fetched now (the client waiting) if it never was and no recent
    /// attempt failed. The fetch runs on a task of its own, so that it completes for the next
    /// client even when this one stops waiting.
    async fn first_fetch(&self, source: &Arc<Source>, chain: &[X509], anchors: &Anchors) -> Option<Arc<Fetched>> {
        if let Some(f) = source.current() {
            return Some(f);
        }
        let _turn = source.fetching.lock().await;
        if let Some(f) = source.current() {
            return Some(f);
        }
        if source.failed_recently(self.failure_cache) {
            return None;
        }
        let (client, max, s) = (self.client.clone(), self.cfg.max_bytes, source.clone());
        let candidates: Vec<X509> = chain.iter().chain(&anchors.certs).cloned().collect();
        let task = tokio::spawn(async move { s.fetch(&client, max, &candidates).await });
        task.await.ok().flatten().map(|(f, _)| f)
    }

    /// Fetches every configured URL once; the problems, one line each.
    /// `client` is one of its own: this runs on a runtime that ends before serving, and pooled
    /// connections must not outlive it.
    pub(super) async fn prefetch(&self, client: &reqwest::Client, anchors: &Anchors) -> Vec<String> {
        let mut problems = Vec::new();
        for s in self.sources() {
            if s.fetch(client, self.cfg.max_bytes, &anchors.certs).await.is_none() {
                let why = s.state.lock().map(|st| st.health.last_error.clone()).ok().flatten();
                problems.push(format!("revocation.crl: {}: {}", s.url, why.unwrap_or_default()));
            }
        }
        problems
    }

    /// Fetches the sources that are due: every `refresh_interval`, at `nextUpdate`, and after a
    /// failure every `failure_cache`. True when a CRL changed.
    pub(super) async fn refresh(&self, anchors: &Anchors) -> bool {
        let mut changed = false;
        for s in self.sources().into_iter().filter(|s| s.due(self.cfg.refresh_interval, self.failure_cache)) {
            let _turn = s.fetching.lock().await;
            let signer = s.current().map(|f| f.signer.clone());
            let candidates: Vec<X509> = anchors.certs.iter().cloned().chain(signer).collect();
            if let Some((_, new)) = s.fetch(&self.client, self.cfg.max_bytes, &candidates).await {
                changed |= new;
            }
        }
        changed
    }

    pub(super) fn all_configured_fetched(&self) -> bool {
        self.sources().iter().filter(|s| s.configured).all(|s| s.current().is_some())
    }

    /// Each source and its CRL, for `/readyz`; also sets the next-update gauges.
    pub(super) fn states(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .sources()
            .iter()
            .map(|s| {
                let st = s.state.lock().unwrap_or_else(|p| p.into_inner());
                let mut v = st.health.json();
                v["url"] = s.url.to_string().into();
                v["configured"] = s.configured.into();
                if let Some(f) = &st.crl {
                    v["issuer"] = f.issuer.clone().into();
                    v["next_update"] = f.next_update.into();
                    v["expired"] = f.expired().into();
                }
                v
            })
            .collect();
        serde_json::Value::Array(list)
    }
}

impl Source {
    fn new(url: Url, configured: bool) -> Source {
        Source { url, configured, state: Mutex::default(), fetching: tokio::sync::Mutex::new(()) }
    }

    fn current(&self) -> Option<Arc<Fetched>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).crl.clone()
    }

    fn failed_recently(&self, failure_cache: Duration) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last_failed && st.last_attempt.is_some_and(|at| at.elapsed() < failure_cache)
    }

    fn due(&self, refresh: Duration, failure_cache: Duration) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(at) = st.last_attempt else { return true };
        let wait = if st.last_failed { failure_cache.max(Duration::from_secs(1)) } else { refresh };
        at.elapsed() >= wait || st.crl.as_ref().is_some_and(|f| f.expired() && at.elapsed() >= failure_cache)
    }

    /// Fetches and verifies; keeps the result if good, the last good CRL otherwise. `Some((crl,
    /// changed))` on success.
    async fn fetch(&self, client: &reqwest::Client, max: usize, candidates: &[X509]) -> Option<(Arc<Fetched>, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).last_attempt = Some(Instant::now());
        let got = async {
            let resp = client.get(self.url.clone()).send().await?;
            let body = super::body(resp, max).await?;
            verify(&body, candidates)
        }
        .await;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last_attempt = Some(Instant::now());
        match got {
            Ok(f) => {
                crate::metrics::crl_fetch(CrlFetch::Ok);
                crate::metrics::fetched_crl_next_update(self.url.as_str(), f.next_update);
                st.health.ok();
                st.last_failed = false;
                let changed = st.crl.as_ref().is_none_or(|old| old.digest != f.digest);
                let f = Arc::new(f);
                st.crl = Some(f.clone());
                Some((f, changed))
            }
            Err(e) => {
                crate::metrics::crl_fetch(if e.is_invalid() { CrlFetch::Invalid } else { CrlFetch::Failed });
                let kept = if st.crl.is_some() { "; the last good CRL is kept" } else { "" };
                log::warn!(target: "tls", "CRL {}: {e}{kept}", self.url);
                st.health.failed(&e);
                st.last_failed = true;
                None
            }
        }
    }
}

/// The CRL in `body` (DER or PEM) if its signature verifies against the candidate that bears its
/// issuer's name.
fn verify(body: &[u8], candidates: &[X509]) -> Result<Fetched, FetchError> {
    let crl = match body.starts_with(b"-----") || body.trim_ascii_start().starts_with(b"-----BEGIN") {
        true => X509Crl::from_pem(body),
        false => X509Crl::from_der(body),
    }
    .map_err(|e| FetchError::Parse(e.to_string()))?;
    let name = crl.issuer_name();
    let mut named = candidates.iter().filter(|c| c.subject_name().try_cmp(name).is_ok_and(|o| o.is_eq())).peekable();
    if named.peek().is_none() {
        return Err(FetchError::NoIssuer);
    }
    let Some(signer) = named.find(|c| c.public_key().and_then(|k| crl.verify(&k)).unwrap_or(false)).cloned() else {
        return Err(FetchError::Verify(format!("the signature is not that of \"{}\"", name_dn(name))));
    };
    let digest = crl.to_der().ok().and_then(|d| openssl::hash::hash(MessageDigest::sha256(), &d).ok());
    Ok(Fetched {
        signer,
        issuer: name_dn(name),
        next_update: crl.next_update().and_then(crate::pki::unix),
        digest: digest.map(|d| d.to_vec()).unwrap_or_default(),
        crl,
    })
}

/// Whether `f` is the CRL of the issuer of `leaf` (by name; the CRL's signature was verified
/// against the certificate of that name, as the handshake verified the leaf's).
fn issued_by(f: &Fetched, leaf: &X509Ref) -> bool {
    f.crl.issuer_name().try_cmp(leaf.issuer_name()).is_ok_and(|o| o.is_eq())
}

/// The http(s) URLs of the certificate's CRL distribution points.
fn distribution_points(cert: &X509Ref) -> Vec<Url> {
    let Some(points) = cert.crl_distribution_points() else { return Vec::new() };
    let names = points.iter().filter_map(|p| p.distpoint()).filter_map(|d| d.fullname());
    names
        .flat_map(|n| n.iter().filter_map(|g| g.uri()).map(str::to_string).collect::<Vec<_>>())
        .filter_map(|u| Url::parse(&u).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .collect()
}
