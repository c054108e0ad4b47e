//! Reload without a restart: under steady load the configuration is reloaded ten times, between
//! two files that differ in a route and a certificate, with no failed request and the new route
//! working after each reload; token caches survive; an invalid file keeps the old one serving.

mod common;

use common::{cert, yaml, System, API};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ORG: &str = "api.example.org";

/// The test configuration plus a certificate for `*.example.org` and a route for its API host.
fn with_org_route(sys: &System) -> serde_yaml::Value {
    let mut doc = sys.gateway_config();
    let certs = format!(
        "- {{hosts: [\"*.example.org\"], certificate: \"{}\", key: \"{}\"}}",
        cert("example-org.tls.pem"),
        cert("example-org.tls.key")
    );
    yaml::set(&mut doc, "tls.certificates", yaml::parse(&certs));
    let mut route = yaml::at(&mut doc, "routes[1]").clone();
    yaml::set(&mut route, "host", ORG);
    yaml::push(&mut doc, "routes", route);
    doc
}

async fn org_status(sys: &System, token: &str) -> Option<u16> {
    let gw = ([127, 0, 0, 1], sys.gateway_port).into();
    let client = sys.client_builder(Some("example.client.p12")).resolve(ORG, gw).build().unwrap();
    let r = client.get(format!("https://{ORG}/api/echo")).bearer_auth(token).send().await.ok()?;
    Some(r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_load_fail_no_request_and_apply_each_time() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    let plain = sys.gateway_config();
    let org = with_org_route(&sys);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for fresh_connections in [false, true] {
        let (stop, ok, failed, token) = (stop.clone(), ok.clone(), failed.clone(), token.clone());
        let kept = sys.client("example.client.p12");
        let builder = move || sys_client(&kept, fresh_connections);
        let port = sys.gateway_port;
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let client = builder().unwrap_or_else(|| fresh_client(port));
                let r =
                    client.post(format!("https://{API}/api/transactions")).bearer_auth(&token).body("{}").send().await;
                match r.map(|r| r.status().as_u16()) {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed under reload: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    for n in 1..=10u32 {
        let next = if n % 2 == 1 { &org } else { &plain };
        sys.write_gateway_config(next);
        sys.reload();
        let applied = tokio::task::block_in_place(|| sys.reload_outcome(n));
        assert!(applied, "reload {n} failed:\n{}", sys.gateway_log());
        let status = org_status(&sys, &token).await;
        if n % 2 == 1 {
            assert_eq!(status, Some(200), "reload {n}: the new route and certificate serve");
        } else {
            assert_ne!(status, Some(200), "reload {n}: the removed route is gone");
        }
    }

    sys.write_gateway_config(&yaml::parse("listener: [not, a, mapping]"));
    sys.reload();
    assert!(!tokio::task::block_in_place(|| sys.reload_outcome(11)), "an invalid file is refused");
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200, "still serving");
    assert!(!sys.gateway_log().contains("takes effect after a restart"), "nothing fixed at start changed so far");
    let mut threads = plain.clone();
    yaml::set(&mut threads, "pingora.threads", 1);
    sys.write_gateway_config(&threads);
    sys.reload();
    assert!(tokio::task::block_in_place(|| sys.reload_outcome(12)));
    let log = sys.gateway_log();
    assert!(log.contains("WARN") && log.contains("pingora changed: not applied"), "named in the log at WARN");
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(ok > 20, "the load ran: {ok} requests");
    let log = sys.gateway_log();
    assert!(log.contains("gateway.yaml: listener:"), "the problem is logged with its key:\n{log}");
    assert!(log.contains("introspection.idsvr: unchanged, its token cache is kept"), "{log}");
    assert_eq!(sys.introspections().await, 1, "the token stayed cached across every reload");
}

/// The shared keep-alive client, or `None` to make a new one (a new connection per request).
fn sys_client(kept: &reqwest::Client, fresh: bool) -> Option<reqwest::Client> {
    (!fresh).then(|| kept.clone())
}

fn fresh_client(port: u16) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(cert("root.pem")).unwrap()).unwrap();
    let p12 = std::fs::read(cert("example.client.p12")).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([root])
        .identity(reqwest::Identity::from_pkcs12_der(&p12, "Password1").unwrap())
        .resolve(API, ([127, 0, 0, 1], port).into())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}
