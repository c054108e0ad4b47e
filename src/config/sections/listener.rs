//! The `listener` section: the one external port, the ClientHello and handshake deadlines, the
//! HTTP connection limits and timeouts.

use crate::config::closed::UnknownSni;
use crate::config::shared::{dur, nonzero, socket_addr, Check};
use crate::config::shared::{Dur, MinRate};
use serde::Deserialize;
use std::time::Duration;

const LISTENER_CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const LISTENER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const LISTENER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
const LISTENER_ANONYMOUS_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
const LISTENER_H2_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
const LISTENER_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);
const LISTENER_REVOCATION_GRACE: Duration = Duration::from_secs(5);
const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024;
const LISTENER_MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);
const LISTENER_HEADER_TIMEOUT: Duration = Duration::from_secs(20);
const LISTENER_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's default `large_client_header_buffers` allow 32 KiB; HTTP/2 in pingora allows 64 KiB.
const MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;
const BODY_MIN_RATE: (u64, Duration) = (1024, Duration::from_secs(10));
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: String,
    pub client_hello_timeout: Option<Dur>,
    pub max_client_hello_bytes: Option<usize>,
    pub handshake_timeout: Option<Dur>,
    pub unknown_sni: Option<UnknownSni>,
    /// HTTP/1.1: how long an idle keep-alive connection is kept.
    pub keepalive_timeout: Option<Dur>,
    /// HTTP/2: how long a connection with no open stream is kept.
    pub h2_idle_timeout: Option<Dur>,
    /// Past this age a connection is ended gracefully (GOAWAY, or close after the next answer).
    pub max_connection_age: Option<Dur>,
    /// How long a connection whose certificate was revoked may finish its current request.
    pub revocation_grace: Option<Dur>,
    /// After `max_connection_age`, how long a connection may take to finish before it is closed.
    pub max_connection_age_grace: Option<Dur>,
    /// HTTP/1.1: the whole request header must arrive within this, counted from its first byte
    /// (from the handshake for a connection's first request). HTTP/2: the connection preface.
    pub header_timeout: Option<Dur>,
    /// The largest request header, both protocols.
    pub max_request_header_bytes: Option<usize>,
    /// While a request body is being received: the longest time without a byte of it.
    pub body_timeout: Option<Dur>,
    /// While a request body is being received: at least `bytes` in every `window`.
    pub body_min_rate: Option<MinRate>,
    /// TLS-terminated connections open at once, for the whole process.
    pub max_connections: Option<usize>,
    /// How many of those may be without a client certificate (optional-certificate hosts).
    pub anonymous_max_connections: Option<usize>,
    /// A connection without a client certificate that sends nothing for this long is ended
    /// gracefully (HTTP/1.1: also its keep-alive idle limit, when shorter).
    pub anonymous_idle_timeout: Option<Dur>,
    /// HTTP/2 streams one connection may have open at once.
    pub h2_max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: String,
    pub client_hello_timeout: Duration,
    pub max_client_hello_bytes: usize,
    pub handshake_timeout: Duration,
    pub unknown_sni: UnknownSni,
    pub keepalive_timeout: Duration,
    pub h2_idle_timeout: Duration,
    pub max_connection_age: Duration,
    pub revocation_grace: Duration,
    pub max_connection_age_grace: Duration,
    pub header_timeout: Duration,
    pub max_request_header_bytes: usize,
    pub body_timeout: Duration,
    pub body_min_rate_bytes: u64,
    pub body_min_rate_window: Duration,
    pub max_connections: usize,
    pub anonymous_max_connections: usize,
    pub anonymous_idle_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
}

pub(in crate::config) fn validate(check: &mut Check, l: &Listener) -> Option<ListenerConfig> {
    check.ok("listener.address", socket_addr(&l.address));
    let max_hello = l.max_client_hello_bytes.unwrap_or(MAX_CLIENT_HELLO_BYTES);
    if !(512..=256 * 1024).contains(&max_hello) {
        check.fail("listener.max_client_hello_bytes", "must be between 512 and 262144");
    }
    let header_bytes = l.max_request_header_bytes.unwrap_or(MAX_REQUEST_HEADER_BYTES);
    if !(1024..=1024 * 1024).contains(&header_bytes) {
        check.fail("listener.max_request_header_bytes", "must be between 1024 and 1048576");
    }
    let body_rate = l.body_min_rate.as_ref().map_or(BODY_MIN_RATE, |r| (r.bytes, r.window.0));
    let streams = l.h2_max_concurrent_streams.unwrap_or(H2_MAX_CONCURRENT_STREAMS);
    if streams == 0 {
        check.fail("listener.h2_max_concurrent_streams", "must be at least 1");
    }
    if l.max_connections == Some(0) {
        check.fail("listener.max_connections", "must be at least 1");
    }
    let max_connections = l.max_connections.unwrap_or_else(|| crate::fdlimit::default_share(crate::fdlimit::hard()));
    // A quarter by default: anonymous clients need nothing but a handshake to hold a slot.
    let anonymous = l.anonymous_max_connections.unwrap_or((max_connections / 4).max(1));
    if anonymous == 0 || anonymous > max_connections {
        check.fail("listener.anonymous_max_connections", "must be between 1 and listener.max_connections");
    }
    Some(ListenerConfig {
        address: l.address.clone(),
        client_hello_timeout: dur(l.client_hello_timeout, LISTENER_CLIENT_HELLO_TIMEOUT),
        max_client_hello_bytes: max_hello,
        handshake_timeout: dur(l.handshake_timeout, LISTENER_HANDSHAKE_TIMEOUT),
        unknown_sni: l.unknown_sni.unwrap_or_default(),
        keepalive_timeout: dur(l.keepalive_timeout, LISTENER_KEEPALIVE_TIMEOUT),
        h2_idle_timeout: dur(l.h2_idle_timeout, LISTENER_H2_IDLE_TIMEOUT),
        max_connection_age: dur(l.max_connection_age, LISTENER_MAX_CONNECTION_AGE),
        revocation_grace: dur(l.revocation_grace, LISTENER_REVOCATION_GRACE),
        max_connection_age_grace: dur(l.max_connection_age_grace, LISTENER_MAX_CONNECTION_AGE_GRACE),
        header_timeout: nonzero(check, "listener.header_timeout", dur(l.header_timeout, LISTENER_HEADER_TIMEOUT)),
        max_request_header_bytes: header_bytes,
        body_timeout: nonzero(check, "listener.body_timeout", dur(l.body_timeout, LISTENER_BODY_TIMEOUT)),
        body_min_rate_bytes: body_rate.0,
        body_min_rate_window: nonzero(check, "listener.body_min_rate.window", body_rate.1),
        max_connections,
        anonymous_max_connections: anonymous,
        anonymous_idle_timeout: nonzero(
            check,
            "listener.anonymous_idle_timeout",
            dur(l.anonymous_idle_timeout, LISTENER_ANONYMOUS_IDLE_TIMEOUT),
        ),
        h2_max_concurrent_streams: streams,
    })
}
