//! The `metrics` section: the internal listener for metrics and health, and how readiness is
//! probed.

use crate::config::shared::Dur;
use crate::config::shared::{dur, socket_addr, Check};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

const METRICS_PROBE_INTERVAL: Duration = Duration::from_secs(5);
const METRICS_READY_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub address: String,
    /// How often `/readyz` probes the listener and the identity servers.
    pub probe_interval: Option<Dur>,
    /// How old the last successful probe may be for `/readyz` to answer 200.
    pub ready_window: Option<Dur>,
}

/// The internal operations listener: metrics and health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpsConfig {
    pub address: SocketAddr,
    pub probe_interval: Duration,
    pub ready_window: Duration,
}

pub(in crate::config) fn validate(check: &mut Check, m: &Metrics) -> Option<OpsConfig> {
    let address = check.ok("metrics.address", socket_addr(&m.address))?;
    Some(OpsConfig {
        address,
        probe_interval: dur(m.probe_interval, METRICS_PROBE_INTERVAL),
        ready_window: dur(m.ready_window, METRICS_READY_WINDOW),
    })
}
