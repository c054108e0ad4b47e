//! The admin listener and `mtls-gateway admin purge`, against the real gateway, dev-idsvr and
//! example-api: a purged token goes back to the identity server at once (and is refused once
//! revoked there), a purge by thumbprint ends that certificate's connections and no other's,
//! callers without an allowed certificate or the secret are refused, and a purge reaches every
//! replica and reports the one that is down.

mod common;

use common::net::tls_connector;
use common::{cert, free_port, yaml, Options, System, API};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SECRET: &str = "s3cret-for-the-admin-tests-only";

/// Files that outlive the system they are written for (the secret, a wrong secret).
struct Admin {
    dir: tempfile::TempDir,
    port: u16,
}

impl Admin {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
        std::fs::write(dir.path().join("wrong"), "not-the-secret-of-this-gateway").unwrap();
        Admin { dir, port: free_port() }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The gateway's `admin:` section: the admin certificate's subject or the secret.
    fn section(&self, port: u16) -> serde_yaml::Value {
        yaml::parse(&format!(
            "{{address: \"127.0.0.1:{port}\", certificate: {}, key: {}, client_ca: {}, \
             client_subjects: [CN=gateway-admin], secret_file: {}}}",
            cert("example.tls.pem"),
            cert("example.tls.key"),
            cert("admin-ca.pem"),
            self.file("secret").display()
        ))
    }

    fn start(&self, opts: Options) -> System {
        let mut opts = opts;
        opts.patches.push(("admin", self.section(self.port)));
        System::start_with(opts)
    }
}

/// What one `admin purge` run left: its exit code, one JSON value per stdout line, its stderr.
struct Run {
    code: Option<i32>,
    lines: Vec<serde_json::Value>,
    stderr: String,
}

/// Runs `mtls-gateway admin purge ARGS --ca root.pem --server-name admin.example.com` (the
/// listener's certificate is `*.example.com`) plus the authentication arguments.
fn purge(args: &[&str], auth: &[&str]) -> Run {
    let out = Command::new(common::bin("mtls-gateway"))
        .args(["admin", "purge"])
        .args(args)
        .args(["--ca", &cert("root.pem"), "--server-name", "admin.example.com"])
        .args(auth)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    Run { code: out.status.code(), lines, stderr: String::from_utf8_lossy(&out.stderr).into() }
}

fn with_secret(file: &Path) -> Vec<String> {
    vec!["--secret-file".into(), file.display().to_string()]
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn with_admin_cert() -> Vec<String> {
    vec!["--cert".into(), cert("admin.client.pem"), "--key".into(), cert("admin.client.key")]
}

/// `x5t#S256` of a PEM certificate.
fn thumbprint(pem: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let der = openssl::x509::X509::from_pem(&std::fs::read(cert(pem)).unwrap()).unwrap().to_der().unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der))
}

/// The `token=` of the last access-log line for this path.
fn last_token_id(log: &str) -> String {
    let line = log.lines().rev().find(|l| l.contains("path=/api/transactions") && l.contains("token=")).unwrap();
    line.split(' ').find_map(|f| f.strip_prefix("token=")).unwrap().to_string()
}

#[tokio::test]
async fn a_purged_token_goes_back_to_the_identity_server_and_is_refused_once_revoked_there() {
    let admin = Admin::new();
    let sys = admin.start(Options::default());
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    let asked = sys.introspections().await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    assert_eq!(sys.introspections().await, asked, "the second call is answered from the cache");

    sys.revoke(&token).await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200, "the delay a purge removes");
    let id = last_token_id(&sys.gateway_log());
    let address = format!("127.0.0.1:{}", admin.port);
    let run = purge(&["--token-id", &id, "--address", &address], &as_strs(&with_secret(&admin.file("secret"))));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.lines.len(), 1);
    assert_eq!(run.lines[0]["ok"], true, "{:?}", run.lines);
    assert_eq!(run.lines[0]["answer"]["purged"], 1);
    assert_eq!(run.lines[0]["answer"]["introspection"]["idsvr"], 1);

    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 401, "asked again, and revoked");
    assert_eq!(sys.introspections().await, asked + 1, "the purged token went to the identity server");
    let log = sys.gateway_log();
    assert!(log.contains(&format!("purged token_id={id}: 1 cache entries")), "{log}");
    assert!(log.contains("admin: bearer secret sha256="), "who asked is logged: {log}");
    assert!(!log.contains(SECRET) && !log.contains(&token), "no secret or token in the log");

    // By the token itself, with the admin certificate.
    let again = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &again).await.status(), 200);
    let run = purge(&["--token", &again, "--address", &address], &as_strs(&with_admin_cert()));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.lines[0]["answer"]["purged"], 1);
    assert!(sys.gateway_log().contains("admin: subject=\"CN=gateway-admin\""));
    let asked = sys.introspections().await;
    assert_eq!(sys.call_api("example.client.p12", &again).await.status(), 200);
    assert_eq!(sys.introspections().await, asked + 1);
}

