//! A terminated connection's watchdog: what a client may not hold for free once its TLS handshake
//! is done, as nginx's `client_header_timeout`, `client_body_timeout` and
//! `large_client_header_buffers` bound it.
//!
//! - HTTP/1.1: the whole request header within `header_timeout` of its first byte (of the
//!   handshake, for a connection's first request), and no more than `max_request_header_bytes`
//!   of it. A header trickled one byte at a time no longer holds a connection forever, since
//!   pingora's read timeout is per read.
//! - HTTP/2: the connection preface within `header_timeout` of the handshake (a connection that
//!   never sends it is not covered by pingora's idle timeout, which starts after it).
//! - Both: while a request body is arriving, a byte at least every `body_timeout` and at least
//!   `body_min_rate` bytes per window.
//!
//! It reads counts, never the bytes: what the socket delivered ([`ReadCount`]) and what the proxy
//! saw ([`Exchanges`]). It looks once a second, so a cut comes up to a second late.

use crate::config::ListenerConfig;
use crate::connection::workers::ReadCount;
use crate::reason::Cut;
use crate::token::Exchanges;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the watchdog looks.
pub const TICK: Duration = Duration::from_secs(1);

/// An HTTP/2 preface is 24 bytes and comes with a SETTINGS frame, in a TLS record of its own:
/// fewer bytes than this on the wire is no preface.
const H2_PREFACE_WIRE_BYTES: u64 = 40;

/// What the TLS records around a header add, at most, on top of its bytes (about 1.5%, and a
/// few records' worth for small headers).
fn tls_overhead(bytes: usize) -> u64 {
    (bytes / 64 + 1024) as u64
}

/// Where the current HTTP/1.1 exchange started, published by the serve loop.
#[derive(Debug)]
pub struct ExchangeMark {
    read: ReadCount,
    exchanges: Arc<Exchanges>,
    read_at: AtomicU64,
    headers_at: AtomicU64,
    /// Bumped at every start, so that the watchdog notices a new exchange.
    seq: AtomicU64,
}

impl ExchangeMark {
    /// A new exchange starts now: its header is timed from its first byte.
    pub fn start(&self) {
        self.read_at.store(self.read.get(), Ordering::Relaxed);
        self.headers_at.store(self.exchanges.headers(), Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::Relaxed);
    }
}

/// The limits the watchdog holds a connection to.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    max_header_bytes: usize,
    body_timeout: Duration,
    body_min_bytes: u64,
    body_window: Duration,
}

pub struct Watchdog {
    limits: Limits,
    read: ReadCount,
    exchanges: Arc<Exchanges>,
    mark: Arc<ExchangeMark>,
    h2: bool,
    started: Instant,
    start_read: u64,
    preface_seen: bool,
    /// The exchange the header timer belongs to, and when its header started arriving.
    seen_seq: u64,
    header_since: Option<Instant>,
    /// The last time a pending body made progress, and at what count.
    body_progress: Option<(Instant, u64)>,
    /// The start of the current rate window while bodies are pending.
    body_window: Option<(Instant, u64)>,
    /// When the client last sent a byte (as of the last check), and the count then.
    last_read: (Instant, u64),
}

impl Watchdog {
    pub fn new(cfg: &ListenerConfig, read: ReadCount, exchanges: Arc<Exchanges>, h2: bool) -> Self {
        let limits = Limits {
            header_timeout: cfg.header_timeout,
            max_header_bytes: cfg.max_request_header_bytes,
            body_timeout: cfg.body_timeout,
            body_min_bytes: cfg.body_min_rate_bytes,
            body_window: cfg.body_min_rate_window,
        };
        let now = Instant::now();
        let start_read = read.get();
        let mark = Arc::new(ExchangeMark {
            read: read.clone(),
            exchanges: exchanges.clone(),
            read_at: AtomicU64::new(0),
            headers_at: AtomicU64::new(0),
            seq: AtomicU64::new(0),
        });
        mark.start();
        Watchdog {
            limits,
            read,
            exchanges,
            seen_seq: mark.seq.load(Ordering::Relaxed),
            mark,
            h2,
            started: now,
            start_read,
            preface_seen: false,
            // A connection's first request is timed from the handshake.
            header_since: Some(now),
            body_progress: None,
            body_window: None,
            last_read: (now, start_read),
        }
    }

