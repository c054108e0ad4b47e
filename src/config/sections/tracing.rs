//! The `tracing` section: whose W3C trace context is continued, the sampling ratio and the OTLP
//! export.

use crate::config::shared::Dur;
use crate::config::shared::{dur, nonzero, Check};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const TRACING_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
const TRACING_EXPORT_INTERVAL: Duration = Duration::from_secs(2);
const TRACING_SERVICE_NAME: &str = "mtls-gateway";

/// Which callers' `traceparent` is believed, and where spans go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`); no export when absent.
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    /// Longest wait for one export call.
    pub export_timeout: Option<Dur>,
    /// How often finished spans are sent.
    pub export_interval: Option<Dur>,
    /// Client addresses or networks (`10.0.0.0/8`) whose trace context is continued.
    #[serde(default)]
    pub trusted_sources: Vec<String>,
    /// Partner names (from `partners`) whose trace context is continued.
    #[serde(default)]
    pub trusted_partners: Vec<String>,
    /// Share of new traces (no trusted parent) that are sampled, 0.0 to 1.0.
    pub sample_ratio: Option<f64>,
}

/// W3C trace context: whose `traceparent` is continued, and the OTLP export (fixed for the
/// process: the exporter starts once).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    pub otlp: Option<OtlpConfig>,
    pub trusted_sources: Vec<ipnet::IpNet>,
    pub trusted_partners: Vec<String>,
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig { otlp: None, trusted_sources: Vec::new(), trusted_partners: Vec::new(), sample_ratio: 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    pub endpoint: url::Url,
    pub service_name: String,
    pub timeout: Duration,
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("{text:?}: {source}")]
    Url { text: String, source: url::ParseError },
    #[error("{text:?}: the OTLP/HTTP endpoint needs http or https, not {scheme}")]
    Scheme { text: String, scheme: String },
    #[error("{text:?}: {source}")]
    Source { text: String, source: std::net::AddrParseError },
}

fn endpoint(text: &str) -> Result<url::Url, TracingError> {
    let u = url::Url::parse(text).map_err(|source| TracingError::Url { text: text.to_string(), source })?;
    match u.scheme() {
        "http" | "https" => Ok(u),
        other => Err(TracingError::Scheme { text: text.to_string(), scheme: other.to_string() }),
    }
}

/// An address or a network (`10.0.0.0/8`).
fn source(text: &str) -> Result<ipnet::IpNet, TracingError> {
    let net = text.parse::<ipnet::IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    net.map_err(|source| TracingError::Source { text: text.to_string(), source })
}

/// Trust is named explicitly: addresses and networks, or partner names that `partners` defines.
pub(in crate::config) fn validate(
    check: &mut Check,
    t: &Tracing,
    partners: &BTreeMap<String, String>,
) -> TracingConfig {
    let otlp = t.otlp_endpoint.as_ref().and_then(|e| {
        let endpoint = check.ok("tracing.otlp_endpoint", endpoint(e))?;
        Some(OtlpConfig {
            endpoint,
            service_name: t.service_name.clone().unwrap_or_else(|| TRACING_SERVICE_NAME.to_string()),
            timeout: nonzero(check, "tracing.export_timeout", dur(t.export_timeout, TRACING_EXPORT_TIMEOUT)),
            interval: nonzero(check, "tracing.export_interval", dur(t.export_interval, TRACING_EXPORT_INTERVAL)),
        })
    });
    if t.otlp_endpoint.is_none() && (t.service_name.is_some() || t.export_timeout.is_some()) {
        check.warnings.push("tracing: service_name and export_timeout have no effect without otlp_endpoint".into());
    }
    let mut trusted_sources = Vec::new();
    for (i, s) in t.trusted_sources.iter().enumerate() {
        if let Some(net) = check.ok(&format!("tracing.trusted_sources[{i}]"), source(s)) {
            trusted_sources.push(net);
        }
    }
    let known: BTreeSet<&String> = partners.values().collect();
    for (i, p) in t.trusted_partners.iter().enumerate() {
        if !known.contains(p) {
            check.fail(&format!("tracing.trusted_partners[{i}]"), format!("{p:?} is not a name in partners"));
        }
    }
    let ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        check.fail("tracing.sample_ratio", format!("{ratio} is not between 0.0 and 1.0"));
    }
    TracingConfig { otlp, trusted_sources, trusted_partners: t.trusted_partners.clone(), sample_ratio: ratio }
}
