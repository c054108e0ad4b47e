//! What every section of the configuration shares: the duration and rate types of the schema,
//! the [`Check`] that collects problems while a section's model is built, and the checks of values
//! that several sections write the same way. The sections (`config::sections`) and the loader
//! (`config::load`) both stand on this file.

use super::problems::Problems;
use crate::host::HostPattern;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// A duration written the human way: `250ms`, `5s`, `2m`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {text:?}: {e}")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinRate {
    pub bytes: u64,
    pub window: Dur,
}

/// Collects problems while the model is built, and resolves paths relative to the file.
pub(super) struct Check {
    pub(super) dir: PathBuf,
    pub(super) problems: Problems,
    /// What is allowed but probably a mistake: printed by `-t`, logged at WARN on start and reload.
    pub(super) warnings: Vec<String>,
}

impl Check {
    pub(super) fn fail(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.problems.fail(key, msg);
    }

    pub(super) fn ok<T, E: std::fmt::Display>(&mut self, key: &str, r: Result<T, E>) -> Option<T> {
        self.problems.ok(key, r)
    }

    /// Resolves a path relative to the configuration file's folder and checks it can be read.
    pub(super) fn file(&mut self, key: &str, path: &str) -> PathBuf {
        let p = self.dir.join(path);
        if let Err(e) = std::fs::metadata(&p) {
            self.fail(key, format!("cannot read {}: {e}", p.display()));
        }
        p
    }
}

/// The names written in the sections that others refer to.
pub(super) struct Names {
    pub(super) upstreams: BTreeSet<String>,
}

/// A value that several sections write the same way and that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("{text:?}: {source}")]
    Address { text: String, source: std::net::AddrParseError },
    #[error("{0:?} is not host:port")]
    HostPort(String),
}

/// An IP address and port, as the gateway's own listeners are written.
pub(super) fn socket_addr(text: &str) -> Result<std::net::SocketAddr, ValueError> {
    text.parse().map_err(|source| ValueError::Address { text: text.to_string(), source })
}

/// Checks `host:port` syntax only: names are resolved when the services start (a compose network's
/// names do not resolve where `-t` runs).
pub(super) fn host_port(text: &str) -> Result<String, ValueError> {
    let bad = || ValueError::HostPort(text.to_string());
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(text.to_string())
}

pub(super) fn nonzero(check: &mut Check, key: &str, d: Duration) -> Duration {
    if d.is_zero() {
        check.fail(key, "must be longer than zero");
    }
    d
}

pub(super) fn dur(d: Option<Dur>, default: Duration) -> Duration {
    d.map(|d| d.0).unwrap_or(default)
}

pub(super) fn hosts(check: &mut Check, key: &str, list: &[String]) -> Vec<HostPattern> {
    list.iter().enumerate().filter_map(|(i, h)| check.ok(&format!("{key}[{i}]"), HostPattern::parse(h))).collect()
}
