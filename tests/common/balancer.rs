//! Debian's nginx as the TLS-terminating balancer in front of the gateway (the `trusted_hop`
//! deployment): it terminates the partners' TLS with `ssl_verify_client optional_no_ca` (it does
//! not verify them: the gateway must), forwards the certificate URL-escaped in `X-SSL-Client-Cert`
//! over TLS to the gateway's hop listener from 127.0.0.2, presenting its own hop certificate.

use super::{cert, free_port, Proc};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The address nginx connects to the gateway from: the one `trusted_hop.sources` trusts.
pub const HOP_SOURCE: &str = "127.0.0.2";
pub const HOP_HEADER: &str = "x-ssl-client-cert";

/// The nginx binary: `NGINX`, one on the machine, or the one `scripts/nginx-lua.sh unpack` put in
/// target/ (`scripts/install-deps.sh --test` runs it).
pub fn nginx() -> PathBuf {
    if let Ok(path) = std::env::var("NGINX") {
        return PathBuf::from(path);
    }
    let unpacked = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nginx-lua/root/usr/sbin/nginx");
    for p in [PathBuf::from("/usr/sbin/nginx"), unpacked] {
        if p.exists() {
            return p;
        }
    }
    panic!("no nginx: run scripts/install-deps.sh --test (or scripts/nginx-lua.sh unpack)");
}

/// The `trusted_hop` section that trusts this balancer.
pub fn trusted_hop_section(hop_port: u16) -> serde_yaml::Value {
    super::yaml::parse(&format!(
        "{{address: '127.0.0.1:{hop_port}', sources: ['{HOP_SOURCE}/32'], format: escaped_pem, header: {HOP_HEADER}, \
         hop_ca: {}, hop_subjects: ['CN=edge-balancer']}}",
        cert("hop-ca.pem")
    ))
}

/// Waits until the hop listener accepts, probing from the trusted source: a probe from any other
/// address would be counted as a `hop_untrusted_source` cut, which the tests look for.
pub fn wait_hop(port: u16, dir: &Path, proc: &mut Proc) {
    use socket2::{Domain, Socket, Type};
    let deadline = Instant::now() + Duration::from_secs(30);
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    loop {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let source: SocketAddr = (HOP_SOURCE.parse::<std::net::Ipv4Addr>().unwrap(), 0).into();
        socket.bind(&source.into()).unwrap();
        if socket.connect_timeout(&target.into(), Duration::from_millis(200)).is_ok() {
            return;
        }
        let exited = proc.child.try_wait().ok().flatten().is_some();
        if exited || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join(format!("{}.log", proc.name))).unwrap_or_default();
            panic!("{} does not listen on {target}:\n{log}", proc.name);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub struct Balancer {
    pub port: u16,
    _proc: Proc,
    pub dir: PathBuf,
}

impl Balancer {
    /// Starts nginx in `dir` on a port of its own, in front of the hop listener on `hop_port`.
    pub fn start(dir: &Path, hop_port: u16) -> Balancer {
        let port = free_port();
        let dir = dir.join("balancer");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(&dir, port, hop_port)).unwrap();
        let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = Command::new(nginx())
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nginx");
        let mut proc = Proc { child, name: "nginx" };
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            let exited = proc.child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                let err = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                panic!("nginx does not listen on {addr}:\n{log}\n{err}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Balancer { port, _proc: proc, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

/// The balancer's nginx.conf: one TLS server for every API host, in the foreground.
fn config(dir: &Path, port: u16, hop_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    upstream gateway_hop {{
        server 127.0.0.1:{hop_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name _;
        ssl_certificate {tls_cert};
        ssl_certificate_key {tls_key};
        # The balancer asks for the partner's certificate but does not verify it: the gateway does.
        ssl_verify_client optional_no_ca;
        ssl_session_cache off;
        ssl_session_tickets off;
        client_max_body_size 10m;
        location / {{
            proxy_pass https://gateway_hop;
            proxy_bind {HOP_SOURCE};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # Replaces whatever the client sent under this name.
            proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
            proxy_ssl_server_name on;
            proxy_ssl_name api.example.com;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {root};
            proxy_ssl_certificate {hop_cert};
            proxy_ssl_certificate_key {hop_key};
            proxy_ssl_session_reuse on;
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"#,
        tls_cert = cert("example.tls.pem"),
        tls_key = cert("example.tls.key"),
        root = cert("root.pem"),
        hop_cert = cert("hop.client.pem"),
        hop_key = cert("hop.client.key"),
    )
}
