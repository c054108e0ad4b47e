//! Raw TCP passthrough of TLS connections that the gateway must not decrypt (the identity server
//! verifies its clients' certificates itself). Bytes already peeked for the SNI are replayed first
//! because the router rewound them into the stream.
//!
//! Anyone can open a tunnel without a certificate, so a tunnel is bounded: it is closed when no
//! byte moves for `idle_timeout`, when it moves fewer than `min_rate_bytes` in a `min_rate_window`
//! (a trickle that would hold a slot forever), and at `max_lifetime`. Bytes are counted as they
//! move, so every end, errors included, is logged with the true totals.

use crate::config::{PassthroughConfig, PassthroughRoute};
use crate::connection::limits::CutLog;
use crate::metrics;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::GetSocketDigest;
use pingora_core::server::ShutdownWatch;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a tunnel ended: the log's `end=` and the metric label.
pub use crate::reason::TunnelEnd as End;

/// Bytes moved so far: client to upstream, upstream to client.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub up: u64,
    pub down: u64,
}

/// Who the tunnel is for, for its log line.
pub struct TunnelInfo<'a> {
    pub sni: &'a str,
    pub route: &'a PassthroughRoute,
    pub source: Option<IpAddr>,
}

/// Connects to the route's upstream and moves bytes both ways until both sides have closed or a
/// limit ends the tunnel. Half-close is forwarded.
pub async fn splice(
    client: &mut L4Stream,
    info: TunnelInfo<'_>,
    cfg: &PassthroughConfig,
    shutdown: &ShutdownWatch,
    cuts: &CutLog,
) {
    let started = Instant::now();
    let route = info.route;
    let connect = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(route.upstream.as_str())).await;
    let mut upstream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return finish(&info, End::ConnectFailed, Moved::default(), started, Some(e.to_string()), cuts),
        Err(_) => return finish(&info, End::ConnectTimeout, Moved::default(), started, None, cuts),
    };
    let _ = upstream.set_nodelay(true);
    if route.proxy_protocol {
        let header = addresses(client).map(|(src, dst)| proxy_v2_header(src, dst));
        if let Err(e) = upstream.write_all(&header.unwrap_or_else(proxy_v2_local)).await {
            return finish(&info, End::ProxyProtocolFailed, Moved::default(), started, Some(e.to_string()), cuts);
        }
    }
    let (end, moved, err) = pump(client, &mut upstream, &Rules::from(cfg), shutdown.clone()).await;
    finish(&info, end, moved, started, err, cuts);
}

/// The limits a tunnel lives by.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub min_rate_bytes: u64,
    pub min_rate_window: Duration,
}

impl From<&PassthroughConfig> for Rules {
    fn from(c: &PassthroughConfig) -> Self {
        Rules {
            idle_timeout: c.idle_timeout,
            max_lifetime: c.max_lifetime,
            min_rate_bytes: c.min_rate_bytes,
            min_rate_window: c.min_rate_window,
        }
    }
}

/// The tunnel's clock: when a byte last moved, and what moved in the current rate window. Tokio's
/// clock, so that tests can run it paused.
struct Watch {
    started: tokio::time::Instant,
    last_byte: tokio::time::Instant,
    window_start: tokio::time::Instant,
    window_bytes: u64,
}

impl Watch {
    fn new() -> Self {
        let now = tokio::time::Instant::now();
        Watch { started: now, last_byte: now, window_start: now, window_bytes: 0 }
    }

    fn moved(&mut self, n: usize) {
        self.last_byte = tokio::time::Instant::now();
        self.window_bytes += n as u64;
    }

    /// Which limit, if any, ends the tunnel now.
    fn verdict(&mut self, rules: &Rules) -> Option<End> {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.started) >= rules.max_lifetime {
            return Some(End::MaxLifetime);
        }
        if now.duration_since(self.last_byte) >= rules.idle_timeout {
            return Some(End::Idle);
        }
        if now.duration_since(self.window_start) >= rules.min_rate_window {
            if self.window_bytes < rules.min_rate_bytes {
                return Some(End::TooSlow);
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        None
    }
}

/// How often the limits are looked at: often enough for the shortest of them.
fn tick(rules: &Rules) -> Duration {
    let shortest = rules.idle_timeout.min(rules.min_rate_window).min(rules.max_lifetime);
    (shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// Moves bytes both ways under `rules`. Returns how it ended, what moved, and the error if any.
pub async fn pump<C, U>(
    client: &mut C,
    upstream: &mut U,
    rules: &Rules,
    mut shutdown: ShutdownWatch,
) -> (End, Moved, Option<String>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut client_open, mut upstream_open) = (true, true);
    let mut moved = Moved::default();
    let mut watch = Watch::new();
    let mut ticker = tokio::time::interval(tick(rules));
    // A write the other side never drains is as idle as no byte at all.
    let stall = rules.idle_timeout;
    while client_open || upstream_open {
        tokio::select! {
            r = client.read(&mut a), if client_open => match r {
                Ok(0) => {
                    client_open = false;
                    let _ = upstream.shutdown().await;
                }
                Ok(n) => {
                    match tokio::time::timeout(stall, send(upstream, &a[..n])).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return (End::UpstreamError, moved, Some(e.to_string())),
                        Err(_) => return (End::Idle, moved, None),
                    }
                    moved.up += n as u64;
                    watch.moved(n);
                }
                Err(e) => return (End::ClientError, moved, Some(e.to_string())),
            },
            r = upstream.read(&mut b), if upstream_open => match r {
                Ok(0) => {
                    upstream_open = false;
                    let _ = client.shutdown().await;
                }
                Ok(n) => {
                    match tokio::time::timeout(stall, send(client, &b[..n])).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return (End::ClientError, moved, Some(e.to_string())),
                        Err(_) => return (End::Idle, moved, None),
                    }
                    moved.down += n as u64;
                    watch.moved(n);
                }
                Err(e) => return (End::UpstreamError, moved, Some(e.to_string())),
            },
            _ = ticker.tick() => {
                if let Some(end) = watch.verdict(rules) {
                    return (end, moved, None);
                }
            }
            _ = crate::connection::drain::until(&mut shutdown) => return (End::Ended, moved, None),
        }
    }
    (End::Closed, moved, None)
}

