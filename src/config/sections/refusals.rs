//! The `refusals` section: how much of a request body is read before a refusal is sent.

use crate::config::shared::Check;
use crate::config::shared::Dur;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusals {
    /// Request body bytes read and discarded before a refusal is sent; a longer body gets the
    /// refusal and the connection (or HTTP/2 stream) is closed.
    pub drain_bytes: Option<usize>,
    /// The longest time spent reading that body.
    pub drain_timeout: Option<Dur>,
}

/// How much of a request body is read and discarded before a refusal, so that clients which are
/// still sending it read the answer instead of a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalsConfig {
    pub drain_bytes: usize,
    pub drain_timeout: Duration,
}

impl Default for RefusalsConfig {
    fn default() -> Self {
        RefusalsConfig { drain_bytes: 64 * 1024, drain_timeout: Duration::from_secs(5) }
    }
}

pub(in crate::config) fn validate(check: &mut Check, r: &Refusals) -> RefusalsConfig {
    let defaults = RefusalsConfig::default();
    let drain_bytes = r.drain_bytes.unwrap_or(defaults.drain_bytes);
    if drain_bytes > 16 * 1024 * 1024 {
        check.fail("refusals.drain_bytes", "must be at most 16777216 (16 MiB)");
    }
    RefusalsConfig { drain_bytes, drain_timeout: r.drain_timeout.map(|d| d.0).unwrap_or(defaults.drain_timeout) }
}
