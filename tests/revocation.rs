//! Revocation of partner certificates by OCSP and by fetched CRLs, whole-process: `openssl ocsp` as
//! the responder (good, revoked, unknown, down, a signer without the OCSP-signing purpose, the
//! cache; `hard` and `soft`; a certificate revoked while connected), python's HTTP server serving
//! the issuing CA's CRL named in the certificates' distribution points or configured (revocation
//! picked up after a refresh, the live connection ended; a forged CRL not used; the server down
//! keeps the last good CRL; a configured CRL not yet fetched refuses under `hard`). Every PKI is root → issuing CA → partner, with both CAs in `tls.client_ca`.

mod common;
#[path = "common/pki.rs"]
mod pki;

use common::{cert, free_port, metric, validate, Options, System, API};
use pki::{http_server, Pki, Publish};
use serde_yaml::Value;
use std::time::{Duration, Instant};

/// The system with `pki`'s CAs as the client CA (the identity server trusts them too, so that
/// the tutorial's token flow works with its certificates) and this `revocation` section.
fn system(pki: &Pki, revocation: &str) -> System {
    let idsvr_ca = pki.dir.join("idsvr-ca.pem");
    let both = [std::fs::read(cert("root.pem")).unwrap(), std::fs::read(pki.dir.join("client-ca.pem")).unwrap()];
    std::fs::write(&idsvr_ca, both.concat()).unwrap();
    System::start_with(options(pki, revocation, &idsvr_ca))
}

fn options(pki: &Pki, revocation: &str, idsvr_ca: &std::path::Path) -> Options {
    Options {
        crl: None,
        patches: vec![
            ("tls.client_ca", pki.path("client-ca.pem").into()),
            ("revocation", serde_yaml::from_str::<Value>(revocation).unwrap()),
            ("metrics.probe_interval", "200ms".into()),
        ],
        idsvr_patches: vec![("client_ca", idsvr_ca.display().to_string().into())],
        ..Default::default()
    }
}

/// One request without a token on a new connection: the status and the challenge.
async fn call(sys: &System, p12: &str) -> (u16, String) {
    let r = sys.client(p12).get(format!("https://{API}/api/transactions")).send().await.expect("an answer");
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    (status, format!("{challenge} {body}"))
}

/// The tutorial's flow: a token bound to the certificate, then the API with both.
async fn flow(sys: &System, p12: &str) -> u16 {
    let token = sys.token(p12, "partner-client").await;
    sys.call_api(p12, &token).await.status().as_u16()
}

