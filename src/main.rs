//! `mtls-gateway`: reads and validates one YAML file, then wires the SNI router, the HTTP proxy and
//! the metrics listener into a pingora server. All behaviour lives in the library.

use mtls_gateway::config::{self, Config};
use mtls_gateway::issuer::{JwksApp, TokenIssuer};
use mtls_gateway::proxy::Gateway;
use mtls_gateway::router::SniRouter;
use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// jemalloc: a request allocates and frees many short buffers across threads (header maps, the
/// forwarded JWT), where glibc malloc showed up at the top of profiles.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut opt = Opt::parse_args();
    let Some(path) = opt.conf.take() else {
        eprintln!("mtls-gateway: -c FILE is required");
        return ExitCode::from(2);
    };
    let cfg = match config::load(Path::new(&path)) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            eprintln!("mtls-gateway: {} problem(s) in {path}; not serving", errors.0.len());
            return ExitCode::from(1);
        }
    };
    if opt.test {
        println!("{path}: configuration OK");
        return ExitCode::SUCCESS;
    }
    match serve(opt, cfg) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("mtls-gateway: {path}: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(opt: Opt, mut cfg: Config) -> Result<std::convert::Infallible, String> {
    let server_conf = std::mem::take(&mut cfg.server);
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();
    let issuer = match &cfg.token_issuer {
        Some(t) => Some(Arc::new(TokenIssuer::new(t)?)),
        None => None,
    };
    let gateway = Gateway::new(&cfg, issuer.clone())?;
    let proxy = Arc::new(pingora_proxy::http_proxy(&server.configuration, gateway));
    let router = SniRouter::new(&cfg, proxy)?;
    let mut edge = Service::new("sni-router".to_string(), router);
    edge.add_tcp(&cfg.listener.address);
    server.add_service(edge);
    if let Some(addr) = cfg.metrics {
        let mut prom = Service::new("metrics".to_string(), mtls_gateway::metrics::MetricsApp);
        prom.add_tcp(&addr.to_string());
        server.add_service(prom);
    }
    if let (Some(issuer), Some(addr)) = (issuer, cfg.token_issuer.as_ref().and_then(|t| t.jwks_address)) {
        let mut jwks = Service::new("jwks".to_string(), JwksApp(issuer));
        jwks.add_tcp(&addr.to_string());
        server.add_service(jwks);
    }
    log::info!("mtls-gateway serving on {} with {}", cfg.listener.address, cfg.path.display());
    server.run_forever()
}
