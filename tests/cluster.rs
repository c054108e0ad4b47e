//! Several replicas, one set of limits: two gateway processes share a real `redis-server`. A
//! partner's rate limit holds across both; a DPoP proof used on one is a replay on the other; a
//! purge on one empties both caches; with the server stopped requests are served per policy and
//! nobody waits longer than the timeout; once it is back shared behaviour resumes by itself, and
//! a replica that missed purges meanwhile serves no revoked token.

mod common;

use common::replica::{Redis, Replica, Silencer};
use common::{at_a_second_boundary, cert, until, yaml, Options, System, API};
use mtls_dpop_client::ProofKey;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DPOP_API: &str = "dpop-api.example.com";
const SECRET: &str = "s3cret-for-the-cluster-tests-only";

struct Pair {
    sys: System,
    other: Replica,
    _secret: tempfile::TempDir,
}

/// The system's gateway and a replica, both on `redis`, with an admin listener each and `more`
/// changes.
fn pair(redis: &Redis, more: Vec<(&'static str, serde_yaml::Value)>) -> Pair {
    pair_at(redis, redis.port, more)
}

/// As [`pair`], both reaching the server through `port`.
fn pair_at(redis: &Redis, port: u16, more: Vec<(&'static str, serde_yaml::Value)>) -> Pair {
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("admin"), SECRET).unwrap();
    let admin = yaml::parse(&format!(
        "{{address: \"127.0.0.1:{}\", certificate: {}, key: {}, secret_file: {}}}",
        common::free_port(),
        cert("example.tls.pem"),
        cert("example.tls.key"),
        secret.path().join("admin").display()
    ));
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let cluster = redis.cluster_at(port, &prefix, "timeout: 100ms");
    let mut patches = vec![
        ("cluster", cluster),
        ("admin", admin),
        ("metrics.probe_interval", "100ms".into()),
        ("metrics.ready_window", "1s".into()),
    ];
    patches.extend(more);
    let sys = tokio::task::block_in_place(|| System::start_with(Options { patches, ..Default::default() }));
    let other = tokio::task::block_in_place(|| sys.replica());
    Pair { sys, other, _secret: secret }
}

impl Pair {
    /// A client that reaches `host` through gateway `port` while the URL keeps the first gateway's
    /// port: the replicas are behind one address, as behind a load balancer.
    fn client(&self, gw: SocketAddr, p12: Option<&str>) -> reqwest::Client {
        self.sys.client_builder(p12).resolve(API, gw).resolve(DPOP_API, gw).build().unwrap()
    }

    /// The first gateway's address (its balancer's when the tests run behind one); the replica
    /// listens on the same port of another address.
    fn first(&self) -> SocketAddr {
        self.sys.api_addr()
    }

    fn addrs(&self) -> [SocketAddr; 2] {
        [self.first(), self.other.api_addr]
    }

    async fn call(&self, gw: SocketAddr, token: &str) -> u16 {
        let url = format!("https://{API}:{}/api/transactions", self.sys.gateway_port);
        let r = self.client(gw, Some("example.client.p12")).post(url).bearer_auth(token).body("{}").send().await;
        r.unwrap().status().as_u16()
    }

    async fn readyz(&self, metrics_port: u16) -> (u16, Value) {
        let r = reqwest::get(format!("http://127.0.0.1:{metrics_port}/readyz")).await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or_default())
    }

    async fn purges(&self, metrics_port: u16) -> String {
        self.readyz(metrics_port).await.1["cluster_purges"].as_str().unwrap_or_default().to_string()
    }

    /// No request waited for the server longer than the timeout (100 ms): every call either
    /// gateway made (the readiness probe's pings too) is in the histogram's 0.25 s bucket.
    async fn no_call_waited_past_the_timeout(&self) {
        let mut calls = 0.0;
        for m in [self.sys.metrics_port, self.other.metrics_port] {
            let text = reqwest::get(format!("http://127.0.0.1:{m}/metrics")).await.unwrap().text().await.unwrap();
            let sum = |keep: &dyn Fn(&str) -> bool| -> f64 {
                text.lines().filter(|l| keep(l)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
            };
            let count = sum(&|l| l.starts_with("gateway_cluster_call_duration_seconds_count"));
            let within =
                sum(&|l| l.starts_with("gateway_cluster_call_duration_seconds_bucket{") && l.contains("le=\"0.25\""));
            assert_eq!(within, count, ":{m} calls: {count}, within 0.25 s: {within}");
            calls += count;
        }
        assert!(calls > 0.0, "the outage was never noticed");
    }

    /// Waits (bounded) until both replicas say their purge subscription is `want`.
    async fn purges_become(&self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        for m in [self.sys.metrics_port, self.other.metrics_port] {
            while self.purges(m).await != want {
                assert!(Instant::now() < deadline, "cluster_purges of :{m} stayed {}", self.purges(m).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn echo_url(p: &Pair) -> String {
    format!("https://{DPOP_API}:{}/api/echo", p.sys.gateway_port)
}

async fn dpop_call(p: &Pair, gw: SocketAddr, token: &str, proof: &str) -> (u16, String) {
    let r = p
        .client(gw, None)
        .get(echo_url(p))
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    let challenge = r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (r.status().as_u16(), challenge)
}

/// Both replicas subscribed and serving: a certificate-bound token that both have cached, and a
/// DPoP key with its bound token.
async fn serving(p: &Pair) -> (String, ProofKey, String) {
    p.purges_become("subscribed").await;
    let token = p.sys.token("example.client.p12", "partner-client").await;
    let key = ProofKey::generate().unwrap();
    let dpop = p.sys.dpop_token(&p.client(p.first(), None), &key).await;
    for gw in p.addrs() {
        assert_eq!(p.call(gw, &token).await, 200);
    }
    (token, key, dpop)
}

/// Waits (bounded by `within`) until `gw` accepts a fresh proof, which needs its replay store to
/// answer; returns that proof.
async fn until_a_proof_passes(p: &Pair, gw: SocketAddr, key: &ProofKey, dpop: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let proof = key.proof("GET", &echo_url(p), Some(dpop), &json!({}));
        let (status, _) = dpop_call(p, gw, dpop, &proof).await;
        if status == 200 {
            return proof;
        }
        assert!(Instant::now() < deadline, "the replay store of {gw} did not come back: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `proof`, accepted by one replica, is refused by `gw` as a replay.
async fn assert_replayed(p: &Pair, gw: SocketAddr, dpop: &str, proof: &str) {
    let (status, challenge) = dpop_call(p, gw, dpop, proof).await;
    assert!(status == 401 && challenge.contains("dpop_replayed"), "{gw}: {status} {challenge}");
}

async fn admin_purge(p: &Pair, token: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, SECRET).unwrap();
    let admin = yaml::at(&mut p.sys.gateway_config(), "admin.address").as_str().unwrap().to_string();
    let out = tokio::process::Command::new(common::bin("mtls-gateway"))
        .args(["admin", "purge", "--token", token, "--address", &admin])
        .args(["--ca", &cert("root.pem"), "--server-name", "admin.example.com", "--secret-file"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().next().unwrap_or("{}")).unwrap()
}

/// While its purge subscription is down, `gw` serves a token revoked a moment ago for at most
/// `cluster.outage_cache_ttl` (1 s), and then refuses it.
async fn revoked_within_the_outage_cache_ttl(p: &Pair, gw: SocketAddr, token: &str) {
    let revoked = Instant::now();
    while p.call(gw, token).await != 401 {
        assert!(revoked.elapsed() < Duration::from_millis(1500), "{gw} served a revoked token past the outage cache");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(p.call(gw, token).await, 401);
}

/// What `hammer` counted.
#[derive(Debug, Default)]
struct Counts {
    ok: u32,
    limited: u32,
    other: u32,
}

/// Four connections (two on each replica) calling the API with `token` for `run`.
async fn hammer(p: &Pair, token: &str, run: Duration) -> Counts {
    let started = Instant::now();
    let url = format!("https://{API}:{}/api/transactions", p.sys.gateway_port);
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let client = p.client(p.addrs()[i % 2], Some("example.client.p12"));
            let (url, token) = (url.clone(), token.to_string());
            tokio::spawn(async move {
                let mut c = Counts::default();
                while started.elapsed() < run {
                    match client.post(&url).bearer_auth(&token).body("{}").send().await.map(|r| r.status().as_u16()) {
                        Ok(200) => c.ok += 1,
                        Ok(429) => c.limited += 1,
                        _ => c.other += 1,
                    }
                }
                c
            })
        })
        .collect();
    let mut total = Counts::default();
    for t in tasks {
        let c = t.await.unwrap();
        (total.ok, total.limited, total.other) = (total.ok + c.ok, total.limited + c.limited, total.other + c.other);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partner_limit_holds_across_both_replicas() {
    let redis = Redis::start();
    let limit = yaml::parse("{rate_limit: {per_second: 10, burst: 10}}");
    let p = pair(&redis, vec![]);
    // The limit goes on /api/ of both replicas by reload: same file, same buckets.
    let mut doc = p.sys.gateway_config();
    yaml::push(&mut doc, "routes[1].filters", limit.clone());
    p.sys.write_gateway_config(&doc);
    p.sys.reload();
    assert!(tokio::task::block_in_place(|| p.sys.reload_outcome(1)));
    let replica_file = p.other.dir.path().join("gateway.yaml");
    let mut other: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&replica_file).unwrap()).unwrap();
    yaml::push(&mut other, "routes[1].filters", limit);
    yaml::write(&other, &replica_file);
    std::process::Command::new("kill").args(["-HUP", &p.other.pid().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.other.log().contains("reload 1 applied") {
        assert!(Instant::now() < deadline, "the replica did not reload:\n{}", p.other.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let token = p.sys.token("example.client.p12", "partner-client").await;
    let started = Instant::now();
    let run = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let gw = p.addrs()[i % 2];
        let client = p.client(gw, Some("example.client.p12"));
        let (url, token) = (format!("https://{API}:{}/api/transactions", p.sys.gateway_port), token.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut limited) = (0u32, 0u32);
            while started.elapsed() < run {
                match client.post(&url).bearer_auth(&token).body("{}").send().await.map(|r| r.status().as_u16()) {
                    Ok(200) => ok += 1,
                    Ok(429) => limited += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            (ok, limited)
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (o, l) = t.await.unwrap();
        ok += o;
        limited += l;
    }
    let secs = started.elapsed().as_secs_f64();
    // 10 per second in total, plus the burst of 10, plus one second of slack for the edges.
    let most = (10.0 * secs).ceil() as u32 + 10 + 10;
    eprintln!("{ok} allowed, {limited} limited in {secs:.2} s across two replicas (at most {most})");
    assert!(ok <= most, "{ok} allowed in {secs:.2} s: the limit is not shared");
    assert!(ok >= (10.0 * secs) as u32, "{ok} allowed in {secs:.2} s: fewer than the limit");
    assert!(limited > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpop_proof_used_on_one_replica_is_a_replay_on_the_other() {
    let redis = Redis::start();
    let p = pair(&redis, vec![]);
    let key = ProofKey::generate().unwrap();
    let token = p.sys.dpop_token(&p.client(p.first(), None), &key).await;
    let proof = key.proof("GET", &echo_url(&p), Some(&token), &json!({}));
    assert_eq!(dpop_call(&p, p.first(), &token, &proof).await.0, 200);
    assert_replayed(&p, p.other.api_addr, &token, &proof).await;
    let fresh = key.proof("GET", &echo_url(&p), Some(&token), &json!({}));
    assert_eq!(dpop_call(&p, p.other.api_addr, &token, &fresh).await.0, 200, "a fresh proof passes there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_on_one_replica_empties_both_caches() {
    let redis = Redis::start();
    let p = pair(&redis, vec![]);
    p.purges_become("subscribed").await;
    let token = p.sys.token("example.client.p12", "partner-client").await;
    for gw in p.addrs() {
        assert_eq!(p.call(gw, &token).await, 200);
    }
    p.sys.revoke(&token).await;
    assert_eq!(p.call(p.other.api_addr, &token).await, 200, "still cached on the replica");
    let answer = admin_purge(&p, &token).await;
    assert_eq!(answer["answer"]["replicas"], "published", "{answer}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while p.call(p.other.api_addr, &token).await != 401 {
        assert!(Instant::now() < deadline, "the replica still serves the purged token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.call(p.first(), &token).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_server_down_requests_follow_the_policies_and_resume_when_it_is_back() {
    let mut redis = Redis::start();
    let p = pair(&redis, vec![]);
    let (token, key, dpop) = serving(&p).await;

    redis.stop();
    p.purges_become("not_subscribed").await;
    // Rate limits and the introspection-miss bucket fail open: certificate-bound calls go on.
    for gw in p.addrs() {
        for _ in 0..5 {
            assert_eq!(p.call(gw, &token).await, 200);
        }
    }
    // The replay check fails closed: a DPoP call cannot be proven fresh.
    let proof = key.proof("GET", &echo_url(&p), Some(&dpop), &json!({}));
    assert_eq!(dpop_call(&p, p.first(), &dpop, &proof).await.0, 503);
    p.no_call_waited_past_the_timeout().await;
    // Readiness stays 200 and says what is down.
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the ready window
    let (status, body) = p.readyz(p.other.metrics_port).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cluster_purges"], "not_subscribed", "{body}");
    assert_eq!(body["checks"]["cluster"]["ok"], false, "{body}");
    // A token revoked while purges cannot travel is served no longer than the outage cache keeps
    // an answer, and never from the cache of before the outage.
    p.sys.revoke(&token).await;
    for gw in p.addrs() {
        revoked_within_the_outage_cache_ttl(&p, gw, &token).await;
    }

    redis.resume();
    p.purges_become("subscribed").await;
    let proof = until_a_proof_passes(&p, p.first(), &key, &dpop, Duration::from_secs(10)).await;
    assert_replayed(&p, p.other.api_addr, &dpop, &proof).await;
}

/// The connection is the process's: a reload that adds a `cluster` section says it waits for a
/// restart, and nothing starts waiting for a server the process never connected to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_does_not_add_a_cluster_to_a_running_process() {
    let sys = tokio::task::block_in_place(System::start);
    let mut doc = sys.gateway_config();
    yaml::set(&mut doc, "cluster", yaml::parse("{url: \"redis://127.0.0.1:9\", timeout: 50ms}"));
    sys.write_gateway_config(&doc);
    sys.reload();
    assert!(tokio::task::block_in_place(|| sys.reload_outcome(1)));
    assert!(sys.log_shows("cluster changed: not applied"));
    let key = ProofKey::generate().unwrap();
    let gw: SocketAddr = ([127, 0, 0, 1], sys.gateway_port).into();
    let client = sys.client_builder(None).resolve(DPOP_API, gw).build().unwrap();
    let token = sys.dpop_token(&client, &key).await;
    let url = format!("https://{DPOP_API}:{}/api/echo", sys.gateway_port);
    let r = client
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("GET", &url, Some(&token), &json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the replay check stays in process");
}

/// Production settings: a TLS-only server with a CA of its own that asks for a client certificate
/// and a password. Both replicas share state through it; a gateway with the wrong password keeps
/// serving (rate limits open), says the server is down, and never writes the password to its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_server_with_client_certificates_and_a_password_is_shared() {
    let redis = Redis::start_tls("a password for the cluster tests only");
    let p = pair(&redis, vec![]);
    p.purges_become("subscribed").await;
    let key = ProofKey::generate().unwrap();
    let token = p.sys.dpop_token(&p.client(p.first(), None), &key).await;
    let proof = key.proof("GET", &echo_url(&p), Some(&token), &json!({}));
    assert_eq!(dpop_call(&p, p.first(), &token, &proof).await.0, 200);
    assert_replayed(&p, p.other.api_addr, &token, &proof).await;
    // Ready once its probes have seen its own listener (bound after the first probe round).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = p.readyz(p.other.metrics_port).await;
        if status == 200 {
            assert_eq!(body["checks"]["cluster"]["ok"], true, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The same server with a wrong password: nothing shared, reported, and the calls go on.
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-password-of-the-server";
    std::fs::write(dir.path().join("password"), wrong).unwrap();
    let mut cluster = redis.cluster("wrong:", "timeout: 100ms");
    yaml::set(&mut cluster, "password_file", dir.path().join("password").display().to_string());
    let sys = tokio::task::block_in_place(|| {
        System::start_with(Options {
            patches: vec![("cluster", cluster), ("metrics.probe_interval", "100ms".into())],
            ..Default::default()
        })
    });
    let cert_token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &cert_token).await.status(), 200);
    let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", sys.metrics_port)).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["checks"]["cluster"]["ok"] == false && body["cluster_purges"] == "not_subscribed", "{body}");
    assert!(sys.log_shows("cluster: cannot connect"), "{}", sys.gateway_log());
    let log = sys.gateway_log();
    assert!(!log.contains(wrong) && !log.contains(&redis.tls().unwrap().password), "{log}");
}

/// A hung server (stopped: its connections stay open and silent) is noticed like a dead one: no
/// call waits past the timeout, the silent purge subscription is given up within seconds (so a
/// revoked token is not served from a cache that may have missed its purge), and all comes back
/// when the server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_server_holds_no_request_and_its_silent_subscription_is_given_up() {
    let redis = Redis::start();
    let p = pair(&redis, vec![]);
    let (token, key, dpop) = serving(&p).await;

    redis.freeze(true);
    p.purges_become("not_subscribed").await;
    for gw in p.addrs() {
        assert_eq!(p.call(gw, &token).await, 200, "rate limits fail open");
    }
    let proof = key.proof("GET", &echo_url(&p), Some(&dpop), &json!({}));
    assert_eq!(dpop_call(&p, p.other.api_addr, &dpop, &proof).await.0, 503, "the replay check fails closed");
    p.sys.revoke(&token).await;
    for gw in p.addrs() {
        revoked_within_the_outage_cache_ttl(&p, gw, &token).await;
    }
    p.no_call_waited_past_the_timeout().await;
    assert!(p.other.log().contains("purge subscription stopped answering"), "{}", p.other.log());

    redis.freeze(false);
    p.purges_become("subscribed").await;
    until_a_proof_passes(&p, p.other.api_addr, &key, &dpop, Duration::from_secs(10)).await;
}

/// Connections that go silent without an error (a failover that leaves the old address
/// unanswering): the subscription is given up at its next silent `PING` and set up again, the
/// calls' connection is replaced after some seconds of failures, and sharing resumes with no
/// restart while the server itself never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_that_go_silent_are_replaced() {
    let redis = Redis::start();
    let proxy = Silencer::start(redis.port);
    let p = pair_at(&redis, proxy.port, vec![]);
    p.purges_become("subscribed").await;
    let key = ProofKey::generate().unwrap();
    let token = p.sys.dpop_token(&p.client(p.first(), None), &key).await;
    let fresh = || key.proof("GET", &echo_url(&p), Some(&token), &json!({}));
    assert_eq!(dpop_call(&p, p.other.api_addr, &token, &fresh()).await.0, 200);

    proxy.silence_open_connections();
    for gw in p.addrs() {
        until_a_proof_passes(&p, gw, &key, &token, Duration::from_secs(30)).await;
    }
    for log in [p.sys.gateway_log(), p.other.log()] {
        assert!(log.contains("purge subscription stopped answering"), "{log}");
        assert!(log.contains("without an error from the connection; replaced it"), "{log}");
    }
    p.purges_become("subscribed").await;
    let proof = fresh();
    assert_eq!(dpop_call(&p, p.first(), &token, &proof).await.0, 200);
    assert_replayed(&p, p.other.api_addr, &token, &proof).await;
}

/// Issue 29: a proof id's entry on the server lived the window from its first use, while the
/// proof's `iat` (whole seconds, up to the leeway ahead) lets it pass up to a second longer. The
/// entry now lives until the proof's own `iat` leaves the window: with `max_age: 2s` and
/// `leeway: 5s`, a proof dated 5 s ahead, used on one replica at once, is a replay on the other
/// half a second before its window ends (the old entry was gone 7 s after first use).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proof_dated_ahead_is_a_replay_on_every_replica_until_its_window_ends() {
    let redis = Redis::start();
    let p = pair(&redis, vec![("dpop.max_age", "2s".into()), ("dpop.leeway", "5s".into())]);
    p.purges_become("subscribed").await;
    let key = ProofKey::generate().unwrap();
    let token = p.sys.dpop_token(&p.client(p.first(), None), &key).await;
    until_a_proof_passes(&p, p.first(), &key, &token, Duration::from_secs(10)).await;
    let second = at_a_second_boundary().await;
    let ahead = key.proof("GET", &echo_url(&p), Some(&token), &json!({ "iat": second + 5 }));
    assert_eq!(dpop_call(&p, p.first(), &token, &ahead).await.0, 200);
    until(second as f64 + 7.5).await;
    assert_replayed(&p, p.other.api_addr, &token, &ahead).await;
}

/// Issue 29: while the purge subscription was down every request was introspected and counted
/// against `introspection_misses`, so partners whose tokens were cached got 429s during the
/// outage and right after it, and the identity server took every request. A token the replica
/// knows active is not a miss, and one call per token answers the requests of
/// `cluster.outage_cache_ttl`; a made-up token is still a miss and still limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_neither_limits_cached_partners_nor_floods_the_identity_server() {
    let mut redis = Redis::start();
    let p = pair(&redis, vec![("limits.introspection_misses", yaml::parse("{per_second: 1, burst: 5}"))]);
    let (token, _, _) = serving(&p).await;

    redis.stop();
    p.purges_become("not_subscribed").await;
    let before = p.sys.introspections().await;
    let outage = hammer(&p, &token, Duration::from_secs(3)).await;
    let calls = p.sys.introspections().await - before;
    let mut garbage = Vec::new();
    for i in 0..10 {
        garbage.push(p.call(p.first(), &format!("made-up-{i}")).await);
    }
    redis.resume();
    let back = hammer(&p, &token, Duration::from_secs(3)).await;
    p.purges_become("subscribed").await;
    let after = hammer(&p, &token, Duration::from_secs(1)).await;
    eprintln!("outage: {outage:?}, {calls} introspection calls; coming back: {back:?}; after: {after:?}");
    eprintln!("made-up tokens during the outage: {garbage:?}");
    for (phase, c) in [("outage", &outage), ("coming back", &back), ("after", &after)] {
        assert!(c.limited == 0 && c.other == 0 && c.ok > 0, "{phase}: {c:?}");
    }
    // Two replicas, one call per token per outage_cache_ttl (1 s) each, over 3 s.
    assert!(calls <= 2 * 5, "{calls} introspection calls for {} requests in the outage", outage.ok);
    assert!(garbage.iter().filter(|s| **s == 429).count() >= 3, "made-up tokens are still limited: {garbage:?}");
}