async fn wait_metric(sys: &System, name: &str, label: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = metric(&sys.metrics().await, name, label);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the gateway's log comes to contain `needle` within `seconds`.
async fn wait_log(sys: &System, needle: &str, seconds: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !sys.gateway_log().contains(needle) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Whether `send` (a request on the partner's open connection) comes to be answered 401 within
/// `seconds`: behind the balancer, how a revocation reaches a partner that stays connected.
async fn refused_within<F, Fut>(send: F, seconds: u64) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if send().await.is_ok_and(|r| r.status() == 401) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// `/readyz` once the listener's own probe has run.
async fn readyz(sys: &System) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", sys.metrics_port)).await.unwrap();
        let (status, body): (u16, serde_json::Value) = (r.status().as_u16(), r.json().await.unwrap());
        if body["checks"]["listener"]["ok"] == true || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ocsp_under_hard_serves_good_refuses_revoked_unknown_and_what_cannot_be_verified() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (port, rogue_port, down_port) = (free_port(), free_port(), free_port());
    let at = |p: u16| Publish { ocsp: Some(format!("http://127.0.0.1:{p}/")), ..Default::default() };
    let good = pki.partner("good", &at(port));
    let revoked = pki.partner("revoked", &at(port));
    pki.revoke("revoked");
    let unknown = pki.partner("unknown", &Publish { unknown: true, ..at(port) });
    let down = pki.partner("down", &at(down_port));
    let forged = pki.partner("forged", &at(rogue_port));
    let _responder = pki.responder(port, "responder");
    // Answers signed by a certificate of the same CA without the OCSP-signing purpose.
    let _rogue = pki.responder(rogue_port, "rogue");
    let sys = system(&pki, "{policy: hard, timeout: 2s, failure_cache: 1s, ocsp: {enabled: true}}");

    assert_eq!(flow(&sys, &good).await, 200, "the tutorial's flow with OCSP on");
    assert_eq!(flow(&sys, &good).await, 200);
    let text = sys.metrics().await;
    let asked = metric(&text, "gateway_ocsp_responder_latency_seconds_count", "");
    assert_eq!(asked, 1.0, "the second connection is answered from the cache: {text}");
    assert!(metric(&text, "gateway_ocsp_checks_total", "result=\"good\"") == 1.0, "{text}");
    assert!(metric(&text, "gateway_ocsp_checks_total", "result=\"cached\"") >= 1.0, "{text}");

    let (status, said) = call(&sys, &revoked).await;
    assert!(status == 401 && said.contains("ocsp_revoked"), "{status} {said}");
    let token = sys.token(&revoked, "partner-client").await;
    assert_eq!(sys.call_api(&revoked, &token).await.status(), 401, "a valid token does not help");
    let (status, said) = call(&sys, &unknown).await;
    assert!(status == 401 && said.contains("ocsp_unknown"), "unknown is an answer, refused: {status} {said}");
    let (status, said) = call(&sys, &down).await;
    assert!(status == 503 && said.contains("service_unavailable"), "{status} {said}");
    let (status, _) = call(&sys, &forged).await;
    assert_eq!(status, 503, "an answer signed without the OCSP-signing purpose is not an answer");

    let text = sys.metrics().await;
    assert!(metric(&text, "gateway_ocsp_checks_total", "result=\"invalid\"") >= 1.0, "{text}");
    assert!(metric(&text, "gateway_ocsp_checks_total", "result=\"unavailable\"") >= 1.0, "{text}");
    for reason in ["ocsp_revoked", "ocsp_unknown", "ocsp_unavailable"] {
        let label = format!("reason=\"{reason}\"");
        assert!(metric(&text, "gateway_revocation_refusals_total", &label) >= 1.0, "{reason}: {text}");
        assert!(metric(&text, "gateway_refusals_total", &label) >= 1.0, "{reason}: {text}");
    }
    assert!(sys.log_shows("reason=ocsp_revoked subject=\"CN=demo-partner\" issuer=\"CN=Revocation Test Issuing CA\""));
    let (_, ready) = readyz(&sys).await;
    let responders = &ready["revocation"]["ocsp_responders"];
    assert_eq!(responders[format!("http://127.0.0.1:{port}/")]["reachable"], true, "{ready}");
    assert_eq!(responders[format!("http://127.0.0.1:{down_port}/")]["reachable"], false, "{ready}");
}

#[tokio::test]
async fn ocsp_under_soft_serves_through_an_outage_but_never_a_revoked_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (port, down_port) = (free_port(), free_port());
    let at = |p: u16| Publish { ocsp: Some(format!("http://127.0.0.1:{p}/")), ..Default::default() };
    let down = pki.partner("down", &at(down_port));
    let revoked = pki.partner("revoked", &at(port));
    pki.revoke("revoked");
    let later = pki.partner("later", &at(port));
    let _responder = pki.responder(port, "responder");
    let sys = system(&pki, "{policy: soft, timeout: 1s, recheck_interval: 1s, ocsp: {max_cache: 1s, min_cache: 1s}}");

    assert_eq!(flow(&sys, &down).await, 200, "served while the responder is down");
    let (status, said) = call(&sys, &revoked).await;
    assert!(
        status == 401 && said.contains("ocsp_revoked"),
        "revoked is refused under soft: {status} {said} {}",
        sys.gateway_log()
    );
    let text = sys.metrics().await;
    assert!(metric(&text, "gateway_revocation_soft_served_total", "reason=\"ocsp_unavailable\"") >= 1.0, "{text}");
    assert!(sys.log_shows("reason=ocsp_unavailable"));
    let (status, ready) = readyz(&sys).await;
    assert_eq!(status, 200, "an unreachable responder never makes a replica unready: {ready}");

    // Revoked while connected: the open connection is ended once the responder says so.
    let token = sys.token(&later, "partner-client").await;
    let live = sys.client(&later);
    let send = || live.post(format!("https://{API}/api/transactions")).bearer_auth(&token).body("{}").send();
    assert_eq!(send().await.unwrap().status(), 200);
    pki.revoke("later");
    // `openssl ocsp` reads its index again one request after it changed: two rechecks or more.
    let responder_log = || std::fs::read_to_string(pki.dir.join(format!("ocsp-{port}.log"))).unwrap_or_default();
    // Behind the balancer the connection is the balancer's: the partner's next request is refused.
    let ended = match sys.balancer {
        None => wait_log(&sys, "ended 1 open connection(s) whose certificate is now refused", 20).await,
        Some(_) => refused_within(send, 20).await,
    };
    assert!(ended, "{}\nresponder:\n{}", sys.gateway_log(), responder_log());
    if let Ok(r) = send().await {
        assert_eq!(r.status(), 401, "nothing more passes on the ended connection");
    }
    let (status, said) = call(&sys, &later).await;
    assert!(status == 401 && said.contains("ocsp_revoked"), "{status} {said}");
}

#[tokio::test]
async fn distribution_points_are_fetched_on_first_sight_and_a_revocation_ends_the_live_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let served = dir.path().join("www");
    std::fs::create_dir_all(&served).unwrap();
    let port = free_port();
    let crl_url = format!("http://127.0.0.1:{port}/issuing.crl");
    let dp = Publish { crl: Some(crl_url.clone()), ..Default::default() };
    let (a, b) = (pki.partner("a", &dp), pki.partner("b", &dp));
    let nowhere = Publish { crl: Some(format!("http://127.0.0.1:{}/issuing.crl", free_port())), ..Default::default() };
    let unreachable = pki.partner("unreachable", &nowhere);
    pki.crl(&served.join("issuing.crl"));
    let server = http_server(&served, port);
    let sys = system(
        &pki,
        "{policy: hard, timeout: 2s, failure_cache: 1s, crl: {distribution_points: true, refresh_interval: 1s}}",
    );

    assert_eq!(flow(&sys, &a).await, 200, "the distribution point is fetched while the first client waits");
    let (status, said) = call(&sys, &unreachable).await;
    assert!(status == 503 && said.contains("service_unavailable"), "hard: no CRL, not served: {status} {said}");
    let token = sys.token(&a, "partner-client").await;
    let live = sys.client(&a);
    let send = || live.post(format!("https://{API}/api/transactions")).bearer_auth(&token).body("{}").send();
    assert_eq!(send().await.unwrap().status(), 200);

    pki.revoke("a");
    pki.crl(&served.join("issuing.crl"));
    let ended = match sys.balancer {
        None => wait_log(&sys, "ended 1 open connection(s) whose certificate is now refused", 15).await,
        Some(_) => refused_within(send, 15).await,
    };
    assert!(ended, "{}", sys.gateway_log());
    if let Ok(r) = send().await {
        assert_eq!(r.status(), 401, "nothing more passes on the ended connection");
    }
    let (status, said) = call(&sys, &a).await;
    assert!(status == 401 && said.contains("crl_revoked"), "{status} {said}");

    // A CRL in the issuing CA's name, signed by another key, revoking b: not used.
    pki.forged_crl("b", &served.join("issuing.crl"));
    assert!(wait_metric(&sys, "gateway_crl_fetches_total", "result=\"invalid\"", 1.0).await >= 1.0);
    assert_eq!(flow(&sys, &b).await, 200, "a forged CRL revokes nothing");
    assert_eq!(call(&sys, &a).await.0, 401, "and the last good CRL stays");

    drop(server);
    assert!(wait_metric(&sys, "gateway_crl_fetches_total", "result=\"failed\"", 1.0).await >= 1.0);
    assert_eq!(flow(&sys, &b).await, 200, "the last good CRL is kept while the server is down");
    let (status, _) = call(&sys, &a).await;
    assert_eq!(status, 401, "and still lists the revoked certificate");
    let text = sys.metrics().await;
    assert!(metric(&text, "gateway_fetched_crl_next_update_seconds", &crl_url) > 0.0, "{text}");
    let (_, ready) = readyz(&sys).await;
    assert_eq!(ready["revocation"]["crls"][0]["issuer"], "CN=Revocation Test Issuing CA", "{ready}");
}

