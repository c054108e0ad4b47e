//! The `trusted_hop` section: a second TLS listener for an L7 load balancer (or API firewall) that
//! terminates the partners' TLS itself and forwards each partner's certificate in a header. Only
//! the configured sources may connect to it, optionally only with a configured hop certificate;
//! the forwarded certificate is verified by the gateway as if it had come on the connection.

use crate::config::shared::{dur, socket_addr, Check, Dur};
use crate::header_name::canonical_header_name;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const MAX_CONNECTIONS: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedHop {
    /// The hop's own listener (TLS), never the external port.
    pub address: String,
    /// Peers allowed to connect (addresses or networks); every other connection is closed.
    pub sources: Vec<String>,
    /// How the hop writes the partner's certificate.
    pub format: Option<ForwardedFormat>,
    /// The header it is written in; the format's usual name when absent.
    pub header: Option<String>,
    /// This listener's server certificate and key (default: `tls.certificate` and `tls.key`).
    pub certificate: Option<String>,
    pub key: Option<String>,
    /// The CA the hop's own client certificate chains to; then a hop certificate is demanded.
    pub hop_ca: Option<String>,
    /// With `hop_ca`: the hop certificates' subjects (RFC 4514) that are trusted.
    #[serde(default)]
    pub hop_subjects: Vec<String>,
    pub max_connections: Option<usize>,
    pub handshake_timeout: Option<Dur>,
}

/// How a hop writes the partner's certificate in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardedFormat {
    /// RFC 9440 `Client-Cert`: the DER as a structured-field byte sequence (`:base64:`).
    #[default]
    Rfc9440,
    /// Envoy's `X-Forwarded-Client-Cert`: `Cert="<URL-escaped PEM>"` in the last element.
    Xfcc,
    /// The URL-escaped PEM of nginx's `$ssl_client_escaped_cert` and of cloud balancers.
    EscapedPem,
}

impl ForwardedFormat {
    /// The header each format is usually sent in.
    pub const fn default_header(self) -> &'static str {
        match self {
            ForwardedFormat::Rfc9440 => "client-cert",
            ForwardedFormat::Xfcc => "x-forwarded-client-cert",
            ForwardedFormat::EscapedPem => "x-ssl-client-cert",
        }
    }
}

/// The hop listener and what it trusts.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustedHopConfig {
    pub address: SocketAddr,
    pub sources: Vec<ipnet::IpNet>,
    pub format: ForwardedFormat,
    /// Lower case.
    pub header: String,
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub hop_ca: Option<PathBuf>,
    pub hop_subjects: Vec<String>,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

impl TrustedHopConfig {
    /// Whether a connection from `ip` may speak on the hop listener.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.sources.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HopError {
    #[error("{0:?} is not an address or a network like 10.0.0.0/8")]
    Source(String),
    #[error("{0:?} is not a header name")]
    Header(String),
}

fn source(text: &str) -> Result<ipnet::IpNet, HopError> {
    let net = text.parse::<ipnet::IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    net.map_err(|_| HopError::Source(text.to_string()))
}

/// Fails closed: a hop listener open to every address, or hop subjects without the CA that vouches
/// for them, is an error, never a listener that trusts anyone.
pub(in crate::config) fn validate(
    check: &mut Check,
    h: &TrustedHop,
    (tls_cert, tls_key): (&PathBuf, &PathBuf),
) -> Option<TrustedHopConfig> {
    let address = check.ok("trusted_hop.address", socket_addr(&h.address));
    if h.sources.is_empty() {
        check.fail("trusted_hop.sources", "names no source: the hop listener would trust no one");
    }
    let sources: Vec<_> = h
        .sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| check.ok(&format!("trusted_hop.sources[{i}]"), source(s)))
        .collect();
    if sources.iter().any(|n| n.prefix_len() == 0) {
        check.fail("trusted_hop.sources", "a /0 network trusts every address: name the balancers");
    }
    let format = h.format.unwrap_or_default();
    let header = h.header.clone().unwrap_or_else(|| format.default_header().to_string());
    let header = check.ok(
        "trusted_hop.header",
        http::HeaderName::from_bytes(header.as_bytes())
            .map(|_| canonical_header_name(&header).into_owned())
            .map_err(|_| HopError::Header(header.clone())),
    );
    let hop_ca = h.hop_ca.as_ref().map(|p| check.file("trusted_hop.hop_ca", p));
    match (h.hop_subjects.is_empty(), &hop_ca) {
        (true, Some(_)) => check.fail("trusted_hop.hop_subjects", "hop_ca is set but no hop subject is trusted"),
        (false, None) => check.fail("trusted_hop.hop_ca", "hop_subjects need the CA their certificates chain to"),
        _ => {}
    }
    if hop_ca.is_none() {
        check.warnings.push(
            "trusted_hop: no hop_ca, so any process that can connect from one of trusted_hop.sources can speak \
             for any partner: give the balancer a client certificate (hop_ca, hop_subjects)"
                .into(),
        );
    }
    if h.certificate.is_some() != h.key.is_some() {
        check.fail("trusted_hop.certificate", "certificate and key are set together");
    }
    let certificate = h.certificate.as_ref().map(|p| check.file("trusted_hop.certificate", p));
    let key = h.key.as_ref().map(|p| check.file("trusted_hop.key", p));
    Some(TrustedHopConfig {
        address: address?,
        sources,
        format,
        header: header?,
        certificate: certificate.unwrap_or_else(|| tls_cert.clone()),
        key: key.unwrap_or_else(|| tls_key.clone()),
        hop_ca,
        hop_subjects: h.hop_subjects.clone(),
        max_connections: h.max_connections.unwrap_or(MAX_CONNECTIONS),
        handshake_timeout: dur(h.handshake_timeout, HANDSHAKE_TIMEOUT),
    })
}
