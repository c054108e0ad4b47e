//! `mtls-gateway`: the command line (clap), then for serving: loads one YAML file, builds it (the
//! same step as `-t`), and turns the parts into pingora services: the SNI router with the HTTP
//! proxy, the CRL reload, the revocation checks (OCSP, fetched CRLs), metrics, the JWKS and the
//! admin listener.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use mtls_gateway::admin::cli::AdminCommand;
use mtls_gateway::admin::{AdminApp, GuardedAdmin};
use mtls_gateway::app::{self, App};
use mtls_gateway::cluster::ClusterService;
use mtls_gateway::connection::crl::CrlReloader;
use mtls_gateway::connection::drain::Drain;
use mtls_gateway::connection::hop::HopDoor;
use mtls_gateway::connection::router::{RouterParts, SniRouter};
use mtls_gateway::connection::workers::{LoopService, Pool};
use mtls_gateway::ops::{Health, OpsApp, Prober};
use mtls_gateway::reload::{Reloader, Running, UpstreamRefresher};
use mtls_gateway::request::forwarded::ForwardedReader;
use mtls_gateway::request::issuer::JwksApp;
use mtls_gateway::request::proxy::Gateway;
use mtls_gateway::revocation::{Revocation, RevocationService};
use mtls_gateway::trace::ExportService;
use pingora::server::configuration::Opt;
use pingora::server::Server;
use pingora_core::apps::HttpServerOptions;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// jemalloc: a request allocates and frees many short buffers across threads (header maps, the
/// forwarded JWT), where glibc malloc showed up at the top of profiles.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An API gateway on Pingora for mutual TLS and certificate-bound access tokens (RFC 8705).
///
/// With no command it serves the configuration that -c names, or checks it with -t. The serving
/// flags are pingora's, described here in the gateway's words and handed to pingora as they are.
#[derive(Debug, Parser)]
#[command(name = "mtls-gateway", args_conflicts_with_subcommands = true)]
#[command(override_usage = "mtls-gateway -c FILE [-t] [-d] [-u]\n       mtls-gateway <COMMAND>")]
struct Cli {
    #[command(flatten)]
    serve: Serve,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Serving, or checking what would be served.
#[derive(Debug, clap::Args)]
struct Serve {
    /// The configuration file (YAML)
    ///
    /// One file holds everything; pingora's own settings are its `pingora:` section.
    #[arg(short, long, value_name = "FILE")]
    conf: Option<String>,
    /// Check the configuration and exit: 0 when it is valid
    ///
    /// Builds everything serving would (every file, key and certificate is read) and says what
    /// expires soon, without binding a port.
    #[arg(short, long)]
    test: bool,
    /// Serve in the background
    ///
    /// pingora's daemon mode: the pid goes to `pingora.pid_file`.
    #[arg(short, long)]
    daemon: bool,
    /// Take the listening sockets over from a running gateway
    ///
    /// An upgrade without a refused connection: start the new gateway with -u, then send SIGQUIT
    /// to the old one, which hands its sockets over on `pingora.upgrade_sock` and drains.
    #[arg(short, long)]
    upgrade: bool,
    /// Accepted and ignored, as pingora does: `cargo test` passes it
    #[arg(long, hide = true)]
    nocapture: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running gateway whether it is ready (container health checks)
    ///
    /// Asks the operations listener, prints its answer and exits 0 when it is 200.
    Health {
        /// The operations listener (`metrics.address`)
        #[arg(value_name = "HOST:PORT", default_value = "127.0.0.1:9090")]
        address: String,
        /// Ask whether it is alive (/healthz) rather than ready (/readyz)
        #[arg(long)]
        live: bool,
    },
    /// Check a configuration as -t does, then make the running gateway reload it
    ///
    /// Sends SIGHUP to the process whose pid is in the configuration's `pingora.pid_file`.
    Reload {
        /// The configuration file the running gateway serves
        #[arg(short, long, value_name = "FILE", required = true)]
        conf: PathBuf,
    },
    /// Call a running gateway's admin listener (purge cached tokens)
    Admin {
        #[command(subcommand)]
        command: Box<AdminCommand>,
    },
}

/// `--version`: the gateway's, and what it is built on.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}\npingora {}\n{}",
        env!("CARGO_PKG_VERSION"),
        env!("MTLS_GATEWAY_PINGORA_VERSION"),
        openssl::version::version()
    )
});

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let matches = Cli::command().version(VERSION.as_str()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Some(Command::Health { address, live }) => mtls_gateway::ops::health_command(&address, live),
        Some(Command::Reload { conf }) => mtls_gateway::reload::reload_command(&conf),
        Some(Command::Admin { command }) => mtls_gateway::admin::cli::command(*command),
        None => run(cli.serve),
    }
}

