//! Patching YAML documents by path (`routes[1].upstream`), so that every test configuration is the
//! shipped `conf/` file with a few keys changed, not a second hand-written template.

use serde_yaml::{Mapping, Value};

/// Loads a file of `conf/`.
pub fn shipped(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/").to_string() + name;
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Parses YAML text (for values too long to build by hand).
pub fn parse(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

fn segments(path: &str) -> Vec<(String, Option<usize>)> {
    path.split('.')
        .map(|seg| match seg.split_once('[') {
            Some((key, idx)) => (key.to_string(), Some(idx.trim_end_matches(']').parse().unwrap())),
            None => (seg.to_string(), None),
        })
        .collect()
}

/// The value at `path`, created (as an empty mapping) where missing.
pub fn at<'a>(doc: &'a mut Value, path: &str) -> &'a mut Value {
    let mut cur = doc;
    for (key, idx) in segments(path) {
        if cur.is_null() {
            *cur = Value::Mapping(Mapping::new());
        }
        let map = cur.as_mapping_mut().unwrap_or_else(|| panic!("{path}: {key} is not in a mapping"));
        cur = map.entry(Value::String(key)).or_insert(Value::Null);
        if let Some(i) = idx {
            cur = cur.as_sequence_mut().and_then(|s| s.get_mut(i)).unwrap_or_else(|| panic!("{path}: no item {i}"));
        }
    }
    cur
}

pub fn set(doc: &mut Value, path: &str, value: impl Into<Value>) {
    *at(doc, path) = value.into();
}

pub fn remove(doc: &mut Value, path: &str) {
    let (parent, key) = path.rsplit_once('.').map_or((None, path), |(p, k)| (Some(p), k));
    let map = match parent {
        Some(p) => at(doc, p),
        None => doc,
    };
    map.as_mapping_mut().unwrap().remove(key);
}

pub fn push(doc: &mut Value, path: &str, value: Value) {
    let seq = at(doc, path);
    if seq.is_null() {
        *seq = Value::Sequence(Vec::new());
    }
    seq.as_sequence_mut().unwrap().push(value);
}

pub fn write(doc: &Value, path: &std::path::Path) {
    std::fs::write(path, serde_yaml::to_string(doc).unwrap()).unwrap();
}
