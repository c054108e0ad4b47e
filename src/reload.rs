//! Configuration reload without a restart. On `SIGHUP` (or `mtls-gateway reload -c FILE`, which
//! validates the file and then signals the running process) the file is read and built by the same
//! step as `-t`. If anything is wrong the gateway keeps serving the configuration it has and logs
//! every problem. Otherwise new connections and requests use the new one: routes, filters,
//! upstreams, introspection sections, certificates and keys, client CA and CRL, limits. Open
//! connections and requests in flight finish with what they started with; token caches survive
//! unless their introspection section (or the token issuer) changed. Settings that only a restart
//! or a graceful upgrade can change are named in the log.

use crate::app::{self, Kept};
use crate::config::{self, Config, Problems};
use crate::connection::crl::{SharedAcceptor, SharedTls};
use crate::connection::limits::SourceLimits;
use crate::connection::live::LiveConnections;
use crate::connection::router::RouterConfig;
use crate::connection::tls::verify_store;
use crate::request::introspect::Introspector;
use crate::request::issuer::SharedIssuer;
use crate::request::proxy::RoutingHandle;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Everything the running services share that a reload replaces.
pub struct Running {
    pub path: PathBuf,
    pub routing: RoutingHandle,
    pub router: Arc<ArcSwap<RouterConfig>>,
    pub acceptor: SharedAcceptor,
    pub tls: SharedTls,
    pub limits: Arc<SourceLimits>,
    pub live: Arc<LiveConnections>,
    /// The gateway's signing keys, when it issues JWTs (their JWKS listener serves these).
    pub issuer: Option<SharedIssuer>,
    /// The token caches in force, for the admin listener's purges.
    pub introspectors: Arc<ArcSwap<BTreeMap<String, Arc<Introspector>>>>,
    /// The caches the next build may keep, and what the running configuration says about the
    /// settings a reload cannot change.
    pub kept: Mutex<(Kept, Fixed)>,
}

/// Settings bound when the process started: listeners, threads, pingora's own section.
#[derive(Debug, Clone, PartialEq)]
pub struct Fixed(Vec<(&'static str, String)>);

impl Fixed {
    pub fn of(cfg: &Config) -> Self {
        let server = serde_yaml::to_string(&cfg.server).unwrap_or_default();
        Fixed(vec![
            ("listener.address", cfg.listener.address.clone()),
            ("pingora", server),
            ("metrics", format!("{:?}", cfg.metrics)),
            ("token_issuer.jwks_address", format!("{:?}", cfg.token_issuer.as_ref().and_then(|t| t.jwks_address))),
            ("passthrough.max_connections", cfg.passthrough.max_connections.to_string()),
            ("admin", format!("{:?}", cfg.admin)),
        ])
    }

    /// The keys whose new value waits for a restart or a graceful upgrade.
    fn differences(&self, new: &Fixed) -> Vec<&'static str> {
        self.0.iter().zip(&new.0).filter(|(a, b)| a.1 != b.1).map(|(a, _)| a.0).collect()
    }
}

impl Running {
    /// Reads, builds and applies the file. Blocking: it reads files and may run discovery.
    pub fn reload(&self) -> Result<Vec<String>, Problems> {
        let config = config::load(&self.path)?;
        let fixed = Fixed::of(&config);
        let app = {
            let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            app::build_keeping(config, &kept.0)?
        };
        if let Err(p) = app.routing.resolve_upstreams() {
            let mut problems = Problems::new(&self.path);
            problems.add(p);
            return Err(problems);
        }
        let mut notes = app.report.clone();
        let store = verify_store(&app.config.tls).ok();
        let cfg = &app.config;
        self.acceptor.store(app.acceptor.load_full());
        self.tls.store(Arc::new(cfg.tls.clone()));
        self.limits.set_max(cfg.limits.per_source);
        if let (Some(shared), Some(fresh)) = (&self.issuer, &app.issuer) {
            shared.store(fresh.clone());
        }
        self.router.store(Arc::new(RouterConfig {
            listener: cfg.listener.clone(),
            terminate_hosts: cfg.tls.all_hosts().cloned().collect(),
            passthrough: cfg.passthrough.clone(),
        }));
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        for key in kept.1.differences(&fixed) {
            notes.push(format!("{key} changed: it takes effect after a restart or a graceful upgrade (-u)"));
        }
        self.introspectors.store(Arc::new(app.introspectors.clone()));
        *kept = (Kept { introspectors: app.introspectors, token_issuer: cfg.token_issuer.clone() }, kept.1.clone());
        drop(kept);
        self.routing.store(Arc::new(app.routing));
        if let Some(store) = store {
            let ended = self.live.revalidate(&store);
            notes.push(format!("ended {ended} open connections whose certificate the new CA or CRL does not accept"));
        }
        Ok(notes)
    }
}

/// Waits for `SIGHUP` and reloads, one reload at a time.
pub struct Reloader(pub Arc<Running>);

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => return log::error!("cannot listen for SIGHUP, reloads are off: {e}"),
        };
        let mut count = 0u64;
        loop {
            tokio::select! {
                got = hangups.recv() => if got.is_none() { return },
                _ = shutdown.changed() => return,
            }
            count += 1;
            self.apply(count).await;
        }
    }
}

