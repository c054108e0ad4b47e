//! Configuration reload without a restart. On `SIGHUP` (or `mtls-gateway reload -c FILE`, which
//! validates the file and then signals the running process) the file is read and built by the same
//! step as `-t`. If anything is wrong the gateway keeps serving the configuration it has and logs
//! every problem. Otherwise new connections and requests use the new one: routes, filters,
//! upstreams, introspection sections, certificates and keys, client CA and CRL, limits. Open
//! connections and requests in flight finish with what they started with; token caches survive
//! unless their introspection section (or the token issuer) changed. Settings that only a restart
//! or a graceful upgrade can change are named in the log.

use crate::admin::AdminParts;
use crate::app::{self, App, Kept};
use crate::config::{Config, Problems};
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
use std::path::{Path, PathBuf};
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
    /// The shared-state server, for the whole life of the process.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The caches the next build may keep.
    kept: Mutex<Kept>,
    /// What the process started with, for the settings a reload cannot change.
    fixed: Fixed,
}

/// A setting bound when the process starts: a reload that changes it leaves it as it is and says
/// so at WARN, naming it. Everything else in the file is applied by a reload.
#[derive(Debug)]
pub struct FixedSetting {
    /// The key as written in the configuration file.
    pub key: &'static str,
    /// The setting's value in one configuration, in a form that compares. The values are of many
    /// types (pingora's `ServerConf` has no `Clone`), and the derived `Debug` form of these plain
    /// data types names every field, so two forms are equal exactly when the values are.
    value: fn(&Config) -> String,
}

/// Every fixed setting, each named once: adding one is one entry here.
pub const FIXED_SETTINGS: &[FixedSetting] = &[
    FixedSetting { key: "listener.address", value: |c| c.listener.address.clone() },
    // pingora's own section: threads, pid and upgrade files, grace periods, daemon, ... (its
    // YAML form, as pingora reads it).
    FixedSetting { key: "pingora", value: |c| serde_yaml::to_string(&c.server).unwrap_or_default() },
    FixedSetting { key: "metrics", value: |c| format!("{:?}", c.metrics) },
    // Its caches, CRL sources and background service are the process's.
    FixedSetting { key: "revocation", value: |c| format!("{:?}", c.revocation) },
    FixedSetting {
        key: "token_issuer.jwks_address",
        value: |c| format!("{:?}", c.token_issuer.as_ref().and_then(|t| t.jwks_address)),
    },
    FixedSetting { key: "passthrough.max_connections", value: |c| c.passthrough.max_connections.to_string() },
    // The admin listener: address, certificates and who may call it.
    FixedSetting { key: "admin", value: |c| format!("{:?}", c.admin) },
    // Fixed into each worker loop's HTTP app when it starts.
    FixedSetting { key: "listener.h2_idle_timeout", value: |c| format!("{:?}", c.listener.h2_idle_timeout) },
    FixedSetting {
        key: "listener.h2_max_concurrent_streams",
        value: |c| c.listener.h2_max_concurrent_streams.to_string(),
    },
    // The sizes of the process's connection counts.
    FixedSetting {
        key: "listener.max_connections and anonymous_max_connections",
        value: |c| format!("{} {}", c.listener.max_connections, c.listener.anonymous_max_connections),
    },
    // The OTLP exporter and its sampler start once: the export settings and, when exporting, the
    // sampler's ratio.
    FixedSetting {
        key: "tracing.otlp_endpoint",
        value: |c| format!("{:?}", c.tracing.otlp.as_ref().map(|o| (o, c.tracing.sample_ratio.to_bits()))),
    },
    // The shared-state server's connection and policies.
    FixedSetting { key: "cluster", value: |c| format!("{:?}", c.cluster) },
    // The trusted hop's listener: address, certificates, sources and header.
    FixedSetting { key: "trusted_hop", value: |c| format!("{:?}", c.trusted_hop) },
];

/// The values of the fixed settings a process started with, in the order of [`FIXED_SETTINGS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fixed(Vec<String>);

impl Fixed {
    pub fn of(cfg: &Config) -> Self {
        Fixed(FIXED_SETTINGS.iter().map(|s| (s.value)(cfg)).collect())
    }

    /// The settings whose new value waits for a restart or a graceful upgrade.
    pub fn differences(&self, new: &Fixed) -> Vec<&'static FixedSetting> {
        FIXED_SETTINGS.iter().zip(self.0.iter().zip(&new.0)).filter(|(_, (a, b))| a != b).map(|(s, _)| s).collect()
    }
}

/// What a reload may change in the router, from one configuration: start and reload both use it.
pub fn router_config(cfg: &Config) -> RouterConfig {
    RouterConfig {
        listener: cfg.listener.clone(),
        terminate_hosts: cfg.tls.all_hosts().cloned().collect(),
        passthrough: cfg.passthrough.clone(),
    }
}

