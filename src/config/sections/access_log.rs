//! The `access_log` section: the format of access-log lines.

use crate::config::closed::AccessFormat;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    pub format: AccessFormat,
}

/// `text` unless written.
pub(in crate::config) fn format(a: Option<&AccessLog>) -> AccessFormat {
    a.map(|a| a.format).unwrap_or_default()
}