#[tokio::test]
async fn a_configured_crl_not_yet_fetched_refuses_under_hard_until_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let served = dir.path().join("www");
    std::fs::create_dir_all(&served).unwrap();
    let port = free_port();
    let partner = pki.partner("c", &Publish::default());
    pki.crl(&served.join("issuing.crl"));
    let section = format!(
        "{{policy: hard, timeout: 1s, failure_cache: 1s, crl: {{distribution_points: false, urls: [\"http://127.0.0.1:{port}/issuing.crl\"], refresh_interval: 1m}}}}"
    );
    let sys = system(&pki, &section);
    assert!(sys.log_shows("revocation.crl: http://127.0.0.1"), "the start says it: {}", sys.gateway_log());
    let (status, said) = call(&sys, &partner).await;
    assert!(status == 503 && said.contains("service_unavailable"), "no CRL yet, not served unchecked: {status} {said}");
    assert!(sys.log_shows("reason=crl_unavailable"));
    let (status, ready) = readyz(&sys).await;
    assert_eq!((status, &ready["revocation"]["ready"]), (503, &serde_json::json!(false)), "{ready}");

    let _server = http_server(&served, port);
    assert!(wait_metric(&sys, "gateway_crl_fetches_total", "result=\"ok\"", 1.0).await >= 1.0);
    assert_eq!(flow(&sys, &partner).await, 200, "served once the CRL is in");
    assert_eq!(readyz(&sys).await.0, 200);
}

#[test]
fn a_bad_revocation_section_is_named_by_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let bad = "{policy: firm, ocsp: {responder: \"ftp://x\"}, crl: {urls: [\"not a url\"]}, extra: 1}";
    let sys = System::configured(options(&pki, bad, &pki.dir.join("client-ca.pem")));
    let (ok, out) = validate(&sys.dir.path().join("gateway.yaml"));
    assert!(!ok && out.contains("revocation"), "{out}");
    let bad = "{ocsp: {responder: \"ftp://x\"}, crl: {urls: [\"http://ok/\", \"not a url\"]}}";
    let sys = System::configured(options(&pki, bad, &pki.dir.join("client-ca.pem")));
    let (ok, out) = validate(&sys.dir.path().join("gateway.yaml"));
    assert!(!ok, "{out}");
    assert!(out.contains("revocation.ocsp.responder: \"ftp://x\": an http or https URL is needed"), "{out}");
    assert!(out.contains("revocation.crl.urls[1]: \"not a url\""), "{out}");
    let good = "{ocsp: {responder: \"http://127.0.0.1:1/\"}}";
    let sys = System::configured(options(&pki, good, &pki.dir.join("client-ca.pem")));
    let (ok, out) = validate(&sys.dir.path().join("gateway.yaml"));
    assert!(ok, "{out}");
}
