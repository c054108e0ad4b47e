//! The single external port: a pingora `ServerApp` on plain TCP that peeks the ClientHello's SNI,
//! splices identity-server traffic through untouched, and terminates mutual TLS for the API hosts
//! in-process before handing the TLS stream to the HTTP app (no loopback hop, no second listener).

use crate::config::{ListenerConfig, PassthroughConfig, UnknownSni};
use crate::connection::crl::SharedAcceptor;
use crate::connection::passthrough;
use crate::connection::sni::{self, Hello};
use crate::connection::tls::KeepClientCert;
use crate::host::HostPattern;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::tls::server::handshake_with_callback;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

/// What to do with a connection once its ClientHello is known.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Passthrough(usize),
    Terminate,
    Close(&'static str),
}

/// The router, serving terminated TLS streams with the HTTP app `A` (the proxy, in production).
pub struct SniRouter<A> {
    listener: ListenerConfig,
    terminate_hosts: Vec<HostPattern>,
    passthrough: PassthroughConfig,
    acceptor: SharedAcceptor,
    app: Arc<A>,
    slots: Arc<Semaphore>,
}

impl<A: ServerApp + Send + Sync + 'static> SniRouter<A> {
    pub fn new(
        listener: ListenerConfig,
        terminate_hosts: Vec<HostPattern>,
        passthrough: PassthroughConfig,
        acceptor: SharedAcceptor,
        app: Arc<A>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(passthrough.max_connections));
        SniRouter { listener, terminate_hosts, passthrough, acceptor, app, slots }
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

    async fn terminate(&self, stream: L4Stream, shutdown: &ShutdownWatch) {
        let acceptor = self.acceptor.load_full();
        let handshake = handshake_with_callback(&acceptor, stream, &KeepClientCert);
        let tls = match tokio::time::timeout(self.listener.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return log::debug!("TLS handshake failed: {e}"),
            Err(_) => return log::debug!("TLS handshake timed out"),
        };
        // HTTP/1.1 keep-alive hands the stream back for the next request: keep serving it here.
        let mut next: Option<Stream> = Some(Box::new(tls));
        while let Some(stream) = next {
            next = ServerApp::process_new(&self.app, stream, shutdown).await;
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for SniRouter<A> {
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
        self.app.cleanup().await;
    }
}

impl<A: ServerApp + Send + Sync + 'static> SniRouter<A> {
    async fn pass(&self, stream: &mut L4Stream, hello: &Hello, i: usize, shutdown: &ShutdownWatch) {
        let (Hello::Sni(name), Some(route)) = (hello, self.passthrough.routes.get(i)) else {
            return;
        };
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            crate::metrics::passthrough(name, "over_capacity");
            return log::warn!(
                "passthrough sni={name}: {} connections already open, closing",
                self.passthrough.max_connections
            );
        };
        passthrough::splice(stream, name, route, &self.passthrough, shutdown).await;
    }
}
