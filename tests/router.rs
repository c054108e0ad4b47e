//! The one-port SNI router: passthrough fidelity, PROXY protocol, unknown SNI, clients that are not
//! TLS or say nothing, certificate selection by SNI, CRL reload, and binding on resumed sessions.

mod common;

use common::net::{client_hello, echo_server, tls_connector};
use common::{cert, Options, System, API};
use openssl::pkcs12::Pkcs12;
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `payload` through the gateway, half-closes, and returns everything that comes back.
async fn round_trip(gateway_port: u16, payload: Vec<u8>) -> Vec<u8> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", gateway_port)).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&payload).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut back)).await.unwrap().unwrap();
    writer.await.unwrap();
    back
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn passthrough_route(sni: &str, port: u16, proxy_protocol: bool) -> Vec<serde_yaml::Value> {
    vec![common::yaml::parse(&format!(
        "{{sni: \"{sni}\", upstream: \"127.0.0.1:{port}\", proxy_protocol: {proxy_protocol}}}"
    ))]
}

#[tokio::test]
async fn passthrough_carries_large_transfers_byte_identical_with_half_close() {
    let echo = echo_server().await;
    let sys = System::start_with(Options {
        extra_passthrough: passthrough_route("*.echo.test", echo, false),
        ..Default::default()
    });
    let mut payload = client_hello("big.echo.test");
    payload.extend_from_slice(&pseudo_random(8 << 20));
    let back = round_trip(sys.gateway_port, payload.clone()).await;
    assert_eq!(back.len(), payload.len() + 3);
    assert!(back[..payload.len()] == payload[..], "the echoed bytes differ");
    assert_eq!(&back[payload.len()..], b"BYE");
    let log = sys.gateway_log();
    let line = format!(
        "sni=big.echo.test route=*.echo.test upstream=127.0.0.1:{echo} bytes_up={} bytes_down={}",
        payload.len(),
        payload.len() + 3
    );
    assert!(log.contains(&line), "{log}");
    assert!(log.contains("end=closed"), "{log}");
}

