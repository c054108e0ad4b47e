//! The hop to the API: what a client's way of sending must not cost there, and what the gateway
//! says before it closes a connection.

mod common;

use common::net::{read_answer, tls_connector};
use common::{yaml, System, API, LOGIN};
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// `upstream_ms` of the access lines for `path`, in order.
fn upstream_ms(sys: &System, path: &str) -> Vec<f64> {
    sys.gateway_log()
        .lines()
        .filter(|l| l.contains(&format!("path={path} ")))
        .filter_map(|l| l.split("upstream_ms=").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

/// A POST whose body comes in a second write, 5 ms after its header (as clients that stream a
/// body send it), spent 44 ms upstream every time: Nagle's algorithm holding the body until
/// the API acknowledged the header, which it delays. It must cost what a POST in one write does.
#[tokio::test]
async fn a_body_in_a_second_write_costs_no_wait_upstream() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    let port = sys.gateway_port;
    tokio::task::spawn_blocking(move || {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = tls_connector(Some("example.client.p12"), None).connect(API, tcp).unwrap();
        for _ in 0..8 {
            let head = format!(
                "POST /api/transactions HTTP/1.1\r\nHost: {API}\r\nAuthorization: Bearer {token}\r\nContent-Length: 11\r\n\r\n"
            );
            tls.write_all(head.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            tls.write_all(b"{\"a\":\"bcd\"}").unwrap();
            let answer = read_answer(&mut tls).expect("an answer");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
    })
    .await
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let times = upstream_ms(&sys, "/api/transactions");
    assert_eq!(times.len(), 8, "{}", sys.gateway_log());
    // 40 ms is the delayed-acknowledgement stall, every time; the body itself takes well under
    // one. The median, so that one slow moment of a busy machine does not count.
    assert!(median(times.clone()) < 20.0, "requests stalled upstream: {times:?}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The same split write through the passthrough hop, to the identity server's token endpoint:
/// the gateway acknowledges the header's bytes at once there too.
#[tokio::test]
async fn a_body_in_a_second_write_costs_no_wait_through_passthrough() {
    let sys = System::start();
    let port = sys.gateway_port;
    let took = tokio::task::spawn_blocking(move || {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = tls_connector(Some("example.client.p12"), None).connect(LOGIN, tcp).unwrap();
        let body = "grant_type=client_credentials&client_id=partner-client&scope=transactions";
        let mut took = Vec::new();
        for _ in 0..8 {
            let head = format!(
                "POST /oauth/v2/oauth-token-mutual-tls HTTP/1.1\r\nHost: {LOGIN}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let started = std::time::Instant::now();
            tls.write_all(head.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            tls.write_all(body.as_bytes()).unwrap();
            let answer = read_answer(&mut tls).expect("an answer");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            took.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        took
    })
    .await
    .unwrap();
    assert!(median(took.clone()) < 25.0, "token requests stalled: {took:?} ms");
}

/// Round trips on one keep-alive connection while the API is down: each 502 either says
/// `Connection: close` and the connection then closes, or keeps it open and answers the next
/// request. Before, the 502 said keep-alive and the connection closed 11 ms later, so a
/// keep-alive client lost its next request.
#[tokio::test]
async fn a_502_never_leaves_a_keep_alive_client_to_lose_its_next_request() {
    let mut sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    sys.stop_api();
    let port = sys.gateway_port;
    let answers = tokio::task::spawn_blocking(move || {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = tls_connector(Some("example.client.p12"), None).connect(API, tcp).unwrap();
        let mut answers = Vec::new();
        for body in ["", "{}"] {
            for _ in 0..3 {
                let req = format!(
                    "POST /api/transactions HTTP/1.1\r\nHost: {API}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(req.as_bytes()).expect("the connection is open: the last answer did not say close");
                // The gateway closes only after saying so; give a close time to arrive first.
                std::thread::sleep(Duration::from_millis(50));
                let Some(answer) = read_answer(&mut tls) else { panic!("no answer after {answers:?}") };
                let close = answer.to_ascii_lowercase().contains("connection: close");
                answers.push(answer.lines().next().unwrap_or_default().to_string());
                if close {
                    return answers;
                }
            }
        }
        answers
    })
    .await
    .unwrap();
    assert!(answers.iter().all(|a| a.starts_with("HTTP/1.1 502")), "{answers:?}");
}

/// An API that demands a client certificate (mutual TLS on the gateway's hop, as a zero-trust
/// network asks): refused, 502 with the JSON body, through an upstream without one; served
/// through an upstream with the gateway's certificate and key. `-t` names a key that is not the
/// certificate's.
#[tokio::test]
async fn an_api_that_demands_a_client_certificate_is_served_through_an_upstream_with_one() {
    let api_patches = vec![("client_ca", common::cert("root.pem").into())];
    let without = System::start_with(common::Options { api_patches: api_patches.clone(), ..Default::default() });
    let token = without.token("example.client.p12", "partner-client").await;
    let r = without.call_api("example.client.p12", &token).await;
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.expect("a JSON body");
    assert_eq!(body["code"], "bad_gateway", "{body}");
    drop(without);

    let identity = vec![
        ("upstreams.example-api.client_certificate", common::cert("introspection.client.pem").into()),
        ("upstreams.example-api.client_key", common::cert("introspection.client.key").into()),
    ];
    let with = System::start_with(common::Options { api_patches, patches: identity, ..Default::default() });
    let token = with.token("example.client.p12", "partner-client").await;
    assert_eq!(with.call_api("example.client.p12", &token).await.status(), 200);

    let mut doc = with.gateway_config();
    common::yaml::set(&mut doc, "upstreams.example-api.client_key", common::cert("other.client.key"));
    let bad = with.dir.path().join("bad-key.yaml");
    common::yaml::write(&doc, &bad);
    let (ok, out) = common::validate(&bad);
    assert!(!ok && out.contains("upstreams.example-api.client_key") && out.contains("does not match"), "{out}");
}

/// A plain-TCP upstream that records the body payload of each request it receives (chunked
/// framing decoded) and answers nothing: what the API would have had.
async fn recorder() -> (u16, Arc<Mutex<Vec<usize>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
                record.lock().unwrap().push(payload(&raw));
            });
        }
    });
    (port, seen)
}

/// The body payload of one raw HTTP/1.1 request: after the header, chunked framing removed.
fn payload(raw: &[u8]) -> usize {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { return 0 };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let mut body = &raw[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return body.len();
    }
    let mut total = 0;
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&body[..line_end]).trim(), 16).unwrap_or(0);
        let start = line_end + 2;
        total += size.min(body.len().saturating_sub(start));
        if size == 0 || body.len() < start + size + 2 {
            break;
        }
        body = &body[start + size + 2..];
    }
    total
}

/// A route with a 1000-byte body limit to the recorder: a declared length over it is 413 before
/// anything is forwarded; a chunked (HTTP/1.1) or streamed (HTTP/2) body that grows past it is
/// cut before the upstream has more than the limit, and answered 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_route_limit_are_refused_and_the_api_never_has_more() {
    let (port, seen) = recorder().await;
    let upstream = format!("{{address: \"127.0.0.1:{port}\", tls: false, read_timeout: 2s}}");
    let route = "{host: api.example.com, path_prefix: /upload/, upstream: recorder, max_body_bytes: 1000, filters: []}";
    let patches = vec![("upstreams.recorder", yaml::parse(&upstream)), ("routes[0]", yaml::parse(route))];
    let sys = System::start_with(common::Options { patches, ..Default::default() });
    let gw = sys.gateway_port;

    // HTTP/1.1, declared: refused before the header is forwarded.
    let declared = tokio::task::spawn_blocking(move || {
        let mut tls = connect(gw);
        let head = format!("POST /upload/x HTTP/1.1\r\nHost: {API}\r\nContent-Length: 5000\r\n\r\n");
        tls.write_all(head.as_bytes()).unwrap();
        read_answer(&mut tls).expect("an answer")
    })
    .await
    .unwrap();
    assert!(declared.starts_with("HTTP/1.1 413") && declared.contains("payload_too_large"), "{declared}");

    // HTTP/1.1, chunked: 600-byte chunks; the second crosses the limit.
    let chunked = tokio::task::spawn_blocking(move || {
        let mut tls = connect(gw);
        let head = format!("POST /upload/x HTTP/1.1\r\nHost: {API}\r\nTransfer-Encoding: chunked\r\n\r\n");
        tls.write_all(head.as_bytes()).unwrap();
        for _ in 0..4 {
            let chunk = format!("258\r\n{}\r\n", "c".repeat(600));
            if tls.write_all(chunk.as_bytes()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = tls.write_all(b"0\r\n\r\n");
        read_answer(&mut tls).unwrap_or_default()
    })
    .await
    .unwrap();
    assert!(chunked.starts_with("HTTP/1.1 413"), "chunked: {chunked}");

    // HTTP/2 without a declared length: DATA frames of 600 bytes.
    let status = h2_stream(gw, 4).await;
    assert_eq!(status, Some(413), "HTTP/2 streamed body");
    // HTTP/2 under the limit passes through to the recorder (which never answers: 504).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the streamed bodies reached the upstream up to the limit");
    assert!(seen.iter().all(|n| *n <= 1000), "the upstream received more than the limit: {seen:?}");
}

fn connect(port: u16) -> openssl::ssl::SslStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tls_connector(Some("example.client.p12"), None).connect(API, tcp).unwrap()
}

/// POST /upload/x over HTTP/2 with `chunks` DATA frames of 600 bytes and no content-length; the
/// status of the answer, if one came.
async fn h2_stream(port: u16, chunks: usize) -> Option<u16> {
    let tls = common::net::h2_tls(([127, 0, 0, 1], port), API, Some("example.client.p12"), (None, None)).await?;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post(format!("https://{API}/upload/x")).body(()).unwrap();
    let (answer, mut body) = client.send_request(req, false).unwrap();
    for _ in 0..chunks {
        if body.send_data(bytes::Bytes::from(vec![b'h'; 600]), false).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = body.send_data(bytes::Bytes::new(), true);
    let answer = tokio::time::timeout(Duration::from_secs(10), answer).await.ok()?.ok()?;
    Some(answer.status().as_u16())
}
