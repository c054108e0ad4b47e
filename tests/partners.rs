//! Per-partner metrics, whole-process: a configured partner is counted under its name with the
//! expiry of the certificate it presented; 1000 other certificates from the same CA all count as
//! `other`, so a client cannot create series.

mod common;

use common::{cert, yaml, Options, System, API};
use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use std::io::{Read, Write};

/// A client certificate `CN=name` from the test root, made in process (EC keys are quick).
fn issue(name: &str, root: &X509, root_key: &PKey<Private>) -> (X509, PKey<Private>) {
    let key =
        PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap()).unwrap();
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", name).unwrap();
    let subject = subject.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(root.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    let serial = openssl::bn::BigNum::from_u32(rand_serial()).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    b.sign(root_key, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}

fn rand_serial() -> u32 {
    let mut buf = [0u8; 4];
    openssl::rand::rand_bytes(&mut buf).unwrap();
    u32::from_le_bytes(buf) | 1
}

/// One request without a token over a TLS connection with `cert`; the status line's code.
fn knock(port: u16, cert: &X509, key: &PKey<Private>) -> Option<u16> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(common::cert("root.pem")).unwrap();
    b.set_certificate(cert).unwrap();
    b.set_private_key(key).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    let mut tls = b.build().connect(API, tcp).ok()?;
    tls.write_all(format!("GET /api/echo HTTP/1.1\r\nHost: {API}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer);
    answer.split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_labels_stay_bounded_when_a_thousand_certificates_connect() {
    let sys = System::start_with(Options {
        patches: vec![("partners", yaml::parse("{CN=demo-partner: demo}"))],
        ..Default::default()
    });
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    let before = sys.metrics().await.len();

    let root = X509::from_pem(&std::fs::read(cert("root.pem")).unwrap()).unwrap();
    let root_key = PKey::private_key_from_pem(&std::fs::read(cert("root.key")).unwrap()).unwrap();
    let port = sys.gateway_port;
    let certs: Vec<_> = (0..1000).map(|i| issue(&format!("flood-{i}"), &root, &root_key)).collect();
    let answered = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let handles: Vec<_> = certs
                .chunks(250)
                .map(|chunk| s.spawn(move || chunk.iter().filter(|(c, k)| knock(port, c, k) == Some(401)).count()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
        })
    })
    .await
    .unwrap();
    assert_eq!(answered, 1000, "every certificate from the CA was served (401: no token)");

    let text = sys.metrics().await;
    let labels: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("gateway_partner_requests_total{"))
        .filter_map(|l| l.split("partner=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(labels.into_iter().collect::<Vec<_>>(), ["demo", "other"], "{text}");
    assert!(text.len() < before + 4096, "metrics grew from {before} to {} bytes", text.len());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as f64;
    let not_after = text
        .lines()
        .find(|l| l.starts_with("gateway_partner_certificate_not_after_seconds{partner=\"demo\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("the demo partner's certificate expiry");
    assert!(not_after > now && not_after < now + 400.0 * 86_400.0, "{not_after}");
    assert!(!text.contains("gateway_partner_certificate_not_after_seconds{partner=\"other\"}"), "{text}");
}