    /// How long the client has sent nothing, as of the last [`Watchdog::check`] (a second late at
    /// most).
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_read.0)
    }

    /// The mark the serve loop moves at each HTTP/1.1 exchange.
    pub fn mark(&self) -> Arc<ExchangeMark> {
        self.mark.clone()
    }

    /// What the connection breaks now, if anything: the reason it is cut for.
    pub fn check(&mut self, now: Instant) -> Option<Cut> {
        let read = self.read.get();
        if read != self.last_read.1 {
            self.last_read = (now, read);
        }
        let header = if self.h2 { self.preface(now, read) } else { self.header(now, read) };
        header.or_else(|| self.body(now, read))
    }

    fn preface(&mut self, now: Instant, read: u64) -> Option<Cut> {
        if self.preface_seen || read - self.start_read >= H2_PREFACE_WIRE_BYTES {
            self.preface_seen = true;
            return None;
        }
        (now - self.started > self.limits.header_timeout).then_some(Cut::H2PrefaceTimeout)
    }

    fn header(&mut self, now: Instant, read: u64) -> Option<Cut> {
        let seq = self.mark.seq.load(Ordering::Relaxed);
        if seq != self.seen_seq {
            self.seen_seq = seq;
            self.header_since = None;
        }
        if self.exchanges.headers() != self.mark.headers_at.load(Ordering::Relaxed) {
            self.header_since = None;
            return None; // this exchange's header is in
        }
        let mark_read = self.mark.read_at.load(Ordering::Relaxed);
        if read <= mark_read {
            return self.header_since.filter(|s| now - *s > self.limits.header_timeout).map(|_| Cut::HeaderTimeout);
        }
        let since = *self.header_since.get_or_insert(now);
        if read - mark_read > self.limits.max_header_bytes as u64 + tls_overhead(self.limits.max_header_bytes) {
            return Some(Cut::HeaderTooLarge);
        }
        (now - since > self.limits.header_timeout).then_some(Cut::HeaderTimeout)
    }

    fn body(&mut self, now: Instant, read: u64) -> Option<Cut> {
        if self.exchanges.bodies_pending() == 0 {
            self.body_progress = None;
            self.body_window = None;
            return None;
        }
        let (last, at) = *self.body_progress.get_or_insert((now, read));
        if read != at {
            self.body_progress = Some((now, read));
        } else if now - last > self.limits.body_timeout {
            return Some(Cut::BodyTimeout);
        }
        let (window_start, window_read) = *self.body_window.get_or_insert((now, read));
        if now - window_start >= self.limits.body_window {
            if read - window_read < self.limits.body_min_bytes {
                return Some(Cut::BodyMinRate);
            }
            self.body_window = Some((now, read));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(body_min_bytes: u64) -> ListenerConfig {
        ListenerConfig {
            address: "127.0.0.1:0".into(),
            client_hello_timeout: S,
            max_client_hello_bytes: 16384,
            handshake_timeout: S,
            unknown_sni: Default::default(),
            keepalive_timeout: 60 * S,
            h2_idle_timeout: 60 * S,
            max_connection_age: 3600 * S,
            revocation_grace: S,
            max_connection_age_grace: 30 * S,
            header_timeout: 20 * S,
            max_request_header_bytes: 64 * 1024,
            body_timeout: 30 * S,
            body_min_rate_bytes: body_min_bytes,
            body_min_rate_window: 10 * S,
            anonymous_max_connections: 1,
            anonymous_idle_timeout: 15 * S,
            max_connections: 100,
            h2_max_concurrent_streams: 100,
        }
    }

    fn dog(h2: bool) -> (Watchdog, ReadCount, Arc<Exchanges>, Instant) {
        dog_with(h2, 1024)
    }

    fn dog_with(h2: bool, body_min_bytes: u64) -> (Watchdog, ReadCount, Arc<Exchanges>, Instant) {
        let cfg = listener(body_min_bytes);
        let read = ReadCount::default();
        let exchanges = Arc::new(Exchanges::default());
        let dog = Watchdog::new(&cfg, read.clone(), exchanges.clone(), h2);
        (dog, read, exchanges, Instant::now())
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_first_request_must_arrive_within_the_header_timeout() {
        let (mut dog, _read, _ex, t0) = dog(false);
        assert_eq!(dog.check(t0 + 19 * S), None);
        assert_eq!(dog.check(t0 + 21 * S), Some(Cut::HeaderTimeout));
    }

    #[test]
    fn a_trickled_header_is_cut_and_a_complete_one_is_not() {
        let (mut dog, read, ex, t0) = dog(false);
        read.add(10);
        ex.header_read();
        assert_eq!(dog.check(t0 + 25 * S), None, "the first header arrived");
        // The next exchange starts; it idles (keep-alive is pingora's), then trickles.
        dog.mark().start();
        assert_eq!(dog.check(t0 + 100 * S), None, "idle between requests is not a header");
        read.add(1);
        assert_eq!(dog.check(t0 + 101 * S), None);
        read.add(1);
        assert_eq!(dog.check(t0 + 120 * S), None);
        assert_eq!(dog.check(t0 + 122 * S), Some(Cut::HeaderTimeout));
    }

    #[test]
    fn a_header_larger_than_the_cap_is_cut() {
        let (mut dog, read, _ex, t0) = dog(false);
        read.add(64 * 1024 + 1024 + 64 * 1024 / 64 + 1);
        assert_eq!(dog.check(t0 + S), Some(Cut::HeaderTooLarge));
    }

    #[test]
    fn an_h2_connection_must_send_its_preface() {
        let (mut dog, read, _ex, t0) = dog(true);
        read.add(5);
        assert_eq!(dog.check(t0 + 19 * S), None);
        assert_eq!(dog.check(t0 + 21 * S), Some(Cut::H2PrefaceTimeout));
        let (mut dog, read, _ex, t0) = self::dog(true);
        read.add(80);
        assert_eq!(dog.check(t0 + 500 * S), None, "after the preface, idling is pingora's business");
    }

    #[test]
    fn a_stalled_or_trickling_body_is_cut() {
        let (mut dog, read, ex, t0) = dog_with(true, 0);
        read.add(100);
        ex.header_read();
        ex.body_started();
        assert_eq!(dog.check(t0 + S), None);
        assert_eq!(dog.check(t0 + 30 * S), None);
        assert_eq!(dog.check(t0 + 32 * S), Some(Cut::BodyTimeout));
        let (mut dog, read, ex, t0) = self::dog(true);
        read.add(100);
        ex.body_started();
        for second in 1..=9 {
            read.add(50);
            assert_eq!(dog.check(t0 + second * S), None);
        }
        read.add(50);
        assert_eq!(dog.check(t0 + 11 * S), Some(Cut::BodyMinRate), "500 bytes in 10 s is below 1024");
        ex.body_ended();
        assert_eq!(dog.check(t0 + 40 * S), None, "no body pending, nothing to time");
    }
}
