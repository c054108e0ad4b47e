//! The `pingora` section: pingora's own `ServerConf` keys, with the unknown ones found.

use crate::config::shared::Check;
use pingora_core::server::configuration::ServerConf;

/// pingora's `ServerConf` ignores unknown keys; find them by comparing with what it serializes back.
pub(in crate::config) fn validate(check: &mut Check, raw: Option<serde_yaml::Value>) -> Option<ServerConf> {
    let raw = raw.unwrap_or(serde_yaml::Value::Mapping(Default::default()));
    let conf: ServerConf = match serde_yaml::from_value(raw.clone()) {
        Ok(c) => c,
        Err(e) => {
            check.fail("pingora", e);
            return None;
        }
    };
    let known = serde_yaml::to_value(&conf).ok();
    if let (serde_yaml::Value::Mapping(given), Some(serde_yaml::Value::Mapping(known))) = (raw, known) {
        for key in given.keys() {
            if !known.contains_key(key) {
                check.fail(&format!("pingora.{}", key.as_str().unwrap_or("?")), "unknown key");
            }
        }
    }
    Some(conf)
}
