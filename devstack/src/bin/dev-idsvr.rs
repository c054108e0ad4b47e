//! `dev-idsvr`: a development-only identity server that stands in for the reference's Curity
//! server, so the whole system runs without a licence. It terminates mutual TLS itself and speaks
//! the reference's endpoints:
//!
//! - `POST /oauth/v2/oauth-token-mutual-tls`: client credentials with RFC 8705 `tls_client_auth`
//!   (chain verified by TLS against the CA, subject DN must equal the client's). Answers an opaque
//!   token bound to the certificate's `x5t#S256`. A client registered with
//!   `dpop_bound_access_tokens` authenticates with HTTP Basic instead and must send a DPoP proof
//!   (RFC 9449 §5): its token is bound to the proof key's `jkt` and has `token_type: DPoP`.
//! - `POST /oauth/v2/oauth-introspect`: HTTP Basic client auth. `Accept: application/jwt` answers
//!   200 with the token as a PS256 JWT or 204 when inactive; otherwise RFC 7662 JSON.
//! - `POST /oauth/v2/oauth-revoke`: RFC 7009 revocation by the token's own client.
//! - `GET /oauth/v2/oauth-anonymous/jwks`: the public signing key.
//! - With `dev_endpoints: true`: `GET /dev/stats` (call counts), `POST /dev/faults` (delay or
//!   fail introspection), used by the tests to simulate a bad day, and `POST /dev/mint` (many
//!   tokens at once, for the cache benchmarks; with `jkt`, bound to a key as well as the
//!   certificate, which no real server issues and the gateway's tests attack with).
//!
//! Tokens live in memory. Never use this in production.

use async_trait::async_trait;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mtls_devstack::{self as devkit, json_response};
use mtls_gateway::config::SigningAlg;
use mtls_gateway::connection::tls::KeepClientCert;
use mtls_gateway::request::issuer::public_jwk;
use mtls_gateway::token::{self, b64url, ClientCert};
use openssl::rsa::Rsa;
use openssl::ssl::SslVerifyMode;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    listen: String,
    certificate: String,
    key: String,
    client_ca: String,
    issuer: String,
    audience: String,
    #[serde(default = "default_ttl")]
    access_token_ttl_seconds: u64,
    clients: Vec<Client>,
    /// PEM RSA key for signing JWTs (PS256); a fresh one is made at every start when absent.
    signing_key: Option<String>,
    /// A fixed `kid` for the signing key. With a fresh key at every start, a restart then
    /// publishes a new key under the same `kid`, as some identity servers do (for rotation tests).
    signing_kid: Option<String>,
    #[serde(default)]
    dev_endpoints: bool,
    #[serde(default = "default_threads")]
    threads: usize,
}

fn default_ttl() -> u64 {
    900
}
fn default_threads() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Client {
    client_id: String,
    /// RFC 8705 `tls_client_auth`: the subject DN the client's certificate must carry.
    tls_client_auth_subject_dn: Option<String>,
    /// `client_secret_basic` for clients that introspect.
    secret: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    introspection: bool,
    /// RFC 9449: tokens bound to the key of the DPoP proof sent to the token endpoint.
    #[serde(default)]
    dpop_bound_access_tokens: bool,
}

struct Token {
    client_id: String,
    scope: String,
    binding: Binding,
    issued: u64,
    expires: u64,
    jti: String,
    delegation_id: String,
}

/// What a token is bound to.
#[derive(Clone)]
enum Binding {
    Certificate(String),
    Dpop(String),
    /// A certificate thumbprint and a key thumbprint: only minted, for the tests.
    Both(String, String),
}

impl Binding {
    fn cnf(&self) -> serde_json::Value {
        match self {
            Binding::Certificate(x5t) => json!({ "x5t#S256": x5t }),
            Binding::Dpop(jkt) => json!({ "jkt": jkt }),
            Binding::Both(x5t, jkt) => json!({ "x5t#S256": x5t, "jkt": jkt }),
        }
    }

    fn token_type(&self) -> &'static str {
        match self {
            Binding::Certificate(_) => "bearer",
            Binding::Dpop(_) | Binding::Both(..) => "DPoP",
        }
    }
}

