//! Hosts that accept clients without a certificate (`tls.optional_client_certificate`) share the
//! listener with hosts that demand one. Whatever a client does on the optional host, a request
//! for a certificate-only host never passes without a certificate: not by naming the other host
//! in `Host` or `:authority`, not by resuming a session made on the optional host (TLS 1.2 session
//! ids and TLS 1.3 tickets), on HTTP/1.1 and HTTP/2.

mod common;

use common::net::{h2_tls, tls_connector};
use common::{yaml, Options, System, API};
use openssl::ssl::{SslSession, SslVersion};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const DPOP_API: &str = "dpop-api.example.com";

/// A route of the certificate-only host that relies on mutual TLS alone: a token and its scope,
/// no binding check (so any stolen token passes it once a connection gets there).
fn mtls_only_route() -> serde_yaml::Value {
    yaml::parse(
        "host: api.example.com\npath_prefix: /api/echo\nupstream: example-api\nfilters:\n  \
         - phantom_token: { introspection: idsvr }\n  - scope: { required: [transactions] }",
    )
}

fn system() -> System {
    System::start_with(Options { patches: vec![("routes[0]", mtls_only_route())], ..Default::default() })
}

/// What became of one attempt: the handshake failed, or the status line and whether the TLS
/// session was resumed, with the session to resume next.
#[derive(Debug)]
enum Outcome {
    HandshakeFailed,
    Answered { status: u16, resumed: bool },
}

/// One HTTP/1.1 GET of /api/echo for `host`, on a TLS connection opened for `sni` with the
/// certificate `p12` (or none), resuming `session` if given.
fn h1(
    port: u16,
    (sni, host): (&str, &str),
    p12: Option<&str>,
    version: SslVersion,
    (token, session): (&str, Option<&SslSession>),
) -> (Outcome, Option<SslSession>) {
    let connector = tls_connector(p12, Some(version));
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ssl = connector.configure().unwrap().into_ssl(sni).unwrap();
    if let Some(s) = session {
        // SAFETY: the session comes from a connector with the same settings.
        unsafe { ssl.set_session(s).unwrap() };
    }
    let Ok(mut tls) = openssl::ssl::SslStream::new(ssl, tcp) else { return (Outcome::HandshakeFailed, None) };
    if tls.connect().is_err() {
        return (Outcome::HandshakeFailed, None);
    }
    let req = format!("GET /api/echo HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n");
    // TLS 1.3 reports a refused certificate only at the first read.
    if tls.write_all(req.as_bytes()).is_err() {
        return (Outcome::HandshakeFailed, None);
    }
    let Some(answer) = common::net::read_answer(&mut tls) else { return (Outcome::HandshakeFailed, None) };
    let _ = tls.shutdown();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let resumed = tls.ssl().session_reused();
    (Outcome::Answered { status, resumed }, tls.ssl().session().map(|s| s.to_owned()))
}

/// The same over HTTP/2: `:authority` is `host`, whatever the connection's SNI.
async fn h2(
    port: u16,
    (sni, host): (&str, &str),
    p12: Option<&str>,
    version: SslVersion,
    (token, session): (&str, Option<&SslSession>),
) -> Outcome {
    let Some(tls) = h2_tls(([127, 0, 0, 1], port), sni, p12, (Some(version), session)).await else {
        return Outcome::HandshakeFailed;
    };
    let resumed = tls.ssl().session_reused();
    let Ok((mut client, conn)) = h2::client::handshake(tls).await else { return Outcome::HandshakeFailed };
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://{host}/api/echo"))
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let Ok((answer, _)) = client.send_request(req, true) else { return Outcome::HandshakeFailed };
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(r)) => Outcome::Answered { status: r.status().as_u16(), resumed },
        _ => Outcome::HandshakeFailed,
    }
}

fn refused(o: &Outcome) -> bool {
    match o {
        Outcome::HandshakeFailed => true,
        Outcome::Answered { status, .. } => *status != 200,
    }
}

