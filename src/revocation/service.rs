//! The background half of revocation: fetches the CRL sources when they are due, and checks the
//! certificates of open connections again after a CRL changed and every
//! `revocation.recheck_interval` (the OCSP cache makes a repeated check cheap). A certificate
//! found revoked or unknown ends its connections the way a reloaded CRL does; a check without an
//! answer never ends a live connection (an outage of the responder must not cut every partner).

use super::Revocation;
use crate::token::ClientCert;
use async_trait::async_trait;
use openssl::x509::X509;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the sources are looked at; each is fetched only when it is due.
const TICK: Duration = Duration::from_secs(1);

/// The open connections, as the connection layer keeps them (`connection::live`, which
/// implements this: the connection layer stands above this module).
pub trait LiveCertificates: Send + Sync {
    /// The leaf, the chain the client sent and the facts of each open connection not yet refused.
    fn certificates(&self) -> Vec<(X509, Vec<X509>, Arc<ClientCert>)>;
    /// Ends the open connections of this `x5t#S256` thumbprint; how many.
    fn end_thumbprint(&self, thumbprint: &str) -> usize;
}

pub struct RevocationService {
    revocation: Arc<Revocation>,
    live: Arc<dyn LiveCertificates>,
}

impl RevocationService {
    pub fn new(revocation: Arc<Revocation>, live: Arc<dyn LiveCertificates>) -> Self {
        RevocationService { revocation, live }
    }

    /// Checks every open connection's certificate; ends those revoked or unknown. Returns how
    /// many connections were ended.
    pub async fn recheck(&self) -> usize {
        let mut ended = 0;
        for (leaf, chain, client) in self.live.certificates() {
            if let Some(status) = self.revocation.recheck(&leaf, &chain).await {
                client.refuse(status);
                ended += self.live.end_thumbprint(&client.thumbprint);
            }
        }
        if ended > 0 {
            log::warn!(target: "tls", "revocation: ended {ended} open connection(s) whose certificate is now refused");
        }
        ended
    }

    fn ca_stamp(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.revocation.client_ca).and_then(|m| m.modified()).ok()
    }
}

#[async_trait]
impl BackgroundService for RevocationService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if !self.revocation.enabled() {
            return;
        }
        let every = self.revocation.cfg.as_ref().map(|c| c.recheck_interval).unwrap_or(Duration::from_secs(300));
        let mut rechecked = Instant::now();
        let mut ca = self.ca_stamp();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
            if self.ca_stamp() != ca {
                ca = self.ca_stamp();
                self.revocation.reread_anchors();
            }
            let anchors = self.revocation.anchors.load_full();
            let changed = match &self.revocation.crls {
                Some(c) => c.refresh(&anchors).await,
                None => false,
            };
            if changed || rechecked.elapsed() >= every {
                rechecked = Instant::now();
                self.recheck().await;
            }
        }
    }
}
