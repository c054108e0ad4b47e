//! Client CRL and CA reload, as a background service: when either file changes, the TLS acceptor is
//! rebuilt on a blocking thread and swapped in, and every open connection whose certificate the new
//! files no longer accept is ended. The connection path only loads the current acceptor; it never
//! waits on file I/O or a lock.

use crate::config::TlsConfig;
use crate::connection::live::LiveConnections;
use crate::connection::tls::{build_acceptor, verify_store, Acceptors};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::SystemTime;

/// The acceptors every new TLS connection chooses from; replaced whole on reload.
pub type SharedAcceptor = Arc<ArcSwap<Acceptors>>;

/// The TLS section in force; a configuration reload replaces it.
pub type SharedTls = Arc<ArcSwap<TlsConfig>>;

pub struct CrlReloader {
    tls: SharedTls,
    acceptor: SharedAcceptor,
    live: Arc<LiveConnections>,
}

impl CrlReloader {
    pub fn new(tls: SharedTls, acceptor: SharedAcceptor, live: Arc<LiveConnections>) -> Self {
        CrlReloader { tls, acceptor, live }
    }

    /// What is known of the files the client verification is built from.
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        let tls = self.tls.load();
        let files = std::iter::once(&tls.client_ca).chain(tls.client_crl.as_ref());
        files.map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
    }

    /// A CRL expires while the process runs: say so at ERROR when it does, and again every hour
    /// while it stays expired (the gauges follow at every check).
    fn check_expiry(&self, alarmed: &mut Option<std::time::Instant>) {
        let expired = crate::connection::expiry::check_crls(&self.tls.load()).expired;
        if expired.is_empty() {
            *alarmed = None;
            return;
        }
        if alarmed.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(3600)) {
            return;
        }
        *alarmed = Some(std::time::Instant::now());
        for w in expired {
            log::error!(target: "tls", "{w}");
        }
    }

    async fn reload(&self) {
        let tls = TlsConfig::clone(&self.tls.load());
        let built = tokio::task::spawn_blocking(move || {
            let store = verify_store(&tls).map_err(|p| vec![p])?;
            Ok::<_, Vec<crate::config::Problem>>((build_acceptor(&tls)?, store))
        });
        match built.await {
            Ok(Ok((fresh, store))) => {
                self.acceptor.store(Arc::new(fresh));
                let open = self.live.len();
                let ended = self.live.revalidate(&store);
                log::info!(
                    "client CA or CRL changed; new connections use the reloaded files; ended {ended} of {open} open connections whose certificate they no longer accept"
                );
            }
            Ok(Err(problems)) => {
                for p in problems {
                    log::error!("{}: reload failed, keeping the previous CA and CRL: {}", p.key, p.message);
                }
            }
            Err(e) => log::error!("CRL reload task failed: {e}"),
        }
    }
}

#[async_trait]
impl BackgroundService for CrlReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seen = self.stamps();
        let mut alarmed: Option<std::time::Instant> = None;
        loop {
            let interval = self.tls.load().crl_reload_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let now = self.stamps();
            if now != seen {
                seen = now;
                self.reload().await;
            }
            self.check_expiry(&mut alarmed);
        }
    }
}
