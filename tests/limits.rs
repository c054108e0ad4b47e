//! Connection hardening, each attack bounded in time with short configured limits: trickling and
//! idle tunnels are cut, one address cannot take the slots every partner shares, a revoked
//! certificate loses its live connections, connections age out gracefully, client-chosen names
//! make no metric series, and a flood of garbage tokens meets a rate limit.

mod common;

use common::net::{api_request, client_hello, closed_within_async, echo_server, read_answer, tls_connector};
use common::{metric, yaml, Options, System, API};
use mtls_dpop_client::ProofKey;
use serde_yaml::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const DPOP_API: &str = "dpop-api.example.com";
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn passthrough_to(port: u16) -> Vec<Value> {
    vec![yaml::parse(&format!("{{sni: \"*.echo.test\", upstream: \"127.0.0.1:{port}\"}}"))]
}

/// A TCP connection to the gateway from a chosen loopback address.
async fn connect_from(source: [u8; 4], port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::from(source), 0)).unwrap();
    socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
}

/// Opens a tunnel and proves it carries bytes; `None` when the gateway closed it instead.
async fn tunnel(source: [u8; 4], port: u16, name: &str) -> Option<tokio::net::TcpStream> {
    let mut s = connect_from(source, port).await;
    let hello = client_hello(name);
    s.write_all(&hello).await.ok()?;
    let mut echoed = vec![0u8; hello.len()];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed)).await {
        Ok(Ok(_)) => Some(s),
        _ => None,
    }
}

#[tokio::test]
async fn a_trickling_tunnel_is_cut_by_the_rate_rule_and_an_idle_one_by_the_idle_timeout() {
    let echo = echo_server().await;
    let sys = System::start_with(Options {
        extra_passthrough: passthrough_to(echo),
        patches: vec![
            ("passthrough.min_rate", yaml::parse("{bytes: 64, window: 1s}")),
            ("passthrough.idle_timeout", "30s".into()),
        ],
        ..Default::default()
    });
    let mut trickle = tunnel([127, 0, 0, 1], sys.gateway_port, "a.echo.test").await.expect("tunnel up");
    let writer = tokio::spawn(async move {
        // One byte every 300 ms: alive, but far below 64 bytes a second.
        for _ in 0..40 {
            if trickle.write_all(b"x").await.is_err() {
                return Some(trickle);
            }
            let pause = tokio::time::Instant::now() + Duration::from_millis(300);
            let mut buf = [0u8; 16];
            loop {
                match tokio::time::timeout_at(pause, trickle.read(&mut buf)).await {
                    Err(_) => break,
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(trickle),
                    Ok(Ok(_)) => {} // the echo of our byte
                }
            }
        }
        None
    });
    let ended = tokio::time::timeout(Duration::from_secs(10), writer).await.expect("bounded").unwrap();
    assert!(ended.is_some(), "a trickling tunnel outlived 12 s");
    assert!(metric(&sys.metrics().await, "gateway_connection_cuts_total", "reason=\"too_slow\"") >= 1.0);

    let sys = System::start_with(Options {
        extra_passthrough: passthrough_to(echo),
        patches: vec![
            ("passthrough.min_rate", yaml::parse("{bytes: 0, window: 1s}")),
            ("passthrough.idle_timeout", "700ms".into()),
        ],
        ..Default::default()
    });
    let mut idle = tunnel([127, 0, 0, 1], sys.gateway_port, "b.echo.test").await.expect("tunnel up");
    let took = closed_within_async(&mut idle, Duration::from_secs(10)).await.expect("an idle tunnel is closed");
    assert!(took >= Duration::from_millis(500), "closed too early: {took:?}");
    let text = sys.metrics().await;
    assert!(metric(&text, "gateway_connection_cuts_total", "reason=\"idle\"") >= 1.0, "{text}");
    assert!(metric(&text, "gateway_passthrough_connections_total", "end=\"idle\"") >= 1.0, "{text}");
    let log = sys.gateway_log();
    assert!(log.contains("cut source=127.0.0.1 reason=idle"), "{log}");
}