impl Reloader {
    /// Runs the blocking reload on a thread of its own (discovery starts a runtime of its own,
    /// which cannot nest in this one) and logs the outcome.
    async fn apply(&self, count: u64) {
        let running = self.0.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(running.reload());
        });
        match rx.await {
            Ok(Ok(notes)) => {
                for note in notes {
                    log::info!(target: "reload", "{note}");
                }
                log::info!(target: "reload", "reload {count} applied from {}", self.0.path.display());
            }
            Ok(Err(problems)) => {
                for line in problems.lines() {
                    log::error!(target: "reload", "{line}");
                }
                log::error!(target: "reload", "reload {count} failed: still serving the previous configuration");
            }
            Err(_) => log::error!(target: "reload", "reload {count} stopped without an answer"),
        }
    }
}

/// Keeps upstream addresses fresh: a restarted API with a new address is found without a restart.
pub struct UpstreamRefresher {
    pub routing: RoutingHandle,
    pub every: std::time::Duration,
}

#[async_trait]
impl BackgroundService for UpstreamRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.changed() => return,
            }
            self.routing.load_full().refresh_upstreams().await;
        }
    }
}

/// `mtls-gateway reload -c FILE`: validates the file like `-t`, then sends `SIGHUP` to the process
/// whose pid is in the file's `pingora.pid_file`.
pub fn reload_command(args: &[String]) -> std::process::ExitCode {
    let Some(path) = args.windows(2).find(|w| w[0] == "-c" || w[0] == "--conf").map(|w| PathBuf::from(&w[1])) else {
        eprintln!("mtls-gateway reload: -c FILE is required");
        return std::process::ExitCode::from(2);
    };
    let built = config::load(&path).and_then(app::build);
    let app = match built {
        Ok(app) => app,
        Err(problems) => {
            eprint!("{problems}");
            eprintln!(
                "mtls-gateway reload: {} problem(s) in {}; not signalling",
                problems.lines().len(),
                path.display()
            );
            return std::process::ExitCode::from(1);
        }
    };
    let pid_file = &app.config.server.pid_file;
    let pid = match std::fs::read_to_string(pid_file).map(|t| t.trim().parse::<u32>()) {
        Ok(Ok(pid)) => pid,
        _ => {
            eprintln!("mtls-gateway reload: no running gateway: cannot read a pid from {pid_file}");
            return std::process::ExitCode::from(1);
        }
    };
    match std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status() {
        Ok(s) if s.success() => {
            println!("{}: valid; sent SIGHUP to {pid}", path.display());
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!("mtls-gateway reload: could not signal {pid}");
            std::process::ExitCode::from(1)
        }
    }
}
