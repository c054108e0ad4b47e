//! The operations listener: `/healthz` answers while the process lives, `/readyz` follows the
//! identity server's reachability, and `mtls-gateway health` turns that into an exit status for
//! container health checks.

mod common;

use common::{Options, System};
use std::time::{Duration, Instant};

async fn get(sys: &System, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://127.0.0.1:{}{path}", sys.metrics_port)).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

/// Polls `/readyz` until it answers `want` (bounded).
async fn readyz_becomes(sys: &System, want: u16) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let (status, body) = get(sys, "/readyz").await;
        if status == want {
            return body;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn health(sys: &System, live: bool) -> bool {
    let mut cmd = std::process::Command::new(common::bin("mtls-gateway"));
    cmd.arg("health").arg(format!("127.0.0.1:{}", sys.metrics_port));
    if live {
        cmd.arg("--live");
    }
    cmd.output().unwrap().status.success()
}

#[tokio::test]
async fn readiness_reports_the_identity_server_without_taking_the_replica_out() {
    let patches = vec![("metrics.probe_interval", "100ms".into()), ("metrics.ready_window", "1s".into())];
    let mut sys = System::start_with(Options { patches, ..Default::default() });
    let body = readyz_becomes(&sys, 200).await;
    assert_eq!(body["checks"]["listener"]["ok"], true, "{body}");
    assert_eq!(body["checks"]["introspection.idsvr"]["ok"], true, "{body}");
    assert!(health(&sys, false), "health exits 0 when ready");

    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200, "cached from now on");

    // The identity server every replica shares goes down: this replica can still serve cached
    // tokens, so it stays ready and says what is down.
    sys.stop_idsvr();
    let started = Instant::now();
    let body = loop {
        let (status, body) = get(&sys, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        if body["checks"]["introspection.idsvr"]["ok"] == false {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the outage is not reported: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "ready", "{body}");
    assert!(health(&sys, false), "health exits 0: this replica can serve");
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200, "a cached token is served");
    let metrics = sys.metrics().await;
    assert!(metrics.contains("gateway_dependency_up{dependency=\"introspection.idsvr\"} 0"), "{metrics}");
    assert_eq!(get(&sys, "/healthz").await, (200, serde_json::json!({ "status": "live" })));

    sys.start_idsvr();
    readyz_becomes(&sys, 200).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", sys.metrics_port)).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let kind = metrics.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(kind.starts_with("text/plain"), "Prometheus text on /metrics: {kind}");
}

#[tokio::test]
async fn the_access_log_can_be_json_and_never_holds_a_token() {
    let patches = vec![("access_log", common::yaml::parse("{format: json}"))];
    let sys = System::start_with(Options { patches, ..Default::default() });
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    assert_eq!(sys.call_api("example.client.p12", "not-a-real-token").await.status(), 401);
    let log = sys.gateway_log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| l.split_once("access] ").map(|(_, json)| json))
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["client"], "CN=demo-partner");
    assert_eq!(lines[1]["status"], 401);
    assert_eq!(lines[1]["refused_by"], "phantom_token");
    assert!(!log.contains(&token) && !log.contains("not-a-real-token"), "no token in the log");
}

/// Every service runs for as long as the process serves: pingora's "service 'X' exited" line
/// must not appear while it does (an operator reads it as a dead service).
#[tokio::test]
async fn no_service_reports_an_exit_while_the_gateway_serves() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = sys.gateway_log();
    let exits: Vec<&str> = log.lines().filter(|l| l.contains("exited")).collect();
    assert!(exits.is_empty(), "{exits:#?}");
}
