//! The TLS-terminated connections open now, each with the certificate its client presented, so
//! that a reloaded client CA or CRL can end the connections it no longer accepts, and an operator
//! can end those of one certificate: partner offboarding takes effect on live connections, not
//! only on new handshakes.

use crate::token::ClientCert;
use openssl::stack::Stack;
use openssl::x509::store::X509Store;
use openssl::x509::{X509StoreContext, X509};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

struct Live {
    leaf: X509,
    /// The intermediates the client sent.
    chain: Vec<X509>,
    client: Arc<ClientCert>,
    /// Set to true to end the connection (GOAWAY on HTTP/2, close on HTTP/1.1).
    end: Arc<watch::Sender<bool>>,
}

#[derive(Default)]
pub struct LiveConnections {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Live>>,
}

/// A connection's entry; removed when dropped, i.e. when the connection ends.
pub struct Registration {
    registry: Arc<LiveConnections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl LiveConnections {
    pub fn new() -> Arc<Self> {
        Arc::new(LiveConnections::default())
    }

    pub fn register(
        self: &Arc<Self>,
        leaf: X509,
        chain: Vec<X509>,
        client: Arc<ClientCert>,
        end: Arc<watch::Sender<bool>>,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let live = Live { leaf, chain, client, end };
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(id, live);
        Registration { registry: self.clone(), id }
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies every open connection's certificate against `store` (the reloaded CA and CRL) and
    /// ends those that fail. Returns how many were ended.
    pub fn revalidate(&self, store: &X509Store) -> usize {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut ended = 0;
        for live in map.values() {
            if live.client.is_revoked() || accepted(store, live) {
                continue;
            }
            live.client.revoke();
            let _ = live.end.send(true);
            ended += 1;
        }
        ended
    }

    /// The certificates of the open connections not yet refused (leaf, the chain the client
    /// sent, the connection's facts), for the revocation checks of live connections.
    pub fn certificates(&self) -> Vec<(X509, Vec<X509>, Arc<ClientCert>)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let open = map.values().filter(|l| !l.client.is_revoked() && l.client.refused().is_none());
        open.map(|l| (l.leaf.clone(), l.chain.clone(), l.client.clone())).collect()
    }

    /// Ends every open connection whose client certificate has this `x5t#S256` thumbprint, the
    /// way a revocation does (no further request passes on them; dropped after the grace period).
    /// Returns how many were ended.
    pub fn end_thumbprint(&self, thumbprint: &str) -> usize {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut ended = 0;
        for live in map.values().filter(|l| l.client.thumbprint == thumbprint && !l.client.is_revoked()) {
            live.client.revoke();
            let _ = live.end.send(true);
            ended += 1;
        }
        ended
    }
}

/// What the revocation checks of open connections (`revocation::RevocationService`) use.
impl crate::revocation::LiveCertificates for LiveConnections {
    fn certificates(&self) -> Vec<(X509, Vec<X509>, Arc<ClientCert>)> {
        LiveConnections::certificates(self)
    }

    fn end_thumbprint(&self, thumbprint: &str) -> usize {
        LiveConnections::end_thumbprint(self, thumbprint)
    }
}

/// Whether the store still accepts the connection's certificate. A failure to even run the check
/// counts as not accepted: offboarding must fail closed.
fn accepted(store: &X509Store, live: &Live) -> bool {
    let run = || -> Result<bool, openssl::error::ErrorStack> {
        let mut chain = Stack::new()?;
        for c in &live.chain {
            chain.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        ctx.init(store, &live.leaf, &chain, |c| c.verify_cert())
    };
    run().unwrap_or(false)
}
