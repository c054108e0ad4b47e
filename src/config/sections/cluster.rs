//! The `cluster` section: the Redis-protocol server that several replicas share, and what each
//! use of it does when it does not answer.

use crate::config::shared::Dur;
use crate::config::shared::{dur, nonzero, Check};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

const CLUSTER_TIMEOUT: Duration = Duration::from_millis(50);
const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A token revoked while a replica cannot hear purges is served by it for at most this long.
const CLUSTER_OUTAGE_CACHE_TTL: Duration = Duration::from_secs(1);
const CLUSTER_OUTAGE_CACHE_TTL_MAX: Duration = Duration::from_secs(60);
const CLUSTER_KEY_PREFIX: &str = "mtls-gateway:";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// `redis://host:port/db` or `rediss://` (TLS: the system's trusted CAs, or `ca`).
    pub url: String,
    /// A file holding the server's password (surrounding white space ignored).
    pub password_file: Option<String>,
    /// PEM CA file that the server's TLS certificate chains to (`rediss://` only).
    pub ca: Option<String>,
    /// PEM certificate and key the gateway presents when the server asks for one (`rediss://`
    /// only; both or neither).
    pub client_certificate: Option<String>,
    pub client_key: Option<String>,
    /// Put before every key and the purge channel, so that several gateways can share one server.
    pub key_prefix: Option<String>,
    /// Longest wait for one call; a request never waits longer for shared state.
    pub timeout: Option<Dur>,
    pub connect_timeout: Option<Dur>,
    /// What a rate limit does when the server does not answer: `open` (the replica's own limit
    /// applies, default) or `closed` (503).
    pub rate_limits: Option<FailPolicy>,
    /// What a DPoP replay check does when the server does not answer: `closed` (503, default) or
    /// `open` (the replica's own replay cache applies).
    pub replay: Option<FailPolicy>,
    /// While the purge subscription is down, how long one introspection answer is shared by the
    /// requests with the same token (0: only by concurrent ones).
    pub outage_cache_ttl: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailPolicy {
    Open,
    Closed,
}

/// The shared-state server and what each use does when it does not answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub url: url::Url,
    pub password_file: Option<PathBuf>,
    /// CA that the server's certificate chains to, instead of the system's (TLS only).
    pub ca: Option<PathBuf>,
    /// Certificate and key for a server that asks for client certificates (TLS only).
    pub client_identity: Option<(PathBuf, PathBuf)>,
    pub key_prefix: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub rate_limits: FailPolicy,
    pub replay: FailPolicy,
    /// How long an answer taken while the purge subscription is down may be served.
    pub outage_cache_ttl: Duration,
}

/// What is wrong with the server's URL. It is never echoed: it may hold the password that it must
/// not hold.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    Parse(#[from] url::ParseError),
    #[error("a redis://host:port or rediss://host:port URL")]
    NotRedis,
    #[error("put the password in password_file, not in the URL")]
    Password,
}

fn server_url(text: &str) -> Result<url::Url, UrlError> {
    let u = url::Url::parse(text)?;
    match u.scheme() {
        "redis" | "rediss" if u.host_str().is_some() => {}
        _ => return Err(UrlError::NotRedis),
    }
    if u.password().is_some() {
        return Err(UrlError::Password);
    }
    Ok(u)
}

/// A password goes in a file, never in the URL written in the configuration.
pub(in crate::config) fn validate(check: &mut Check, c: &Cluster) -> Option<ClusterConfig> {
    let url = check.ok("cluster.url", server_url(&c.url));
    let password_file = c.password_file.as_ref().map(|p| check.file("cluster.password_file", p));
    let ca = c.ca.as_ref().map(|p| check.file("cluster.ca", p));
    let client_identity = match (&c.client_certificate, &c.client_key) {
        (Some(cert), Some(key)) => {
            Some((check.file("cluster.client_certificate", cert), check.file("cluster.client_key", key)))
        }
        (None, None) => None,
        (Some(_), None) => {
            check.fail("cluster.client_key", "client_certificate needs its key");
            None
        }
        (None, Some(_)) => {
            check.fail("cluster.client_certificate", "client_key needs its certificate");
            None
        }
    };
    let tls_only = [("cluster.ca", ca.is_some()), ("cluster.client_certificate", client_identity.is_some())];
    if let Some(u) = &url {
        for (key, set) in tls_only {
            if set && u.scheme() != "rediss" {
                check.fail(key, "applies to TLS only: use a rediss:// URL");
            }
        }
    }
    let timeout = nonzero(check, "cluster.timeout", dur(c.timeout, CLUSTER_TIMEOUT));
    if timeout > Duration::from_secs(1) {
        check
            .warnings
            .push(format!("cluster.timeout {timeout:?}: every request may wait this long when the server is slow"));
    }
    let outage_cache_ttl = dur(c.outage_cache_ttl, CLUSTER_OUTAGE_CACHE_TTL);
    if outage_cache_ttl > CLUSTER_OUTAGE_CACHE_TTL_MAX {
        check.fail("cluster.outage_cache_ttl", "at most 60s: a purged token may be served this long in an outage");
    }
    Some(ClusterConfig {
        url: url?,
        password_file,
        ca,
        client_identity,
        key_prefix: c.key_prefix.clone().unwrap_or_else(|| CLUSTER_KEY_PREFIX.to_string()),
        timeout,
        connect_timeout: nonzero(check, "cluster.connect_timeout", dur(c.connect_timeout, CLUSTER_CONNECT_TIMEOUT)),
        rate_limits: c.rate_limits.unwrap_or(FailPolicy::Open),
        replay: c.replay.unwrap_or(FailPolicy::Closed),
        outage_cache_ttl,
    })
}
