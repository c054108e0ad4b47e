//! Several replicas: a real `redis-server` (Debian's) on a free port, and more gateway processes in
//! front of the same identity server and API, each with its own ports.

use super::{free_port, spawn, wait_addr, yaml, Proc, System};
use serde_yaml::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `redis-server` without persistence, stopped with the value; it can be stopped and started
/// again on the same port.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    tls: Option<RedisTls>,
}

/// A server as production runs it: TLS only, with its own CA, client certificates required and a
/// password. The files are in the server's folder.
pub struct RedisTls {
    pub password: String,
    pub ca: PathBuf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
    pub password_file: PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None, tls: None };
        r.resume();
        r
    }

    /// TLS only (a CA of its own, a certificate for 127.0.0.1, client certificates required) and
    /// `requirepass`.
    pub fn start_tls(password: &str) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let script = r#"set -e
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -subj "/CN=Redis Test CA" -days 2
leaf() {
  openssl req -new $ec -keyout $1.key -out $1.csr -subj "/CN=$2"
  printf "basicConstraints=critical,CA:FALSE\n$3\n" > $1.ext
  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile $1.ext -out $1.pem
}
leaf server redis "subjectAltName=IP:127.0.0.1"
leaf client mtls-gateway "extendedKeyUsage=clientAuth"
# The client key as many tools write it (SEC1, not PKCS#8): the gateway converts it.
openssl ec -in client.key -out client.sec1.key
"#;
        let out = Command::new("bash").args(["-c", script]).current_dir(d).output().expect("bash and openssl");
        assert!(out.status.success(), "certificates for redis: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(d.join("password"), format!("{password}\n")).unwrap();
        let tls = RedisTls {
            password: password.to_string(),
            ca: d.join("ca.pem"),
            client_certificate: d.join("client.pem"),
            client_key: d.join("client.sec1.key"),
            password_file: d.join("password"),
        };
        let mut r = Redis { port: free_port(), dir, child: None, tls: Some(tls) };
        r.resume();
        r
    }

    pub fn tls(&self) -> Option<&RedisTls> {
        self.tls.as_ref()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The gateway's `cluster` section for this server, with `prefix` and `more` (a YAML map's
    /// inside, such as `timeout: 100ms`).
    pub fn cluster(&self, prefix: &str, more: &str) -> Value {
        self.cluster_at(self.port, prefix, more)
    }

    /// As [`Redis::cluster`], reaching the server through `port` (a proxy in front of it).
    pub fn cluster_at(&self, port: u16, prefix: &str, more: &str) -> Value {
        let url = self.url().replace(&format!(":{}", self.port), &format!(":{port}"));
        let mut doc = format!("{{url: \"{url}\", key_prefix: \"{prefix}\"");
        if let Some(t) = &self.tls {
            doc += &format!(
                ", ca: {}, client_certificate: {}, client_key: {}, password_file: {}",
                t.ca.display(),
                t.client_certificate.display(),
                t.client_key.display(),
                t.password_file.display()
            );
        }
        if !more.is_empty() {
            doc += &format!(", {more}");
        }
        yaml::parse(&(doc + "}"))
    }

    /// Starts it (again) on its port.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let port = self.port.to_string();
        let mut args = vec!["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        match &self.tls {
            None => args.extend(["--port", &port]),
            Some(t) => args.extend([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
                "--tls-ca-cert-file",
                "ca.pem",
                "--tls-auth-clients",
                "yes",
                "--requirepass",
                &t.password,
            ]),
        }
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(self.dir.path())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for the cluster tests (Debian package redis-server)");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes it (SIGSTOP) or thaws it (SIGCONT): a hung server whose connections stay open and
    /// silent.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }

    /// Stops it (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Another gateway process with the system's configuration: its public listener on the same port
/// as the first gateway's but at 127.0.0.2, so that a client addresses both with one URL (the
/// `Host` and a DPoP proof's `htu` are the same, as behind a load balancer) and reaches either by
/// resolving the names to one address or the other; its other listeners on ports of their own.
pub struct Replica {
    pub addr: SocketAddr,
    /// Where clients reach its API hosts: a balancer of its own when the system runs behind one
    /// (`MTLS_TEST_VIA=balancer`), else `addr`.
    pub api_addr: SocketAddr,
    _balancer: Option<super::balancer::Balancer>,
    pub metrics_port: u16,
    pub admin_port: Option<u16>,
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

impl Replica {
    pub fn pid(&self) -> u32 {
        self._proc.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mtls-gateway.log")).unwrap_or_default()
    }
}

impl System {
    /// Starts a second gateway: the first one's file with its own listener, metrics, admin and
    /// JWKS ports, pid file and upgrade socket.
    pub fn replica(&self) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let mut v: Value = self.gateway_config();
        let addr: SocketAddr = ([127, 0, 0, 2], self.gateway_port).into();
        let metrics_port = free_port();
        let d = dir.path().display();
        yaml::set(&mut v, "pingora.pid_file", format!("{d}/gw.pid"));
        yaml::set(&mut v, "pingora.upgrade_sock", format!("{d}/gw.sock"));
        yaml::set(&mut v, "listener.address", addr.to_string());
        yaml::set(&mut v, "metrics.address", format!("127.0.0.1:{metrics_port}"));
        let admin_port = if yaml::at(&mut v, "admin").is_null() {
            yaml::remove(&mut v, "admin");
            None
        } else {
            let p = free_port();
            yaml::set(&mut v, "admin.address", format!("127.0.0.1:{p}"));
            Some(p)
        };
        if !yaml::at(&mut v, "token_issuer").is_null() {
            yaml::set(&mut v, "token_issuer.jwks_address", format!("127.0.0.1:{}", free_port()));
        } else {
            yaml::remove(&mut v, "token_issuer");
        }
        let hop_port = self.balancer.as_ref().map(|_| free_port());
        if let Some(port) = hop_port {
            yaml::set(&mut v, "trusted_hop", super::balancer::trusted_hop_section(port));
        }
        let path = dir.path().join("gateway.yaml");
        yaml::write(&v, &path);
        let mut proc = spawn("mtls-gateway", &path, dir.path());
        wait_addr(addr, dir.path(), &mut proc);
        let balancer = hop_port.map(|port| {
            super::balancer::wait_hop(port, dir.path(), &mut proc);
            super::balancer::Balancer::start(dir.path(), port)
        });
        let api_addr = balancer.as_ref().map_or(addr, |b| b.addr());
        Replica { addr, api_addr, _balancer: balancer, metrics_port, admin_port, dir, _proc: proc }
    }
}

/// A TCP proxy in front of a server that can make every connection open at one moment go silent:
/// what either side sends is swallowed and the connection stays open, as after a failover that
/// left the old address unanswering, while new connections are forwarded.
pub struct Silencer {
    pub port: u16,
    generation: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Silencer {
    pub fn start(target: u16) -> Silencer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (generation, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (g, st) = (generation.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(("127.0.0.1", target))) else { continue };
                let mine = g.load(Ordering::SeqCst);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (ga, gb) = (g.clone(), g.clone());
                std::thread::spawn(move || pipe(client, server, mine, ga));
                std::thread::spawn(move || pipe(s2, c2, mine, gb));
            }
        });
        Silencer { port, generation, stop }
    }

    /// Every connection open now goes silent; later ones are forwarded.
    pub fn silence_open_connections(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Silencer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies until either side closes; once the generation moved on, reads are swallowed.
fn pipe(mut from: TcpStream, mut to: TcpStream, mine: u64, generation: Arc<AtomicU64>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) if generation.load(Ordering::SeqCst) == mine => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}