/// `-c FILE` with or without `-t`, `-d`, `-u`: exactly pingora's flags, which it gets as given.
fn run(args: Serve) -> ExitCode {
    let opt =
        Opt { upgrade: args.upgrade, daemon: args.daemon, nocapture: args.nocapture, test: args.test, conf: None };
    let Some(path) = args.conf else {
        eprintln!("mtls-gateway: -c FILE is required");
        return ExitCode::from(2);
    };
    let built = app::load(Path::new(&path)).and_then(app::build);
    let app = match built {
        Ok(app) => app,
        Err(problems) => {
            eprint!("{problems}");
            eprintln!("mtls-gateway: {} problem(s) in {path}; not serving", problems.lines().len());
            return ExitCode::from(1);
        }
    };
    let expiry = mtls_gateway::connection::expiry::check(&app.config);
    if opt.test {
        for line in &expiry.notes {
            println!("{path}: {line}");
        }
        for line in app.config.warnings.iter().chain(&expiry.warnings) {
            println!("{path}: warning: {line}");
        }
        for line in &app.report {
            println!("{path}: {line}");
        }
        println!("{path}: configuration OK");
        return ExitCode::SUCCESS;
    }
    if let Err(p) = app.routing.resolve_upstreams() {
        eprintln!("{path}: {}: {}", p.key, p.message);
        return ExitCode::from(1);
    }
    for line in &expiry.notes {
        log::info!("{path}: {line}");
    }
    for line in &expiry.warnings {
        log::error!("{path}: {line}");
    }
    serve(opt, app)
}

/// Raises the file limit to its hard value and says what the caps fit in: every connection
/// counts against it, and past it the kernel refuses everyone's.
fn file_limit(cfg: &mtls_gateway::config::Config) {
    let (conns, tunnels) = (cfg.listener.max_connections, cfg.passthrough.max_connections);
    match mtls_gateway::fdlimit::raise() {
        Ok((before, after)) => {
            log::info!(
                "file limit {after} (raised from {before}): up to {conns} TLS connections and {tunnels} tunnels"
            );
            if !mtls_gateway::fdlimit::fits(after, conns, tunnels) {
                log::warn!(
                    "listener.max_connections and passthrough.max_connections need more than the file limit {after}"
                );
            }
        }
        Err(e) => log::warn!("cannot read or raise the file limit: {e}"),
    }
}

/// The revocation checks of `cfg`, with the configured CRLs fetched before serving. A CRL that
/// cannot be fetched does not stop the start: it is fetched again in the background, and until
/// then `hard` refuses the certificates it could be about and `/readyz` says not ready.
fn revocation(cfg: &mtls_gateway::config::Config) -> Result<Arc<Revocation>, ExitCode> {
    let revocation = match Revocation::new(cfg.revocation.as_ref(), &cfg.tls) {
        Ok(r) => Arc::new(r),
        Err(p) => {
            eprintln!("{}: {}: {}", cfg.path.display(), p.key, p.message);
            return Err(ExitCode::from(1));
        }
    };
    if revocation.enabled() {
        mtls_gateway::metrics::revocation_init();
        for problem in revocation.prefetch() {
            log::error!("{}: {problem}: fetched again in the background", cfg.path.display());
        }
    }
    Ok(revocation)
}

