//! The process model, whole-process: daemon mode serves; a graceful upgrade (`-u` + `SIGQUIT`) and
//! a stop (`SIGTERM`) under load lose no request, counted by strict clients that treat every
//! request without a complete answer as lost, and a close after a keep-alive answer as a failure.

mod common;

use common::net::{api_request, tls_connector};
use common::{cert, yaml, Options, System, API};
use openssl::ssl::SslStream;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the clients saw, every request counted once.
#[derive(Default, Debug)]
struct Tally {
    /// 200 answers.
    ok: AtomicU64,
    /// Answers with another status.
    other_status: AtomicU64,
    /// Requests written (or being written) that got no complete answer: lost.
    lost: AtomicU64,
    /// Answers that said `Connection: close`, after which the client opens a new connection.
    closes: AtomicU64,
    /// Connections refused or not served before a request was sent on them: nothing was lost,
    /// the client knows to go elsewhere (only once no process listens any more).
    not_sent: AtomicU64,
}

impl Tally {
    fn get(&self, f: impl Fn(&Tally) -> &AtomicU64) -> u64 {
        f(self).load(Ordering::Relaxed)
    }
}

/// One HTTP/1.1 answer: (status, says close), or `None` if the connection ended before it was
/// complete. Reads `Content-Length` and chunked bodies.
fn read_answer(conn: &mut impl Read) -> Option<(u16, bool)> {
    let text = common::net::read_head(conn)?.to_ascii_lowercase();
    let mut byte = [0u8; 1];
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let header = |name: &str| text.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
    let close = header("connection:").is_some_and(|v| v == "close");
    if header("transfer-encoding:").is_some_and(|v| v == "chunked") {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                if conn.read(&mut byte).ok()? == 0 {
                    return None;
                }
                line.push(byte[0]);
            }
            let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            conn.read_exact(&mut chunk).ok()?;
            if size == 0 {
                return Some((status, close));
            }
        }
    }
    let len = header("content-length:").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).ok()?;
    Some((status, close))
}

