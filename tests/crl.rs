//! Client CRL lifecycle, whole-process: an expired CRL (a publisher that stopped) is no longer a
//! silent outage. Under `tls.crl_expired: refuse` every partner is still refused, but `-t` warns,
//! the start logs it at ERROR, each refusal is counted and logged with its reason, and `/readyz`
//! reports it; under `keep` the partners are served and the alarm is raised on each.

mod common;

use common::{cert, validate, Options, System};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// `SystemTime` as OpenSSL's `YYYYMMDDHHMMSSZ`.
fn asn1(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace(['-', ':', 'T'], "")
}

/// A CRL of the test root (revoking nothing) with the given validity, in `dir`.
fn crl(dir: &std::path::Path, last: SystemTime, next: SystemTime) -> PathBuf {
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("crlnumber"), "2000\n").unwrap();
    let cnf = format!(
        "[ ca ]\ndefault_ca = root\n[ root ]\ndatabase = {}/index.txt\ncrlnumber = {}/crlnumber\ndefault_md = sha256\n",
        dir.display(),
        dir.display()
    );
    std::fs::write(dir.join("ca.cnf"), cnf).unwrap();
    let out = dir.join("root.crl.pem");
    let status = Command::new("openssl")
        .args(["ca", "-config"])
        .arg(dir.join("ca.cnf"))
        .args(["-keyfile", &cert("root.key"), "-cert", &cert("root.pem"), "-gencrl"])
        .args(["-crl_lastupdate", &asn1(last), "-crl_nextupdate", &asn1(next), "-out"])
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl ca -gencrl");
    out
}

const DAY: Duration = Duration::from_secs(86_400);

fn expired_crl(dir: &std::path::Path) -> PathBuf {
    let now = SystemTime::now();
    crl(dir, now - 40 * DAY, now - 10 * DAY)
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn an_expired_crl_under_refuse_is_loud_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let sys =
        System::configured(Options { crl: Some(expired_crl(dir.path()).display().to_string()), ..Default::default() });
    let (ok, out) = validate(&sys.dir.path().join("gateway.yaml"));
    assert!(ok, "{out}");
    assert!(out.contains("tls.client_crl: CRL of \"CN=Example Root CA\", next update"), "-t lists the CRL: {out}");
    assert!(out.contains("warning: tls.client_crl: the CRL of \"CN=Example Root CA\" expired at"), "{out}");
    drop(sys);

    let sys =
        System::start_with(Options { crl: Some(expired_crl(dir.path()).display().to_string()), ..Default::default() });
    let token = sys.token("example.client.p12", "partner-client").await; // the login is passed through
    let refused = sys
        .client("example.client.p12")
        .post(format!("https://{}/api/transactions", common::API))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(refused.is_err(), "the policy refuses every certificate of the issuer: {refused:?}");
    let log = sys.gateway_log();
    assert!(log.contains("ERROR") && log.contains("expired at"), "the start says it at ERROR: {log}");
    assert!(log.contains("reason=crl_expired subject=\"CN=demo-partner\" issuer=\"CN=Example Root CA\""), "{log}");
    let text = sys.metrics().await;
    assert!(metric(&text, "gateway_handshake_refusals_total", "reason=\"crl_expired\"") >= 1.0, "{text}");
    assert_eq!(metric(&text, "gateway_crl_expired", "issuer=\"CN=Example Root CA\""), 1.0, "{text}");
    let ready: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{}/readyz", sys.metrics_port)).await.unwrap().json().await.unwrap();
    assert_eq!(ready["client_crls"][0]["expired"], true, "{ready}");
}

#[tokio::test]
async fn an_expired_crl_under_keep_serves_and_raises_the_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let sys = System::start_with(Options {
        crl: Some(expired_crl(dir.path()).display().to_string()),
        patches: vec![("tls.crl_expired", "keep".into())],
        ..Default::default()
    });
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    let text = sys.metrics().await;
    assert!(metric(&text, "gateway_crl_expired_accepted_total", "") >= 1.0, "{text}");
    assert_eq!(metric(&text, "gateway_crl_expired", "issuer=\"CN=Example Root CA\""), 1.0, "{text}");
    let log = sys.gateway_log();
    assert!(log.contains("reason=crl_expired_kept"), "{log}");
}

#[test]
fn a_crl_that_expires_within_the_margin_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let soon = crl(dir.path(), now - DAY, now + 2 * DAY);
    let sys = System::configured(Options { crl: Some(soon.display().to_string()), ..Default::default() });
    let (ok, out) = validate(&sys.dir.path().join("gateway.yaml"));
    assert!(ok, "{out}");
    assert!(out.contains("warning: tls.client_crl: the CRL of \"CN=Example Root CA\" expires at"), "{out}");
    let fresh = crl(dir.path(), now - DAY, now + 30 * DAY);
    let sys = System::configured(Options { crl: Some(fresh.display().to_string()), ..Default::default() });
    let (ok, out) = validate(&sys.dir.path().join("gateway.yaml"));
    assert!(ok && !out.contains("warning: tls.client_crl"), "{out}");
}
