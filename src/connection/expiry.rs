//! What expires, and when: each client CRL's `nextUpdate` and the `notAfter` of every configured
//! certificate (the gateway's own, the client CA, upstream and identity-server CAs, the admin
//! listener's, the client certificates the gateway presents to the identity server and to the
//! shared-state server, and that server's CA). `-t`, the start and every reload list the CRLs and
//! warn about what has expired or expires within `tls.expiry_warning`; gauges carry the dates so
//! that an alert can say "expires in less than 7 days"; the CRL reloader checks the CRLs again at
//! every interval, since a CRL expires while the process runs.

use crate::config::{Config, CrlExpired, TlsConfig};
use crate::pki::{name_dn, subject_dn, unix};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One loaded client CRL, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CrlState {
    pub issuer: String,
    pub next_update: i64,
    pub expired: bool,
}

/// What a check found: lines to print or log at INFO, and warnings; `expired` holds the warnings
/// about CRLs whose `nextUpdate` has passed (also in `warnings`), which the reloader repeats.
#[derive(Debug, Default)]
pub struct Findings {
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
    pub expired: Vec<String>,
}

/// The CRLs of the configuration in force, for `/readyz`.
static CRLS: Mutex<Vec<CrlState>> = Mutex::new(Vec::new());

pub fn crl_states() -> Vec<CrlState> {
    CRLS.lock().map(|c| c.clone()).unwrap_or_default()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn date(unix: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64)).to_string()
}

/// Every CRL and certificate of `cfg`; sets the gauges and the CRL state.
pub fn check(cfg: &Config) -> Findings {
    let mut found = check_crls(&cfg.tls);
    let margin = cfg.tls.expiry_warning;
    let mut files: Vec<(String, &Path)> =
        vec![("tls.certificate".into(), &cfg.tls.certificate), ("tls.client_ca".into(), &cfg.tls.client_ca)];
    for (i, extra) in cfg.tls.extra_certificates.iter().enumerate() {
        files.push((format!("tls.certificates[{i}].certificate"), &extra.certificate));
    }
    for (name, u) in cfg.routes.iter().map(|r| (&r.upstream.name, &r.upstream)) {
        if let Some(ca) = &u.ca {
            files.push((format!("upstreams.{name}.ca"), ca));
        }
        if let Some(identity) = &u.client_identity {
            files.push((format!("upstreams.{name}.client_certificate"), &identity.certificate));
        }
    }
    for (name, i) in &cfg.introspection {
        files.push((format!("introspection.{name}.ca"), &i.ca));
        if let crate::config::ClientAuth::TlsClientAuth { certificate, .. } = &i.client_auth {
            files.push((format!("introspection.{name}.client_certificate"), certificate));
        }
    }
    if let Some(a) = &cfg.admin {
        files.push(("admin.certificate".into(), &a.certificate));
        if let Some(ca) = &a.client_ca {
            files.push(("admin.client_ca".into(), ca));
        }
    }
    if let Some(c) = &cfg.cluster {
        if let Some(ca) = &c.ca {
            files.push(("cluster.ca".into(), ca));
        }
        if let Some((cert, _)) = &c.client_identity {
            files.push(("cluster.client_certificate".into(), cert));
        }
    }
    files.sort();
    files.dedup();
    crate::metrics::clear_certificates();
    for (key, path) in files {
        certificates(&key, path, margin, &mut found);
    }
    found
}

fn certificates(key: &str, path: &Path, margin: Duration, found: &mut Findings) {
    let Ok(certs) = crate::pki::read_certs(path) else { return };
    let now = now();
    for cert in certs {
        let Some(not_after) = unix(cert.not_after()) else { continue };
        let subject = subject_dn(&cert);
        crate::metrics::certificate_not_after(key, &subject, not_after);
        if not_after <= now {
            found.warnings.push(format!("{key}: certificate \"{subject}\" expired at {}", date(not_after)));
        } else if not_after - now <= margin.as_secs() as i64 {
            found.warnings.push(format!("{key}: certificate \"{subject}\" expires at {}", date(not_after)));
        }
    }
}

/// The client CRL bundle: one line per CRL, a warning for each expired or expiring one.
pub fn check_crls(tls: &TlsConfig) -> Findings {
    let mut found = Findings::default();
    let Some(path) = &tls.client_crl else {
        *CRLS.lock().unwrap_or_else(|p| p.into_inner()) = Vec::new();
        crate::metrics::clear_crls();
        return found;
    };
    let Ok(crls) = crate::pki::read_crls(path) else { return found };
    crate::metrics::clear_crls();
    let now = now();
    let mut states = Vec::new();
    for crl in crls {
        let issuer = name_dn(crl.issuer_name());
        let next_update = crl.next_update().and_then(unix);
        let next = next_update.unwrap_or(i64::MAX);
        let expired = next <= now;
        crate::metrics::crl_next_update(&issuer, next_update, expired);
        found.notes.push(format!("tls.client_crl: CRL of \"{issuer}\", next update {}", date(next)));
        if expired {
            let what = match tls.crl_expired {
                CrlExpired::Refuse => "every certificate of that issuer is refused (tls.crl_expired: refuse)",
                CrlExpired::Keep => "certificates it does not list are still accepted (tls.crl_expired: keep)",
            };
            let line =
                format!("tls.client_crl: the CRL of \"{issuer}\" expired at {}: {what}; publish a new CRL", date(next));
            found.expired.push(line.clone());
            found.warnings.push(line);
        } else if next - now <= tls.expiry_warning.as_secs() as i64 {
            found.warnings.push(format!("tls.client_crl: the CRL of \"{issuer}\" expires at {}", date(next)));
        }
        states.push(CrlState { issuer, next_update: next, expired });
    }
    *CRLS.lock().unwrap_or_else(|p| p.into_inner()) = states;
    found
}
