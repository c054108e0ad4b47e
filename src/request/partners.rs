//! Per-partner metrics with bounded labels: a partner is the client certificate's subject mapped
//! through the configured `partners` list; every other subject counts as `other` and a request
//! without a certificate as `none`, so no client can create a series. For each configured partner
//! the nearest `notAfter` among the certificates it presented in the last day is a gauge, so an
//! operator can warn a partner before its certificate expires.

use crate::metrics::PartnerSeries;
use crate::token::ClientCert;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a certificate a partner presented counts for its expiry gauge after it was last seen:
/// a partner that rotated its certificate stops being warned about the old one.
const SEEN_FOR: Duration = Duration::from_secs(24 * 3600);

/// A partner's certificates: thumbprint → (notAfter, last seen).
type Presented = HashMap<String, (i64, Instant)>;

#[derive(Debug)]
pub struct Partners {
    /// Subject → its partner's label.
    names: HashMap<String, Label>,
    other: Label,
    none: Label,
    /// Partner → the certificates it presented.
    seen: Mutex<HashMap<String, Presented>>,
}

/// A partner label and the series its requests count in, kept so that a request does not look
/// them up by name.
#[derive(Debug)]
pub struct Label {
    pub name: String,
    pub series: PartnerSeries,
}

impl Label {
    fn new(name: &str) -> Self {
        Label { name: name.to_string(), series: PartnerSeries::default() }
    }
}

impl Default for Partners {
    fn default() -> Self {
        Partners::new(&BTreeMap::new())
    }
}

impl Partners {
    pub fn new(map: &BTreeMap<String, String>) -> Self {
        Partners {
            names: map.iter().map(|(s, n)| (s.clone(), Label::new(n))).collect(),
            other: Label::new("other"),
            none: Label::new("none"),
            seen: Mutex::default(),
        }
    }

    /// The label for a request from `client`.
    pub fn name(&self, client: Option<&ClientCert>) -> &str {
        &self.label(client).name
    }

    /// The label for a request from `client`, with its series.
    pub fn label(&self, client: Option<&ClientCert>) -> &Label {
        match client {
            None => &self.none,
            Some(c) => self.names.get(&c.subject).unwrap_or(&self.other),
        }
    }

    /// Records the certificate a configured partner presented, and sets its expiry gauge to the
    /// nearest `notAfter` among those seen within a day.
    pub fn saw(&self, partner: &str, client: &ClientCert) {
        let Some(not_after) = client.not_after else { return };
        if matches!(partner, "other" | "none") {
            return;
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // A certificate already seen only gets its time updated: no allocation per request.
        if let Some(entry) = seen.get_mut(partner).and_then(|certs| certs.get_mut(&client.thumbprint)) {
            let stale = now.duration_since(entry.1) > SEEN_FOR / 24;
            entry.1 = now;
            if !stale {
                return;
            }
        }
        let certs = seen.entry(partner.to_string()).or_default();
        certs.insert(client.thumbprint.clone(), (not_after, now));
        certs.retain(|_, (_, at)| at.elapsed() < SEEN_FOR);
        if let Some(nearest) = certs.values().map(|(t, _)| *t).min() {
            crate::metrics::partner_not_after(partner, nearest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_subjects_name_a_partner() {
        let map = BTreeMap::from([("CN=demo-partner".to_string(), "demo".to_string())]);
        let partners = Partners::new(&map);
        let cert = |subject: &str, der: &[u8]| ClientCert::from_der(der, subject.into()).unwrap();
        assert_eq!(partners.name(Some(&cert("CN=demo-partner", b"a"))), "demo");
        assert_eq!(partners.name(Some(&cert("CN=anyone-else", b"b"))), "other");
        assert_eq!(partners.name(None), "none");
    }
}
