//! The identity server or the API having a bad day: the gateway fails closed with the right status,
//! never lets a request through, and recovers by itself.

mod common;

use common::{Options, System, API};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn concurrent_misses_for_one_token_make_one_introspection_call() {
    let sys = System::start();
    // Slow introspection down so that all requests are in flight while the first call runs.
    sys.set_faults(json!({ "introspection_delay_ms": 300 })).await;
    let token = sys.token("example.client.p12", "partner-client").await;
    let before = sys.introspections().await;
    let client = sys.client("example.client.p12");
    let calls = (0..24).map(|_| {
        let (client, token) = (client.clone(), token.clone());
        tokio::spawn(async move {
            client.post(format!("https://{API}/api/transactions")).bearer_auth(token).send().await.unwrap().status()
        })
    });
    for status in futures_join(calls).await {
        assert_eq!(status, 200);
    }
    assert_eq!(sys.introspections().await - before, 1, "coalescing failed");
    let log = sys.gateway_log();
    assert_eq!(log.matches("cache=miss").count(), 1, "{log}");
    assert!(log.contains("cache=coalesced"), "{log}");
}

async fn futures_join<T: Send + 'static>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_cache_entry_ends_when_the_token_expires() {
    let sys = System::start_with(Options { token_ttl_seconds: 2, ..Default::default() });
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    let calls = sys.introspections().await;
    assert_eq!(calls, 1, "the second call must come from the cache");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = sys.call_api("example.client.p12", &token).await;
    assert_eq!(r.status(), 401);
    assert_eq!(sys.introspections().await, 2, "an expired entry must be introspected again");
}

#[tokio::test]
async fn identity_server_outage_is_503_and_the_gateway_recovers() {
    let mut sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    sys.stop_idsvr();
    let r = sys.call_api("example.client.p12", &token).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("www-authenticate").is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "server_error");
    // Back up (tokens lived in its memory, so a new one is needed): the gateway serves again,
    // nothing of the outage was cached.
    sys.start_idsvr();
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
}

#[tokio::test]
async fn identity_server_errors_are_503_never_401_and_never_cached() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    sys.set_faults(json!({ "introspection_status": 500 })).await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 503);
    sys.set_faults(json!({ "introspection_status": 401 })).await;
    let r = sys.call_api("example.client.p12", &token).await;
    assert_eq!(r.status(), 502, "the gateway's own credentials refused is a gateway fault, not the client's");
    sys.set_faults(json!({})).await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
}

#[tokio::test]
async fn a_slow_identity_server_hits_the_timeout() {
    let sys = System::start_with(Options { introspection_timeout: "500ms", ..Default::default() });
    let token = sys.token("example.client.p12", "partner-client").await;
    sys.set_faults(json!({ "introspection_delay_ms": 3000 })).await;
    let r = sys.call_api("example.client.p12", &token).await;
    assert_eq!(r.status(), 503);
    assert!(sys.gateway_log().contains("reason=introspection_timeout"));
    sys.set_faults(json!({})).await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
}

#[tokio::test]
async fn api_down_is_502_and_api_slow_is_504() {
    let mut sys = System::start_with(Options { upstream_read_timeout: "700ms", ..Default::default() });
    let token = sys.token("example.client.p12", "partner-client").await;
    let client = sys.client("example.client.p12");
    let r = client.get(format!("https://{API}/api/slow?ms=3000")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "gateway_timeout");
    sys.stop_api();
    let r = sys.call_api("example.client.p12", &token).await;
    assert_eq!(r.status(), 502);
    sys.start_api();
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
}

#[tokio::test]
async fn inactive_tokens_are_remembered_briefly() {
    let sys = System::start_with(Options { negative_ttl: "30s", ..Default::default() });
    let before = sys.introspections().await;
    for _ in 0..5 {
        assert_eq!(sys.call_api("example.client.p12", "garbage-token-value").await.status(), 401);
    }
    assert_eq!(sys.introspections().await - before, 1);
}
