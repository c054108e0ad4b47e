//! Test harness: real certificates from `scripts/create-certs.sh`, the three real binaries on
//! ephemeral loopback ports, and mTLS clients that reach both host names through the gateway port.
#![allow(dead_code)]

pub mod balancer;
pub mod net;
pub mod otlp;
pub mod replica;
pub mod yaml;

use mtls_dpop_client::ProofKey;
use serde_yaml::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const LOGIN: &str = "login.example.com";
pub const API: &str = "api.example.com";

/// Certificates shared by every test of one test binary, created once.
pub fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("certs-{}", std::process::id()));
        let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/create-certs.sh"))
            .env("CERTS_DIR", &dir)
            .stdout(Stdio::null())
            .status()
            .expect("run create-certs.sh");
        assert!(status.success(), "create-certs.sh failed");
        dir
    })
}

pub fn cert(name: &str) -> String {
    certs().join(name).display().to_string()
}

/// A port for a server of the tests. Taken below the kernel's ephemeral range (32768 and up here),
/// so that no outgoing connection can grab it between this check and the server's bind, and never
/// handed out twice in one test binary (the tests of a binary run in parallel).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const LOW: u16 = 24_000;
    const SPAN: u16 = 8_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ =
        NEXT.compare_exchange(0, LOW + (std::process::id() % SPAN as u32) as u16, Ordering::Relaxed, Ordering::Relaxed);
    loop {
        let candidate = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (candidate - LOW) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary of the workspace. The dev stack's binaries belong to the `mtls-devstack` crate and are
/// built next to the gateway's by `cargo build --workspace --bins` (scripts/test.sh does it).
pub fn bin(name: &str) -> PathBuf {
    let gateway = Path::new(env!("CARGO_BIN_EXE_mtls-gateway"));
    let path = gateway.with_file_name(name);
    assert!(path.exists(), "{} is missing: build the workspace first (cargo build --workspace --bins)", path.display());
    path
}

pub fn spawn(name: &'static str, config: &Path, dir: &Path) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(bin(name));
    if name == "mtls-gateway" {
        cmd.arg("-c");
    }
    // conf/oidc-provider.yaml reads its introspection secret from this variable.
    cmd.env("INTROSPECTION_CLIENT_SECRET", "Password1");
    let child =
        cmd.arg(config).env("RUST_LOG", "info").stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("spawn");
    Proc { child, name }
}

/// Polls until something accepts connections on `port`; on failure shows the process's log.
pub fn wait_port(port: u16, dir: &Path, proc: &mut Proc) {
    wait_addr(([127, 0, 0, 1], port).into(), dir, proc)
}

/// As [`wait_port`], on any address.
pub fn wait_addr(addr: SocketAddr, dir: &Path, proc: &mut Proc) {
    let name = proc.name;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        let exited = proc.child.try_wait().ok().flatten().is_some();
        if exited || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            panic!("{name} does not listen on {addr}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Which identity server the system runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Identity {
    /// `dev-idsvr`, the reference's protocol.
    Dev,
    /// node oidc-provider (tests/interop/oidc-provider).
    OidcProvider,
}

/// Installs the pinned oidc-provider once per test binary; fails loudly without a registry.
pub fn oidc_provider_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/oidc-provider"));
        if !dir.join("node_modules/oidc-provider").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm is needed for the interop tests");
            assert!(status.success(), "npm ci failed in {}: is the npm registry reachable?", dir.display());
        }
        dir
    })
}

