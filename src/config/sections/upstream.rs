//! The `upstreams` section: each API's backends, how one is chosen and checked, and the TLS and
//! timeouts of the connections to it.

use crate::config::closed::{HealthCheckKind, Selection};
use crate::config::shared::Dur;
use crate::config::shared::{dur, host_port, nonzero, Check};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(30);
const UPSTREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const UPSTREAM_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
const UPSTREAM_MAX_ATTEMPTS: usize = 3;
const EJECTION_FAILURES: u32 = 3;
const EJECTION_DURATION: Duration = Duration::from_secs(10);
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One backend of an upstream: `host:port`, or with a weight.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Backend {
    Address(String),
    Weighted { address: String, weight: usize },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<HealthCheckKind>,
    /// HTTP checks: the path asked for, and the status that means healthy.
    pub path: Option<String>,
    pub status: Option<u16>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    /// Consecutive successes that bring a backend back, and failures that take it out.
    pub healthy_after: Option<usize>,
    pub unhealthy_after: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ejection {
    /// Consecutive connect failures or timeouts that take a backend out of rotation (0: never).
    pub failures: Option<u32>,
    /// For how long; then it is tried again.
    pub duration: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// One backend; or `backends`, several. A name counts every address it resolves to.
    pub address: Option<String>,
    pub backends: Option<Vec<Backend>>,
    pub selection: Option<Selection>,
    pub health_check: Option<HealthCheck>,
    pub ejection: Option<Ejection>,
    /// How many backends one request may be tried on (a failed connection, or a failure of a
    /// method the route retries).
    pub max_attempts: Option<usize>,
    /// Mutual TLS to the API: the gateway's client certificate chain and key (PEM).
    pub client_certificate: Option<String>,
    pub client_key: Option<String>,
    pub tls: Option<bool>,
    pub sni: Option<String>,
    pub ca: Option<String>,
    pub host_header: Option<String>,
    pub connect_timeout: Option<Dur>,
    pub read_timeout: Option<Dur>,
    pub write_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    /// How often the address is looked up again (a restarted API may have a new one).
    pub resolve_interval: Option<Dur>,
}

/// One configured backend: `host:port` (a name counts every address it resolves to) and its
/// weight among the upstream's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddress {
    pub address: String,
    pub weight: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    /// HTTP checks: the path asked for and the status that means healthy.
    pub path: String,
    pub status: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: usize,
    pub unhealthy_after: usize,
}

/// Passive ejection: `failures` consecutive connect failures or timeouts take a backend out of
/// rotation for `duration` (`failures` 0: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionConfig {
    pub failures: u32,
    pub duration: Duration,
}

/// The gateway's client certificate chain and key for mutual TLS to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// The configured backends, resolved when the service starts and every `resolve_interval`.
    pub backends: Vec<BackendAddress>,
    pub selection: Selection,
    pub health_check: Option<HealthCheckConfig>,
    pub ejection: EjectionConfig,
    /// Backends one request may be tried on.
    pub max_attempts: usize,
    pub client_identity: Option<ClientIdentity>,
    pub tls: bool,
    pub sni: String,
    /// CA certificates the upstream's certificate must chain to.
    pub ca: Option<PathBuf>,
    pub host_header: Option<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub resolve_interval: Duration,
}

pub(in crate::config) fn validate(check: &mut Check, name: &str, u: &Upstream) -> Option<UpstreamConfig> {
    let key = format!("upstreams.{name}");
    let backends = backends(check, &key, u);
    let tls = u.tls.unwrap_or(true);
    let host = backends.first().and_then(|b| b.address.rsplit_once(':')).map(|(h, _)| h.to_string());
    let ca = u.ca.as_ref().map(|p| check.file(&format!("{key}.ca"), p));
    if tls && ca.is_none() {
        check.fail(&format!("{key}.ca"), "a CA file is required to verify the upstream's TLS certificate");
    }
    let client_identity = client_identity(check, &key, u, tls);
    let max_attempts = u.max_attempts.unwrap_or(UPSTREAM_MAX_ATTEMPTS);
    if max_attempts == 0 {
        check.fail(&format!("{key}.max_attempts"), "must be at least 1");
    }
    Some(UpstreamConfig {
        name: name.to_string(),
        backends,
        selection: u.selection.unwrap_or_default(),
        health_check: u.health_check.as_ref().map(|h| health_check(check, &key, h)),
        ejection: EjectionConfig {
            failures: u.ejection.as_ref().and_then(|e| e.failures).unwrap_or(EJECTION_FAILURES),
            duration: dur(u.ejection.as_ref().and_then(|e| e.duration), EJECTION_DURATION),
        },
        max_attempts: max_attempts.max(1),
        client_identity,
        tls,
        sni: u.sni.clone().or(host).unwrap_or_default(),
        ca,
        host_header: u.host_header.clone(),
        connect_timeout: dur(u.connect_timeout, UPSTREAM_CONNECT_TIMEOUT),
        read_timeout: dur(u.read_timeout, UPSTREAM_READ_TIMEOUT),
        write_timeout: dur(u.write_timeout, UPSTREAM_WRITE_TIMEOUT),
        idle_timeout: dur(u.idle_timeout, UPSTREAM_IDLE_TIMEOUT),
        resolve_interval: dur(u.resolve_interval, UPSTREAM_RESOLVE_INTERVAL),
    })
}

