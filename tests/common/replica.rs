//! Several replicas: a real `redis-server` (Debian's) on a free port, and more gateway processes in
//! front of the same identity server and API, each with its own ports.

use super::{free_port, spawn, wait_port, yaml, Proc, System};
use serde_yaml::Value;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` without persistence, stopped with the value; it can be stopped and started
/// again on the same port.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        r.resume();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
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

    /// Stops it (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
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

/// Another gateway process with the system's configuration on its own ports.
pub struct Replica {
    pub port: u16,
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
        let (port, metrics_port) = (free_port(), free_port());
        let d = dir.path().display();
        yaml::set(&mut v, "pingora.pid_file", format!("{d}/gw.pid"));
        yaml::set(&mut v, "pingora.upgrade_sock", format!("{d}/gw.sock"));
        yaml::set(&mut v, "listener.address", format!("127.0.0.1:{port}"));
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
        let path = dir.path().join("gateway.yaml");
        yaml::write(&v, &path);
        let mut proc = spawn("mtls-gateway", &path, dir.path());
        wait_port(port, dir.path(), &mut proc);
        Replica { port, metrics_port, admin_port, dir, _proc: proc }
    }
}