#[tokio::test]
async fn per_source_caps_hold_while_a_second_address_is_served() {
    let echo = echo_server().await;
    let sys = System::start_with(Options {
        extra_passthrough: passthrough_to(echo),
        patches: vec![("limits", yaml::parse("{per_source: {tunnels: 1, connections: 1, handshakes: 2}}"))],
        ..Default::default()
    });
    let port = sys.gateway_port;
    // Tunnels: one per address.
    let _held = tunnel([127, 0, 0, 1], port, "a.echo.test").await.expect("the first tunnel");
    assert!(tunnel([127, 0, 0, 1], port, "b.echo.test").await.is_none(), "a second tunnel from the same address");
    assert!(tunnel([127, 0, 0, 2], port, "c.echo.test").await.is_some(), "another address is served");
    // Unfinished handshakes: two silent sockets hold the share of 127.0.0.3.
    let _silent = [connect_from([127, 0, 0, 3], port).await, connect_from([127, 0, 0, 3], port).await];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect_from([127, 0, 0, 3], port).await;
    assert!(
        closed_within_async(&mut third, Duration::from_secs(3)).await.is_some(),
        "a third silent socket is closed at once"
    );
    assert!(tunnel([127, 0, 0, 2], port, "d.echo.test").await.is_some(), "others are still served");
    // Terminated connections: one per address.
    let (first, second, other) = tokio::task::spawn_blocking(move || {
        let first = bound_tls(port, [127, 0, 0, 4]);
        let second = bound_tls(port, [127, 0, 0, 4]).is_some();
        let other = bound_tls(port, [127, 0, 0, 5]).is_some();
        (first.is_some(), second, other)
    })
    .await
    .unwrap();
    assert!(first, "the first TLS connection");
    assert!(!second, "a second TLS connection from the same address");
    assert!(other, "another address is served");
    let text = sys.metrics().await;
    for reason in ["source_tunnels", "source_handshakes", "source_connections"] {
        assert!(
            metric(&text, "gateway_connection_cuts_total", &format!("reason=\"{reason}\"")) >= 1.0,
            "{reason}: {text}"
        );
    }
}

/// A TLS connection with the partner's certificate from `source` that answered one request.
fn bound_tls(port: u16, source: [u8; 4]) -> Option<openssl::ssl::SslStream<TcpStream>> {
    let socket = socket2_bind(source, port)?;
    let mut tls = tls_connector(Some("example.client.p12"), None).connect(API, socket).ok()?;
    tls.write_all(format!("GET /api/transactions HTTP/1.1\r\nHost: {API}\r\n\r\n").as_bytes()).ok()?;
    let answer = read_answer(&mut tls)?;
    answer.starts_with("HTTP/1.1").then_some(tls)
}

fn socket2_bind(source: [u8; 4], port: u16) -> Option<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let s = runtime.block_on(connect_from(source, port)).into_std().ok()?;
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(s)
}

fn keepalive(port: u16, p12: &str) -> openssl::ssl::SslStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tls_connector(Some(p12), None).connect(API, tcp).unwrap()
}

