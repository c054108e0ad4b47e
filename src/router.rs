//! The single external port: a pingora `ServerApp` on plain TCP that peeks the ClientHello's SNI,
//! splices identity-server traffic through untouched, and terminates mutual TLS for the API hosts
//! in-process before handing the TLS stream to the HTTP proxy (no loopback hop, no second listener).

use crate::config::{Config, HostPattern, ListenerConfig, PassthroughConfig, UnknownSni};
use crate::passthrough;
use crate::proxy::Gateway;
use crate::sni::{self, Hello};
use crate::tls::{self, KeepClientCert};
use async_trait::async_trait;
use openssl::ssl::SslAcceptor;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::tls::server::handshake_with_callback;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

/// What to do with a connection once its ClientHello is known.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Passthrough(usize),
    Terminate,
    Close(&'static str),
}

/// The TLS acceptor in use and what is known of the CRL file it was built from.
struct AcceptorState {
    acceptor: Arc<SslAcceptor>,
    crl_mtime: Option<SystemTime>,
    checked: Instant,
}

pub struct SniRouter {
    listener: ListenerConfig,
    terminate_hosts: Vec<HostPattern>,
    passthrough: PassthroughConfig,
    tls: crate::config::TlsConfig,
    acceptor: RwLock<AcceptorState>,
    proxy: Arc<HttpProxy<Gateway>>,
    slots: Arc<Semaphore>,
}

impl SniRouter {
    pub fn new(cfg: &Config, proxy: Arc<HttpProxy<Gateway>>) -> Result<Self, String> {
        let acceptor = tls::build_acceptor(&cfg.tls).map_err(|(k, e)| format!("{k}: {e}"))?;
        Ok(SniRouter {
            listener: cfg.listener.clone(),
            terminate_hosts: cfg
                .tls
                .hosts
                .iter()
                .chain(cfg.tls.extra_certificates.iter().flat_map(|c| c.hosts.iter()))
                .cloned()
                .collect(),
            passthrough: cfg.passthrough.clone(),
            tls: cfg.tls.clone(),
            acceptor: RwLock::new(AcceptorState {
                acceptor: Arc::new(acceptor),
                crl_mtime: crl_mtime(&cfg.tls),
                checked: Instant::now(),
            }),
            proxy,
            slots: Arc::new(Semaphore::new(cfg.passthrough.max_connections)),
        })
    }

    fn decide(&self, hello: &Hello) -> Decision {
        let name = match hello {
            Hello::Sni(name) => name,
            Hello::NoSni => return self.unknown(),
            Hello::NotTls(why) => return Decision::Close(why),
            Hello::NeedMore(_) => return Decision::Close("incomplete ClientHello"),
        };
        if let Some(i) = self.passthrough.routes.iter().position(|r| r.sni.matches(name)) {
            return Decision::Passthrough(i);
        }
        if self.terminate_hosts.iter().any(|h| h.matches(name)) {
            return Decision::Terminate;
        }
        self.unknown()
    }

    fn unknown(&self) -> Decision {
        match self.listener.unknown_sni {
            UnknownSni::Terminate => Decision::Terminate,
            UnknownSni::Close => Decision::Close("unknown or absent SNI"),
        }
    }

    /// Reads until the ClientHello is complete (or proven not to be one). Everything read is
    /// returned so that it can be rewound into the stream.
    async fn read_hello(&self, stream: &mut L4Stream) -> (Vec<u8>, Hello) {
        let max = self.listener.max_client_hello_bytes;
        let mut buf = Vec::with_capacity(1024);
        loop {
            let want = match sni::parse(&buf, max) {
                Hello::NeedMore(n) => n,
                done => return (buf, done),
            };
            let start = buf.len();
            buf.resize(want.max(start + 1), 0);
            match stream.read(&mut buf[start..]).await {
                Ok(0) | Err(_) => {
                    buf.truncate(start);
                    return (buf, Hello::NotTls("connection closed before the ClientHello ended"));
                }
                Ok(n) => buf.truncate(start + n),
            }
        }
    }

    /// The current acceptor. When a CRL is configured, its file is looked at no more often than
    /// `crl_reload_interval`, and the acceptor rebuilt when it changed, so that revocations apply to
    /// new connections without a restart. A CRL that fails to load keeps the previous one.
    fn current_acceptor(&self) -> Arc<SslAcceptor> {
        let interval = self.tls.crl_reload_interval;
        if let Ok(state) = self.acceptor.read() {
            if self.tls.client_crl.is_none() || state.checked.elapsed() < interval {
                return state.acceptor.clone();
            }
        }
        let mut state = match self.acceptor.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.checked.elapsed() < interval {
            return state.acceptor.clone();
        }
        state.checked = Instant::now();
        let mtime = crl_mtime(&self.tls);
        if mtime == state.crl_mtime {
            return state.acceptor.clone();
        }
        state.crl_mtime = mtime;
        match tls::build_acceptor(&self.tls) {
            Ok(fresh) => {
                log::info!("client CRL changed; new connections use the reloaded CRL");
                state.acceptor = Arc::new(fresh);
            }
            Err((key, e)) => log::error!("{key}: reload failed, keeping the previous CRL: {e}"),
        }
        state.acceptor.clone()
    }

    async fn terminate(&self, stream: L4Stream, shutdown: &ShutdownWatch) {
        let acceptor = self.current_acceptor();
        let handshake = handshake_with_callback(&acceptor, stream, &KeepClientCert);
        let tls = match tokio::time::timeout(self.listener.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return log::debug!("TLS handshake failed: {e}"),
            Err(_) => return log::debug!("TLS handshake timed out"),
        };
        // HTTP/1.1 keep-alive hands the stream back for the next request: keep serving it here.
        let mut next: Option<Stream> = Some(Box::new(tls));
        while let Some(stream) = next {
            next = ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
    }
}

fn crl_mtime(cfg: &crate::config::TlsConfig) -> Option<SystemTime> {
    cfg.client_crl.as_ref().and_then(|p| std::fs::metadata(p).ok()).and_then(|m| m.modified().ok())
}

#[async_trait]
impl ServerApp for SniRouter {
    /// Always answers `None`: a connection is served to its end here, never handed back.
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Ok(mut stream) = io.into_any().downcast::<L4Stream>() else {
            log::error!("the SNI router needs a plain TCP listener");
            return None;
        };
        let peeked = tokio::time::timeout(self.listener.client_hello_timeout, self.read_hello(&mut stream)).await;
        let Ok((bytes, hello)) = peeked else {
            log::debug!("closing a connection that sent no complete ClientHello in time");
            return None;
        };
        stream.rewind(&bytes);
        match self.decide(&hello) {
            Decision::Passthrough(i) => self.pass(&mut stream, &hello, i, shutdown).await,
            Decision::Terminate => self.terminate(*stream, shutdown).await,
            Decision::Close(why) => log::debug!("closing connection: {why}"),
        }
        None
    }

    async fn cleanup(&self) {
        // Without this, idle keep-alive connections would linger until their timeout on shutdown.
        self.proxy.http_cleanup().await;
    }
}

impl SniRouter {
    async fn pass(&self, stream: &mut L4Stream, hello: &Hello, i: usize, shutdown: &ShutdownWatch) {
        let (Hello::Sni(name), Some(route)) = (hello, self.passthrough.routes.get(i)) else {
            return;
        };
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            crate::metrics::passthrough(name, "over_capacity");
            return log::warn!("passthrough sni={name}: {} connections already open, closing", self.passthrough.max_connections);
        };
        passthrough::splice(stream, name, route, &self.passthrough, shutdown).await;
    }
}
