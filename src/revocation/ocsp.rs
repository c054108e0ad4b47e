//! OCSP (RFC 6960) for client certificates: the responder from the certificate's Authority
//! Information Access (or `revocation.ocsp.responder`: a fallback, or the one asked when
//! `override_responder` is set), a POST of `application/ocsp-request`, and the answer verified by
//! OpenSSL's `OCSP_basic_verify` against the client CA certificates: signed by the issuing CA or by
//! a responder certificate that CA issued with the OCSP-signing purpose (any other signer, even a
//! certificate of the same CA, is refused), then `thisUpdate`/`nextUpdate` checked with a leeway.
//!
//! Answers are cached per certificate (SHA-256 of its DER) until `nextUpdate`, at most
//! `max_cache` (`min_cache` without `nextUpdate`); a failure for `revocation.failure_cache`, so
//! that a responder that is down is not asked by every handshake. Concurrent checks of one
//! certificate share one request (moka's entry initialisation).

use super::{Anchors, Answer, FetchError, SourceHealth};
use crate::config::{OcspConfig, RevocationConfig};
use openssl::asn1::{Asn1GeneralizedTimeRef, Asn1Time};
use openssl::hash::MessageDigest;
use openssl::ocsp::{OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus};
use openssl::stack::Stack;
use openssl::x509::{X509Ref, X509};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most responders `/readyz` reports.
const MAX_RESPONDERS: usize = 256;

/// The largest OCSP answer read.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// A cached answer and how long it is kept.
#[derive(Debug, Clone, Copy)]
struct Cached {
    answer: Answer,
    ttl: Duration,
}

struct KeepFor;

impl moka::Expiry<[u8; 32], Cached> for KeepFor {
    fn expire_after_create(&self, _: &[u8; 32], value: &Cached, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub struct Ocsp {
    cfg: OcspConfig,
    timeout: Duration,
    failure_cache: Duration,
    client: reqwest::Client,
    cache: moka::future::Cache<[u8; 32], Cached>,
    /// Each responder asked so far, for `/readyz`.
    responders: Mutex<BTreeMap<String, SourceHealth>>,
}

/// How one OCSP check was answered: the `result` label of `gateway_ocsp_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspResult {
    Good,
    Revoked,
    Unknown,
    /// No answer: the responder is unreachable, or answered an error.
    Unavailable,
    /// An answer that fails verification or is stale.
    Invalid,
    /// Answered from the cache.
    Cached,
    /// Neither the certificate nor the configuration names a responder.
    NoResponder,
}

impl OcspResult {
    pub const ALL: &'static [OcspResult] = &[
        OcspResult::Good,
        OcspResult::Revoked,
        OcspResult::Unknown,
        OcspResult::Unavailable,
        OcspResult::Invalid,
        OcspResult::Cached,
        OcspResult::NoResponder,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            OcspResult::Good => "good",
            OcspResult::Revoked => "revoked",
            OcspResult::Unknown => "unknown",
            OcspResult::Unavailable => "unavailable",
            OcspResult::Invalid => "invalid",
            OcspResult::Cached => "cached",
            OcspResult::NoResponder => "no_responder",
        }
    }
}

impl Ocsp {
    pub(super) fn new(cfg: OcspConfig, section: &RevocationConfig, client: reqwest::Client) -> Ocsp {
        let cache = moka::future::Cache::builder().max_capacity(cfg.cache_entries).expire_after(KeepFor).build();
        Ocsp {
            cfg,
            timeout: section.timeout,
            failure_cache: section.failure_cache,
            client,
            cache,
            responders: Mutex::new(BTreeMap::new()),
        }
    }

    /// The responder to ask for `leaf`.
    fn responder(&self, leaf: &X509Ref) -> Option<String> {
        if self.cfg.override_responder {
            return self.cfg.responder.as_ref().map(|u| u.to_string());
        }
        let aia = leaf.ocsp_responders().ok().and_then(|list| {
            list.iter().map(|s| s.to_string()).find(|u| u.starts_with("http://") || u.starts_with("https://"))
        });
        aia.or_else(|| self.cfg.responder.as_ref().map(|u| u.to_string()))
    }

    /// The status of `leaf` (issued by `issuer`), from the cache or the responder.
    pub(super) async fn status(&self, leaf: &X509, issuer: &X509, anchors: &Anchors) -> Answer {
        let Some(url) = self.responder(leaf) else {
            crate::metrics::ocsp_check(OcspResult::NoResponder);
            return Answer::NotApplicable;
        };
        let Some(key) = leaf.digest(MessageDigest::sha256()).ok().and_then(|d| <[u8; 32]>::try_from(&d[..]).ok())
        else {
            return Answer::Unavailable;
        };
        let entry = self.cache.entry(key).or_insert_with(self.ask(&url, leaf, issuer, anchors)).await;
        if !entry.is_fresh() {
            crate::metrics::ocsp_check(OcspResult::Cached);
        }
        entry.into_value().answer
    }

