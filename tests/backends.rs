//! Several backends behind one upstream, whole-process: three example-api processes, keep-alive
//! clients on HTTP/1.1 and HTTP/2 that count every request they send (anything but a complete
//! answer is a failure), and the backends restarted in turn, hung (SIGSTOP) or all down.

mod common;

use common::{yaml, Options, Proc, System, API};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The gateway's file with three backends for `example-api`, HTTP health checks every second and
/// a short ejection, and the system with the first API running.
struct Stack {
    sys: System,
    ports: Vec<u16>,
    apis: Vec<Option<Proc>>,
}

impl Stack {
    fn start(extra: &[(&'static str, &str)]) -> Stack {
        let mut sys = System::configured(Options { upstream_read_timeout: "2s", ..Default::default() });
        let ports = vec![sys.api_port, common::free_port(), common::free_port()];
        let backends: Vec<Value> = ports.iter().map(|p| format!("127.0.0.1:{p}").into()).collect();
        let patches = [
            ("upstreams.example-api.health_check", "{type: http, path: /healthz, interval: 1s, timeout: 1s}"),
            ("upstreams.example-api.ejection", "{failures: 2, duration: 3s}"),
        ];
        sys.opts.patches.push(("upstreams.example-api.address", Value::Null));
        sys.opts.patches.push(("upstreams.example-api.backends", Value::Sequence(backends)));
        for (k, v) in patches.iter().chain(extra) {
            sys.opts.patches.push((k, yaml::parse(v)));
        }
        sys.write_configs();
        sys.start_idsvr();
        let mut stack = Stack { sys, ports, apis: vec![None, None, None] };
        for i in 0..3 {
            stack.start_api(i);
        }
        stack.sys.start_gateway();
        stack
    }

    fn config_of(&self, i: usize) -> std::path::PathBuf {
        let dir = self.sys.dir.path();
        let path = dir.join(format!("api-{i}.yaml"));
        let mut v: Value = serde_yaml::from_str(&std::fs::read_to_string(dir.join("api.yaml")).unwrap()).unwrap();
        yaml::set(&mut v, "listen", format!("127.0.0.1:{}", self.ports[i]));
        yaml::write(&v, &path);
        path
    }

    fn start_api(&mut self, i: usize) {
        let config = self.config_of(i);
        let mut proc = common::spawn("example-api", &config, self.sys.dir.path());
        common::wait_port(self.ports[i], self.sys.dir.path(), &mut proc);
        self.apis[i] = Some(proc);
    }

    fn kill_api(&mut self, i: usize) {
        self.apis[i] = None;
    }

    fn signal_api(&self, i: usize, signal: &str) {
        let pid = self.apis[i].as_ref().expect("running").child.id();
        let ok = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill {signal} {pid}");
    }
}

/// What one request got: the status and the instance that answered, or a transport error.
#[derive(Debug, Clone)]
enum Got {
    Answer { status: u16, by: String, json: bool },
    Failed(#[allow(dead_code)] String),
}

#[derive(Debug, Clone)]
struct Sent {
    at: Duration,
    post: bool,
    got: Got,
}

/// Keep-alive clients, four on HTTP/1.1 and two on HTTP/2, each alternating GET /api/echo and
/// POST /api/transactions until `stop`, recording every request.
fn load(sys: &System, token: &str, stop: Arc<AtomicBool>) -> (Arc<Mutex<Vec<Sent>>>, Vec<tokio::task::JoinHandle<()>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..6 {
        let builder = sys.client_builder(Some("example.client.p12")).pool_max_idle_per_host(1);
        let client = if n < 4 { builder.http1_only() } else { builder.http2_prior_knowledge() }.build().unwrap();
        let (sent, stop, token) = (sent.clone(), stop.clone(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut post = n % 2 == 0;
            while !stop.load(Ordering::Relaxed) {
                post = !post;
                let req = match post {
                    true => client.post(format!("https://{API}/api/transactions")).body("{}"),
                    false => client.get(format!("https://{API}/api/echo")),
                };
                let got = match req.bearer_auth(&token).timeout(Duration::from_secs(15)).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let by = r.headers().get("x-example-api").and_then(|v| v.to_str().ok()).unwrap_or("-");
                        let by = by.to_string();
                        match r.bytes().await {
                            Ok(body) => {
                                Got::Answer { status, by, json: serde_json::from_slice::<Value>(&body).is_ok() }
                            }
                            Err(e) => Got::Failed(format!("body: {e}")),
                        }
                    }
                    Err(e) => Got::Failed(format!("{e:?}")),
                };
                sent.lock().unwrap().push(Sent { at: started.elapsed(), post, got });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    (sent, tasks)
}

async fn stop_load(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
}

/// Requests that failed: a GET without a 200, a POST without a 200 or a complete JSON 502/503, or
/// any request without a complete answer.
fn failures(sent: &[Sent]) -> Vec<&Sent> {
    sent.iter()
        .filter(|s| match &s.got {
            Got::Answer { status: 200, .. } => false,
            Got::Answer { status: 502 | 503, json: true, .. } => !s.post,
            _ => true,
        })
        .collect()
}

fn served_by(sent: &[Sent]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for s in sent {
        if let Got::Answer { status: 200, by: who, .. } = &s.got {
            *by.entry(who.clone()).or_default() += 1;
        }
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_backends_share_the_load_and_a_rolling_restart_loses_no_request() {
    let mut stack = Stack::start(&[]);
    let token = stack.sys.token("example.client.p12", "partner-client").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, tasks) = load(&stack.sys, &token, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = served_by(&sent.lock().unwrap());
    assert_eq!(before.len(), 3, "every backend serves: {before:?}");
    for i in 0..3 {
        stack.kill_api(i);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stack.start_api(i);
        // Back in rotation after its next passed check (every second).
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    stop_load(&stop, tasks).await;
    let sent = sent.lock().unwrap().clone();
    let failed = failures(&sent);
    let posts_502 = sent.iter().filter(|s| matches!(s.got, Got::Answer { status: 502 | 503, .. })).count();
    eprintln!(
        "rolling restart: {} requests, {} failed, {posts_502} POSTs answered 502/503 (sent to a backend as it died), served by {:?}",
        sent.len(),
        failed.len(),
        served_by(&sent)
    );
    assert!(sent.len() > 200, "the load ran: {}", sent.len());
    assert!(failed.is_empty(), "lost or failed requests: {failed:?}");
    let metrics = stack.sys.metrics().await;
    assert!(metrics.contains("gateway_upstream_attempts_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_backend_costs_at_most_the_requests_in_flight_to_it() {
    let stack = Stack::start(&[]);
    let token = stack.sys.token("example.client.p12", "partner-client").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, tasks) = load(&stack.sys, &token, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A hung process: its kernel still accepts connections, it answers nothing.
    stack.signal_api(1, "-STOP");
    let hung_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop_load(&stop, tasks).await;
    stack.signal_api(1, "-CONT");
    let sent = sent.lock().unwrap().clone();
    // The POSTs in flight to it when it hung time out (504, complete): at most one per client.
    // Everything else is answered: GETs are retried on another backend.
    let in_flight = |s: &&Sent| s.post && matches!(s.got, Got::Answer { status: 502..=504, json: true, .. });
    let failed: Vec<_> = sent.iter().filter(|s| !matches!(s.got, Got::Answer { status: 200, .. })).collect();
    let lost: Vec<_> = failed.iter().filter(|s| !in_flight(s)).collect();
    let hung_since = hung_at.elapsed();
    let end = sent.last().map(|s| s.at).unwrap_or_default();
    let late: Vec<_> = failed.iter().filter(|s| s.at > end - hung_since + Duration::from_secs(4)).collect();
    eprintln!("hung backend: {} requests, {} POSTs in flight answered 504: {failed:?}", sent.len(), failed.len());
    assert!(lost.is_empty(), "requests lost to a hung backend: {lost:?}");
    assert!(failed.len() <= 6, "more requests failed than were in flight: {failed:?}");
    assert!(late.is_empty(), "the hung backend still cost requests once out of rotation: {late:?}");
    assert!(stack.sys.log_shows("fails its health check"), "{}", stack.sys.gateway_log());
}

#[tokio::test]
async fn with_every_backend_down_answers_come_at_once_and_service_resumes() {
    let mut stack = Stack::start(&[]);
    let token = stack.sys.token("example.client.p12", "partner-client").await;
    assert_eq!(stack.sys.call_api("example.client.p12", &token).await.status(), 200);
    for i in 0..3 {
        stack.kill_api(i);
    }
    for _ in 0..5 {
        let started = Instant::now();
        let r = stack.sys.call_api("example.client.p12", &token).await;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.expect("a JSON body");
        assert!(matches!(status, 502 | 503), "{status} {body}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let metrics = stack.sys.metrics().await;
    assert!(metrics.contains("gateway_upstream_healthy_backends{upstream=\"example-api\"} 0"), "{metrics}");
    for i in 0..3 {
        stack.start_api(i);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if stack.sys.call_api("example.client.p12", &token).await.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery within 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
