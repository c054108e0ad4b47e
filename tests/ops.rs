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
async fn readiness_follows_the_identity_server_and_liveness_does_not() {
    let patches = vec![("metrics.probe_interval", "100ms".into()), ("metrics.ready_window", "1s".into())];
    let mut sys = System::start_with(Options { patches, ..Default::default() });
    let body = readyz_becomes(&sys, 200).await;
    assert_eq!(body["checks"]["listener"]["ok"], true, "{body}");
    assert_eq!(body["checks"]["introspection.idsvr"]["ok"], true, "{body}");
    assert!(health(&sys, false), "health exits 0 when ready");

    sys.stop_idsvr();
    let body = readyz_becomes(&sys, 503).await;
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["introspection.idsvr"]["ok"], false, "{body}");
    assert_eq!(get(&sys, "/healthz").await, (200, serde_json::json!({ "status": "live" })));
    assert!(!health(&sys, false), "health exits 1 when not ready");
    assert!(health(&sys, true), "but the process is alive");

    sys.start_idsvr();
    readyz_becomes(&sys, 200).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", sys.metrics_port)).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let kind = metrics.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(kind.starts_with("text/plain"), "Prometheus text on /metrics: {kind}");
}