/// A keep-alive HTTP/1.1 connection with `p12`'s certificate that answered one request.
fn keepalive(port: u16, p12: &str, token: &str) -> openssl::ssl::SslStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = tls_connector(Some(p12), None).connect(API, tcp).unwrap();
    let answer = ask(&mut tls, token).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tls
}

/// One request on the connection and its answer; `None` once the gateway closed it.
fn ask(tls: &mut impl ReadWrite, token: &str) -> Option<String> {
    tls.write_all(&common::net::api_request(token)).ok()?;
    common::net::read_answer(tls)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[tokio::test]
async fn a_purge_by_thumbprint_ends_that_certificates_connection_and_not_another_partners() {
    let admin = Admin::new();
    let sys =
        admin.start(Options { patches: vec![("listener.revocation_grace", "500ms".into())], ..Default::default() });
    let partner = sys.token("example.client.p12", "partner-client").await;
    let other = sys.token("other.client.p12", "other-client").await;
    let (port, address) = (sys.gateway_port, format!("127.0.0.1:{}", admin.port));
    let x5t = thumbprint("example.client.pem");
    let (p, o) = (partner.clone(), other.clone());
    let auth = with_admin_cert();
    let (closed, other_ok, run) = tokio::task::spawn_blocking(move || {
        let mut partner_conn = keepalive(port, "example.client.p12", &p);
        let mut other_conn = keepalive(port, "other.client.p12", &o);
        let run = purge(&["--thumbprint", &x5t, "--end-connections", "--address", &address], &as_strs(&auth));
        // The idle connection is closed without a new request (read times out after 10 s).
        let mut buf = [0u8; 64];
        let closed = matches!(partner_conn.read(&mut buf), Ok(0));
        (closed, ask(&mut other_conn, &o), run)
    })
    .await
    .unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.lines[0]["answer"]["purged"], 1, "{:?}", run.lines);
    assert_eq!(run.lines[0]["answer"]["connections_ended"], 1, "{:?}", run.lines);
    assert!(closed, "the partner's keep-alive connection is ended");
    assert!(other_ok.as_deref().is_some_and(|a| a.starts_with("HTTP/1.1 200")), "{other_ok:?}");
    // A new connection of the same partner works, and its token is asked for again.
    let asked = sys.introspections().await;
    assert_eq!(sys.call_api("example.client.p12", &partner).await.status(), 200);
    assert_eq!(sys.introspections().await, asked + 1);
    assert_eq!(sys.call_api("other.client.p12", &other).await.status(), 200);
    assert_eq!(sys.introspections().await, asked + 1, "the other partner's token stayed cached");
    let log = sys.gateway_log();
    assert!(
        log.contains(&format!(
            "purged thumbprint={}: 1 cache entries, ended 1 connections",
            thumbprint("example.client.pem")
        )),
        "{log}"
    );
}