/// A strict HTTP/1.1 keep-alive client: a POST every `pause` on one connection, a new connection
/// only after an answer that said `Connection: close`.
fn h1_client(port: u16, token: String, pause: Duration, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let connector = tls_connector(Some("example.client.p12"), None);
    let request = api_request(&token);
    let mut conn: Option<SslStream<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match conn.take() {
            Some(s) => s,
            None => {
                let tcp = TcpStream::connect(("127.0.0.1", port));
                let tls = tcp.ok().and_then(|t| {
                    t.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
                    connector.connect(API, t).ok()
                });
                match tls {
                    Some(s) => s,
                    None => {
                        tally.not_sent.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
            }
        };
        let answer = stream.write_all(&request).ok().and_then(|_| read_answer(&mut stream));
        match answer {
            None => {
                tally.lost.fetch_add(1, Ordering::Relaxed);
            }
            Some((status, close)) => {
                let counter = if status == 200 { &tally.ok } else { &tally.other_status };
                counter.fetch_add(1, Ordering::Relaxed);
                if close {
                    tally.closes.fetch_add(1, Ordering::Relaxed);
                } else {
                    conn = Some(stream);
                }
            }
        }
        std::thread::sleep(pause);
    }
}

/// An HTTP/2 client (reqwest, one connection, ALPN h2): a POST every `pause`. Any error but a
/// failed connect counts as lost.
async fn h2_client(sys_port: u16, token: String, pause: Duration, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let root = reqwest::Certificate::from_pem(&std::fs::read(cert("root.pem")).unwrap()).unwrap();
    let der = std::fs::read(cert("example.client.p12")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .identity(reqwest::Identity::from_pkcs12_der(&der, "Password1").unwrap())
        .resolve(API, ([127, 0, 0, 1], sys_port).into())
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        let sent = client.post(format!("https://{API}/api/transactions")).bearer_auth(&token).body("{}").send().await;
        match sent {
            Ok(r) => {
                let status = r.status();
                match r.bytes().await {
                    Ok(_) if status == 200 => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => tally.other_status.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("h2 answer cut: {e:?}");
                        tally.lost.fetch_add(1, Ordering::Relaxed)
                    }
                }
            }
            Err(e) if e.is_connect() => tally.not_sent.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                eprintln!("h2 request lost: {e:?}");
                tally.lost.fetch_add(1, Ordering::Relaxed)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> Duration {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < within, "the gateway did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn drain_options() -> Options {
    Options {
        patches: vec![
            ("pingora.grace_period_seconds", 2.into()),
            ("pingora.graceful_shutdown_timeout_seconds", 5.into()),
        ],
        ..Options::default()
    }
}

/// Runs strict clients (HTTP/1.1 at one request per 300 ms and at full rate, HTTP/2 at one per
/// 300 ms) while `act` runs; returns what they saw.
async fn under_load(sys: &System, act: impl FnOnce() + Send + 'static) -> Arc<Tally> {
    let token = sys.token("example.client.p12", "partner-client").await;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let mut threads = Vec::new();
    for pause in [300, 300, 300, 300, 0, 0] {
        let (token, stop, tally, port) = (token.clone(), stop.clone(), tally.clone(), sys.gateway_port);
        threads.push(std::thread::spawn(move || h1_client(port, token, Duration::from_millis(pause), stop, tally)));
    }
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (token, stop, tally, port) = (token.clone(), stop.clone(), tally.clone(), sys.gateway_port);
        tasks.push(tokio::spawn(h2_client(port, token, Duration::from_millis(300), stop, tally)));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::spawn_blocking(act).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_upgrade_under_load_loses_no_request() {
    let mut sys = System::start_with(drain_options());
    let old = sys.gateway.take().unwrap();
    let config = sys.dir.path().join("gateway.yaml");
    let dir = sys.dir.path().to_path_buf();
    let port = sys.gateway_port;
    let (new_tx, new_rx) = std::sync::mpsc::channel();
    let tally = under_load(&sys, move || {
        let mut old = old;
        let log = std::fs::File::create(dir.join("gateway-new.log")).unwrap();
        let new = Command::new(common::bin("mtls-gateway"))
            .args(["-u", "-c"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(1));
        signal(old.child.id(), "QUIT");
        let took = wait_exit(&mut old.child, Duration::from_secs(30));
        eprintln!("the old gateway exited {took:?} after SIGQUIT");
        // The new process serves alone for a while.
        std::thread::sleep(Duration::from_millis(1500));
        new_tx.send(new).unwrap();
        let _ = port;
    })
    .await;
    let mut new = common::Proc { child: new_rx.recv().unwrap(), name: "mtls-gateway" };
    eprintln!("{tally:?}");
    let log = std::fs::read_to_string(sys.dir.path().join("gateway-new.log")).unwrap_or_default();
    assert_eq!(
        tally.get(|t| &t.lost),
        0,
        "requests lost in the upgrade: {tally:?}\nold gateway:\n{}",
        sys.gateway_log()
    );
    assert_eq!(tally.get(|t| &t.other_status), 0, "{tally:?}");
    assert_eq!(tally.get(|t| &t.not_sent), 0, "a listener was there all along: {tally:?}");
    assert!(tally.get(|t| &t.ok) > 50, "{tally:?}");
    assert!(tally.get(|t| &t.closes) >= 6, "every HTTP/1.1 connection was told to close: {tally:?}");
    assert!(sys.gateway_log().contains("drain started"), "{}", sys.gateway_log());
    assert!(new.child.try_wait().unwrap().is_none(), "the new gateway serves:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_under_load_answers_every_request_it_read() {
    let mut sys = System::start_with(drain_options());
    let mut gateway = sys.gateway.take().unwrap();
    let pid = gateway.child.id();
    let (took_tx, took_rx) = std::sync::mpsc::channel();
    let tally = under_load(&sys, move || {
        signal(pid, "TERM");
        took_tx.send(wait_exit(&mut gateway.child, Duration::from_secs(30))).unwrap();
    })
    .await;
    let took = took_rx.recv().unwrap();
    eprintln!("{tally:?}; exited {took:?} after SIGTERM");
    let log = sys.gateway_log();
    assert_eq!(tally.get(|t| &t.lost), 0, "requests lost in the stop: {tally:?}\n{log}");
    assert_eq!(tally.get(|t| &t.other_status), 0, "{tally:?}");
    assert!(tally.get(|t| &t.closes) >= 6, "every HTTP/1.1 connection was told to close: {tally:?}");
    // The grace period (2 s) runs in full; the drain then ends at once, with nothing open.
    assert!(took < Duration::from_secs(7), "{took:?}");
    assert!(log.contains("drain started") && log.contains("worker loops stopped"), "{log}");
}

/// pingora forks when it daemonizes: the loops must start in the daemon, not before the fork.
#[test]
fn daemon_mode_serves_the_tutorial_client() {
    let mut sys = System::configured(Options::default());
    sys.start_idsvr();
    sys.start_api();
    let mut doc = sys.gateway_config();
    let dir = sys.dir.path().to_path_buf();
    yaml::set(&mut doc, "pingora.error_log", dir.join("daemon.log").display().to_string());
    sys.write_gateway_config(&doc);
    let status =
        Command::new(common::bin("mtls-gateway")).args(["-d", "-c"]).arg(dir.join("gateway.yaml")).status().unwrap();
    assert!(status.success(), "the launching process exits 0 once the daemon runs");
    let pid_file = dir.join("gw.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Ends the daemon whatever happens below.
    struct Daemon(u32);
    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _daemon = Daemon(pid);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], sys.gateway_port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "the daemon does not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/client.sh"))
        .env("GATEWAY", format!("127.0.0.1:{}", sys.gateway_port))
        .env("CERTS_DIR", common::certs())
        .output()
        .unwrap();
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "client through the daemon: {}{}\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    signal(pid, "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Command::new("kill").args(["-0", &pid.to_string()]).status().unwrap().success() {
        assert!(Instant::now() < deadline, "the daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    assert!(log.contains("worker loops stopped"), "{log}");
}