#[derive(Default)]
struct Faults {
    introspection_delay_ms: u64,
    introspection_status: Option<u16>,
}

struct IdSvr {
    cfg: Config,
    kid: String,
    signing: EncodingKey,
    jwk: serde_json::Value,
    tokens: Mutex<HashMap<String, Token>>,
    faults: Mutex<Faults>,
    introspections: AtomicU64,
    issued: AtomicU64,
    /// Checks the DPoP proofs of token requests (the gateway's own checks, without `ath`).
    dpop: mtls_gateway::request::dpop::DpopVerifier,
    /// The W3C `traceparent` of the last introspection call (for the tracing tests).
    last_traceparent: Mutex<Option<String>>,
}

fn now() -> u64 {
    token::unix_now().max(0) as u64
}

fn oauth_error(status: u16, error: &str, description: &str) -> http::Response<Vec<u8>> {
    json_response(status, &json!({ "error": error, "error_description": description }))
}

impl IdSvr {
    fn new(cfg: Config, path: &std::path::Path) -> Result<Self, String> {
        let rsa = match &cfg.signing_key {
            Some(file) => {
                let file = devkit::relative(path, file);
                let pem = std::fs::read(&file).map_err(|e| format!("signing_key: {}: {e}", file.display()))?;
                openssl::pkey::PKey::private_key_from_pem(&pem)
                    .and_then(|k| k.rsa())
                    .map_err(|e| format!("signing_key: {}: not an RSA key: {e}", file.display()))?
            }
            None => Rsa::generate(2048).map_err(|e| e.to_string())?,
        };
        let der = rsa.private_key_to_der().map_err(|e| e.to_string())?;
        // The key id is derived from the key, so a configured key keeps its kid across restarts.
        let derived = token::thumbprint(&rsa.public_key_to_der().map_err(|e| e.to_string())?)[..12].to_string();
        let kid = cfg.signing_kid.clone().unwrap_or(derived);
        let pkey = openssl::pkey::PKey::from_rsa(rsa).map_err(|e| e.to_string())?;
        let jwk = public_jwk(&pkey, &kid, SigningAlg::PS256).map_err(|e| e.to_string())?;
        Ok(IdSvr {
            cfg,
            kid,
            signing: EncodingKey::from_rsa_der(&der),
            jwk,
            tokens: Mutex::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
            introspections: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            last_traceparent: Mutex::new(None),
            dpop: mtls_gateway::request::dpop::DpopVerifier::local(Default::default()),
        })
    }

    fn client(&self, id: &str) -> Option<&Client> {
        self.cfg.clients.iter().find(|c| c.client_id == id)
    }

