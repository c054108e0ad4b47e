//! Keeps the reference pages in `docs/` in step with the code, both ways, without starting a
//! process:
//! - every key of the configuration file is a row of `docs/configuration.md`, and every row there
//!   names a key that exists;
//! - every metric `src/metrics.rs` registers is a row of `docs/metrics.md`, and the other way round;
//! - every alert of the Prometheus rules in `deploy/` is a row of `docs/alerts.md`, and the other
//!   way round.
//!
//! The configuration keys come from the serde types themselves, not from example files or from
//! reading the schema's source: [`Walker`] is a `Deserializer` that answers every struct with all
//! the field names serde asks for (renames applied), every sequence with one element and every map
//! with one entry named `NAME`, and records the path of each field. So a field added to any
//! `deny_unknown_fields` struct reachable from the file's root shows up here with nothing else to
//! update. What it cannot see is said where it is handled: the route filters (an enum read through
//! `singleton_map_recursive`, walked variant by variant), the weighted form of an untagged backend,
//! and `pingora`'s keys (its own `ServerConf`, compared with what that serializes).

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;

type Error = de::value::Error;

/// What a walk found: every key path, and the places where an element could not be walked.
#[derive(Default)]
struct Found {
    keys: BTreeSet<String>,
    unwalked: BTreeSet<String>,
    variants: Vec<&'static str>,
}

/// A `Deserializer` that produces a value for any serde type and records the keys it was asked for.
#[derive(Clone)]
struct Walker {
    path: String,
    found: Rc<RefCell<Found>>,
    /// For the enum at the root of a walk: which variant to produce.
    variant: Option<usize>,
}

impl Walker {
    fn child(&self, segment: &str) -> Walker {
        let path = if self.path.is_empty() { segment.to_string() } else { format!("{}{segment}", self.path) };
        Walker { path, found: self.found.clone(), variant: None }
    }

    fn field(&self, name: &str) -> Walker {
        let walker = if self.path.is_empty() { self.child(name) } else { self.child(&format!(".{name}")) };
        walker.found.borrow_mut().keys.insert(walker.path.clone());
        walker
    }
}

impl<'de> Deserializer<'de> for Walker {
    type Error = Error;

    /// Self-describing types (`serde_yaml::Value`, `TlsVersion`, untagged enums) get a string.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("1.2")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(true)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(1)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(1)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(1)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(1)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(1)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(1)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(1)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(1)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(0.5)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(0.5)
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_char('x')
    }
    /// Strings are read as durations too (`Dur`), so every string is one.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("1s")
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("1s")
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bytes(b"x")
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bytes(b"x")
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(OneElement { walker: Some(self.child("[]")) })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(OneEntry { walker: self.child(".NAME"), done: false })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(AllFields { walker: self, fields, next: 0 })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // The walk's root enum is the first one asked for; later ones are values inside it.
        let mut found = self.found.borrow_mut();
        if found.variants.is_empty() {
            found.variants = variants.to_vec();
        }
        drop(found);
        let Some(name) = variants.get(self.variant.unwrap_or(0)).or(variants.first()) else {
            return Err(de::Error::custom("an enum without variants"));
        };
        visitor.visit_enum(OneVariant { walker: self, name })
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

/// A sequence of one element. An element that cannot be produced (an enum read through a wrapper
/// that asks for `deserialize_any`) ends the sequence and is recorded as not walked.
struct OneElement {
    walker: Option<Walker>,
}

impl<'de> SeqAccess<'de> for OneElement {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some(walker) = self.walker.take() else { return Ok(None) };
        let (found, path) = (walker.found.clone(), walker.path.clone());
        match seed.deserialize(walker) {
            Ok(value) => Ok(Some(value)),
            Err(_) => {
                found.borrow_mut().unwalked.insert(path);
                Ok(None)
            }
        }
    }
}

/// A map of one entry, keyed `NAME`.
struct OneEntry {
    walker: Walker,
    done: bool,
}

impl<'de> MapAccess<'de> for OneEntry {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        let key = Walker { path: String::new(), found: Rc::new(RefCell::new(Found::default())), variant: None };
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(self.walker.clone())
    }
}

