//! Client CRL lifecycle, whole-process: an expired CRL (a publisher that stopped) is no longer a
//! silent outage. Under `tls.crl_expired: refuse` every partner is still refused, but `-t` warns,
//! the start logs it at ERROR, each refusal is counted and logged with its reason, and `/readyz`
//! reports it; under `keep` the partners are served and the alarm is raised on each.

mod common;

use common::{cert, metric, validate, Options, System};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// `SystemTime` as OpenSSL's `YYYYMMDDHHMMSSZ`.
fn asn1(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace(['-', ':', 'T'], "")
}

/// A CRL (revoking nothing) signed by `ca` (`NAME.pem` and `NAME.key` paths), valid from `last` to
/// `next`, written to `out` in `dir`, with a throw-away CA database there.
fn gencrl(dir: &std::path::Path, (ca, ca_key): (&str, &str), last: SystemTime, next: SystemTime, out: &str) -> PathBuf {
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("crlnumber"), "2000\n").unwrap();
    let cnf = format!(
        "[ ca ]\ndefault_ca = c\n[ c ]\ndatabase = {0}/index.txt\ncrlnumber = {0}/crlnumber\ndefault_md = sha256\n",
        dir.display()
    );
    std::fs::write(dir.join("ca.cnf"), cnf).unwrap();
    let (last, next) = (asn1(last), asn1(next));
    openssl(
        dir,
        &[
            "ca",
            "-config",
            "ca.cnf",
            "-keyfile",
            ca_key,
            "-cert",
            ca,
            "-gencrl",
            "-crl_lastupdate",
            &last,
            "-crl_nextupdate",
            &next,
            "-out",
            out,
        ],
    );
    dir.join(out)
}

/// A CRL of the test root (revoking nothing) with the given validity, in `dir`.
fn crl(dir: &std::path::Path, last: SystemTime, next: SystemTime) -> PathBuf {
    gencrl(dir, (&cert("root.pem"), &cert("root.key")), last, next, "root.crl.pem")
}

const DAY: Duration = Duration::from_secs(86_400);

fn expired_crl(dir: &std::path::Path) -> PathBuf {
    let now = SystemTime::now();
    crl(dir, now - 40 * DAY, now - 10 * DAY)
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

/// Runs openssl with `args` in `dir`, quietly; panics if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status =
        Command::new("openssl").args(args).current_dir(dir).stderr(std::process::Stdio::null()).status().unwrap();
    assert!(status.success(), "openssl {args:?}");
}

/// An issuing CA under the test root, a partner certificate from it, and the issuing CA's CRL.
fn issuing_ca(dir: &std::path::Path) -> PathBuf {
    std::fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
        .unwrap();
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    issue(dir, "issuing", "/CN=Example Issuing CA", (&cert("root.pem"), &cert("root.key")), "ca.ext");
    issue(dir, "leaf", "/CN=issued-partner", ("issuing.pem", "issuing.key"), "leaf.ext");
    let now = SystemTime::now();
    gencrl(dir, ("issuing.pem", "issuing.key"), now - DAY, now + 30 * DAY, "issuing.crl.pem")
}

/// `NAME.key` and `NAME.pem` in `dir`: an EC key and a certificate for `subject` signed by `ca`
/// with the extensions of `ext`.
fn issue(dir: &std::path::Path, name: &str, subject: &str, (ca, ca_key): (&str, &str), ext: &str) {
    let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(dir, &[&["req", "-new"][..], &ec, &["-keyout", &key, "-subj", subject, "-out", &csr]].concat());
    let sign = ["x509", "-req", "-in", &csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "30"];
    openssl(dir, &[&sign[..], &["-extfile", ext, "-out", &pem]].concat());
}

/// A TLS handshake with the partner certificate of the issuing CA, presented with its chain.
fn handshake(sys: &System, dir: &std::path::Path) -> bool {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(cert("root.pem")).unwrap();
    b.set_certificate_file(dir.join("leaf.pem"), SslFiletype::PEM).unwrap();
    b.set_private_key_file(dir.join("leaf.key"), SslFiletype::PEM).unwrap();
    let issuing = openssl::x509::X509::from_pem(&std::fs::read(dir.join("issuing.pem")).unwrap()).unwrap();
    b.add_extra_chain_cert(issuing).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", sys.gateway_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let Ok(mut tls) = b.build().connect(common::API, tcp) else { return false };
    // TLS 1.3 reports a refused client certificate after the handshake: ask for something.
    use std::io::{Read, Write};
    let _ = tls.write_all(format!("GET /api/echo HTTP/1.1\r\nHost: {}\r\n\r\n", common::API).as_bytes());
    let mut buf = [0u8; 16];
    matches!(tls.read(&mut buf), Ok(n) if n > 0)
}

/// A partner from an issuing (intermediate) CA: without that CA's CRL in the bundle it is refused,
/// counted and logged as `crl_missing` naming the issuer; with the bundle it is served.
#[tokio::test]
async fn a_partner_of_an_issuing_ca_needs_that_cas_crl_in_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let issuing_crl = issuing_ca(dir.path());
    let sys = System::start_with(Options { crl: Some(cert("root.crl.pem")), ..Default::default() });
    assert!(!handshake(&sys, dir.path()), "refused without the issuing CA's CRL");
    let log = sys.gateway_log();
    assert!(log.contains("reason=crl_missing subject=\"CN=issued-partner\" issuer=\"CN=Example Issuing CA\""), "{log}");
    let text = sys.metrics().await;
    assert!(metric(&text, "gateway_handshake_refusals_total", "reason=\"crl_missing\"") >= 1.0, "{text}");
    drop(sys);

    let bundle = dir.path().join("bundle.crl.pem");
    let both = [std::fs::read(cert("root.crl.pem")).unwrap(), std::fs::read(&issuing_crl).unwrap()].concat();
    std::fs::write(&bundle, both).unwrap();
    let sys = System::configured(Options { crl: Some(bundle.display().to_string()), ..Default::default() });
    let (ok, out) = validate(&sys.dir.path().join("gateway.yaml"));
    assert!(ok, "{out}");
    assert!(out.contains("CRL of \"CN=Example Root CA\"") && out.contains("CRL of \"CN=Example Issuing CA\""), "{out}");
    let mut sys = sys;
    sys.start_idsvr();
    sys.start_api();
    sys.start_gateway();
    assert!(handshake(&sys, dir.path()), "served with the bundle: {}", sys.gateway_log());
    let issuing = "issuer=\"CN=Example Issuing CA\"";
    assert!(metric(&sys.metrics().await, "gateway_crl_expired", issuing) == 0.0);
    assert!(sys.metrics().await.contains(&format!("gateway_crl_next_update_seconds{{{issuing}}}")));
    // The issuing CA's CRL leaves the bundle: its series go with it (an alert must not outlive it).
    std::fs::write(&bundle, std::fs::read(cert("root.crl.pem")).unwrap()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sys.metrics().await.contains(issuing) {
        assert!(std::time::Instant::now() < deadline, "the removed CRL's series stayed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(sys.metrics().await.contains("gateway_crl_next_update_seconds{issuer=\"CN=Example Root CA\"}"));
}