/// No certificate, SNI of the optional host, `Host`/`:authority` of the certificate-only one:
/// 421 (and the same request for the optional host itself reaches its route).
#[tokio::test]
async fn a_connection_without_a_certificate_cannot_name_a_certificate_only_host() {
    let sys = system();
    let token = sys.token("example.client.p12", "partner-client").await;
    let port = sys.gateway_port;
    for version in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
        let t = token.clone();
        let (o, _) =
            tokio::task::spawn_blocking(move || h1(port, (DPOP_API, API), None, version, (&t, None))).await.unwrap();
        assert!(matches!(o, Outcome::Answered { status: 421, .. }), "HTTP/1.1 {version:?}: {o:?}");
        let o = h2(port, (DPOP_API, API), None, version, (&token, None)).await;
        assert!(matches!(o, Outcome::Answered { status: 421, .. }), "HTTP/2 {version:?}: {o:?}");
        // With a certificate the answer was 421 before too.
        let o = h2(port, (DPOP_API, API), Some("example.client.p12"), version, (&token, None)).await;
        assert!(matches!(o, Outcome::Answered { status: 421, .. }), "HTTP/2 with a certificate: {o:?}");
    }
    assert!(sys.log_shows("reason=misdirected_request"));
}

/// A session made without a certificate on the optional host never resumes on the
/// certificate-only host: the handshake there is a full one, which demands a certificate. Host ×
/// certificate × resumption, TLS 1.2 and 1.3, HTTP/1.1 and HTTP/2.
#[tokio::test]
async fn a_session_without_a_certificate_does_not_resume_on_a_certificate_only_host() {
    let sys = system();
    let token = sys.token("example.client.p12", "partner-client").await;
    let port = sys.gateway_port;
    for version in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
        let t = token.clone();
        let run = move |sni: &'static str, p12: Option<&'static str>, session: Option<SslSession>| {
            let t = t.clone();
            move || h1(port, (sni, sni), p12, version, (&t, session.as_ref()))
        };
        // Without a certificate: the optional host's route answers (its binding refuses a
        // certificate-bound token, 401, but the connection is served), and its session resumes there.
        let (first, anonymous) = tokio::task::spawn_blocking(run(DPOP_API, None, None)).await.unwrap();
        assert!(matches!(first, Outcome::Answered { status: 401, resumed: false }), "{version:?}: {first:?}");
        let anonymous = anonymous.expect("a session to resume");
        let (again, _) = tokio::task::spawn_blocking(run(DPOP_API, None, Some(anonymous.clone()))).await.unwrap();
        assert!(matches!(again, Outcome::Answered { resumed: true, .. }), "{version:?}: {again:?}");
        // The attack: that session offered for the certificate-only host.
        let (stolen, _) = tokio::task::spawn_blocking(run(API, None, Some(anonymous.clone()))).await.unwrap();
        assert!(refused(&stolen), "HTTP/1.1 {version:?}: resumed onto {API}: {stolen:?}");
        assert!(!matches!(stolen, Outcome::Answered { resumed: true, .. }), "{version:?}: {stolen:?}");
        let stolen = h2(port, (API, API), None, version, (&token, Some(&anonymous))).await;
        assert!(refused(&stolen), "HTTP/2 {version:?}: resumed onto {API}: {stolen:?}");
        // With a certificate, sessions resume within a host's own policy and requests pass.
        let (first, session) = tokio::task::spawn_blocking(run(API, Some("example.client.p12"), None)).await.unwrap();
        assert!(matches!(first, Outcome::Answered { status: 200, .. }), "{version:?}: {first:?}");
        let (again, _) =
            tokio::task::spawn_blocking(run(API, Some("example.client.p12"), session.clone())).await.unwrap();
        assert!(matches!(again, Outcome::Answered { status: 200, resumed: true }), "{version:?}: {again:?}");
        let again = h2(port, (API, API), Some("example.client.p12"), version, (&token, session.as_ref())).await;
        assert!(matches!(again, Outcome::Answered { status: 200, resumed: true }), "h2 {version:?}: {again:?}");
        // A certificate session of the mandatory host offered on the optional host: never
        // resumed there (the policies do not share sessions), but served after a full handshake.
        let (cross, _) =
            tokio::task::spawn_blocking(run(DPOP_API, Some("example.client.p12"), session.clone())).await.unwrap();
        assert!(matches!(cross, Outcome::Answered { resumed: false, .. }), "{version:?}: {cross:?}");
        // No certificate and no session on the certificate-only host: the handshake fails.
        let (none, _) = tokio::task::spawn_blocking(run(API, None, None)).await.unwrap();
        assert!(matches!(none, Outcome::HandshakeFailed), "{version:?}: {none:?}");
    }
}