    fn token_endpoint(
        &self,
        session: &ServerSession,
        cert: Option<&ClientCert>,
        form: &[(String, String)],
    ) -> http::Response<Vec<u8>> {
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("grant_type") != Some("client_credentials") {
            return oauth_error(400, "unsupported_grant_type", "only client_credentials is supported");
        }
        let client = match self.basic_client(session) {
            Some(c) => c,
            None => match get("client_id").and_then(|id| self.client(id)) {
                Some(c) => c,
                None => return oauth_error(401, "invalid_client", "unknown client"),
            },
        };
        let binding = match self.token_binding(session, cert, client) {
            Ok(b) => b,
            Err(answer) => return *answer,
        };
        let scope = get("scope").unwrap_or("").split(' ').filter(|s| !s.is_empty()).collect::<Vec<_>>();
        if scope.iter().any(|s| !client.scopes.iter().any(|c| c == s)) {
            return oauth_error(400, "invalid_scope", "scope not allowed for this client");
        }
        let opaque = random_token();
        let issued = now();
        let token = Token {
            client_id: client.client_id.clone(),
            scope: scope.join(" "),
            binding: binding.clone(),
            issued,
            expires: issued + self.cfg.access_token_ttl_seconds,
            jti: uuid::Uuid::new_v4().to_string(),
            delegation_id: uuid::Uuid::new_v4().to_string(),
        };
        let body = json!({
            "access_token": opaque, "token_type": binding.token_type(),
            "expires_in": self.cfg.access_token_ttl_seconds, "scope": token.scope,
        });
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(opaque, token);
        }
        self.issued.fetch_add(1, Ordering::Relaxed);
        json_response(200, &body)
    }

    /// How the client authenticated and what its token is bound to: its certificate (RFC 8705
    /// `tls_client_auth`), or, for a DPoP client authenticated with its secret, the key of its proof.
    fn token_binding(
        &self,
        session: &ServerSession,
        cert: Option<&ClientCert>,
        client: &Client,
    ) -> Result<Binding, Box<http::Response<Vec<u8>>>> {
        if client.dpop_bound_access_tokens {
            if self.basic_client(session).map(|c| c.client_id.as_str()) != Some(client.client_id.as_str()) {
                return Err(Box::new(oauth_error(401, "invalid_client", "client authentication failed")));
            }
            return match self.dpop.verify_token_request(session.req_header()) {
                Ok(proven) => Ok(Binding::Dpop(proven.jkt)),
                Err(e) => Err(Box::new(oauth_error(400, "invalid_dpop_proof", e.as_str()))),
            };
        }
        let (Some(cert), Some(dn)) = (cert, client.tls_client_auth_subject_dn.as_deref()) else {
            return Err(Box::new(oauth_error(401, "invalid_client", "a client certificate is required")));
        };
        if cert.subject != dn {
            return Err(Box::new(oauth_error(
                401,
                "invalid_client",
                "the certificate subject does not match the client",
            )));
        }
        Ok(Binding::Certificate(cert.thumbprint.clone()))
    }

    fn basic_client(&self, session: &ServerSession) -> Option<&Client> {
        let value = session.req_header().headers.get("authorization")?.to_str().ok()?;
        let (scheme, b64) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        let id = url_decode(id);
        let client = self.client(&id)?;
        let ok = client.secret.as_deref().is_some_and(|s| {
            let given = url_decode(secret);
            token::same(s.as_bytes(), given.as_bytes())
        });
        ok.then_some(client)
    }

    async fn introspect(&self, session: &ServerSession, form: &[(String, String)]) -> http::Response<Vec<u8>> {
        self.introspections.fetch_add(1, Ordering::Relaxed);
        let traceparent = session.req_header().headers.get("traceparent").and_then(|v| v.to_str().ok());
        if let Ok(mut last) = self.last_traceparent.lock() {
            *last = traceparent.map(str::to_string);
        }
        let (delay, fail) = match self.faults.lock() {
            Ok(f) => (f.introspection_delay_ms, f.introspection_status),
            Err(_) => (0, None),
        };
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if let Some(status) = fail {
            return oauth_error(status, "server_error", "injected fault");
        }
        if !self.basic_client(session).is_some_and(|c| c.introspection) {
            return oauth_error(401, "invalid_client", "introspection needs an authorized client");
        }
        let Some(opaque) = form.iter().find(|(k, _)| k == "token").map(|(_, v)| v.as_str()) else {
            return oauth_error(400, "invalid_request", "token is required");
        };
        let wants_jwt = session
            .req_header()
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/jwt"));
        let claims = self.active_claims(opaque);
        // Like Curity, answers may be kept by the gateway (no `no-store`): inactive ones for the
        // gateway's negative_ttl, active ones until the token expires.
        let keep = [("cache-control", "private")];
        match (claims, wants_jwt) {
            (None, true) => devkit::bytes_response(204, "application/jwt", Vec::new(), &keep),
            (None, false) => devkit::bytes_response(
                200,
                "application/json",
                json!({ "active": false }).to_string().into_bytes(),
                &keep,
            ),
            (Some(c), true) => match self.sign(&c) {
                Ok(jwt) => {
                    // Like Curity: the answer may be cached until the token expires.
                    let left = c["exp"].as_u64().unwrap_or(0).saturating_sub(now());
                    let cc = format!("max-age={left}");
                    devkit::bytes_response(200, "application/jwt", jwt.into_bytes(), &[("cache-control", &cc)])
                }
                Err(e) => oauth_error(500, "server_error", &e),
            },
            (Some(mut c), false) => {
                c["active"] = json!(true);
                let token_type = c["token_type"].take();
                c["token_type"] = if token_type.is_null() { json!("bearer") } else { token_type };
                let cc = format!("private, max-age={}", c["exp"].as_u64().unwrap_or(0).saturating_sub(now()));
                devkit::bytes_response(200, "application/json", c.to_string().into_bytes(), &[("cache-control", &cc)])
            }
        }
    }

    fn active_claims(&self, opaque: &str) -> Option<serde_json::Value> {
        let tokens = self.tokens.lock().ok()?;
        let t = tokens.get(opaque).filter(|t| t.expires > now())?;
        Some(json!({
            "jti": t.jti, "delegationId": t.delegation_id, "exp": t.expires, "nbf": t.issued,
            "iat": t.issued, "scope": t.scope, "iss": self.cfg.issuer,
            "sub": hex_sha256(&t.client_id), "aud": self.cfg.audience, "purpose": "access_token",
            "client_id": t.client_id, "cnf": t.binding.cnf(), "token_type": t.binding.token_type(),
        }))
    }

    fn sign(&self, claims: &serde_json::Value) -> Result<String, String> {
        let mut header = Header::new(Algorithm::PS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing).map_err(|e| e.to_string())
    }

    fn revoke(
        &self,
        session: &ServerSession,
        cert: Option<&ClientCert>,
        form: &[(String, String)],
    ) -> http::Response<Vec<u8>> {
        let token = form.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone()).unwrap_or_default();
        let caller = self.basic_client(session).map(|c| c.client_id.clone()).or_else(|| {
            let id = form.iter().find(|(k, _)| k == "client_id")?.1.as_str();
            let c = self.client(id)?;
            (cert?.subject.as_str() == c.tls_client_auth_subject_dn.as_deref()?).then(|| c.client_id.clone())
        });
        let Some(caller) = caller else {
            return oauth_error(401, "invalid_client", "client authentication failed");
        };
        if let Ok(mut t) = self.tokens.lock() {
            if t.get(&token).is_some_and(|t| t.client_id == caller) {
                t.remove(&token);
            }
        }
        devkit::bytes_response(200, "application/json", b"{}".to_vec(), &[])
    }

    fn set_faults(&self, body: &[u8]) -> http::Response<Vec<u8>> {
        #[derive(Deserialize)]
        struct Req {
            #[serde(default)]
            introspection_delay_ms: u64,
            introspection_status: Option<u16>,
        }
        let Ok(req) = serde_json::from_slice::<Req>(body) else {
            return oauth_error(400, "invalid_request", "bad JSON");
        };
        if let Ok(mut f) = self.faults.lock() {
            *f = Faults {
                introspection_delay_ms: req.introspection_delay_ms,
                introspection_status: req.introspection_status,
            };
        }
        json_response(200, &json!({}))
    }
}