/// Knobs a test can turn before the system starts.
#[derive(Clone)]
pub struct Options {
    pub token_ttl_seconds: u64,
    pub introspection_timeout: &'static str,
    pub cache_max_ttl: &'static str,
    pub negative_ttl: &'static str,
    pub upstream_read_timeout: &'static str,
    pub client_hello_timeout: &'static str,
    pub unknown_sni: &'static str,
    /// Extra passthrough routes.
    pub extra_passthrough: Vec<Value>,
    pub passthrough_max_connections: usize,
    /// The client CRL file; `None` for no CRL.
    pub crl: Option<String>,
    /// Last changes to the gateway's file: (path, value).
    pub patches: Vec<(&'static str, Value)>,
    /// Last changes to example-api's file: (path, value).
    pub api_patches: Vec<(&'static str, Value)>,
    /// Last changes to dev-idsvr's file: (path, value).
    pub idsvr_patches: Vec<(&'static str, Value)>,
    /// More environment for oidc-provider (ISSUER, SIGNING_KID).
    pub oidc_env: Vec<(&'static str, String)>,
    pub identity: Identity,
    /// Introspection response mode: jwt, json or rfc9701.
    pub response: &'static str,
    /// Algorithm of the gateway-issued JWTs (json and rfc9701 modes): PS256 or ES256.
    pub signing_alg: &'static str,
    /// The API hosts are reached through nginx as the TLS-terminating balancer, which forwards
    /// the partner's certificate to the gateway's trusted-hop listener. Default: set when
    /// `MTLS_TEST_VIA=balancer`, so that a test file runs its cases both ways.
    pub via_balancer: bool,
}

/// Whether the whole-process tests reach the API through the balancer (`MTLS_TEST_VIA=balancer`).
pub fn via_balancer() -> bool {
    std::env::var("MTLS_TEST_VIA").is_ok_and(|v| v == "balancer")
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token_ttl_seconds: 900,
            introspection_timeout: "5s",
            cache_max_ttl: "300s",
            negative_ttl: "5s",
            upstream_read_timeout: "10s",
            client_hello_timeout: "5s",
            unknown_sni: "close",
            extra_passthrough: Vec::new(),
            passthrough_max_connections: 4096,
            crl: Some(cert("root.crl.pem")),
            patches: Vec::new(),
            api_patches: Vec::new(),
            idsvr_patches: Vec::new(),
            oidc_env: Vec::new(),
            identity: Identity::Dev,
            response: "jwt",
            signing_alg: "PS256",
            via_balancer: via_balancer(),
        }
    }
}

pub struct System {
    pub dir: tempfile::TempDir,
    pub gateway_port: u16,
    pub idsvr_port: u16,
    pub api_port: u16,
    pub metrics_port: u16,
    pub jwks_port: u16,
    /// The gateway's trusted-hop listener (configured when `opts.via_balancer`).
    pub hop_port: u16,
    pub balancer: Option<balancer::Balancer>,
    pub opts: Options,
    pub gateway: Option<Proc>,
    pub idsvr: Option<Proc>,
    pub api: Option<Proc>,
}

impl System {
    pub fn start() -> System {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> System {
        let mut s = Self::configured(opts);
        s.start_idsvr();
        s.start_api();
        s.start_gateway();
        s
    }

    /// Ports chosen and config files written, nothing started (for config validation tests).
    pub fn configured(opts: Options) -> System {
        let dir = tempfile::tempdir().unwrap();
        let s = System {
            dir,
            gateway_port: free_port(),
            idsvr_port: free_port(),
            api_port: free_port(),
            metrics_port: free_port(),
            jwks_port: free_port(),
            hop_port: free_port(),
            balancer: None,
            opts,
            gateway: None,
            idsvr: None,
            api: None,
        };
        s.write_configs();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write_configs(&self) {
        yaml::write(&self.idsvr_config(), &self.path("idsvr.yaml"));
        yaml::write(&self.api_config(), &self.path("api.yaml"));
        yaml::write(&self.gateway_config(), &self.path("gateway.yaml"));
    }

    /// `conf/dev-idsvr.yaml` on this system's port, with a second partner for the stolen-token tests.
    fn idsvr_config(&self) -> Value {
        let mut v = yaml::shipped("dev-idsvr.yaml");
        yaml::set(&mut v, "listen", format!("127.0.0.1:{}", self.idsvr_port));
        yaml::set(&mut v, "certificate", cert("example.tls.pem"));
        yaml::set(&mut v, "key", cert("example.tls.key"));
        yaml::set(&mut v, "client_ca", cert("root.pem"));
        yaml::set(&mut v, "access_token_ttl_seconds", self.opts.token_ttl_seconds);
        yaml::set(&mut v, "dev_endpoints", true);
        let other = "client_id: other-client\ntls_client_auth_subject_dn: CN=other-partner\nscopes: [transactions]";
        yaml::push(&mut v, "clients", yaml::parse(other));
        // The identity server knows nothing of the gateway's CRL: a partner offboarded at the
        // gateway can still get tokens, which is what the offboarding tests need.
        let revoked =
            "client_id: revoked-client\ntls_client_auth_subject_dn: CN=revoked-partner\nscopes: [transactions]";
        yaml::push(&mut v, "clients", yaml::parse(revoked));
        for (path, value) in &self.opts.idsvr_patches {
            yaml::set(&mut v, path, value.clone());
        }
        v
    }

    /// `conf/example-api.yaml`; in json and rfc9701 modes `conf/example-api-gateway-keys.yaml`,
    /// which trusts the gateway's keys instead of the identity server's.
    fn api_config(&self) -> Value {
        let jwt = self.opts.response == "jwt";
        let mut v = yaml::shipped(if jwt { "example-api.yaml" } else { "example-api-gateway-keys.yaml" });
        yaml::set(&mut v, "listen", format!("127.0.0.1:{}", self.api_port));
        yaml::set(&mut v, "certificate", cert("example.tls.pem"));
        yaml::set(&mut v, "key", cert("example.tls.key"));
        yaml::set(&mut v, "jwks_ca", cert("root.pem"));
        let idp = self.idsvr_port;
        if jwt {
            yaml::set(
                &mut v,
                "jwks_url",
                format!("https://login-internal.example.com:{idp}/oauth/v2/oauth-anonymous/jwks"),
            );
            yaml::set(&mut v, "jwks_resolve", format!("127.0.0.1:{idp}"));
        } else {
            yaml::set(&mut v, "jwks_url", format!("http://127.0.0.1:{}/jwks", self.jwks_port));
            yaml::set(&mut v, "algorithm", self.opts.signing_alg);
        }
        for (path, value) in &self.opts.api_patches {
            yaml::set(&mut v, path, value.clone());
        }
        v
    }

    /// The gateway's file as the tests run it.
    pub fn gateway_yaml(&self) -> String {
        serde_yaml::to_string(&self.gateway_config()).unwrap()
    }

    /// `conf/local.yaml` on this system's ports and certificates, with an /admin/ route in front
    /// (scope `admin`, which no test token has) and the verified certificate forwarded on /api/.
    pub fn gateway_config(&self) -> Value {
        let o = &self.opts;
        let mut v = yaml::shipped("local.yaml");
        let dir = self.dir.path().display();
        yaml::set(&mut v, "pingora.pid_file", format!("{dir}/gw.pid"));
        yaml::set(&mut v, "pingora.upgrade_sock", format!("{dir}/gw.sock"));
        yaml::set(&mut v, "pingora.grace_period_seconds", 0);
        yaml::set(&mut v, "pingora.graceful_shutdown_timeout_seconds", 1);
        yaml::set(&mut v, "listener.address", format!("127.0.0.1:{}", self.gateway_port));
        yaml::set(&mut v, "listener.client_hello_timeout", o.client_hello_timeout);
        yaml::set(&mut v, "listener.unknown_sni", o.unknown_sni);
        yaml::set(&mut v, "passthrough.connect_timeout", "2s");
        yaml::set(&mut v, "passthrough.max_connections", o.passthrough_max_connections);
        yaml::set(&mut v, "passthrough.routes[0].upstream", format!("127.0.0.1:{}", self.idsvr_port));
        for route in &o.extra_passthrough {
            yaml::push(&mut v, "passthrough.routes", route.clone());
        }
        yaml::set(&mut v, "tls.certificate", cert("example.tls.pem"));
        yaml::set(&mut v, "tls.key", cert("example.tls.key"));
        yaml::set(&mut v, "tls.client_ca", cert("root.pem"));
        if o.via_balancer {
            yaml::set(&mut v, "trusted_hop", balancer::trusted_hop_section(self.hop_port));
        }
        match &o.crl {
            Some(path) => {
                yaml::set(&mut v, "tls.client_crl", path.as_str());
                yaml::set(&mut v, "tls.crl_reload_interval", "200ms");
            }
            None => yaml::remove(&mut v, "tls.client_crl"),
        }
        yaml::set(&mut v, "upstreams.example-api.address", format!("127.0.0.1:{}", self.api_port));
        yaml::set(&mut v, "upstreams.example-api.ca", cert("root.pem"));
        yaml::set(&mut v, "upstreams.example-api.connect_timeout", "1s");
        yaml::set(&mut v, "upstreams.example-api.read_timeout", o.upstream_read_timeout);
        self.introspection(&mut v);
        if o.response != "jwt" {
            yaml::set(&mut v, "token_issuer", self.token_issuer());
        }
        yaml::set(&mut v, "routes[0].forward_client_cert", true);
        let mut admin = yaml::at(&mut v, "routes[0]").clone();
        yaml::set(&mut admin, "path_prefix", "/admin/");
        yaml::remove(&mut admin, "forward_client_cert");
        yaml::set(&mut admin, "filters[2].scope.required", vec!["admin"]);
        yaml::at(&mut v, "routes").as_sequence_mut().unwrap().insert(0, admin);
        yaml::set(&mut v, "metrics.address", format!("127.0.0.1:{}", self.metrics_port));
        for (path, value) in &o.patches {
            yaml::set(&mut v, path, value.clone());
        }
        v
    }

    fn introspection(&self, v: &mut Value) {
        let (o, idp) = (&self.opts, self.idsvr_port);
        let at = |k: &str| format!("introspection.idsvr.{k}");
        yaml::set(v, &at("endpoint"), format!("https://login-internal.example.com:{idp}/oauth/v2/oauth-introspect"));
        yaml::set(v, &at("resolve"), format!("127.0.0.1:{idp}"));
        yaml::set(v, &at("ca"), cert("root.pem"));
        yaml::set(v, &at("connect_timeout"), "1s");
        yaml::set(v, &at("timeout"), o.introspection_timeout);
        yaml::set(v, &at("response"), o.response);
        yaml::set(v, &at("cache.max_ttl"), o.cache_max_ttl);
        yaml::set(v, &at("cache.negative_ttl"), o.negative_ttl);
        if o.response == "rfc9701" {
            yaml::set(
                v,
                &at("jwks_url"),
                format!("https://login-internal.example.com:{idp}/oauth/v2/oauth-anonymous/jwks"),
            );
            yaml::set(v, &at("issuer"), "https://login.example.com/oauth/v2/oauth-anonymous");
        }
        if o.response != "jwt" {
            yaml::set(v, &at("audiences"), vec!["api.example.com"]);
        }
    }

    /// Two keys, the signing one first: PS256 and ES256 in the order the options ask.
    fn token_issuer(&self) -> Value {
        let (signing, other) = match self.opts.signing_alg {
            "ES256" => (("gw-es", "es256", "ES256"), ("gw-ps", "ps256", "PS256")),
            _ => (("gw-ps", "ps256", "PS256"), ("gw-es", "es256", "ES256")),
        };
        let key = |(kid, file, alg): (&str, &str, &str)| {
            yaml::parse(&format!(
                "{{kid: {kid}, key: {}, algorithm: {alg}}}",
                cert(&format!("gateway-signing.{file}.key"))
            ))
        };
        let mut t = yaml::parse("issuer: https://gateway.example.com\nlifetime: 120s");
        yaml::set(&mut t, "jwks_address", format!("127.0.0.1:{}", self.jwks_port));
        yaml::set(&mut t, "keys", Value::Sequence(vec![key(signing), key(other)]));
        t
    }

    pub fn start_idsvr(&mut self) {
        if self.opts.identity == Identity::OidcProvider {
            return self.start_oidc_provider();
        }
        let mut proc = spawn("dev-idsvr", &self.path("idsvr.yaml"), self.dir.path());
        wait_port(self.idsvr_port, self.dir.path(), &mut proc);
        self.idsvr = Some(proc);
    }

    fn start_oidc_provider(&mut self) {
        let dir = oidc_provider_dir();
        let log = std::fs::File::create(self.path("dev-idsvr.log")).unwrap();
        let child = Command::new("node")
            .arg("server.mjs")
            .current_dir(dir)
            .env("PORT", self.idsvr_port.to_string())
            .env("CERTS_DIR", certs())
            .env("ACCESS_TOKEN_TTL", self.opts.token_ttl_seconds.to_string())
            .envs(self.opts.oidc_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("node is needed for the interop tests");
        let mut proc = Proc { child, name: "dev-idsvr" };
        wait_port(self.idsvr_port, self.dir.path(), &mut proc);
        self.idsvr = Some(proc);
    }

    pub fn stop_idsvr(&mut self) {
        self.idsvr = None;
    }

    pub fn start_api(&mut self) {
        let mut proc = spawn("example-api", &self.path("api.yaml"), self.dir.path());
        wait_port(self.api_port, self.dir.path(), &mut proc);
        self.api = Some(proc);
    }

    pub fn stop_api(&mut self) {
        self.api = None;
    }

    pub fn start_gateway(&mut self) {
        let mut proc = spawn("mtls-gateway", &self.path("gateway.yaml"), self.dir.path());
        wait_port(self.gateway_port, self.dir.path(), &mut proc);
        if self.opts.via_balancer {
            balancer::wait_hop(self.hop_port, self.dir.path(), &mut proc);
            if self.balancer.is_none() {
                self.balancer = Some(balancer::Balancer::start(self.dir.path(), self.hop_port));
            }
        }
        self.gateway = Some(proc);
    }

    /// Where clients reach the API hosts: the balancer when there is one, else the gateway.
    pub fn api_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.api_port()).into()
    }

    pub fn api_port(&self) -> u16 {
        self.balancer.as_ref().map_or(self.gateway_port, |b| b.port)
    }

    /// Sends SIGHUP to the gateway: it reloads its configuration file.
    pub fn reload(&self) {
        let pid = self.gateway.as_ref().expect("a running gateway").child.id();
        let status = Command::new("kill").arg("-HUP").arg(pid.to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits until the gateway's log reports reload `n` as applied (`true`) or failed (`false`).
    pub fn reload_outcome(&self, n: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.gateway_log();
            if log.contains(&format!("reload {n} applied")) {
                return true;
            }
            if log.contains(&format!("reload {n} failed")) {
                return false;
            }
            assert!(Instant::now() < deadline, "reload {n} reported nothing:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes the gateway's configuration file (read again on reload).
    pub fn write_gateway_config(&self, doc: &Value) {
        yaml::write(doc, &self.path("gateway.yaml"));
    }

    /// Whether the gateway's log comes to contain `needle` within 5 s: the access line of a request
    /// is written after its answer went out, so a client can be faster than the log.
    pub fn log_shows(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.gateway_log().contains(needle) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn gateway_log(&self) -> String {
        std::fs::read_to_string(self.path("mtls-gateway.log")).unwrap_or_default()
    }

    /// An mTLS client with `p12` that reaches both host names through the gateway's port.
    pub fn client(&self, p12: &str) -> reqwest::Client {
        self.client_builder(Some(p12)).build().unwrap()
    }

    pub fn client_builder(&self, p12: Option<&str>) -> reqwest::ClientBuilder {
        let root = reqwest::Certificate::from_pem(&std::fs::read(cert("root.pem")).unwrap()).unwrap();
        let gw: SocketAddr = ([127, 0, 0, 1], self.gateway_port).into();
        let mut b = reqwest::Client::builder()
            .tls_certs_only([root])
            .resolve(LOGIN, gw)
            .resolve(API, self.api_addr())
            .no_proxy()
            .timeout(Duration::from_secs(20));
        if let Some(p12) = p12 {
            let der = std::fs::read(cert(p12)).unwrap();
            b = b.identity(reqwest::Identity::from_pkcs12_der(&der, "Password1").unwrap());
        }
        b
    }

    /// Gets an access token through the passthrough with the given client certificate.
    pub async fn token(&self, p12: &str, client_id: &str) -> String {
        self.token_with(p12, client_id, &[]).await
    }

    /// `token` with more form fields (an RFC 8707 `resource`).
    pub async fn token_with(&self, p12: &str, client_id: &str, extra: &[(&str, &str)]) -> String {
        let mut form = vec![("client_id", client_id), ("grant_type", "client_credentials"), ("scope", "transactions")];
        form.extend_from_slice(extra);
        let resp = self
            .client(p12)
            .post(format!("https://{LOGIN}/oauth/v2/oauth-token-mutual-tls"))
            .form(&form)
            .send()
            .await
            .expect("token request");
        assert_eq!(resp.status(), 200, "token endpoint");
        let body: serde_json::Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Revokes a partner-client token at the identity server (RFC 7009), through the gateway.
    pub async fn revoke(&self, token: &str) {
        let r = self
            .client("example.client.p12")
            .post(format!("https://{LOGIN}/oauth/v2/oauth-revoke"))
            .form(&[("client_id", "partner-client"), ("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "revocation");
    }

    /// A DPoP-bound token of the identity server's `dpop-client` for `key` (RFC 9449 §5), asked
    /// through the gateway port with `client` (which needs no certificate).
    pub async fn dpop_token(&self, client: &reqwest::Client, key: &ProofKey) -> String {
        // The token endpoint as the identity server names it in `htu`: both take the host (and
        // port) of the Host header the client sent.
        let htu = format!("https://{LOGIN}:{}/oauth/v2/oauth-token-mutual-tls", self.gateway_port);
        let r = client
            .post(&htu)
            .basic_auth("dpop-client", Some("Password1"))
            .header("dpop", key.proof("POST", &htu, None, &serde_json::json!({})))
            .form(&[("grant_type", "client_credentials"), ("scope", "transactions")])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 200, "token endpoint: {body}");
        assert_eq!(body["token_type"], "DPoP", "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// A direct (not through the gateway) client for dev-idsvr's test endpoints.
    pub async fn idsvr_stats(&self) -> serde_json::Value {
        let url = format!("https://{LOGIN}:{}/dev/stats", self.idsvr_port);
        let client = self.direct_idsvr_client();
        client.get(url).send().await.unwrap().json().await.unwrap()
    }

    pub async fn introspections(&self) -> u64 {
        self.idsvr_stats().await["introspections"].as_u64().unwrap()
    }

    pub async fn set_faults(&self, faults: serde_json::Value) {
        let url = format!("https://{LOGIN}:{}/dev/faults", self.idsvr_port);
        let r = self.direct_idsvr_client().post(url).json(&faults).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    fn direct_idsvr_client(&self) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(&std::fs::read(cert("root.pem")).unwrap()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([root])
            .resolve(LOGIN, ([127, 0, 0, 1], self.idsvr_port).into())
            .no_proxy()
            .build()
            .unwrap()
    }

    pub async fn call_api(&self, p12: &str, token: &str) -> reqwest::Response {
        self.client(p12)
            .post(format!("https://{API}/api/transactions"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("API request")
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port)).await.unwrap().text().await.unwrap()
    }
}

/// The sum of the samples of metric `name` whose line contains `label` (`""`: every sample), in
/// Prometheus text.
pub fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The port of a `host:port` address.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Runs the gateway's validate mode on a file: (exit success, stdout + stderr).
pub fn validate(config: &Path) -> (bool, String) {
    // conf/oidc-provider.yaml reads its introspection secret from this variable.
    let out = Command::new(bin("mtls-gateway"))
        .arg("-t")
        .arg("-c")
        .arg(config)
        .env("INTROSPECTION_CLIENT_SECRET", "Password1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// What one curl run left: its exit code, the (last) status (0 when none arrived), the response
/// headers (lower case) and the body.
#[derive(Debug)]
pub struct Curl {
    pub exit: i32,
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Curl {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

impl System {
    /// Runs curl 7.88 (the system's) against the gateway's port with `example.client.p12`, both host
    /// names mapped to it; `args` come last (`--http2`, `-X`, `-H`, the URL, another `--cert`).
    pub fn curl(&self, args: &[&str]) -> Curl {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let (head, body) = (self.path(&format!("curl-{n}.head")), self.path(&format!("curl-{n}.body")));
        let (port, api) = (self.gateway_port, self.api_port());
        let out = Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--max-time", "20", "--cacert", &cert("root.pem"), "--cert-type", "P12"])
            .args(["--cert", &format!("{}:Password1", cert("example.client.p12"))])
            .args(["--connect-to", &format!("{API}:443:127.0.0.1:{api}")])
            .args(["--connect-to", &format!("{LOGIN}:443:127.0.0.1:{port}")])
            .args(["-D", &head.display().to_string(), "-o", &body.display().to_string(), "-w", "%{http_code}"])
            .args(args)
            .output()
            .expect("curl is needed for the HTTP/2 tests");
        // With several URLs `-w` prints one status after the other: keep the last.
        let codes = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Curl {
            exit: out.status.code().unwrap_or(-1),
            status: codes.get(codes.len().saturating_sub(3)..).and_then(|c| c.parse().ok()).unwrap_or(0),
            headers: std::fs::read_to_string(&head).unwrap_or_default().to_ascii_lowercase(),
            body: std::fs::read_to_string(&body).unwrap_or_default(),
        }
    }
}

/// Waits until the clock is just past a whole second, so that a test can place a proof's
/// first use and its replay precisely against `iat`, which the gateway reads in whole seconds;
/// returns that second.
pub async fn at_a_second_boundary() -> i64 {
    loop {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        if since.subsec_millis() < 100 {
            return since.as_secs() as i64;
        }
        tokio::time::sleep(Duration::from_millis(1000 - u64::from(since.subsec_millis()) + 5)).await;
    }
}

/// Sleeps until `second` (Unix time, fractional) has come.
pub async fn until(second: f64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64((second - now).max(0.0))).await;
}