/// An HTTP/2 connection to `sni` from the loopback address `source`, with the certificate `p12`
/// or none, held open doing nothing: the handle to keep it, and a task that ends when the gateway
/// closes it. `None` when the gateway refused it.
async fn idle_h2(
    source: [u8; 4],
    port: u16,
    sni: &str,
    p12: Option<&str>,
) -> Option<(h2::client::SendRequest<bytes::Bytes>, tokio::task::JoinHandle<()>)> {
    let tls = h2_tls((source, port), sni, p12, (None, None)).await?;
    let (send, conn) = h2::client::handshake(tls).await.ok()?;
    let send = send.ready().await.ok()?;
    Some((
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    ))
}

/// Round 4: 5 addresses × 4 idle HTTP/2 connections without a certificate filled
/// `max_connections: 20`, and partners were refused for as long as they held them. Anonymous
/// connections now have a share of their own (a quarter by default) and displace one another;
/// a partner is served.
#[tokio::test]
async fn anonymous_connections_cannot_fill_the_listener() {
    let patches = vec![("listener.max_connections", 20.into())];
    let sys = System::start_with(Options { patches, ..Default::default() });
    let token = sys.token("example.client.p12", "partner-client").await;
    let mut held = Vec::new();
    for round in 0..4 {
        for n in 2..7u8 {
            if let Some(conn) = idle_h2([127, 0, 0, n], sys.gateway_port, DPOP_API, None).await {
                held.push((round, n, conn));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open = held.iter().filter(|(_, _, (_, task))| !task.is_finished()).count();
    assert!(open <= 5, "{open} anonymous connections still open, over the share of 5");
    let partner = sys.call_api("example.client.p12", &token).await;
    assert_eq!(partner.status(), 200, "a partner is served while anonymous clients hold connections");
    // An anonymous newcomer still gets in (displacing the oldest anonymous connection).
    assert!(idle_h2([127, 0, 0, 9], sys.gateway_port, DPOP_API, None).await.is_some());
    let metrics = sys.metrics().await;
    assert!(metrics.contains("connection_displaced") || metrics.contains("anonymous_connections"), "{metrics}");
}

/// A connection without a certificate that sends nothing is ended after
/// `listener.anonymous_idle_timeout`; a partner's idle connection is kept.
#[tokio::test]
async fn idle_anonymous_connections_end_sooner_than_partners() {
    let patches = vec![("listener.anonymous_idle_timeout", "2s".into())];
    let sys = System::start_with(Options { patches, ..Default::default() });
    let (_a, anonymous) = idle_h2([127, 0, 0, 1], sys.gateway_port, DPOP_API, None).await.expect("served");
    let (_p, partner) =
        idle_h2([127, 0, 0, 1], sys.gateway_port, API, Some("example.client.p12")).await.expect("served");
    let mut anonymous = anonymous;
    let ended = tokio::time::timeout(Duration::from_secs(6), &mut anonymous).await;
    assert!(ended.is_ok(), "an idle anonymous connection was kept past its limit");
    assert!(!partner.is_finished(), "the partner's idle connection is kept");
    // HTTP/1.1: the anonymous keep-alive limit is the shorter one.
    let port = sys.gateway_port;
    let closed = tokio::task::spawn_blocking(move || {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut tls = tls_connector(None, None).connect(DPOP_API, tcp).unwrap();
        let req = format!("GET /api/echo HTTP/1.1\r\nHost: {DPOP_API}\r\n\r\n");
        tls.write_all(req.as_bytes()).unwrap();
        common::net::read_answer(&mut tls).expect("an answer");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let _ = tls.read(&mut buf);
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(closed < Duration::from_secs(5), "kept {closed:?}");
}