/// `address` (one backend) or `backends` (several), exactly one of them.
fn backends(check: &mut Check, key: &str, u: &Upstream) -> Vec<BackendAddress> {
    let listed: Vec<(String, usize)> = match (&u.address, &u.backends) {
        (Some(a), None) => vec![(a.clone(), 1)],
        (None, Some(list)) => list
            .iter()
            .map(|b| match b {
                Backend::Address(a) => (a.clone(), 1),
                Backend::Weighted { address, weight } => (address.clone(), *weight),
            })
            .collect(),
        (Some(_), Some(_)) => {
            check.fail(&format!("{key}.backends"), "write either address or backends, not both");
            return Vec::new();
        }
        (None, None) => {
            check.fail(&format!("{key}.address"), "an upstream needs an address or backends");
            return Vec::new();
        }
    };
    if listed.is_empty() {
        check.fail(&format!("{key}.backends"), "lists no backend");
    }
    let mut out = Vec::new();
    for (i, (address, weight)) in listed.into_iter().enumerate() {
        let at = if u.address.is_some() { format!("{key}.address") } else { format!("{key}.backends[{i}]") };
        if weight == 0 {
            check.fail(&format!("{at}.weight"), "must be at least 1");
        }
        if let Some(address) = check.ok(&at, host_port(&address)) {
            out.push(BackendAddress { address, weight: weight.max(1) });
        }
    }
    out
}

fn health_check(check: &mut Check, key: &str, h: &HealthCheck) -> HealthCheckConfig {
    let key = format!("{key}.health_check");
    let path = h.path.clone().unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') {
        check.fail(&format!("{key}.path"), "must start with /");
    }
    let status = h.status.unwrap_or(200);
    if !(100..=599).contains(&status) {
        check.fail(&format!("{key}.status"), "must be an HTTP status");
    }
    let (healthy_after, unhealthy_after) = (h.healthy_after.unwrap_or(1), h.unhealthy_after.unwrap_or(2));
    if healthy_after == 0 || unhealthy_after == 0 {
        check.fail(&key, "healthy_after and unhealthy_after must be at least 1");
    }
    HealthCheckConfig {
        kind: h.kind.unwrap_or_default(),
        path,
        status,
        interval: nonzero(check, &format!("{key}.interval"), dur(h.interval, HEALTH_CHECK_INTERVAL)),
        timeout: nonzero(check, &format!("{key}.timeout"), dur(h.timeout, HEALTH_CHECK_TIMEOUT)),
        healthy_after: healthy_after.max(1),
        unhealthy_after: unhealthy_after.max(1),
    }
}

/// Both files or neither; only over TLS.
fn client_identity(check: &mut Check, key: &str, u: &Upstream, tls: bool) -> Option<ClientIdentity> {
    match (&u.client_certificate, &u.client_key) {
        (None, None) => None,
        (Some(cert), Some(k)) => {
            if !tls {
                check.fail(&format!("{key}.client_certificate"), "needs tls: a client certificate is sent over TLS");
            }
            let certificate = check.file(&format!("{key}.client_certificate"), cert);
            let key_file = check.file(&format!("{key}.client_key"), k);
            Some(ClientIdentity { certificate, key: key_file })
        }
        (Some(_), None) => {
            check.fail(&format!("{key}.client_key"), "client_certificate needs its client_key");
            None
        }
        (None, Some(_)) => {
            check.fail(&format!("{key}.client_certificate"), "client_key needs its client_certificate");
            None
        }
    }
}
