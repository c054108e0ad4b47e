//! The `partners` section: partner names for the per-partner metrics, by certificate subject.

use crate::config::shared::Check;
use std::collections::BTreeMap;

/// Partner names become metric labels: short, plain, and none of the names the gateway uses for
/// everyone else.
pub(in crate::config) fn validate(check: &mut Check, map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    for (subject, name) in map {
        let plain = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !plain || name == "other" || name == "none" {
            check.fail(
                &format!("partners.{subject}"),
                format!("{name:?}: a partner name is 1-64 of [A-Za-z0-9-_.], not other or none"),
            );
        }
    }
    map.clone()
}
