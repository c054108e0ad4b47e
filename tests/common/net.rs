//! Raw network helpers: ClientHello records, an echo upstream, TLS connectors with a client
//! certificate, and waits for the gateway to close a connection, for tests that speak below HTTP.

use super::cert;
use openssl::pkcs12::Pkcs12;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use std::io::Read;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Whether the gateway closed a blocking connection within `limit`, feeding it `trickle` every
/// step; how long that took. The connection needs a read timeout (each step waits that long).
pub fn closed_within<S: Read>(conn: &mut S, limit: Duration, mut trickle: impl FnMut(&mut S)) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        trickle(conn);
        match conn.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// [`closed_within`] for an async connection, which only waits: how long until the peer closed,
/// or `None` if it stayed open past `limit`.
pub async fn closed_within_async(s: &mut (impl AsyncRead + Unpin), limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A minimal TLS 1.2 ClientHello record with the given SNI.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    ext.extend_from_slice(&0u16.to_be_bytes());
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[9u8; 32]);
    body.extend_from_slice(&[0, 0, 2, 0xc0, 0x2f, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut record = vec![22, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
    record.extend_from_slice(&hs);
    record
}

/// An upstream that echoes everything until the client's EOF, then sends `BYE` and closes: it
/// only sees that EOF if the gateway forwards the half-close.
pub async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.write_all(b"BYE").await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

pub fn tls_connector(p12: Option<&str>, max: Option<SslVersion>) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(cert("root.pem")).unwrap();
    b.set_max_proto_version(max).unwrap();
    if let Some(p12) = p12 {
        let parsed = Pkcs12::from_der(&std::fs::read(cert(p12)).unwrap()).unwrap().parse2("Password1").unwrap();
        b.set_certificate(parsed.cert.as_ref().unwrap()).unwrap();
        b.set_private_key(parsed.pkey.as_ref().unwrap()).unwrap();
    }
    b.set_verify(SslVerifyMode::PEER);
    b.build()
}

/// Reads one HTTP/1.1 answer (head and a Content-Length body) from a raw connection; `None` on EOF
/// or error, i.e. once the gateway closed it.
pub fn read_answer(conn: &mut impl std::io::Read) -> Option<String> {
    let text = read_head(conn)?;
    let len = text
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
        .and_then(Result::ok)
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).ok()?;
    Some(text + &String::from_utf8_lossy(&body))
}

/// The head of an HTTP/1.1 answer, up to and with the empty line; `None` on EOF or error.
pub fn read_head(conn: &mut impl std::io::Read) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).to_string())
}

/// A bound-token POST to the API host, as raw HTTP/1.1.
pub fn api_request(token: &str) -> Vec<u8> {
    format!(
        "POST /api/transactions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: 2\r\n\r\n{{}}",
        super::API
    )
    .into_bytes()
}

/// A TLS connection offering HTTP/2 (ALPN `h2`) to the gateway's `port` from the loopback address
/// `source`, for `sni`, with the certificate `p12` (or none), at most TLS `version`, resuming
/// `session` if given; `None` when the gateway refuses it or the handshake fails.
pub async fn h2_tls(
    (source, port): ([u8; 4], u16),
    sni: &str,
    p12: Option<&str>,
    (version, session): (Option<SslVersion>, Option<&openssl::ssl::SslSession>),
) -> Option<tokio_openssl::SslStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((std::net::IpAddr::from(source), 0).into()).unwrap();
    let tcp = socket.connect(([127, 0, 0, 1], port).into()).await.ok()?;
    let mut cfg = tls_connector(p12, version).configure().unwrap();
    cfg.set_alpn_protos(b"\x02h2").unwrap();
    let mut ssl = cfg.into_ssl(sni).unwrap();
    if let Some(s) = session {
        // SAFETY: the session comes from a connector with the same settings.
        unsafe { ssl.set_session(s).unwrap() };
    }
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut tls).connect().await.ok()?;
    Some(tls)
}
