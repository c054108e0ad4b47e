//! The `revocation` section: the client certificates' revocation status checked by the gateway
//! itself after the handshake, by OCSP (RFC 6960) and by CRLs fetched from the certificates'
//! distribution points or from configured URLs. Off when absent; the local `tls.client_crl` file
//! is checked in the handshake as before, whatever this section says.

use crate::config::shared::Dur;
use crate::config::shared::{dur, nonzero, Check};
use serde::Deserialize;
use std::time::Duration;
use url::Url;

const TIMEOUT: Duration = Duration::from_secs(2);
const FAILURE_CACHE: Duration = Duration::from_secs(5);
const OCSP_MAX_CACHE: Duration = Duration::from_secs(3600);
const OCSP_MIN_CACHE: Duration = Duration::from_secs(60);
const OCSP_LEEWAY: Duration = Duration::from_secs(60);
const CRL_REFRESH: Duration = Duration::from_secs(300);
const RECHECK: Duration = Duration::from_secs(300);
const OCSP_CACHE_ENTRIES: u64 = 100_000;
const CRL_MAX_BYTES: usize = 16 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// `hard` (default): no usable answer means refused. `soft`: served, counted and logged.
    pub policy: Option<RevocationPolicy>,
    /// The most a new connection waits on a responder or a CRL server.
    pub timeout: Option<Dur>,
    /// How long a failed OCSP request or CRL fetch is remembered before it is tried again.
    pub failure_cache: Option<Dur>,
    /// How often the certificates of open connections are checked again.
    pub recheck_interval: Option<Dur>,
    #[serde(default)]
    pub ocsp: Option<OcspSection>,
    #[serde(default)]
    pub crl: Option<CrlSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcspSection {
    pub enabled: Option<bool>,
    /// Asked when a certificate names no responder in its Authority Information Access.
    pub responder: Option<String>,
    /// Asked instead of the certificate's own responder.
    pub override_responder: Option<bool>,
    /// The longest an answer is kept, whatever its `nextUpdate` says.
    pub max_cache: Option<Dur>,
    /// How long an answer without `nextUpdate` is kept.
    pub min_cache: Option<Dur>,
    /// Clock skew allowed on `thisUpdate` and `nextUpdate`.
    pub leeway: Option<Dur>,
    pub cache_entries: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlSection {
    /// Fetch the CRLs named in the certificates' CRL distribution points.
    pub distribution_points: Option<bool>,
    /// CRLs fetched before serving and refreshed in the background.
    #[serde(default)]
    pub urls: Vec<String>,
    /// How often each CRL is fetched again (sooner when its `nextUpdate` comes first).
    pub refresh_interval: Option<Dur>,
    pub max_bytes: Option<usize>,
}

/// What no usable answer means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationPolicy {
    #[default]
    Hard,
    Soft,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RevocationConfig {
    pub policy: RevocationPolicy,
    pub timeout: Duration,
    pub failure_cache: Duration,
    pub recheck_interval: Duration,
    pub ocsp: Option<OcspConfig>,
    pub crl: Option<CrlConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OcspConfig {
    pub responder: Option<Url>,
    pub override_responder: bool,
    pub max_cache: Duration,
    pub min_cache: Duration,
    pub leeway: Duration,
    pub cache_entries: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CrlConfig {
    pub distribution_points: bool,
    pub urls: Vec<Url>,
    pub refresh_interval: Duration,
    pub max_bytes: usize,
}

/// An `http` or `https` URL, named by its key when it is not one.
fn http_url(check: &mut Check, key: &str, text: &str) -> Option<Url> {
    match Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(_) => {
            check.fail(key, format!("{text:?}: an http or https URL is needed"));
            None
        }
        Err(e) => {
            check.fail(key, format!("{text:?}: {e}"));
            None
        }
    }
}

pub(in crate::config) fn validate(check: &mut Check, r: Option<&Revocation>) -> Option<RevocationConfig> {
    let r = r?;
    let ocsp = r.ocsp.as_ref().filter(|o| o.enabled.unwrap_or(true)).map(|o| ocsp(check, o));
    let crl = r.crl.as_ref().map(|c| crl(check, c));
    if ocsp.is_none() && crl.as_ref().is_none_or(|c| !c.distribution_points && c.urls.is_empty()) {
        check.fail("revocation", "neither ocsp nor crl is on: remove the section or turn one on");
    }
    Some(RevocationConfig {
        policy: r.policy.unwrap_or_default(),
        timeout: nonzero(check, "revocation.timeout", dur(r.timeout, TIMEOUT)),
        failure_cache: dur(r.failure_cache, FAILURE_CACHE),
        recheck_interval: nonzero(check, "revocation.recheck_interval", dur(r.recheck_interval, RECHECK)),
        ocsp,
        crl,
    })
}

fn ocsp(check: &mut Check, o: &OcspSection) -> OcspConfig {
    let responder = o.responder.as_ref().and_then(|t| http_url(check, "revocation.ocsp.responder", t));
    let override_responder = o.override_responder.unwrap_or(false);
    if override_responder && o.responder.is_none() {
        check.fail("revocation.ocsp.override_responder", "needs revocation.ocsp.responder");
    }
    let max_cache = nonzero(check, "revocation.ocsp.max_cache", dur(o.max_cache, OCSP_MAX_CACHE));
    let min_cache = dur(o.min_cache, OCSP_MIN_CACHE).min(max_cache);
    let cache_entries = o.cache_entries.unwrap_or(OCSP_CACHE_ENTRIES);
    if cache_entries == 0 {
        check.fail("revocation.ocsp.cache_entries", "must be at least 1");
    }
    OcspConfig {
        responder,
        override_responder,
        max_cache,
        min_cache,
        leeway: dur(o.leeway, OCSP_LEEWAY),
        cache_entries,
    }
}

fn crl(check: &mut Check, c: &CrlSection) -> CrlConfig {
    let urls = c
        .urls
        .iter()
        .enumerate()
        .filter_map(|(i, u)| http_url(check, &format!("revocation.crl.urls[{i}]"), u))
        .collect();
    CrlConfig {
        distribution_points: c.distribution_points.unwrap_or(true),
        urls,
        refresh_interval: nonzero(check, "revocation.crl.refresh_interval", dur(c.refresh_interval, CRL_REFRESH)),
        max_bytes: c.max_bytes.unwrap_or(CRL_MAX_BYTES),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_files::{local, set};
    use std::time::Duration;

    fn load(section: &str) -> Result<Option<super::RevocationConfig>, Vec<String>> {
        let (_dir, path) = local(|d| set(d, &["revocation"], serde_yaml::from_str(section).unwrap()));
        crate::app::load(&path).map(|c| c.revocation).map_err(|p| p.lines().to_vec())
    }

    #[test]
    fn the_defaults_are_hard_and_short_waits() {
        let cfg = load("{ocsp: {}}").unwrap().unwrap();
        assert_eq!(cfg.policy, super::RevocationPolicy::Hard);
        assert_eq!((cfg.timeout, cfg.failure_cache), (Duration::from_secs(2), Duration::from_secs(5)));
        let ocsp = cfg.ocsp.unwrap();
        assert_eq!((ocsp.max_cache, ocsp.min_cache), (Duration::from_secs(3600), Duration::from_secs(60)));
        assert!(cfg.crl.is_none());
        let crl = load("{crl: {}}").unwrap().unwrap().crl.unwrap();
        assert!(crl.distribution_points && crl.urls.is_empty());
    }

    #[test]
    fn a_section_that_checks_nothing_or_names_a_bad_url_is_refused() {
        let p = load("{ocsp: {enabled: false}}").unwrap_err();
        assert!(p.len() == 1 && p[0].contains("revocation: neither ocsp nor crl is on"), "{p:?}");
        let p = load("{crl: {distribution_points: false, urls: [\"file:///etc/crl\"]}}").unwrap_err();
        assert!(
            p.iter().any(|l| l.contains("revocation.crl.urls[0]: \"file:///etc/crl\": an http or https URL")),
            "{p:?}"
        );
        let p = load("{ocsp: {override_responder: true}}").unwrap_err();
        assert!(p.iter().any(|l| l.contains("revocation.ocsp.override_responder: needs")), "{p:?}");
        let p = load("{ocsp: {}, timeout: 0s}").unwrap_err();
        assert!(p.iter().any(|l| l.contains("revocation.timeout: must be longer than zero")), "{p:?}");
    }
}
