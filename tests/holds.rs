//! Round 3 of the hardening, whole-process: what one partner certificate could hold without limit
//! of time or memory. Each test holds a connection the way the review did and shows it cut.

mod common;

use common::net::{api_request, closed_within, read_answer, tls_connector};
use common::{yaml, Options, System, API};
use openssl::ssl::{SslConnector, SslStream};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Short limits, so that each hold is cut within seconds.
fn strict() -> Options {
    let patches = [
        ("listener.header_timeout", "2s"),
        ("listener.max_request_header_bytes", "16384"),
        ("listener.body_timeout", "3s"),
        ("listener.body_min_rate", "{bytes: 100, window: 2s}"),
        ("listener.max_connection_age", "3s"),
        ("listener.max_connection_age_grace", "2s"),
        ("listener.h2_max_concurrent_streams", "8"),
    ];
    Options { patches: patches.into_iter().map(|(k, v)| (k, yaml::parse(v))).collect(), ..Default::default() }
}

fn start(opts: Options) -> System {
    System::start_with(opts)
}

fn connect(sys: &System, alpn: Option<&[u8]>) -> SslStream<TcpStream> {
    let connector = match alpn {
        None => tls_connector(Some("example.client.p12"), None),
        Some(protos) => {
            let mut b = SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
            b.set_ca_file(common::cert("root.pem")).unwrap();
            let p12 = std::fs::read(common::cert("example.client.p12")).unwrap();
            let parsed = openssl::pkcs12::Pkcs12::from_der(&p12).unwrap().parse2("Password1").unwrap();
            b.set_certificate(parsed.cert.as_ref().unwrap()).unwrap();
            b.set_private_key(parsed.pkey.as_ref().unwrap()).unwrap();
            b.set_alpn_protos(protos).unwrap();
            b.build()
        }
    };
    let tcp = TcpStream::connect(("127.0.0.1", sys.gateway_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    connector.connect(API, tcp).unwrap()
}

#[test]
fn an_h2_connection_without_its_preface_is_closed_after_the_header_timeout() {
    let sys = start(strict());
    let mut conn = connect(&sys, Some(b"\x02h2"));
    assert_eq!(conn.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    let took = closed_within(&mut conn, Duration::from_secs(10), |_| {}).expect("closed");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(sys.log_shows("reason=h2_preface_timeout"), "{}", sys.gateway_log());
}

#[test]
fn a_header_trickled_a_byte_at_a_time_is_cut_after_the_header_timeout() {
    let sys = start(strict());
    let mut conn = connect(&sys, None);
    let request = b"GET /api/echo HTTP/1.1\r\nHost: api.example.com\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut at = 0;
    let took = closed_within(&mut conn, Duration::from_secs(10), |c| {
        if at < request.len() {
            let _ = c.write_all(&request[at..at + 1]);
            at += 1;
        }
    })
    .expect("closed");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(sys.log_shows("reason=header_timeout"), "{}", sys.gateway_log());
}

#[test]
fn a_request_header_over_the_cap_is_cut_and_never_forwarded() {
    let sys = start(strict());
    let mut conn = connect(&sys, None);
    // One header value that never ends (so pingora's own limit on the number of headers plays no
    // part): the connection holds what it sent until the cap cuts it.
    let mut big = b"GET /api/echo HTTP/1.1\r\nHost: api.example.com\r\nX-Big: ".to_vec();
    big.extend_from_slice(&[b'b'; 200 * 1024]);
    let _ = conn.write_all(&big);
    let took = closed_within(&mut conn, Duration::from_secs(10), |_| {}).expect("closed");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(sys.log_shows("reason=header_too_large"), "{}", sys.gateway_log());
}

#[test]
fn a_trickled_body_is_cut_by_the_minimum_rate() {
    let sys = start(strict());
    let token = tokio::runtime::Runtime::new().unwrap().block_on(sys.token("example.client.p12", "partner-client"));
    let mut conn = connect(&sys, None);
    let head = format!(
        "POST /api/transactions HTTP/1.1\r\nHost: {API}\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).unwrap();
    let mut last = Instant::now();
    let took = closed_within(&mut conn, Duration::from_secs(15), |c| {
        if last.elapsed() >= Duration::from_secs(1) {
            let _ = c.write_all(b"x"); // 1 byte a second: alive, far below 100 per 2 s
            last = Instant::now();
        }
    })
    .expect("closed");
    assert!(took < Duration::from_secs(8), "{took:?}");
    let log = sys.gateway_log();
    assert!(log.contains("reason=body_min_rate") || log.contains("reason=body_timeout"), "{log}");
}

/// A connection past its maximum age is told to close, and closed `max_connection_age_grace`
/// later even while a request is still under way.
#[test]
fn a_connection_past_its_age_and_grace_is_closed_even_mid_request() {
    let sys = start(strict());
    let token = tokio::runtime::Runtime::new().unwrap().block_on(sys.token("example.client.p12", "partner-client"));
    let mut conn = connect(&sys, None);
    conn.write_all(&api_request(&token)).unwrap();
    conn.get_ref().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(read_answer(&mut conn).unwrap().starts_with("HTTP/1.1 200"));
    conn.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // A body sent fast enough for the rate rule (150 bytes a second) but that never ends.
    let head = format!(
        "POST /api/transactions HTTP/1.1\r\nHost: {API}\r\nAuthorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).unwrap();
    let mut last = Instant::now() - Duration::from_secs(1);
    let took = closed_within(&mut conn, Duration::from_secs(15), |c| {
        if last.elapsed() >= Duration::from_millis(500) {
            let _ = c.write_all(&[b'x'; 75]);
            last = Instant::now();
        }
    })
    .expect("closed");
    assert!(took < Duration::from_secs(8), "age 3 s + grace 2 s, took {took:?}");
    assert!(sys.log_shows("reason=max_connection_age_hard"), "{}", sys.gateway_log());
}

/// Left open by round 3: an HTTP/2 client that opens no flow-control window (initial window 0)
/// holds its stream's answer in the gateway forever; the connection is still ended by the hard
/// close after its age and grace.
#[tokio::test]
async fn a_zero_window_http2_stream_is_ended_by_the_hard_close() {
    let sys = start(strict());
    let token = sys.token("example.client.p12", "partner-client").await;
    let client_cert = Some("example.client.p12");
    let tls = common::net::h2_tls(([127, 0, 0, 1], sys.gateway_port), API, client_cert, (None, None)).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .initial_connection_window_size(65_535)
        .handshake::<_, bytes::Bytes>(tls)
        .await
        .unwrap();
    let started = Instant::now();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("https://{API}/api/echo"))
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(req, true).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), answer).await.expect("headers").unwrap();
    assert_eq!(answer.status(), 200);
    let mut body = answer.into_body();
    let got = tokio::time::timeout(Duration::from_millis(500), body.data()).await;
    assert!(got.is_err(), "no byte of the body can come with a zero window: {got:?}");
    let ended = tokio::time::timeout(Duration::from_secs(12), conn).await;
    assert!(ended.is_ok(), "the connection was held past its age and grace");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(9), "age 3 s + grace 2 s, took {took:?}");
    assert!(sys.log_shows("reason=max_connection_age_hard"), "{}", sys.gateway_log());
}

/// Round 4: a header over the cap written all at once is in before the watchdog looks (once a
/// second); it is refused where it is read, 431, and never forwarded. HTTP/1.1 and HTTP/2.
#[test]
fn a_request_header_over_the_cap_sent_at_once_is_refused_with_431() {
    let sys = start(strict());
    let token = tokio::runtime::Runtime::new().unwrap().block_on(sys.token("example.client.p12", "partner-client"));
    let mut conn = connect(&sys, None);
    conn.get_ref().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut big = format!("GET /api/echo HTTP/1.1\r\nHost: {API}\r\nAuthorization: Bearer {token}\r\n");
    // 40 KB, over the 16 KiB cap: in within milliseconds, long before the watchdog's next look
    // (were it to look meanwhile, it would cut the connection: refused all the same).
    for i in 0..100 {
        big.push_str(&format!("X-Big-{i}: {}\r\n", "b".repeat(400)));
    }
    big.push_str("\r\n");
    conn.write_all(big.as_bytes()).unwrap();
    let answer = read_answer(&mut conn).unwrap_or_else(|| panic!("no answer: {}", sys.gateway_log()));
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(300)]);
    assert!(answer.contains("header_too_large"), "{answer}");
    let header = format!("X-Big: {}", "b".repeat(20_000));
    let auth = format!("Authorization: Bearer {token}");
    let h2 = sys.curl(&["--http2", "-H", &auth, "-H", &header, &format!("https://{API}/api/echo")]);
    assert!(h2.status != 200 && !h2.body.contains("\"headers\""), "HTTP/2: {h2:?}");
    // Just under the cap, the same request passes.
    let header = format!("X-Big: {}", "b".repeat(12_000));
    let ok = sys.curl(&["--http2", "-H", &auth, "-H", &header, &format!("https://{API}/api/echo")]);
    assert_eq!(ok.status, 200, "{ok:?}");
}

