//! Partners behind a TLS-terminating balancer, whole-process: Debian's nginx terminates their TLS
//! without verifying them (`ssl_verify_client optional_no_ca`) and forwards the certificate to the
//! gateway's trusted-hop listener, which verifies it itself. The tutorial client works through it;
//! every way to pass someone else's certificate off (a stolen token, a certificate the gateway does
//! not trust, a header written by the client, a connection from elsewhere) fails.

mod common;

use base64::Engine;
use common::balancer::{HOP_HEADER, HOP_SOURCE};
use common::{cert, metric, Options, System, API};
use std::process::Command;

fn behind_balancer() -> Options {
    Options { via_balancer: true, ..Default::default() }
}

fn escaped_pem(name: &str) -> String {
    let pem = std::fs::read(cert(name)).unwrap();
    pem.iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (*b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn der_of(name: &str) -> Vec<u8> {
    openssl::x509::X509::from_pem(&std::fs::read(cert(name)).unwrap()).unwrap().to_der().unwrap()
}

/// curl straight to the hop listener from `source`, with `p12` as the hop's certificate (or none),
/// sending `headers`: the HTTP status, or `None` when no answer came.
fn to_hop_listener(sys: &System, source: &str, p12: Option<&str>, token: &str, headers: &[String]) -> Option<u16> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--interface", source, "--cacert", &cert("root.pem")])
        .args(["--connect-to", &format!("{API}:443:127.0.0.1:{}", sys.hop_port)])
        .args(["-H", &format!("authorization: Bearer {token}")]);
    if let Some(p12) = p12 {
        cmd.args(["--cert-type", "P12", "--cert", &format!("{}:Password1", cert(p12))]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(format!("https://{API}/api/echo")).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().ok().filter(|s| *s != 0)
}

/// The README's tutorial client, unchanged, with the API host reached through the balancer.
#[tokio::test]
async fn the_tutorial_client_works_through_the_balancer() {
    let sys = System::start_with(behind_balancer());
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/client.sh"))
        .env("GATEWAY", format!("127.0.0.1:{}", sys.gateway_port))
        .env("API_GATEWAY", sys.api_addr().to_string())
        .env("CERTS_DIR", common::certs())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}\n{}", sys.gateway_log());
    assert!(text.contains("successfully created the API transaction"), "{text}");
    let m = sys.metrics().await;
    assert!(metric(&m, "gateway_forwarded_certificates_total", r#"result="accepted""#) >= 1.0, "{m}");
    let log = sys.gateway_log();
    assert!(log.contains("subject=\"CN=demo-partner\"") || log.contains("CN=demo-partner"), "{log}");
}

/// A thief with a certificate of their own, or none, gets nowhere through the balancer: what they
/// write in the certificate header is replaced by the balancer, and what it forwards is theirs.
#[tokio::test]
async fn a_stolen_token_with_a_forged_header_is_refused_through_the_balancer() {
    let sys = System::start_with(behind_balancer());
    let token = sys.token("example.client.p12", "partner-client").await;
    let forged = escaped_pem("example.client.pem");
    for p12 in [Some("other.client.p12"), None] {
        let r = sys
            .client_builder(p12)
            .build()
            .unwrap()
            .post(format!("https://{API}/api/transactions"))
            .bearer_auth(&token)
            .header(HOP_HEADER, &forged)
            .header(
                "client-cert",
                format!(":{}:", base64::engine::general_purpose::STANDARD.encode(der_of("example.client.pem"))),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{p12:?}");
    }
    let log = sys.gateway_log();
    assert!(sys.log_shows("reason=certificate_mismatch"), "{log}");
    assert!(sys.log_shows("reason=no_client_certificate"), "{log}");
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
}

/// The header is only read on the hop's own connections: sent to the external port it is stripped
/// (the token stays bound to the connection's certificate); the hop listener closes a connection
/// from an address it does not trust, and refuses a handshake without the hop's certificate.
#[tokio::test]
async fn the_header_from_anyone_but_the_hop_is_ignored() {
    let sys = System::start_with(behind_balancer());
    let token = sys.token("example.client.p12", "partner-client").await;
    let forged = format!("{HOP_HEADER}: {}", escaped_pem("example.client.pem"));
    let once = std::slice::from_ref(&forged);

    // The external port: the thief's own certificate decides, whatever the header says.
    let r = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(cert("root.pem")).unwrap()).unwrap()])
        .resolve(API, ([127, 0, 0, 1], sys.gateway_port).into())
        .identity(
            reqwest::Identity::from_pkcs12_der(&std::fs::read(cert("other.client.p12")).unwrap(), "Password1").unwrap(),
        )
        .build()
        .unwrap()
        .get(format!("https://{API}/api/echo"))
        .bearer_auth(&token)
        .header(HOP_HEADER, escaped_pem("example.client.pem"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a header on the external port");

    // The hop listener from an address it does not trust: closed before any answer.
    assert_eq!(to_hop_listener(&sys, "127.0.0.3", Some("hop.client.p12"), &token, once), None);
    // From the trusted address without the hop's certificate, or with a partner's: no handshake.
    assert_eq!(to_hop_listener(&sys, HOP_SOURCE, None, &token, once), None);
    assert_eq!(to_hop_listener(&sys, HOP_SOURCE, Some("other.client.p12"), &token, once), None);
    // The hop itself: the header is read (two copies of it are refused, not chosen from).
    assert_eq!(to_hop_listener(&sys, HOP_SOURCE, Some("hop.client.p12"), &token, once), Some(200));
    let twice = to_hop_listener(&sys, HOP_SOURCE, Some("hop.client.p12"), &token, &[forged.clone(), forged]);
    assert_eq!(twice, Some(401));
    // A certificate the CA issued for a server, not a client, is not a partner's.
    let server = format!("{HOP_HEADER}: {}", escaped_pem("example.tls.pem"));
    assert_eq!(to_hop_listener(&sys, HOP_SOURCE, Some("hop.client.p12"), &token, &[server]), Some(401));
    let m = sys.metrics().await;
    assert!(metric(&m, "gateway_connection_cuts_total", r#"reason="hop_untrusted_source""#) >= 1.0, "{m}");
    assert!(metric(&m, "gateway_forwarded_certificates_total", r#"result="malformed""#) >= 1.0, "{m}");
    assert!(metric(&m, "gateway_forwarded_certificates_total", r#"result="invalid_certificate""#) >= 1.0, "{m}");
    assert!(sys.log_shows("reason=forwarded_certificate_malformed"), "{}", sys.gateway_log());
}

/// A forwarded certificate is checked against the CRL the gateway has now: revoking it (a new
/// CRL file) refuses it on the hop's next request, over the hop's same keep-alive connection.
#[tokio::test]
async fn a_forwarded_certificate_revoked_by_a_new_crl_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let crl = dir.path().join("crl.pem");
    std::fs::copy(cert("root.empty.crl.pem"), &crl).unwrap();
    let opts = Options { crl: Some(crl.display().to_string()), ..behind_balancer() };
    let sys = System::start_with(opts);
    let token = sys.token("revoked.client.p12", "revoked-client").await;
    assert_eq!(sys.call_api("revoked.client.p12", &token).await.status(), 200, "{}", sys.gateway_log());
    std::fs::copy(cert("root.crl.pem"), &crl).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = sys.call_api("revoked.client.p12", &token).await.status();
        if status == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status} after the CRL changed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let m = sys.metrics().await;
    assert!(metric(&m, "gateway_forwarded_certificates_total", r#"result="revoked""#) >= 1.0, "{m}");
}

/// Envoy's `X-Forwarded-Client-Cert` and RFC 9440's `Client-Cert` (with `Client-Cert-Chain`), as a
/// hop sends them, bind the token to the certificate they carry.
#[tokio::test]
async fn each_header_format_carries_the_partner() {
    let der = der_of("example.client.pem");
    let sf = format!(":{}:", base64::engine::general_purpose::STANDARD.encode(&der));
    let root_sf = format!(":{}:", base64::engine::general_purpose::STANDARD.encode(der_of("root.pem")));
    let xfcc =
        format!("By=spiffe://edge;Hash=00;Cert=\"{}\";Subject=\"CN=demo-partner\"", escaped_pem("example.client.pem"));
    let cases = [
        ("rfc9440", "client-cert", vec![format!("client-cert: {sf}"), format!("client-cert-chain: {root_sf}")]),
        ("xfcc", "x-forwarded-client-cert", vec![format!("x-forwarded-client-cert: {xfcc}")]),
    ];
    for (format, header, headers) in cases {
        let mut opts = Options::default();
        let hop =
            serde_yaml::from_str::<serde_yaml::Value>(&format!("{{format: {format}, header: {header}}}")).unwrap();
        opts.patches.push(("trusted_hop.format", hop["format"].clone()));
        opts.patches.push(("trusted_hop.header", hop["header"].clone()));
        opts.via_balancer = true;
        let sys = System::start_with(opts);
        let token = sys.token("example.client.p12", "partner-client").await;
        let ok = to_hop_listener(&sys, HOP_SOURCE, Some("hop.client.p12"), &token, &headers);
        assert_eq!(ok, Some(200), "{format}: {}", sys.gateway_log());
        let other = sys.token("other.client.p12", "other-client").await;
        assert_eq!(to_hop_listener(&sys, HOP_SOURCE, Some("hop.client.p12"), &other, &headers), Some(401), "{format}");
    }
}

/// One partner's refused certificate (or none) is that request's: the hop's HTTP/1.1 connection
/// (nginx speaks HTTP/1.1 to its upstreams), which carries every partner's requests one after the
/// other, stays open for the next one instead of costing the balancer a new handshake.
#[tokio::test]
async fn a_refused_partner_does_not_close_the_hops_connection() {
    let sys = System::start_with(behind_balancer());
    let token = sys.token("example.client.p12", "partner-client").await;
    let one = |header: Option<String>| {
        let mut args: Vec<String> = ["-sS", "--http1.1", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(["-w".into(), "%{http_code} %{num_connects}\n".into(), "--interface".into(), HOP_SOURCE.into()]);
        args.extend(["--cacert".into(), cert("root.pem"), "--cert-type".into(), "P12".into()]);
        args.extend(["--cert".into(), format!("{}:Password1", cert("hop.client.p12"))]);
        args.extend(["--connect-to".into(), format!("{API}:443:127.0.0.1:{}", sys.hop_port)]);
        args.extend(["-H".into(), format!("authorization: Bearer {token}")]);
        if let Some(h) = header {
            args.extend(["-H".into(), h]);
        }
        args.push(format!("https://{API}/api/echo"));
        args
    };
    let mut args = one(Some(format!("{HOP_HEADER}: {}", escaped_pem("untrusted.client.pem"))));
    for next in [one(None), one(Some(format!("{HOP_HEADER}: {}", escaped_pem("example.client.pem"))))] {
        args.push("--next".into());
        args.extend(next);
    }
    let out = Command::new("curl").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // Status and new connections made, per request: one connection for the three.
    assert_eq!(text.lines().collect::<Vec<_>>(), ["401 1", "401 0", "200 0"], "{text}\n{}", sys.gateway_log());
}