/// A client of the admin listener with an optional client certificate (p12).
fn admin_client(port: u16, p12: Option<&str>) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(cert("root.pem")).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([root])
        .resolve("admin.example.com", ([127, 0, 0, 1], port).into())
        .no_proxy()
        .timeout(Duration::from_secs(10));
    if let Some(p12) = p12 {
        let der = std::fs::read(cert(p12)).unwrap();
        b = b.identity(reqwest::Identity::from_pkcs12_der(&der, "Password1").unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn callers_without_an_admin_certificate_or_the_secret_are_refused() {
    let admin = Admin::new();
    let sys = admin.start(Options::default());
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    let url = format!("https://admin.example.com:{}/purge", admin.port);
    let all = serde_json::json!({ "all": true });

    let r = admin_client(admin.port, None).post(&url).json(&all).send().await.unwrap();
    assert_eq!(r.status(), 401, "no credentials");
    assert!(r.headers().contains_key("www-authenticate"));
    let partner = admin_client(admin.port, Some("example.client.p12")).post(&url).json(&all).send().await;
    assert!(partner.is_err(), "a partner's certificate (another CA) fails the handshake: {partner:?}");
    let r = admin_client(admin.port, None).post(&url).bearer_auth("not-the-secret").json(&all).send().await.unwrap();
    assert_eq!(r.status(), 401, "a wrong secret");
    let wrong_ca = admin_client(admin.port, Some("untrusted.client.p12")).post(&url).json(&all).send().await;
    assert!(wrong_ca.is_err(), "a certificate of another CA fails the handshake: {wrong_ca:?}");
    let address = format!("127.0.0.1:{}", admin.port);
    let run = purge(&["--all", "--address", &address], &as_strs(&with_secret(&admin.file("wrong"))));
    assert_eq!(run.code, Some(1));
    assert_eq!(run.lines[0]["ok"], false);
    assert!(run.lines[0]["error"].as_str().unwrap().contains("401"), "{:?}", run.lines);

    let asked = sys.introspections().await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    assert_eq!(sys.introspections().await, asked, "nothing was purged");
    let log = sys.gateway_log();
    assert!(log.contains("admin: refused a call from 127.0.0.1"), "{log}");
    assert!(!log.contains("purged"), "{log}");
}

#[tokio::test]
async fn a_purge_reaches_every_replica_and_reports_the_one_that_is_down() {
    let admin = Admin::new();
    let sys = admin.start(Options::default());
    // A second replica: the same file on other ports, its log in a folder of its own.
    let second = tempfile::tempdir().unwrap();
    let (gw2, admin2, down) = (free_port(), free_port(), free_port());
    let mut v = sys.gateway_config();
    let d = second.path().display();
    yaml::set(&mut v, "pingora.pid_file", format!("{d}/gw.pid"));
    yaml::set(&mut v, "pingora.upgrade_sock", format!("{d}/gw.sock"));
    yaml::set(&mut v, "listener.address", format!("127.0.0.1:{gw2}"));
    yaml::set(&mut v, "metrics.address", format!("127.0.0.1:{}", free_port()));
    yaml::set(&mut v, "admin", admin.section(admin2));
    yaml::write(&v, &second.path().join("gateway.yaml"));
    let mut proc = common::spawn("mtls-gateway", &second.path().join("gateway.yaml"), second.path());
    common::wait_port(admin2, second.path(), &mut proc);

    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200, "cached on the first replica");
    let replicas = format!("127.0.0.1:{},127.0.0.1:{admin2},127.0.0.1:{down}", admin.port);
    let run = purge(&["--all", "--replicas", &replicas], &as_strs(&with_secret(&admin.file("secret"))));
    assert_eq!(run.code, Some(1), "one replica failed");
    assert!(run.stderr.contains("1 of 3 replica(s) failed"), "{}", run.stderr);
    let by = |port: u16| {
        let label = format!("127.0.0.1:{port}");
        run.lines.iter().find(|l| l["replica"] == label.as_str()).cloned().unwrap_or_else(|| panic!("{label}"))
    };
    assert_eq!(by(admin.port)["answer"]["purged"], 1, "{:?}", run.lines);
    assert_eq!(by(admin2)["ok"], true, "{:?}", run.lines);
    assert_eq!(by(admin2)["answer"]["purged"], 0);
    assert_eq!(by(down)["ok"], false);
    assert!(by(down)["error"].as_str().unwrap().contains("onnect"), "{:?}", by(down));
    let log = std::fs::read_to_string(second.path().join("mtls-gateway.log")).unwrap();
    assert!(log.contains("admin: bearer secret sha256="), "{log}");

    let asked = sys.introspections().await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    assert_eq!(sys.introspections().await, asked + 1, "the first replica asks again");
}

#[test]
fn the_validate_mode_reads_the_secret_and_checks_the_admin_certificate() {
    let admin = Admin::new();
    std::fs::write(admin.file("short"), "short\n").unwrap();
    let mut section = admin.section(admin.port);
    yaml::set(&mut section, "secret_file", admin.file("short").display().to_string());
    yaml::set(&mut section, "key", cert("other.client.key"));
    let sys = System::configured(Options { patches: vec![("admin", section)], ..Default::default() });
    let (ok, text) = common::validate(&sys.dir.path().join("gateway.yaml"));
    assert!(!ok, "{text}");
    assert!(text.contains("admin.secret_file: ") && text.contains("at least 16 bytes"), "{text}");
    assert!(text.contains("admin.key: ") && text.contains("does not match the certificate"), "{text}");
    assert!(!text.contains("short\n"), "the secret is not shown");

    let sys = System::configured(Options { patches: vec![("admin", admin.section(admin.port))], ..Default::default() });
    let (ok, text) = common::validate(&sys.dir.path().join("gateway.yaml"));
    assert!(ok, "{text}");
}

/// Whether the peer closed `conn` (a read timing out means it is still open).
fn peer_closed(conn: &mut openssl::ssl::SslStream<TcpStream>) -> bool {
    let mut b = [0u8; 64];
    match conn.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// Round 3: the admin listener caps connections per address (4) and ends every connection after
/// 30 s: a client sending a byte now and then held one for 81 s before.
#[tokio::test]
async fn the_admin_listener_caps_connections_per_address_and_their_lifetime() {
    let admin = Admin::new();
    let _sys = admin.start(Options::default());
    let connector = {
        let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
        b.set_verify(openssl::ssl::SslVerifyMode::NONE);
        b.build()
    };
    let open = || {
        let tcp = TcpStream::connect(("127.0.0.1", admin.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        connector.connect("admin.example.com", tcp)
    };
    let mut held: Vec<_> = (0..4).map(|_| open().expect("a handshake within the cap")).collect();
    assert!(held.iter_mut().all(|c| !peer_closed(c)), "four connections are within the cap");
    // The fifth is closed before its handshake (or, should the handshake finish, right after it).
    if let Ok(mut fifth) = open() {
        assert!(peer_closed(&mut fifth), "a fifth connection from one address is closed");
    }
    // A request header trickled a byte every 5 s is ended at the 30 s lifetime.
    let started = std::time::Instant::now();
    let conn = &mut held[0];
    let mut closed = false;
    while !closed && started.elapsed() < Duration::from_secs(40) {
        let _ = conn.write_all(b"G");
        closed = peer_closed(conn);
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(closed, "still open after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(37), "{:?}", started.elapsed());
}

/// Round 4: pingora's TLS listener has no handshake timeout, so a connection that never finished
/// its handshake held its slot and descriptor for good; the admin listener now does its own
/// handshakes and closes such a connection after 5 s (silent, or half a ClientHello).
#[tokio::test]
async fn an_admin_connection_that_never_finishes_its_handshake_is_closed() {
    let admin = Admin::new();
    let sys = admin.start(Options::default());
    let port = admin.port;
    let took = tokio::task::spawn_blocking(move || {
        let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut half = TcpStream::connect(("127.0.0.1", port)).unwrap();
        half.write_all(&common::net::client_hello("admin.example.com")[..20]).unwrap();
        let started = std::time::Instant::now();
        for conn in [&mut silent, &mut half] {
            conn.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let mut b = [0u8; 64];
            assert!(matches!(conn.read(&mut b), Ok(0) | Err(_)), "closed, not answered");
        }
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(took < Duration::from_secs(9), "held {took:?}");
    assert!(sys.log_shows("reason=admin_handshake_timeout"), "{}", sys.gateway_log());
}