    /// Asks the responder once; what to cache and for how long.
    async fn ask(&self, url: &str, leaf: &X509, issuer: &X509, anchors: &Anchors) -> Cached {
        let started = Instant::now();
        let asked = self.request(url, leaf, issuer, anchors).await;
        crate::metrics::ocsp_latency(started.elapsed());
        let mut responders = self.responders.lock().unwrap_or_else(|p| p.into_inner());
        // The URLs come from certificates the client CA issued: a handful. The bound is a guard.
        let mut spare = SourceHealth::default();
        let health = match responders.len() < MAX_RESPONDERS || responders.contains_key(url) {
            true => responders.entry(url.to_string()).or_default(),
            false => &mut spare,
        };
        match asked {
            Ok(cached) => {
                health.ok();
                crate::metrics::ocsp_check(match cached.answer {
                    Answer::Revoked => OcspResult::Revoked,
                    Answer::Unknown => OcspResult::Unknown,
                    _ => OcspResult::Good,
                });
                cached
            }
            Err(e) => {
                health.failed(&e);
                let result = if e.is_invalid() { OcspResult::Invalid } else { OcspResult::Unavailable };
                crate::metrics::ocsp_check(result);
                log::warn!(target: "tls", "OCSP responder {url}: {e}");
                Cached { answer: Answer::Unavailable, ttl: self.failure_cache }
            }
        }
    }

    async fn request(&self, url: &str, leaf: &X509, issuer: &X509, anchors: &Anchors) -> Result<Cached, FetchError> {
        let parse = |e: openssl::error::ErrorStack| FetchError::Parse(e.to_string());
        let der = {
            let id = OcspCertId::from_cert(MessageDigest::sha1(), leaf, issuer).map_err(parse)?;
            let mut req = OcspRequest::new().map_err(parse)?;
            req.add_id(id).map_err(parse)?;
            req.to_der().map_err(parse)?
        };
        let resp = self
            .client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/ocsp-request")
            .header(http::header::ACCEPT, "application/ocsp-response")
            .body(der)
            .timeout(self.timeout)
            .send()
            .await?;
        let body = super::body(resp, MAX_RESPONSE_BYTES).await?;
        self.verify(&body, leaf, issuer, anchors)
    }

    /// The status in `body` if it is a verified, current answer about `leaf`.
    fn verify(&self, body: &[u8], leaf: &X509, issuer: &X509, anchors: &Anchors) -> Result<Cached, FetchError> {
        let parse = |e: openssl::error::ErrorStack| FetchError::Parse(e.to_string());
        let resp = OcspResponse::from_der(body).map_err(parse)?;
        if resp.status() != OcspResponseStatus::SUCCESSFUL {
            return Err(FetchError::Parse(format!("response status {}", resp.status().as_raw())));
        }
        let basic = resp.basic().map_err(parse)?;
        let none = Stack::new().map_err(parse)?;
        basic.verify(&none, &anchors.store, OcspFlag::empty()).map_err(|e| FetchError::Verify(e.to_string()))?;
        let id = OcspCertId::from_cert(MessageDigest::sha1(), leaf, issuer).map_err(parse)?;
        let status = basic.find_status(&id).ok_or_else(|| FetchError::Parse("no status for the certificate".into()))?;
        let leeway = u32::try_from(self.cfg.leeway.as_secs()).unwrap_or(u32::MAX);
        status.check_validity(leeway, None).map_err(|_| FetchError::Stale)?;
        let ttl = match status.next_update().and_then(unix) {
            Some(next) => Duration::from_secs((next - super::now()).max(0) as u64).min(self.cfg.max_cache),
            None => self.cfg.min_cache,
        };
        let answer = match status.status {
            OcspCertStatus::GOOD => Answer::Good,
            OcspCertStatus::REVOKED => Answer::Revoked,
            _ => Answer::Unknown,
        };
        Ok(Cached { answer, ttl })
    }

    /// Each responder asked so far and how it answered.
    pub(super) fn states(&self) -> serde_json::Value {
        let responders = self.responders.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = serde_json::Map::new();
        for (url, h) in responders.iter() {
            out.insert(url.clone(), h.json());
        }
        if let Some(url) = &self.cfg.responder {
            out.entry(url.to_string()).or_insert_with(|| SourceHealth::default().json());
        }
        serde_json::Value::Object(out)
    }

    /// Forgets every cached answer (for the tests of the cache and the benchmark).
    pub fn purge(&self) {
        self.cache.invalidate_all();
    }
}

/// A GeneralizedTime as seconds since the epoch. OpenSSL prints it as `Mon DD HH:MM:SS YYYY GMT`;
/// the crate gives no other safe way to read it.
fn unix(t: &Asn1GeneralizedTimeRef) -> Option<i64> {
    let text = t.to_string();
    let mut parts = text.split_whitespace();
    let (mon, day, time, year) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == mon)? + 1;
    let day: u32 = day.parse().ok()?;
    let hms: String = time.split('.').next()?.chars().filter(|c| *c != ':').collect();
    let asn1 = Asn1Time::from_str(&format!("{year}{month:02}{day:02}{hms}Z")).ok()?;
    crate::pki::unix(&asn1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1GeneralizedTime;

    #[test]
    fn generalized_times_read_as_unix_seconds() {
        let t = Asn1GeneralizedTime::from_str("20260102030405Z").unwrap();
        assert_eq!(unix(&t), Some(1_767_323_045));
        let t = Asn1GeneralizedTime::from_str("20261231235959Z").unwrap();
        assert_eq!(unix(&t), Some(1_798_761_599));
    }
}