fn serve(opt: Opt, app: App) -> ExitCode {
    for line in &app.config.warnings {
        log::warn!("{}: {line}", app.config.path.display());
    }
    let hop = app.hop.clone();
    let (running, mut cfg, admin_parts) = Running::start(app);
    let server_conf = std::mem::take(&mut cfg.server);
    let (config_otlp, sample_ratio) = (cfg.tracing.otlp.clone(), cfg.tracing.sample_ratio);
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();
    let revocation = match revocation(&cfg) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut gateway = Gateway::with_handle(running.routing.clone());
    let forwarded = |h: &Arc<HopDoor>| ForwardedReader::new(&h.cfg, running.acceptor.clone(), revocation.clone());
    if let Some(reader) = hop.as_ref().and_then(forwarded) {
        gateway = gateway.with_forwarded(reader);
    }
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(cfg.listener.h2_idle_timeout);
    let mut h2 = H2Options::new();
    h2.max_concurrent_streams(cfg.listener.h2_max_concurrent_streams);
    h2.max_header_list_size(u32::try_from(cfg.listener.max_request_header_bytes).unwrap_or(u32::MAX));
    file_limit(&cfg);
    let parts = RouterParts {
        current: running.router.clone(),
        acceptor: running.acceptor.clone(),
        live: running.live.clone(),
        limits: running.limits.clone(),
        revocation: revocation.clone(),
    };
    // `threads` single-threaded loops serve the connections, each with its own proxy and upstream
    // pool (connection::workers). They start in the `worker-loops` service, after pingora has
    // daemonized; the listener, whose own runtime only accepts, starts after them.
    let proxy_conf = server.configuration.clone();
    let make_proxy = move || {
        let mut proxy = pingora_proxy::http_proxy(&proxy_conf, gateway.clone());
        proxy.server_options = Some(options.clone());
        proxy.h2_options = Some(h2.clone());
        proxy
    };
    let pool = Pool::new(server.configuration.threads, make_proxy, Drain::new());
    let graceful = Duration::from_secs(server.configuration.graceful_shutdown_timeout_seconds.unwrap_or(5));
    let loops = LoopService::new(pool.clone(), server.watch_execution_phase(), graceful);
    let loops = server.add_service(background_service("worker-loops", loops));
    let mut edge = Service::new("sni-router".to_string(), SniRouter::new(parts.clone(), pool.clone()));
    edge.threads = Some(1);
    edge.add_tcp(&cfg.listener.address);
    server.add_service(edge).add_dependency(&loops);
    if revocation.enabled() {
        let service = RevocationService::new(revocation.clone(), running.live.clone());
        server.add_service(background_service("revocation", service));
    }
    if let Some(hop) = hop {
        let address = hop.cfg.address.to_string();
        let mut door = Service::new("trusted-hop".to_string(), SniRouter::for_hop(parts, pool.clone(), hop));
        door.threads = Some(1);
        door.add_tcp(&address);
        server.add_service(door).add_dependency(&loops);
        log::info!("trusted hop listener on {address}");
    }
    let crl = CrlReloader::new(running.tls.clone(), running.acceptor.clone(), running.live.clone());
    server.add_service(background_service("crl-reload", crl));
    // Each upstream looks its names up and runs its health checks when they are due.
    let every = Duration::from_secs(1);
    server.add_service(background_service("upstreams", UpstreamRefresher { routing: running.routing.clone(), every }));
    if let Some(parts) = admin_parts {
        let admin_app = AdminApp {
            auth: parts.auth,
            introspectors: running.introspectors.clone(),
            live: running.live.clone(),
            cluster: running.cluster.clone(),
        };
        let mut admin = Service::new("admin".to_string(), GuardedAdmin::new(admin_app, parts.tls));
        admin.add_tcp(&parts.address.to_string());
        server.add_service(admin);
        log::info!("admin listener on {}", parts.address);
    }
    if let Some(ops_cfg) = cfg.metrics {
        mtls_gateway::metrics::init();
        let health = Health::new(&cfg, &ops_cfg, pool.drain.clone(), running.cluster.clone());
        let health = Arc::new(health.with_routing(running.routing.clone()).with_revocation(revocation.clone()));
        let mut ops = Service::new("ops".to_string(), OpsApp(health.clone()));
        ops.add_tcp(&ops_cfg.address.to_string());
        server.add_service(ops);
        server.add_service(background_service("readiness", Prober(health)));
    }
    if let (Some(issuer), Some(addr)) = (&running.issuer, cfg.token_issuer.as_ref().and_then(|t| t.jwks_address)) {
        let mut jwks = Service::new("jwks".to_string(), JwksApp(issuer.clone()));
        jwks.add_tcp(&addr.to_string());
        server.add_service(jwks);
    }
    log::info!("mtls-gateway serving on {} with {}", cfg.listener.address, cfg.path.display());
    if let Some(otlp) = config_otlp {
        server.add_service(background_service("otlp-export", ExportService::new(otlp, sample_ratio)));
    }
    if let Some(cluster) = &running.cluster {
        let service = ClusterService::new(cluster.clone(), running.purge_sink());
        server.add_service(background_service("cluster", service));
    }
    server.add_service(background_service("reload", Reloader(running)));
    server.run_forever()
}
