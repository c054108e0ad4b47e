//! Raw TCP passthrough of TLS connections that the gateway must not decrypt (the identity server
//! verifies its clients' certificates itself). Bytes already peeked for the SNI are replayed first
//! because the router rewound them into the stream.

use crate::config::{PassthroughConfig, PassthroughRoute};
use crate::metrics;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::GetSocketDigest;
use pingora_core::server::ShutdownWatch;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How a passthrough connection ended, for the log line and the metric label.
fn end_label(r: &Result<(u64, u64), std::io::Error>) -> &'static str {
    match r {
        Ok(_) => "closed",
        Err(_) => "error",
    }
}

/// Connects to the route's upstream and copies bytes both ways until both sides have closed.
/// Half-close is forwarded: when one side stops sending, the other's write side is shut down and
/// the opposite direction keeps flowing.
pub async fn splice(
    client: &mut L4Stream,
    sni: &str,
    route: &PassthroughRoute,
    cfg: &PassthroughConfig,
    shutdown: &ShutdownWatch,
) {
    let started = Instant::now();
    let connect = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(route.upstream.as_str())).await;
    let mut upstream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return finish(sni, route, "connect_failed", (0, 0), started, Some(e.to_string())),
        Err(_) => return finish(sni, route, "connect_timeout", (0, 0), started, None),
    };
    let _ = upstream.set_nodelay(true);
    if route.proxy_protocol {
        let header = addresses(client).map(|(src, dst)| proxy_v2_header(src, dst));
        if let Err(e) = upstream.write_all(&header.unwrap_or_else(proxy_v2_local)).await {
            return finish(sni, route, "proxy_protocol_failed", (0, 0), started, Some(e.to_string()));
        }
    }
    let mut shutdown = shutdown.clone();
    let copy = tokio::io::copy_bidirectional(client, &mut upstream);
    tokio::select! {
        r = copy => {
            let bytes = r.as_ref().map(|b| *b).unwrap_or((0, 0));
            let err = r.as_ref().err().map(|e| e.to_string());
            finish(sni, route, end_label(&r), bytes, started, err)
        }
        _ = shutdown.changed() => finish(sni, route, "server_shutdown", (0, 0), started, None),
    }
}

fn finish(sni: &str, route: &PassthroughRoute, how: &str, bytes: (u64, u64), started: Instant, err: Option<String>) {
    metrics::passthrough(sni, how);
    log::info!(
        target: "passthrough",
        "sni={sni} upstream={} bytes_up={} bytes_down={} duration_ms={:.1} end={how}{}",
        route.upstream,
        bytes.0,
        bytes.1,
        started.elapsed().as_secs_f64() * 1000.0,
        err.map(|e| format!(" error=\"{e}\"")).unwrap_or_default()
    );
}

fn addresses(client: &L4Stream) -> Option<(SocketAddr, SocketAddr)> {
    let digest = client.get_socket_digest()?;
    let src = digest.peer_addr()?.as_inet()?;
    let dst = digest.local_addr()?.as_inet()?;
    Some((*src, *dst))
}

const PROXY_V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// PROXY protocol v2 header for a TCP connection from `src` to `dst`.
pub fn proxy_v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = PROXY_V2_SIGNATURE.to_vec();
    h.push(0x21); // version 2, PROXY command
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11); // TCP over IPv4
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
                SocketAddr::V6(v6) => *v6.ip(),
            };
            h.push(0x21); // TCP over IPv6
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
        }
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// A LOCAL header (no address information) for when the client's address is unknown.
fn proxy_v2_local() -> Vec<u8> {
    let mut h = PROXY_V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v2_ipv4_layout() {
        let h = proxy_v2_header("127.0.0.2:4000".parse().unwrap(), "127.0.0.1:8443".parse().unwrap());
        assert_eq!(&h[..12], &PROXY_V2_SIGNATURE);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], &[127, 0, 0, 2]);
        assert_eq!(&h[24..26], &4000u16.to_be_bytes());
        assert_eq!(&h[26..28], &8443u16.to_be_bytes());
        assert_eq!(h.len(), 28);
    }
}