impl IdSvr {
    /// Benchmarks only: issues `count` tokens at once for a client, bound to the given thumbprint,
    /// as if the client had called the token endpoint that many times.
    fn mint(&self, body: &[u8]) -> http::Response<Vec<u8>> {
        #[derive(Deserialize)]
        struct Req {
            count: usize,
            client_id: String,
            x5t: String,
            jkt: Option<String>,
            #[serde(default)]
            scope: String,
        }
        let Ok(req) = serde_json::from_slice::<Req>(body) else {
            return oauth_error(400, "invalid_request", "bad JSON");
        };
        let issued = now();
        let mut out = Vec::with_capacity(req.count.min(1_000_000));
        let Ok(mut tokens) = self.tokens.lock() else {
            return oauth_error(500, "server_error", "token store unavailable");
        };
        for _ in 0..req.count.min(1_000_000) {
            let opaque = random_token();
            tokens.insert(
                opaque.clone(),
                Token {
                    client_id: req.client_id.clone(),
                    scope: req.scope.clone(),
                    binding: match &req.jkt {
                        Some(jkt) => Binding::Both(req.x5t.clone(), jkt.clone()),
                        None => Binding::Certificate(req.x5t.clone()),
                    },
                    issued,
                    expires: issued + self.cfg.access_token_ttl_seconds,
                    jti: uuid::Uuid::new_v4().to_string(),
                    delegation_id: uuid::Uuid::new_v4().to_string(),
                },
            );
            out.push(opaque);
        }
        json_response(200, &json!({ "tokens": out }))
    }
}