/// A struct with every field serde asked for present.
struct AllFields {
    walker: Walker,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for AllFields {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(name) = self.fields.get(self.next) else { return Ok(None) };
        seed.deserialize(de::value::BorrowedStrDeserializer::new(name)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let name = self.fields[self.next];
        self.next += 1;
        seed.deserialize(self.walker.field(name))
    }
}

/// The chosen variant of an enum; a variant with content is a key (`- scope: {...}`).
struct OneVariant {
    walker: Walker,
    name: &'static str,
}

impl<'de> EnumAccess<'de> for OneVariant {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let value = seed.deserialize(de::value::BorrowedStrDeserializer::new(self.name))?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for OneVariant {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self.walker.field(self.name))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        self.walker.field(self.name).deserialize_seq(visitor)
    }
    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        self.walker.field(self.name).deserialize_struct("", fields, visitor)
    }
}

fn walk<T: de::DeserializeOwned>(path: &str, variant: Option<usize>) -> Found {
    let found = Rc::new(RefCell::new(Found::default()));
    let walker = Walker { path: path.to_string(), found: found.clone(), variant };
    if let Err(e) = T::deserialize(walker) {
        panic!("the walk of {} at {path:?} failed: {e}", std::any::type_name::<T>());
    }
    found.take()
}

/// Where the route filters' keys are: each filter owns its section, which the route keeps as YAML
/// (so the walk of the file sees no key in it); they are walked from the filters' enum below.
const FILTERS: &str = "routes[].filters[]";
/// `upstreams.NAME.backends[]` is untagged: `host:port`, or this map. serde reads it through its
/// own buffer, which no walker sees; [`weighted_backend_keys_exist`] checks these by parsing.
const WEIGHTED_BACKEND: [&str; 2] = ["upstreams.NAME.backends[].address", "upstreams.NAME.backends[].weight"];

/// Every key path of the gateway's own sections.
fn schema_keys() -> BTreeSet<String> {
    use mtls_gateway::config::schema;
    // The filters' sections are the filters' own (a route keeps them as YAML): walked from their enum.
    use mtls_gateway::request::filters::FilterConfig;
    let root = walk::<schema::File>("", None);
    assert!(
        root.unwalked.is_empty(),
        "a sequence the walk could not enter: teach the walk about it, as for the filters: {:?}",
        root.unwalked
    );
    let mut keys = root.keys;
    let variants = walk::<FilterConfig>(FILTERS, None).variants;
    assert!(variants.len() >= 5, "route filters: {variants:?}");
    for index in 0..variants.len() {
        keys.extend(walk::<FilterConfig>(FILTERS, Some(index)).keys);
    }
    keys.extend(WEIGHTED_BACKEND.iter().map(|k| k.to_string()));
    keys
}

/// pingora's own keys, under `pingora:`: what its `ServerConf` serializes.
fn pingora_keys() -> BTreeSet<String> {
    let conf = pingora_core::server::configuration::ServerConf::default();
    let value = serde_yaml::to_value(&conf).unwrap_or_else(|e| panic!("ServerConf serializes: {e}"));
    let Some(map) = value.as_mapping() else { panic!("ServerConf is not a map: {value:?}") };
    map.keys().filter_map(|k| k.as_str()).map(|k| format!("pingora.{k}")).collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first cells of the rows of every table whose header's first cell is `header`, without
/// their backticks: the reference pages write one name per row there.
fn table_keys(page: &str, header: &str) -> Vec<String> {
    let text = read(&root().join("docs").join(page));
    let mut keys = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let Some(row) = line.trim().strip_prefix('|') else {
            in_table = false;
            continue;
        };
        let first = row.split('|').next().unwrap_or("").trim();
        if first == header {
            in_table = true;
        } else if in_table && !first.starts_with("---") {
            let key = first.trim_matches('`');
            assert!(
                first.starts_with('`') && first.ends_with('`') && !key.contains('`'),
                "docs/{page}: a `{header}` row names one key in backticks: {line}"
            );
            keys.push(key.to_string());
        }
    }
    assert!(!keys.is_empty(), "docs/{page}: no table with a `{header}` column");
    keys
}

/// Names in `code` that `documented` lacks, and names in `documented` that `code` lacks.
fn compare(what: &str, page: &str, code: &BTreeSet<String>, documented: &[String], prefixes_ok: bool) {
    let rows: BTreeSet<String> = documented.iter().cloned().collect();
    let duplicates: Vec<&String> =
        documented.iter().enumerate().filter(|(i, k)| documented[..*i].contains(k)).map(|(_, k)| k).collect();
    let undocumented: Vec<&String> = code
        .iter()
        .filter(|k| !rows.contains(*k))
        // A key with keys below it is documented by those.
        .filter(|k| !(prefixes_ok && code.iter().any(|c| is_below(c, k))))
        .collect();
    let unknown: Vec<&String> = rows
        .iter()
        .filter(|k| !code.contains(*k))
        .filter(|k| !(prefixes_ok && code.iter().any(|c| is_below(c, k))))
        .collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty() && duplicates.is_empty(),
        "{what} and docs/{page} disagree\n  missing from docs/{page}: {undocumented:?}\n  \
         in docs/{page} but not in the code: {unknown:?}\n  listed twice: {duplicates:?}"
    );
}