/// What the next build may take over from this one: start and reload both use it.
fn kept_of(app: &App) -> Kept {
    Kept {
        introspectors: app.introspectors.clone(),
        token_issuer: app.config.token_issuer.clone(),
        dpop: app.dpop.clone(),
        cluster: Some(app.cluster.clone()),
    }
}

impl Running {
    /// The shared state of a process starting to serve `app`, built as every reload builds it,
    /// and what the services are made of besides: the configuration (with pingora's section) and
    /// the admin listener's parts.
    pub fn start(app: App) -> (Arc<Running>, Config, Option<AdminParts>) {
        let (fixed, kept) = (Fixed::of(&app.config), kept_of(&app));
        let App { config: cfg, acceptor, routing, issuer, introspectors, admin, report: _, dpop: _, cluster, hop: _ } =
            app;
        let running = Running {
            path: cfg.path.clone(),
            routing: Arc::new(ArcSwap::from_pointee(routing)),
            router: Arc::new(ArcSwap::from_pointee(router_config(&cfg))),
            acceptor,
            tls: Arc::new(ArcSwap::from_pointee(cfg.tls.clone())),
            limits: SourceLimits::new(cfg.limits.per_source, cfg.limits.log_interval),
            live: LiveConnections::new(),
            issuer: issuer.map(|i| Arc::new(ArcSwap::new(i))),
            introspectors: Arc::new(ArcSwap::from_pointee(introspectors)),
            cluster,
            kept: Mutex::new(kept),
            fixed,
        };
        (Arc::new(running), cfg, admin)
    }

    /// Reads, builds and applies the file. The notes are logged at INFO, the warnings (fixed
    /// settings that changed) at WARN. Blocking: it reads files and may run discovery.
    pub fn reload(&self) -> Result<Reloaded, Problems> {
        let config = app::load(&self.path)?;
        let app = {
            let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            app::build_keeping(config, &kept)?
        };
        if let Err(p) = app.routing.resolve_upstreams() {
            let mut problems = Problems::new(&self.path);
            problems.add(p);
            return Err(problems);
        }
        let mut notes = app.report.clone();
        let fixed = self.fixed.differences(&Fixed::of(&app.config)).into_iter().map(|s| {
            format!("{} changed: not applied; it takes effect after a restart or a graceful upgrade (-u)", s.key)
        });
        let expiry = crate::connection::expiry::check(&app.config);
        notes.extend(expiry.notes);
        let warnings = app.config.warnings.iter().cloned().chain(expiry.warnings).chain(fixed).collect();
        let store = verify_store(&app.config.tls).ok();
        let cfg = &app.config;
        self.acceptor.store(app.acceptor.load_full());
        self.tls.store(Arc::new(cfg.tls.clone()));
        self.limits.set_max(cfg.limits.per_source);
        if let (Some(shared), Some(fresh)) = (&self.issuer, &app.issuer) {
            shared.store(fresh.clone());
        }
        self.router.store(Arc::new(router_config(cfg)));
        self.introspectors.store(Arc::new(app.introspectors.clone()));
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = kept_of(&app);
        self.routing.store(Arc::new(app.routing));
        if let Some(store) = store {
            let ended = self.live.revalidate(&store);
            notes.push(format!("ended {ended} open connections whose certificate the new CA or CRL does not accept"));
        }
        Ok(Reloaded { notes, warnings })
    }
}

impl Running {
    /// Applies a purge to every token cache in force: what a purge from another replica does here.
    pub fn purge_sink(self: &Arc<Self>) -> crate::cluster::PurgeSink {
        let introspectors = self.introspectors.clone();
        Arc::new(move |target| {
            let introspectors = introspectors.load_full();
            Box::pin(async move {
                let mut purged = 0;
                for i in introspectors.values() {
                    purged += i.purge(&target).await;
                }
                log::info!("cluster: purged {}: {purged} cache entries", target.describe());
            })
        })
    }
}

/// What a reload did: notes, and the fixed settings it left as they were.
pub struct Reloaded {
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
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
            Ok(Ok(done)) => {
                for note in done.notes {
                    log::info!(target: "reload", "{note}");
                }
                for warning in done.warnings {
                    log::warn!(target: "reload", "{warning}");
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

/// Keeps upstreams' backends fresh: a restarted API with a new address is found without a
/// restart, and active health checks run.
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
            self.routing.load_full().maintain_upstreams().await;
        }
    }
}