fn random_token() -> String {
    let mut buf = [0u8; 32];
    // A failing CSPRNG must never yield a guessable token: fall back to a UUIDv4 (also random).
    match openssl::rand::rand_bytes(&mut buf) {
        Ok(()) => b64url(&buf),
        Err(_) => uuid::Uuid::new_v4().simple().to_string(),
    }
}

fn hex_sha256(s: &str) -> String {
    token::cache_key(s).iter().map(|b| format!("{b:02x}")).collect()
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

#[async_trait]
impl ServeHttp for IdSvr {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let cert = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|s| s.extension.get::<token::ConnectionFacts>())
            .and_then(|f| f.client.clone());
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let body = match devkit::read_body(session, 64 * 1024).await {
            Ok(b) => b,
            Err(e) => return oauth_error(400, "invalid_request", &e),
        };
        let form = devkit::form(&body);
        let dev = self.cfg.dev_endpoints;
        match (method.as_str(), path.as_str()) {
            ("POST", "/oauth/v2/oauth-token-mutual-tls") => self.token_endpoint(session, cert.as_deref(), &form),
            ("POST", "/oauth/v2/oauth-introspect") => self.introspect(session, &form).await,
            ("POST", "/oauth/v2/oauth-revoke") => self.revoke(session, cert.as_deref(), &form),
            ("GET", "/oauth/v2/oauth-anonymous/jwks") => json_response(200, &json!({ "keys": [self.jwk] })),
            ("GET", "/dev/stats") if dev => json_response(
                200,
                &json!({
                    "introspections": self.introspections.load(Ordering::Relaxed),
                    "tokens_issued": self.issued.load(Ordering::Relaxed),
                    "last_traceparent": self.last_traceparent.lock().ok().and_then(|l| l.clone()),
                }),
            ),
            ("POST", "/dev/faults") if dev => self.set_faults(&body),
            ("POST", "/dev/mint") if dev => self.mint(&body),
            _ => oauth_error(404, "not_found", "no such endpoint"),
        }
    }
}

fn tls_settings(cfg: &Config, path: &std::path::Path) -> Result<TlsSettings, String> {
    let p = |s: &str| devkit::relative(path, s).display().to_string();
    let mut settings = TlsSettings::with_callbacks(Box::new(KeepClientCert)).map_err(|e| e.to_string())?;
    settings.set_certificate_chain_file(p(&cfg.certificate)).map_err(|e| format!("certificate: {e}"))?;
    settings.set_private_key_file(p(&cfg.key), openssl::ssl::SslFiletype::PEM).map_err(|e| format!("key: {e}"))?;
    settings.set_ca_file(p(&cfg.client_ca)).map_err(|e| format!("client_ca: {e}"))?;
    // Certificates are optional at the TLS layer (introspection uses Basic auth) but always
    // verified when sent; the token endpoint refuses requests without one.
    settings.set_verify(SslVerifyMode::PEER);
    settings.set_session_id_context(b"dev-idsvr").map_err(|e| e.to_string())?;
    Ok(settings)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let path = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "conf/dev-idsvr.yaml".into()));
    let result = devkit::load_yaml::<Config>(&path).and_then(|cfg| {
        let settings = tls_settings(&cfg, &path)?;
        Ok((cfg, settings))
    });
    let (cfg, settings) = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("dev-idsvr: {e}");
            std::process::exit(1);
        }
    };
    let (addr, threads) = (cfg.listen.clone(), cfg.threads);
    match IdSvr::new(cfg, &path) {
        Ok(app) => devkit::serve_tls("dev-idsvr", app, &addr, settings, threads),
        Err(e) => {
            eprintln!("dev-idsvr: {e}");
            std::process::exit(1);
        }
    }
}