/// The process-wide cap on TLS connections: past it, new connections are closed (and counted)
/// before their handshake, whatever address they come from.
#[test]
fn connections_past_the_process_cap_are_refused_and_counted() {
    let mut opts = strict();
    opts.patches.push(("listener.max_connections", 3.into()));
    let sys = start(opts);
    let held: Vec<_> = (0..3).map(|_| connect(&sys, None)).collect();
    let tcp = TcpStream::connect(("127.0.0.1", sys.gateway_port)).unwrap();
    let refused = tls_connector(Some("example.client.p12"), None).connect(API, tcp);
    assert!(refused.is_err(), "a fourth connection was served");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = connect(&sys, None);
    let token = tokio::runtime::Runtime::new().unwrap().block_on(sys.token("example.client.p12", "partner-client"));
    again.get_ref().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    again.write_all(&api_request(&token)).unwrap();
    assert!(read_answer(&mut again).unwrap().starts_with("HTTP/1.1 200"), "served once below the cap");
    let log = sys.gateway_log();
    assert!(log.contains("reason=max_connections"), "{log}");
    assert!(log.contains("file limit"), "the start says what the caps fit in: {log}");
}

/// Established connections from the gateway to the API (`ss`, loopback only).
fn api_connections(sys: &System) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-Htn", "state", "established", &format!("( dport = :{} )", sys.api_port)])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// One HTTP/2 connection opening 30 streams whose bodies never come: at most
/// `h2_max_concurrent_streams` (8) reach the API at once, and the watchdog ends the connection
/// when the bodies stall, so the streams do not hold upstream connections either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http2_bodies_neither_fan_out_upstream_nor_hold_the_connection() {
    let sys = start(strict());
    let token = sys.token("example.client.p12", "partner-client").await;
    let client = sys.client_builder(Some("example.client.p12")).http2_prior_knowledge().build().unwrap();
    let before = api_connections(&sys);
    let mut streams = Vec::new();
    for _ in 0..30 {
        let never = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let request = client
            .post(format!("https://{API}/api/transactions"))
            .bearer_auth(&token)
            .header("content-length", "10")
            .body(reqwest::Body::wrap_stream(never));
        streams.push(tokio::spawn(request.send()));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = api_connections(&sys);
    assert!(during <= before + 8, "{during} connections to the API (from {before})");
    let started = Instant::now();
    for s in streams {
        let r = tokio::time::timeout(Duration::from_secs(15), s).await.expect("ended by the gateway").unwrap();
        assert!(r.is_err() || r.is_ok_and(|r| r.status() != 200), "a stalled body was answered 200");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let log = sys.gateway_log();
    assert!(log.contains("reason=body_min_rate") || log.contains("reason=body_timeout"), "{log}");
}

/// One partner cannot take every upstream connection: past `limits.per_partner_requests` in
/// flight, its requests are answered 429 at once, and another partner is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped_per_partner() {
    let sys =
        System::start_with(Options { patches: vec![("limits.per_partner_requests", 2.into())], ..Default::default() });
    let token = sys.token("example.client.p12", "partner-client").await;
    let other = sys.token("other.client.p12", "other-client").await;
    let client = sys.client("example.client.p12");
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let request = client.get(format!("https://{API}/api/slow?ms=1500")).bearer_auth(&token).send();
            tokio::spawn(request)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sys.call_api("other.client.p12", &other).await.status(), 200, "another partner is served");
    let mut statuses = Vec::new();
    for s in slow {
        statuses.push(s.await.unwrap().unwrap().status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429, 429]);
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200, "released when they end");
    assert!(sys.log_shows("reason=partner_requests"), "{}", sys.gateway_log());
}