/// `mtls-gateway reload -c FILE`: validates the file like `-t`, then sends `SIGHUP` to the process
/// whose pid is in the file's `pingora.pid_file`.
pub fn reload_command(path: &Path) -> std::process::ExitCode {
    let built = app::load(path).and_then(app::build);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, AdminConfig};
    use std::time::Duration;

    /// `conf/local.yaml` loaded from a temporary folder whose `../certs` holds empty files of the
    /// same names (loading only checks that files exist).
    fn local() -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::create_dir_all(dir.path().join("certs")).unwrap();
        for f in ["example.tls.pem", "example.tls.key", "root.pem", "root.crl.pem"] {
            std::fs::write(dir.path().join("certs").join(f), "").unwrap();
        }
        let path = dir.path().join("conf/local.yaml");
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/local.yaml"), &path).unwrap();
        app::load(&path).unwrap()
    }

    fn change(setting: &FixedSetting, cfg: &mut Config) {
        match setting.key {
            "listener.address" => cfg.listener.address = "127.0.0.1:9443".into(),
            "pingora" => cfg.server.threads += 1,
            "metrics" => cfg.metrics = None,
            "token_issuer.jwks_address" => {
                cfg.token_issuer = Some(config::TokenIssuerConfig {
                    issuer: "https://gateway.example.com".into(),
                    lifetime: Duration::from_secs(60),
                    keys: Vec::new(),
                    jwks_address: Some(([127, 0, 0, 1], 9099).into()),
                })
            }
            "passthrough.max_connections" => cfg.passthrough.max_connections += 1,
            "admin" => {
                cfg.admin = Some(AdminConfig {
                    address: ([127, 0, 0, 1], 9444).into(),
                    certificate: "a.pem".into(),
                    key: "a.key".into(),
                    client_ca: None,
                    client_subjects: vec!["CN=ops".into()],
                    secret_file: None,
                })
            }
            "listener.h2_idle_timeout" => cfg.listener.h2_idle_timeout += Duration::from_secs(1),
            "listener.h2_max_concurrent_streams" => cfg.listener.h2_max_concurrent_streams += 1,
            "listener.max_connections and anonymous_max_connections" => cfg.listener.max_connections += 1,
            "cluster" => {
                cfg.cluster = Some(config::ClusterConfig {
                    url: "redis://127.0.0.1:6379".parse().unwrap(),
                    password_file: None,
                    ca: None,
                    client_identity: None,
                    key_prefix: "gw:".into(),
                    timeout: Duration::from_millis(50),
                    connect_timeout: Duration::from_secs(1),
                    rate_limits: config::FailPolicy::Open,
                    replay: config::FailPolicy::Closed,
                    outage_cache_ttl: Duration::from_secs(1),
                })
            }
            "tracing.otlp_endpoint" => {
                cfg.tracing.otlp = Some(config::OtlpConfig {
                    endpoint: "http://127.0.0.1:4318/v1/traces".parse().unwrap(),
                    service_name: "gw".into(),
                    timeout: Duration::from_secs(1),
                    interval: Duration::from_secs(1),
                })
            }
            "revocation" => {
                cfg.revocation = Some(config::RevocationConfig {
                    policy: config::RevocationPolicy::Hard,
                    timeout: Duration::from_secs(2),
                    failure_cache: Duration::from_secs(5),
                    recheck_interval: Duration::from_secs(300),
                    ocsp: None,
                    crl: Some(config::CrlConfig {
                        distribution_points: true,
                        urls: Vec::new(),
                        refresh_interval: Duration::from_secs(300),
                        max_bytes: 1 << 20,
                    }),
                })
            }
            "trusted_hop" => {
                cfg.trusted_hop = Some(config::TrustedHopConfig {
                    address: "127.0.0.1:9445".parse().unwrap(),
                    sources: vec!["10.0.0.0/8".parse().unwrap()],
                    format: config::ForwardedFormat::EscapedPem,
                    header: "x-ssl-client-cert".into(),
                    certificate: cfg.tls.certificate.clone(),
                    key: cfg.tls.key.clone(),
                    hop_ca: None,
                    hop_subjects: Vec::new(),
                    max_connections: 16,
                    handshake_timeout: Duration::from_secs(1),
                })
            }
            other => panic!("no change is written for the fixed setting {other}"),
        }
    }

    #[test]
    fn each_fixed_setting_changed_alone_is_reported_alone() {
        let started = Fixed::of(&local());
        assert!(started.differences(&Fixed::of(&local())).is_empty(), "the same file changes nothing");
        for setting in FIXED_SETTINGS {
            let mut cfg = local();
            change(setting, &mut cfg);
            let changed: Vec<&str> = started.differences(&Fixed::of(&cfg)).iter().map(|s| s.key).collect();
            assert_eq!(changed, vec![setting.key], "{}", setting.key);
        }
    }

    #[test]
    fn settings_a_reload_applies_are_not_reported() {
        let started = Fixed::of(&local());
        let mut cfg = local();
        cfg.listener.keepalive_timeout += Duration::from_secs(1);
        cfg.listener.max_connection_age += Duration::from_secs(1);
        cfg.passthrough.idle_timeout += Duration::from_secs(1);
        assert!(started.differences(&Fixed::of(&cfg)).is_empty());
    }

    #[test]
    fn start_and_reload_build_the_router_settings_alike() {
        let cfg = local();
        let router = router_config(&cfg);
        assert_eq!(router.listener.address, cfg.listener.address);
        assert_eq!(router.terminate_hosts.len(), cfg.tls.all_hosts().count());
        assert_eq!(router.passthrough.routes.len(), cfg.passthrough.routes.len());
    }
}