/// Writes and flushes: pingora's L4 stream buffers writes.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

fn finish(info: &TunnelInfo, end: End, moved: Moved, started: Instant, err: Option<String>, cuts: &CutLog) {
    // Labelled by the configured pattern: the SNI is client input and would make unbounded series.
    metrics::passthrough(&info.route.sni.to_string(), end);
    if let Some(cut) = end.cut() {
        cuts.cut(info.source, cut);
    }
    let line = format!(
        "sni={} route={} upstream={} bytes_up={} bytes_down={} duration_ms={:.1} end={}{}",
        info.sni,
        info.route.sni,
        info.route.upstream,
        moved.up,
        moved.down,
        started.elapsed().as_secs_f64() * 1000.0,
        end.as_str(),
        err.map(|e| format!(" error=\"{e}\"")).unwrap_or_default()
    );
    // Cuts are logged, rate-limited, by the cut log; one line per cut tunnel would let a flood
    // of them flood the log.
    if end.cut().is_some() {
        log::debug!(target: "passthrough", "{line}");
    } else {
        log::info!(target: "passthrough", "{line}");
    }
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

    fn rules() -> Rules {
        Rules {
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(600),
            min_rate_bytes: 512,
            min_rate_window: Duration::from_secs(30),
        }
    }

    fn never() -> ShutdownWatch {
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(tx);
        rx
    }

    /// A client that sends one byte every 20 s holds nothing for long: the rate rule ends it
    /// within the first window, long before two minutes.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_tunnel_is_cut_by_the_rate_rule() {
        let (mut client, mut client_side) = tokio::io::duplex(1024);
        let (mut upstream, mut upstream_side) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            for _ in 0..10 {
                if client_side.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        });
        tokio::spawn(async move {
            let mut sink = vec![0; 64];
            while matches!(upstream_side.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let started = tokio::time::Instant::now();
        let (end, moved, _) = pump(&mut client, &mut upstream, &rules(), never()).await;
        assert_eq!(end, End::TooSlow);
        assert!(started.elapsed() < Duration::from_secs(120), "{:?}", started.elapsed());
        assert_eq!(moved, Moved { up: 2, down: 0 }, "the bytes that did move are counted");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
        let r = Rules { min_rate_bytes: 0, ..rules() };
        let (mut client, _client_side) = tokio::io::duplex(1024);
        let (mut upstream, _upstream_side) = tokio::io::duplex(1024);
        let started = tokio::time::Instant::now();
        let (end, _, _) = pump(&mut client, &mut upstream, &r, never()).await;
        assert_eq!(end, End::Idle);
        assert!(started.elapsed() >= r.idle_timeout && started.elapsed() < r.idle_timeout * 2);
        // Steady traffic outlives the idle timeout and ends at the lifetime cap.
        let (mut client, mut client_side) = tokio::io::duplex(1 << 16);
        let (mut upstream, mut upstream_side) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            while client_side.write_all(&[7u8; 600]).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
        tokio::spawn(async move {
            let mut sink = vec![0; 4096];
            while matches!(upstream_side.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let (end, moved, _) = pump(&mut client, &mut upstream, &rules(), never()).await;
        assert_eq!(end, End::MaxLifetime);
        assert!(moved.up >= 600 * 59, "{moved:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_are_counted_when_a_side_fails() {
        let (mut client, mut client_side) = tokio::io::duplex(1024);
        let (mut upstream, mut upstream_side) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut got = [0u8; 5];
            upstream_side.read_exact(&mut got).await.unwrap();
            // the upstream goes away after the first five bytes
        });
        tokio::spawn(async move {
            client_side.write_all(b"hello").await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = client_side.write_all(b"more").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let (end, moved, err) = pump(&mut client, &mut upstream, &rules(), never()).await;
        assert_eq!(end, End::UpstreamError, "{err:?}");
        assert_eq!(moved, Moved { up: 5, down: 0 }, "the bytes moved before the error are logged");
    }

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