#[tokio::test]
async fn a_revoked_certificate_loses_its_live_connections_while_another_partner_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let crl = dir.path().join("crl.pem");
    std::fs::copy(common::cert("root.empty.crl.pem"), &crl).unwrap();
    let sys = System::start_with(Options {
        crl: Some(crl.display().to_string()),
        patches: vec![("listener.revocation_grace", "500ms".into())],
        ..Default::default()
    });
    let revoked_token = sys.token("revoked.client.p12", "revoked-client").await;
    let partner_token = sys.token("example.client.p12", "partner-client").await;
    let port = sys.gateway_port;
    let partner = partner_token.clone();
    let (revoked_h1, partner_h1) = tokio::task::spawn_blocking(move || {
        let mut revoked = keepalive(port, "revoked.client.p12");
        let mut partner_conn = keepalive(port, "example.client.p12");
        for (conn, token) in [(&mut revoked, &revoked_token), (&mut partner_conn, &partner)] {
            conn.write_all(&api_request(token)).unwrap();
            let answer = read_answer(conn).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        (revoked, partner_conn)
    })
    .await
    .unwrap();
    let revoked_token = sys.token("revoked.client.p12", "revoked-client").await;
    let h2 = sys.client_builder(Some("revoked.client.p12")).http2_prior_knowledge().build().unwrap();
    let call = |c: &reqwest::Client, t: &str| {
        c.post(format!("https://{API}/api/transactions")).bearer_auth(t).body("{}").send()
    };
    assert_eq!(call(&h2, &revoked_token).await.unwrap().status(), 200, "HTTP/2 before the revocation");

    std::fs::copy(common::cert("root.crl.pem"), &crl).unwrap();
    let token = partner_token.clone();
    let (revoked_closed, partner_ok) = tokio::task::spawn_blocking(move || {
        let (mut revoked, mut partner) = (revoked_h1, partner_h1);
        let started = Instant::now();
        let mut buf = [0u8; 64];
        // An idle HTTP/1.1 connection of the revoked partner is closed without a new request.
        let closed = matches!(revoked.read(&mut buf), Ok(0) | Err(_)).then(|| started.elapsed());
        partner.write_all(&api_request(&token)).unwrap();
        (closed, read_answer(&mut partner))
    })
    .await
    .unwrap();
    let took = revoked_closed.expect("the revoked partner's HTTP/1.1 connection is ended");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(partner_ok.as_deref().is_some_and(|a| a.starts_with("HTTP/1.1 200")), "{partner_ok:?}");
    // HTTP/2: the connection got GOAWAY and is gone; a new handshake with the revoked
    // certificate fails, so nothing answers 200 any more.
    if let Ok(r) = call(&h2, &revoked_token).await {
        assert_ne!(r.status(), 200, "a revoked certificate was served over HTTP/2");
    }
    let log = sys.gateway_log();
    // Behind the balancer the HTTP/2 connection is the balancer's: only the direct one is ended.
    let ended = if sys.balancer.is_some() { "ended 1 of" } else { "ended 2 of" };
    assert!(log.contains(ended), "the reload says how many connections it ended:\n{log}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let sys = System::start_with(Options {
        patches: vec![("listener.h2_idle_timeout", "500ms".into())],
        ..Default::default()
    });
    let port = sys.gateway_port;
    let took = tokio::task::spawn_blocking(move || {
        let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
        b.set_ca_file(common::cert("root.pem")).unwrap();
        let p12 = std::fs::read(common::cert("example.client.p12")).unwrap();
        let parsed = openssl::pkcs12::Pkcs12::from_der(&p12).unwrap().parse2("Password1").unwrap();
        b.set_certificate(parsed.cert.as_ref().unwrap()).unwrap();
        b.set_private_key(parsed.pkey.as_ref().unwrap()).unwrap();
        b.set_alpn_protos(b"\x02h2").unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = b.build().connect(API, tcp).unwrap();
        assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
        // The client preface and an empty SETTINGS frame, then silence.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        while started.elapsed() < Duration::from_secs(10) {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {}
            }
        }
        None
    })
    .await
    .unwrap();
    let took = took.expect("an idle HTTP/2 connection is closed");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_connection_past_its_maximum_age_is_closed_gracefully() {
    let sys = System::start_with(Options {
        patches: vec![("listener.max_connection_age", "1s".into())],
        ..Default::default()
    });
    let token = sys.token("example.client.p12", "partner-client").await;
    let port = sys.gateway_port;
    let (answers, closed) = tokio::task::spawn_blocking(move || {
        let mut conn = keepalive(port, "example.client.p12");
        let mut answers = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            if conn.write_all(&api_request(&token)).is_err() {
                break;
            }
            let Some(answer) = read_answer(&mut conn) else { break };
            let last = answer.to_ascii_lowercase().contains("connection: close");
            answers.push(answer);
            if last {
                let mut buf = [0u8; 8];
                return (answers, matches!(conn.read(&mut buf), Ok(0) | Err(_)));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (answers, false)
    })
    .await
    .unwrap();
    assert!(answers.len() >= 3, "served before it aged: {}", answers.len());
    assert!(answers.iter().all(|a| a.starts_with("HTTP/1.1 200")), "no request failed: {answers:?}");
    assert!(closed, "the last answer said close and the connection ended");
}

#[tokio::test]
async fn random_names_under_a_wildcard_route_add_no_metric_series() {
    let echo = echo_server().await;
    let sys = System::start_with(Options { extra_passthrough: passthrough_to(echo), ..Default::default() });
    let before = sys.metrics().await.len();
    let port = sys.gateway_port;
    for batch in 0..20 {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    s.write_all(&client_hello(&format!("n{batch}x{i}.echo.test"))).await.unwrap();
                    s.shutdown().await.unwrap();
                    let mut sink = Vec::new();
                    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = sys.metrics().await;
    let series: Vec<&str> = text.lines().filter(|l| l.starts_with("gateway_passthrough_connections_total")).collect();
    assert!(series.len() <= 3, "{series:?}");
    assert!(series.iter().all(|l| l.contains("route=\"*.echo.test\"") || l.contains("route=\"login.example.com\"")));
    assert!(metric(&text, "gateway_passthrough_connections_total", "route=\"*.echo.test\"") >= 1000.0);
    assert!(text.len() < before + 2048, "metrics grew from {before} to {} bytes", text.len());
}

#[tokio::test]
async fn a_flood_of_garbage_tokens_meets_a_rate_limit_and_another_partner_is_not_affected() {
    let sys = System::start_with(Options {
        patches: vec![("limits", yaml::parse("{introspection_misses: {per_second: 1, burst: 5}}"))],
        ..Default::default()
    });
    let other = sys.token("other.client.p12", "other-client").await;
    assert_eq!(sys.call_api("other.client.p12", &other).await.status(), 200, "cached from now on");
    let before = sys.introspections().await;
    let flood = sys.client("example.client.p12");
    let partner = sys.client("other.client.p12");
    let (mut refused_401, mut limited, mut other_ok) = (0, 0, 0);
    for i in 0..30 {
        let r = flood
            .post(format!("https://{API}/api/transactions"))
            .bearer_auth(format!("garbage-{i}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            401 => refused_401 += 1,
            429 => {
                limited += 1;
                let retry =
                    r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
                assert!(retry.is_some_and(|s| s >= 1), "Retry-After in whole seconds");
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["code"], "rate_limited");
            }
            s => panic!("unexpected {s}"),
        }
        let r = partner
            .post(format!("https://{API}/api/transactions"))
            .bearer_auth(&other)
            .body("{}")
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            other_ok += 1;
        }
    }
    assert!(limited >= 20, "limited {limited}, refused {refused_401}");
    assert!((5..=8).contains(&refused_401), "the burst, plus what refilled: {refused_401}");
    assert_eq!(other_ok, 30, "the other partner's cached token was never limited");
    let calls = sys.introspections().await - before;
    assert_eq!(calls, refused_401, "only the admitted misses reached the identity server");
}

#[tokio::test]
async fn a_route_rate_limit_counts_per_partner() {
    let sys = System::start_with(Options {
        patches: vec![(
            "routes[1].filters",
            yaml::parse(
                "[{phantom_token: {introspection: idsvr}}, {cert_binding: {}}, {scope: {required: [transactions]}}, \
                 {rate_limit: {per_second: 1, burst: 3}}]",
            ),
        )],
        ..Default::default()
    });
    let token = sys.token("example.client.p12", "partner-client").await;
    let other = sys.token("other.client.p12", "other-client").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(sys.call_api("example.client.p12", &token).await.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert_eq!(sys.call_api("other.client.p12", &other).await.status(), 200);
}

/// Round 3: the identity server is shielded as shipped. With no `introspection_misses` written, a
/// partner sending made-up tokens is limited (20/s, burst 100 per certificate), so the identity
/// server sees a bounded number of calls, not one per request.
#[tokio::test]
async fn garbage_tokens_are_limited_by_default() {
    let sys = System::start();
    let before = sys.introspections().await;
    let client = sys.client("example.client.p12");
    let started = std::time::Instant::now();
    let (mut limited, mut sent) = (0u64, 0u64);
    while sent < 400 {
        let r = client
            .post(format!("https://{API}/api/transactions"))
            .bearer_auth(format!("made-up-{sent}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        sent += 1;
        match r.status().as_u16() {
            401 => {}
            429 => limited += 1,
            s => panic!("unexpected {s}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = sys.introspections().await - before;
    let allowed = 100.0 + 20.0 * elapsed + 5.0;
    assert!((calls as f64) <= allowed, "{calls} introspection calls in {elapsed:.1}s (allowed {allowed:.0})");
    assert!(limited > 0, "no request was limited: {calls} calls in {elapsed:.1}s");
}

/// Round 3: 40 loopback addresses take every tunnel slot (2 each, 64 slots) and hold them; a new
/// client still logs in and calls the API, because a source holding nothing displaces the oldest
/// tunnel of the heaviest source instead of being refused.
#[tokio::test]
async fn forty_addresses_holding_every_tunnel_do_not_lock_a_new_client_out_of_the_login() {
    let echo = echo_server().await;
    let sys = System::start_with(Options {
        extra_passthrough: passthrough_to(echo),
        passthrough_max_connections: 64,
        patches: vec![("limits.per_source.tunnels", 2.into())],
        ..Default::default()
    });
    let port = sys.gateway_port;
    let mut held = Vec::new();
    for last in 2..42u8 {
        let mut got = 0;
        for _ in 0..2 {
            if let Some(s) = tunnel([127, 0, 0, last], port, "hold.echo.test").await {
                held.push(s);
                got += 1;
            }
        }
        // Once the slots are full, a newcomer gets one by displacing, not two.
        assert!(got >= 1, "127.0.0.{last} got no tunnel at all");
    }
    assert_eq!(held.len(), 72, "32 addresses with 2 each filled the 64 slots, then 8 newcomers got 1 each");
    let text = sys.metrics().await;
    assert_eq!(metric(&text, "gateway_connection_cuts_total", "reason=\"tunnel_displaced\""), 8.0, "{text}");
    // 64 slots held by attackers: a partner from a fresh address logs in and calls the API.
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    // The tunnels still open are at most the cap, and the displaced ones were closed.
    let mut open = 0;
    for s in held.iter_mut() {
        if closed_within_async(s, Duration::from_millis(20)).await.is_none() {
            open += 1;
        }
    }
    assert!(open <= 64, "{open} tunnels open past the cap of 64");
    assert!(sys.log_shows("reason=tunnel_displaced"), "{}", sys.gateway_log());
}

/// Issue 29: `limits.per_partner_requests` counted only clients with a certificate, so a DPoP
/// client without one had every request in flight it wanted. It is counted by its proven key:
/// 30 concurrent slow requests with a limit of 8 get at most 8 answers, the rest 429, while a
/// client with another key is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpop_client_without_a_certificate_meets_the_in_flight_limit_of_its_key() {
    let sys = tokio::task::block_in_place(|| {
        System::start_with(Options { patches: vec![("limits.per_partner_requests", 8.into())], ..Default::default() })
    });
    let gw: SocketAddr = ([127, 0, 0, 1], sys.gateway_port).into();
    let client = sys.client_builder(None).resolve(DPOP_API, gw).build().unwrap();
    let (key, other) = (ProofKey::generate().unwrap(), ProofKey::generate().unwrap());
    let token = sys.dpop_token(&client, &key).await;
    let other_token = sys.dpop_token(&client, &other).await;
    let htu = format!("https://{DPOP_API}:{}/api/slow", sys.gateway_port);
    let slow = |key: &ProofKey, token: &str| {
        client
            .get(format!("{htu}?ms=1500"))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", key.proof("GET", &htu, Some(token), &serde_json::json!({})))
            .send()
    };
    let calls: Vec<_> = (0..30).map(|_| slow(&key, &token)).collect();
    let started = tokio::spawn(futures_util::future::join_all(calls));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other_status = slow(&other, &other_token).await.unwrap().status();
    let statuses: Vec<u16> = started.await.unwrap().into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    eprintln!("one key, 30 concurrent slow requests, limit 8: {ok} x 200, {limited} x 429");
    assert!((1..=8).contains(&ok) && ok + limited == 30, "{statuses:?}");
    assert_eq!(other_status, 200, "another key has its own count");
    assert!(sys.log_shows("refused_by=limits reason=partner_requests"), "{}", sys.gateway_log());
}

/// Issue 29: the introspection-miss bucket of a client without a certificate was keyed by its
/// full address, so each address of an IPv6 /64 had a bucket of its own. It is keyed as the
/// per-source caps key sources (`limits.ipv6_prefix`): unit-tested in
/// `proxy::tests::clients_without_a_certificate_are_limited_per_ipv6_prefix`, as loopback here has
/// one IPv6 address only. Here, on IPv4: connections from one address share one bucket, and
/// another address has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_without_a_certificate_share_the_miss_bucket_of_their_source() {
    let sys = tokio::task::block_in_place(|| {
        System::start_with(Options {
            patches: vec![("limits.introspection_misses", yaml::parse("{per_second: 1, burst: 3}"))],
            ..Default::default()
        })
    });
    let gw: SocketAddr = ([127, 0, 0, 1], sys.gateway_port).into();
    let from = |ip: [u8; 4]| {
        let b = sys.client_builder(None).resolve(DPOP_API, gw).local_address(IpAddr::from(ip));
        b.pool_max_idle_per_host(0).build().unwrap()
    };
    let url = format!("https://{DPOP_API}:{}/api/echo", sys.gateway_port);
    let made_up = |c: &reqwest::Client, i: usize| c.get(&url).bearer_auth(format!("made-up-{i}")).send();
    let (a, b, other) = (from([127, 0, 0, 2]), from([127, 0, 0, 2]), from([127, 0, 0, 3]));
    let mut same_source = Vec::new();
    for i in 0..8 {
        let client = if i % 2 == 0 { &a } else { &b };
        same_source.push(made_up(client, i).await.unwrap().status().as_u16());
    }
    let mut elsewhere = Vec::new();
    for i in 0..3 {
        elsewhere.push(made_up(&other, 100 + i).await.unwrap().status().as_u16());
    }
    assert!(same_source.iter().filter(|s| **s == 429).count() >= 4, "{same_source:?}");
    assert_eq!(elsewhere, [401, 401, 401], "another source has its own bucket");
}
