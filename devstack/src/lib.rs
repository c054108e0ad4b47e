//! The development stack around the gateway: `dev-idsvr` (a stand-in identity server) and
//! `example-api` (the reference's API). This library holds what both binaries share: reading their
//! YAML file, answering JSON, reading a request body, and serving a `ServeHttp` app over TLS.
//! The gateway crate never depends on this one.

use pingora_core::apps::http_app::ServeHttp;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Reads a YAML file into `T`, with errors that name the file.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A path from a config file, relative to that file's folder.
pub fn relative(config: &Path, p: &str) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join(p)
}

pub fn json_response(status: u16, body: &serde_json::Value) -> http::Response<Vec<u8>> {
    bytes_response(status, "application/json", body.to_string().into_bytes(), &[])
}

pub fn bytes_response(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> http::Response<Vec<u8>> {
    let mut b = http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len());
    if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("cache-control")) {
        b = b.header("cache-control", "no-store");
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(body).unwrap_or_default()
}

/// Reads the whole request body, up to `limit` bytes.
pub async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err("request body too large".into());
        }
    }
    Ok(body)
}

/// `application/x-www-form-urlencoded` into pairs.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Runs `app` on a TLS listener until the process is told to stop.
pub fn serve_tls<A>(name: &str, app: A, addr: &str, settings: TlsSettings, threads: usize) -> !
where
    A: ServeHttp + Send + Sync + 'static,
{
    let pid = std::process::id();
    let conf = ServerConf {
        threads,
        pid_file: format!("/tmp/{name}.{pid}.pid"),
        upgrade_sock: format!("/tmp/{name}.{pid}.sock"),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = Service::new(name.to_string(), app);
    service.add_tls_with_settings(addr, None, settings);
    server.add_service(service);
    log::info!("{name} listening on https://{addr}");
    server.run_forever()
}