/// `key` is `parent.x...` or `parent[]...`.
fn is_below(key: &str, parent: &str) -> bool {
    key.strip_prefix(parent).is_some_and(|rest| rest.starts_with('.') || rest.starts_with("[]"))
}

#[test]
fn configuration_md_lists_every_key_and_only_keys() {
    let mut code = schema_keys();
    code.extend(pingora_keys());
    code.insert("pingora".to_string());
    assert!(code.contains("listener.address") && code.contains("routes[].filters[].scope.required"));
    compare("the configuration schema", "configuration.md", &code, &table_keys("configuration.md", "key"), true);
}

#[test]
fn weighted_backend_keys_exist() {
    let yaml = "{address: api-1:3000, weight: 2}";
    let parsed: Result<mtls_gateway::config::schema::Backend, _> = serde_yaml::from_str(yaml);
    assert!(
        matches!(parsed, Ok(mtls_gateway::config::schema::Backend::Weighted { .. })),
        "{WEIGHTED_BACKEND:?}: {yaml} is a weighted backend"
    );
}

/// The names `src/metrics.rs` registers: the first argument of each `register_*!(` call, the same
/// reading as `scripts/check-dashboard.py`.
fn registered_metrics() -> BTreeSet<String> {
    let source = read(&root().join("src/metrics.rs"));
    let mut names = BTreeSet::new();
    for (at, _) in source.match_indices("register_") {
        let rest = &source[at..];
        let Some(open) = rest.find("!(") else { continue };
        if rest[..open].contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            continue;
        }
        let args = rest[open + 2..].trim_start();
        let Some(literal) = args.strip_prefix('"') else { continue };
        let name = literal.split('"').next().unwrap_or("");
        if name.starts_with("gateway_") {
            names.insert(name.to_string());
        }
    }
    assert!(names.len() > 20, "src/metrics.rs registers {names:?}");
    names
}

#[test]
fn metrics_md_lists_every_metric_and_only_those() {
    compare("src/metrics.rs", "metrics.md", &registered_metrics(), &table_keys("metrics.md", "metric"), false);
}

/// Every `alert:` of a Prometheus rule file anywhere under `deploy/` (`groups[].rules[].alert`).
fn deployed_alerts() -> BTreeSet<String> {
    let mut files = Vec::new();
    let mut dirs = vec![root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    let mut alerts = BTreeSet::new();
    for file in files {
        let text = read(&file);
        for document in serde_yaml::Deserializer::from_str(&text) {
            let Ok(value) = <serde_yaml::Value as serde::Deserialize>::deserialize(document) else { continue };
            let groups = value.get("groups").and_then(|g| g.as_sequence()).cloned().unwrap_or_default();
            for group in groups {
                let rules = group.get("rules").and_then(|r| r.as_sequence()).cloned().unwrap_or_default();
                alerts.extend(rules.iter().filter_map(|r| r.get("alert")?.as_str().map(str::to_string)));
            }
        }
    }
    assert!(!alerts.is_empty(), "no alert rules under deploy/");
    alerts
}

#[test]
fn alerts_md_lists_every_alert_and_only_those() {
    compare("the alert rules in deploy/", "alerts.md", &deployed_alerts(), &table_keys("alerts.md", "alert"), false);
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings, outside code blocks.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn links_between_the_pages_resolve() {
    let mut pages = vec![root().join("README.md")];
    let docs = std::fs::read_dir(root().join("docs")).unwrap_or_else(|e| panic!("docs/: {e}"));
    pages.extend(docs.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "md")));
    let mut broken = Vec::new();
    for page in &pages {
        let text = read(page);
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let Some(target) = rest.split(')').next() else { continue };
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() { page.clone() } else { page.parent().unwrap_or(&root()).join(file) };
            if !path.exists() {
                broken.push(format!("{}: {target}", page.display()));
                continue;
            }
            let lands = fragment.is_empty() || (path.is_file() && anchors(&read(&path)).contains(fragment));
            if !lands {
                broken.push(format!("{}: {target} (no such heading)", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "links that lead nowhere:\n{}", broken.join("\n"));
}