#[tokio::test]
async fn proxy_protocol_v2_tells_the_upstream_who_connected() {
    let echo = echo_server().await;
    let sys = System::start_with(Options {
        extra_passthrough: passthrough_route("pp.echo.test", echo, true),
        ..Default::default()
    });
    let hello = client_hello("pp.echo.test");
    let back = round_trip(sys.gateway_port, hello.clone()).await;
    assert_eq!(&back[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(&back[12..16], &[0x21, 0x11, 0, 12]);
    assert_eq!(&back[16..20], &[127, 0, 0, 1]);
    assert_eq!(&back[20..24], &[127, 0, 0, 1]);
    assert_eq!(u16::from_be_bytes([back[26], back[27]]), sys.gateway_port);
    assert_eq!(&back[28..28 + hello.len()], &hello[..]);
}

/// Whether a TLS handshake (plus one read, for TLS 1.3's late client-certificate alerts) succeeds.
fn handshake_ok(port: u16, sni: &str, p12: Option<&str>) -> bool {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let Ok(mut tls) = tls_connector(p12, None).connect(sni, tcp) else {
        return false;
    };
    let req = format!("GET /api/transactions HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    if tls.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    tls.read_to_string(&mut answer).is_ok() && answer.starts_with("HTTP/1.1")
}

#[test]
fn unknown_sni_is_closed_or_terminated_as_configured() {
    let closing = System::start_with(Options { unknown_sni: "close", ..Default::default() });
    assert!(!handshake_ok(closing.gateway_port, "unknown.example.com", Some("example.client.p12")));
    assert!(handshake_ok(closing.gateway_port, API, Some("example.client.p12")));
    let terminating = System::start_with(Options { unknown_sni: "terminate", ..Default::default() });
    assert!(handshake_ok(terminating.gateway_port, "unknown.example.com", Some("example.client.p12")));
}

#[test]
fn non_tls_and_silent_clients_are_closed_while_others_are_served() {
    let sys = System::start_with(Options { client_hello_timeout: "1s", ..Default::default() });
    let mut plain = TcpStream::connect(("127.0.0.1", sys.gateway_port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n").unwrap();
    let mut got = Vec::new();
    assert_eq!(plain.read_to_end(&mut got).map_err(|e| e.kind()).ok(), Some(0), "no answer to a non-TLS client");
    // A silent client is closed by the ClientHello timeout (the read ends, it does not time out).
    let mut silent = TcpStream::connect(("127.0.0.1", sys.gateway_port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(handshake_ok(sys.gateway_port, API, Some("example.client.p12")), "served while the silent client waits");
    let mut buf = [0u8; 1];
    assert_eq!(silent.read(&mut buf).unwrap(), 0);
}

#[test]
fn the_certificate_is_chosen_by_sni() {
    let extra = common::yaml::parse(&format!(
        "- {{hosts: [\"*.example.org\"], certificate: \"{}\", key: \"{}\"}}",
        cert("example-org.tls.pem"),
        cert("example-org.tls.key")
    ));
    let sys = System::start_with(Options { patches: vec![("tls.certificates", extra)], ..Default::default() });
    // The connector verifies the host name: each handshake only succeeds with the matching certificate.
    assert!(handshake_ok(sys.gateway_port, "api.example.org", Some("example.client.p12")));
    assert!(handshake_ok(sys.gateway_port, API, Some("example.client.p12")));
}

#[test]
fn a_crl_change_applies_to_new_connections_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let crl = dir.path().join("crl.pem");
    std::fs::copy(cert("root.empty.crl.pem"), &crl).unwrap();
    let sys = System::start_with(Options { crl: Some(crl.display().to_string()), ..Default::default() });
    assert!(handshake_ok(sys.gateway_port, API, Some("revoked.client.p12")), "not yet revoked");
    std::fs::copy(cert("root.crl.pem"), &crl).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!handshake_ok(sys.gateway_port, API, Some("revoked.client.p12")), "revoked after the reload");
    assert!(handshake_ok(sys.gateway_port, API, Some("example.client.p12")));
}

/// One HTTP/1.1 request on a fresh TLS connection, resuming `session` if given.
fn call_once(
    port: u16,
    connector: &SslConnector,
    token: &str,
    session: Option<&openssl::ssl::SslSession>,
) -> (String, bool, Option<openssl::ssl::SslSession>) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut cfg = connector.configure().unwrap();
    cfg.set_use_server_name_indication(true);
    let mut ssl = cfg.into_ssl(API).unwrap();
    if let Some(s) = session {
        unsafe { ssl.set_session(s).unwrap() };
    }
    let mut tls = openssl::ssl::SslStream::new(ssl, tcp).unwrap();
    tls.connect().unwrap();
    let req = format!(
        "POST /api/transactions HTTP/1.1\r\nHost: {API}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).unwrap();
    let answer = read_response(&mut tls);
    // Close cleanly (close_notify): a session ended by a bare EOF is not resumable.
    let _ = tls.shutdown();
    let reused = tls.ssl().session_reused();
    (answer, reused, tls.ssl().session().map(|s| s.to_owned()))
}

/// Reads one HTTP/1.1 response with a Content-Length body, leaving the connection open.
fn read_response(tls: &mut impl Read) -> String {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

#[test]
fn binding_holds_on_resumed_tls_sessions() {
    let sys = System::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = rt.block_on(sys.token("example.client.p12", "partner-client"));
    for max in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
        let connector = tls_connector(Some("example.client.p12"), Some(max));
        let (first, reused, session) = call_once(sys.gateway_port, &connector, &token, None);
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(!reused);
        let (second, reused, _) = call_once(sys.gateway_port, &connector, &token, session.as_ref());
        assert!(reused, "the session was not resumed ({max:?})");
        assert!(second.starts_with("HTTP/1.1 200"), "{max:?}: {second}");
        // A thief's connection with its own certificate resumes its own session: still refused.
        let thief = tls_connector(Some("other.client.p12"), Some(max));
        let (_, _, session) = call_once(sys.gateway_port, &thief, &token, None);
        let (stolen, reused, _) = call_once(sys.gateway_port, &thief, &token, session.as_ref());
        assert!(reused);
        assert!(stolen.starts_with("HTTP/1.1 401"), "{stolen}");
    }
}

#[tokio::test]
async fn passthrough_connections_over_the_cap_are_closed() {
    let echo = echo_server().await;
    let sys = System::start_with(Options {
        extra_passthrough: passthrough_route("*.echo.test", echo, false),
        passthrough_max_connections: 1,
        ..Default::default()
    });
    let mut first = tokio::net::TcpStream::connect(("127.0.0.1", sys.gateway_port)).await.unwrap();
    let hello = client_hello("a.echo.test");
    first.write_all(&hello).await.unwrap();
    let mut echoed = vec![0u8; hello.len()];
    first.read_exact(&mut echoed).await.unwrap(); // the first tunnel is up and holds the only slot

    // Connections are spread over the worker loops (2 here): the cap is one count for the
    // process, whichever loop a connection lands on.
    for _ in 0..6 {
        let mut second = tokio::net::TcpStream::connect(("127.0.0.1", sys.gateway_port)).await.unwrap();
        second.write_all(&client_hello("b.echo.test")).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut buf)).await.unwrap().unwrap();
        assert_eq!(n, 0, "the connection over the cap must be closed without data");
    }
    first.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    first.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");
}

/// Handshake with a client restricted to one protocol version and cipher list.
fn handshake_with(port: u16, version: SslVersion, ciphers: &str) -> bool {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(cert("root.pem")).unwrap();
    b.set_security_level(0);
    b.set_min_proto_version(Some(version)).unwrap();
    b.set_max_proto_version(Some(version)).unwrap();
    b.set_cipher_list(ciphers).unwrap();
    let parsed =
        Pkcs12::from_der(&std::fs::read(cert("example.client.p12")).unwrap()).unwrap().parse2("Password1").unwrap();
    b.set_certificate(parsed.cert.as_ref().unwrap()).unwrap();
    b.set_private_key(parsed.pkey.as_ref().unwrap()).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    b.build().connect(API, tcp).is_ok()
}

#[test]
fn only_fapi_tls_versions_and_cipher_suites_are_accepted() {
    let sys = System::start();
    let port = sys.gateway_port;
    assert!(handshake_with(port, SslVersion::TLS1_2, "ECDHE-RSA-AES128-GCM-SHA256"));
    assert!(handshake_with(port, SslVersion::TLS1_2, "ECDHE-RSA-AES256-GCM-SHA384"));
    assert!(handshake_with(port, SslVersion::TLS1_3, "DEFAULT"));
    for weak in
        ["ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305", "DHE-RSA-AES128-GCM-SHA256"]
    {
        assert!(!handshake_with(port, SslVersion::TLS1_2, weak), "TLS 1.2 with {weak} must be refused");
    }
    assert!(!handshake_with(port, SslVersion::TLS1_1, "DEFAULT:@SECLEVEL=0"), "TLS 1.1 must be refused");
}
