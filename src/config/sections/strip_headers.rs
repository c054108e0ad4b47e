//! The `strip_headers` key: request headers stripped on top of the built-in families.

use crate::config::shared::Check;
use crate::header_name::HeaderPattern;

pub(in crate::config) fn validate(check: &mut Check, names: &[String]) -> Vec<HeaderPattern> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| check.ok(&format!("strip_headers[{i}]"), HeaderPattern::parse(n)))
        .collect()
}
