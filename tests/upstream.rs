//! The hop to the API: what a client's way of sending must not cost there, and what the gateway
//! says before it closes a connection.

mod common;

use common::net::{read_answer, tls_connector};
use common::{System, API, LOGIN};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

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
