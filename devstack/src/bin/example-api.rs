//! `example-api`: the reference's example API in Rust. Behind the gateway it only verifies the JWT
//! in `Authorization` (PS256 or the configured algorithm, `iss`, `aud`, `exp`) against the keys of
//! the configured JWKS, with the gateway's own JWKS cache (lifetimes, one refetch when a key
//! rotates, even under the same `kid`)
//! and answers `POST /api/transactions`.
//!
//! Two more routes exist for the tests: `/api/echo` answers, for any method, the method, target
//! and headers it received (to prove what the gateway strips, adds and lets through), and
//! `GET /api/slow?ms=N` answers after N ms. `GET /healthz` answers 200 without a token (the
//! gateway's health checks), and every answer names the instance that gave it
//! (`x-example-api: <listen address>`), so that tests can see which backend served a request.

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, Validation};
use mtls_devstack::{self as devkit, json_response};
use mtls_gateway::request::jwks::{JwksPolicy, RemoteJwks};
use mtls_gateway::request::respond::UNAUTHORIZED_BODY;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    listen: String,
    certificate: String,
    key: String,
    jwks_url: String,
    /// CA that the JWKS server's certificate must chain to.
    jwks_ca: String,
    /// Connect here for the JWKS host instead of resolving it.
    jwks_resolve: Option<String>,
    issuer: String,
    audience: String,
    /// The one JWS algorithm accepted: PS256 (default) or ES256.
    algorithm: Option<String>,
    #[serde(default = "default_threads")]
    threads: usize,
    /// When set, callers must present a client certificate from this CA (mutual TLS on the hop
    /// from the gateway, as a zero-trust network asks).
    client_ca: Option<String>,
}

fn default_threads() -> usize {
    1
}

struct Api {
    cfg: Config,
    algorithm: Algorithm,
    jwks: RemoteJwks,
}

fn unauthorized() -> http::Response<Vec<u8>> {
    devkit::bytes_response(
        401,
        "application/json",
        UNAUTHORIZED_BODY.as_bytes().to_vec(),
        &[("www-authenticate", "Bearer")],
    )
}

impl Api {
    fn new(cfg: Config, path: &std::path::Path) -> Result<Self, String> {
        let ca = devkit::relative(path, &cfg.jwks_ca);
        let mut builder =
            mtls_gateway::pki::pinned_client(&ca).map_err(|e| format!("jwks_ca: {e}"))?.timeout(Duration::from_secs(5));
        if let Some(addr) = &cfg.jwks_resolve {
            let url = url::Url::parse(&cfg.jwks_url).map_err(|e| format!("jwks_url: {e}"))?;
            let sock = addr.parse().map_err(|e| format!("jwks_resolve: {e}"))?;
            builder = builder.resolve(url.host_str().unwrap_or_default(), sock);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        let algorithm = cfg.algorithm.as_deref().unwrap_or("PS256").parse().map_err(|_| "algorithm: unknown")?;
        let jwks = RemoteJwks::new(cfg.jwks_url.clone(), client, JwksPolicy::default());
        Ok(Api { cfg, algorithm, jwks })
    }

    async fn verify(&self, session: &ServerSession) -> Result<serde_json::Value, &'static str> {
        let auth = session.req_header().headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or("no token")?;
        let (scheme, jwt) = auth.split_once(' ').ok_or("malformed")?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err("not bearer");
        }
        let mut v = Validation::new(self.algorithm);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = self.jwks.verify::<serde_json::Value>(jwt, &v).await.map_err(|e| e.reason())?;
        Ok(data.claims)
    }
}

#[async_trait]
impl ServeHttp for Api {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let mut answer = self.answer(session).await;
        if let Ok(name) = http::HeaderValue::from_str(&self.cfg.listen) {
            answer.headers_mut().insert("x-example-api", name);
        }
        answer
    }
}

impl Api {
    async fn answer(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let _ = devkit::read_body(session, 1 << 20).await;
        if session.req_header().uri.path() == "/healthz" {
            return json_response(200, &json!({ "status": "ok" }));
        }
        let claims = match self.verify(session).await {
            Ok(c) => c,
            Err(why) => {
                log::info!("refused: {why}");
                return unauthorized();
            }
        };
        let req = session.req_header();
        match (req.method.as_str(), req.uri.path()) {
            ("POST", "/api/transactions") => {
                json_response(200, &json!({ "message": "Success response from the Example API" }))
            }
            (method, "/api/echo") => {
                let headers: serde_json::Map<String, serde_json::Value> = req
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
                    .collect();
                let target = String::from_utf8_lossy(req.raw_path()).into_owned();
                json_response(200, &json!({ "method": method, "target": target, "headers": headers, "claims": claims }))
            }
            ("GET", "/api/slow") => {
                let ms = req.uri.query().and_then(|q| q.strip_prefix("ms=")).and_then(|v| v.parse().ok()).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                json_response(200, &json!({ "slept_ms": ms }))
            }
            _ => json_response(404, &json!({ "code": "not_found", "message": "No such resource" })),
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let path = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "conf/example-api.yaml".into()));
    let started = devkit::load_yaml::<Config>(&path).and_then(|cfg| {
        let p = |s: &str| devkit::relative(&path, s).display().to_string();
        let mut settings = TlsSettings::intermediate(&p(&cfg.certificate), &p(&cfg.key)).map_err(|e| e.to_string())?;
        if let Some(ca) = &cfg.client_ca {
            settings.set_ca_file(p(ca)).map_err(|e| format!("client_ca: {e}"))?;
            let demand = openssl::ssl::SslVerifyMode::PEER | openssl::ssl::SslVerifyMode::FAIL_IF_NO_PEER_CERT;
            settings.set_verify(demand);
        }
        let (addr, threads) = (cfg.listen.clone(), cfg.threads);
        Ok((Api::new(cfg, &path)?, settings, addr, threads))
    });
    match started {
        Ok((api, settings, addr, threads)) => devkit::serve_tls("example-api", api, &addr, settings, threads),
        Err(e) => {
            eprintln!("example-api: {e}");
            std::process::exit(1);
        }
    }
}
