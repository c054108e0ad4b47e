//! The partner's certificate as a trusted hop forwards it: read from the configured header, in
//! the configured format, only on the hop's own connections (`ConnectionFacts::via_hop`, which
//! only the hop listener's trusted sources get). On every other connection the header is one of
//! the stripped identity headers and is never read.
//!
//! The formats: RFC 9440 `Client-Cert` (`:base64 DER:`, with `Client-Cert-Chain` for the
//! intermediates), Envoy's `X-Forwarded-Client-Cert` (the `Cert` and `Chain` keys of its last
//! element, URL-escaped PEM) and the URL-escaped PEM of nginx's `$ssl_client_escaped_cert` and of
//! cloud balancers. What is read is verified by `connection::forwarded` as a handshake would be.

use crate::config::{ForwardedFormat, TrustedHopConfig};
use crate::connection::crl::SharedAcceptor;
use crate::connection::forwarded::Verified;
use crate::reason::{HandshakeRefusal, Token};
use crate::request::normalize::percent::{pieces, Piece};
use crate::revocation::{Revocation, Verdict};
use base64::Engine;
use http::HeaderMap;
use openssl::x509::X509;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// RFC 9440's header of the intermediates.
const CHAIN_HEADER: &str = "client-cert-chain";

/// What the hop's request says about its partner's certificate.
pub enum Forwarded {
    /// No certificate header (or an empty one): the request is a client's without a certificate.
    Absent,
    Verified(Arc<Verified>),
    Refused(Token, Option<HandshakeRefusal>),
}

/// The reader of the hop's certificate header, with the current acceptors' verifier and the
/// revocation checks (OCSP, fetched CRLs) a direct connection's certificate gets.
pub struct ForwardedReader {
    header: http::HeaderName,
    format: ForwardedFormat,
    acceptor: SharedAcceptor,
    revocation: Arc<Revocation>,
}

impl ForwardedReader {
    pub fn new(cfg: &TrustedHopConfig, acceptor: SharedAcceptor, revocation: Arc<Revocation>) -> Option<Self> {
        let header = http::HeaderName::from_bytes(cfg.header.as_bytes()).ok()?;
        Some(ForwardedReader { header, format: cfg.format, acceptor, revocation })
    }

    /// The revocation verdict on a verified forwarded certificate (its own cache makes a hop's
    /// repeated certificate cheap; a refusal is never cached with the certificate's verification,
    /// so a revocation found later applies to the hop's next request).
    pub async fn revocation(&self, verified: &Verified) -> Verdict {
        if !self.revocation.enabled() {
            return Verdict::Good;
        }
        self.revocation.check(&verified.leaf, &verified.chain).await
    }

    /// The name the hop writes the certificate in.
    pub fn header(&self) -> &http::HeaderName {
        &self.header
    }

    /// Reads and verifies the forwarded certificate of one request.
    pub fn read(&self, headers: &HeaderMap) -> Forwarded {
        let mut values = headers.get_all(&self.header).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            // Two values: a hop that appended to a client's header instead of replacing it.
            return match headers.contains_key(&self.header) {
                true => Forwarded::Refused(Token::ForwardedCertificateMalformed, None),
                false => Forwarded::Absent,
            };
        };
        if value.is_empty() {
            return Forwarded::Absent;
        }
        let chain = (self.format == ForwardedFormat::Rfc9440).then(|| headers.get(CHAIN_HEADER)).flatten();
        let mut hash = Sha256::new();
        hash.update(value.as_bytes());
        if let Some(c) = chain {
            hash.update(b"\n");
            hash.update(c.as_bytes());
        }
        let key: [u8; 32] = hash.finalize().into();
        let verifier = self.acceptor.load().forwarded.clone();
        let parse = || parse(self.format, value.as_bytes(), chain.map(|c| c.as_bytes()));
        match verifier.verified(key, parse) {
            None => Forwarded::Refused(Token::ForwardedCertificateMalformed, None),
            Some(Ok(v)) => Forwarded::Verified(v),
            Some(Err(why)) => Forwarded::Refused(Token::ForwardedCertificateRefused, Some(why)),
        }
    }
}

/// The leaf and the chain in one header value (and RFC 9440's chain header); `None` when the
/// value holds no certificate in the format.
pub fn parse(format: ForwardedFormat, value: &[u8], chain: Option<&[u8]>) -> Option<(X509, Vec<X509>)> {
    match format {
        ForwardedFormat::Rfc9440 => {
            let leaf = X509::from_der(&sf_binary(value)?).ok()?;
            let chain = match chain {
                Some(list) => list.split(|b| *b == b',').map(|item| X509::from_der(&sf_binary(item)?).ok()).collect(),
                None => Some(Vec::new()),
            }?;
            Some((leaf, chain))
        }
        ForwardedFormat::EscapedPem => pem_certs(&unescape(value)?),
        ForwardedFormat::Xfcc => xfcc(value),
    }
}

/// An RFC 8941 byte sequence: `:base64:`, surrounding white space allowed.
fn sf_binary(item: &[u8]) -> Option<Vec<u8>> {
    let inner = item.trim_ascii().strip_prefix(b":")?.strip_suffix(b":")?;
    base64::engine::general_purpose::STANDARD.decode(inner).ok()
}

/// URL-unescaped bytes; a `%` that starts no escape makes the value unreadable.
fn unescape(text: &[u8]) -> Option<Vec<u8>> {
    pieces(text)
        .map(|p| match p {
            Piece::Raw(b) | Piece::Escaped(b) => Some(b),
            Piece::StrayPercent => None,
        })
        .collect()
}

/// Every certificate of a PEM text, leaf first; `None` when there is none or one is unreadable.
fn pem_certs(pem: &[u8]) -> Option<(X509, Vec<X509>)> {
    let mut certs = X509::stack_from_pem(pem).ok()?.into_iter();
    let leaf = certs.next()?;
    Some((leaf, certs.collect()))
}

/// Envoy's `X-Forwarded-Client-Cert`: elements separated by `,`, one per proxy, the last one
/// added by the hop that talks to the gateway; each `key=value` pairs separated by `;`, values
/// optionally quoted. `Cert` is the leaf and `Chain` the leaf with its chain, URL-escaped PEM.
fn xfcc(value: &[u8]) -> Option<(X509, Vec<X509>)> {
    let elements = split_unquoted(value, b',');
    let last = elements.last()?;
    let (mut cert, mut chain) = (None, None);
    for pair in split_unquoted(last, b';') {
        let pair = pair.trim_ascii();
        let at = pair.iter().position(|b| *b == b'=')?;
        let (key, raw) = (&pair[..at], &pair[at + 1..]);
        let text = unquote(raw)?;
        if key.eq_ignore_ascii_case(b"cert") {
            cert = Some(text);
        } else if key.eq_ignore_ascii_case(b"chain") {
            chain = Some(text);
        }
    }
    let (leaf, _) = pem_certs(&unescape(&cert?)?)?;
    let rest = match chain {
        // Envoy's Chain starts with the leaf again.
        Some(c) => pem_certs(&unescape(&c)?)?.1,
        None => Vec::new(),
    };
    Some((leaf, rest))
}

/// `text` split at `sep` outside double quotes (a backslash escapes the next byte inside them).
fn split_unquoted(text: &[u8], sep: u8) -> Vec<&[u8]> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, b) in text.iter().enumerate() {
        match (*b, quoted, escaped) {
            (_, true, true) => escaped = false,
            (b'\\', true, false) => escaped = true,
            (b'"', _, _) => quoted = !quoted,
            (b, false, _) if b == sep => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// A value as written, or the inside of its quotes with backslash escapes undone.
fn unquote(raw: &[u8]) -> Option<Vec<u8>> {
    let Some(inner) = raw.strip_prefix(b"\"") else { return Some(raw.to_vec()) };
    let inner = inner.strip_suffix(b"\"")?;
    let (mut out, mut escaped) = (Vec::with_capacity(inner.len()), false);
    for b in inner {
        match (*b, escaped) {
            (b'\\', false) => escaped = true,
            (b, _) => {
                out.push(b);
                escaped = false;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::x509::X509NameBuilder;

    fn cert(cn: &str) -> X509 {
        let key = PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    fn escaped(pem: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in pem {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(*b),
                _ => out.extend(format!("%{b:02X}").bytes()),
            }
        }
        out
    }

    fn cn(c: &X509) -> String {
        crate::pki::subject_dn(c)
    }

    #[test]
    fn each_format_gives_the_leaf_and_its_chain() {
        let (leaf, ca) = (cert("partner"), cert("issuing"));
        let b64 = |c: &X509| base64::engine::general_purpose::STANDARD.encode(c.to_der().unwrap());
        let sf = format!(":{}:", b64(&leaf));
        let chain = format!(":{}:", b64(&ca));
        let (l, c) = parse(ForwardedFormat::Rfc9440, sf.as_bytes(), Some(chain.as_bytes())).unwrap();
        assert_eq!((cn(&l), c.iter().map(cn).collect::<Vec<_>>()), ("CN=partner".into(), vec!["CN=issuing".into()]));

        let pem = [leaf.to_pem().unwrap(), ca.to_pem().unwrap()].concat();
        let (l, c) = parse(ForwardedFormat::EscapedPem, &escaped(&pem), None).unwrap();
        assert_eq!((cn(&l), c.len()), ("CN=partner".into(), 1));

        let cert_value = String::from_utf8(escaped(&leaf.to_pem().unwrap())).unwrap();
        let chain_value = String::from_utf8(escaped(&pem)).unwrap();
        let xfcc_value = format!(
            "By=spiffe://a;Cert=\"{}\",By=spiffe://edge;Hash=ab;Cert=\"{cert_value}\";Chain=\"{chain_value}\";Subject=\"CN=partner,O=x\"",
            String::from_utf8(escaped(&ca.to_pem().unwrap())).unwrap()
        );
        let (l, c) = parse(ForwardedFormat::Xfcc, xfcc_value.as_bytes(), None).unwrap();
        assert_eq!((cn(&l), c.iter().map(cn).collect::<Vec<_>>()), ("CN=partner".into(), vec!["CN=issuing".into()]));
    }

    #[test]
    fn unreadable_values_are_no_certificate() {
        let leaf = cert("partner");
        let pem = leaf.to_pem().unwrap();
        let stray = [b"%ZZ".as_slice(), &escaped(&pem)].concat();
        for (format, value) in [
            (ForwardedFormat::Rfc9440, b"not-base64".to_vec()),
            (ForwardedFormat::Rfc9440, b":aGVsbG8=:".to_vec()),
            (ForwardedFormat::EscapedPem, stray),
            (ForwardedFormat::EscapedPem, pem.clone()[..100].to_vec()),
            (ForwardedFormat::Xfcc, b"By=x;Hash=y".to_vec()),
            (ForwardedFormat::Xfcc, b"Cert=\"unterminated".to_vec()),
        ] {
            assert!(parse(format, &value, None).is_none(), "{format:?} {}", String::from_utf8_lossy(&value));
        }
        // Raw PEM with its new lines is read as well (what some balancers send).
        assert!(parse(ForwardedFormat::EscapedPem, &pem, None).is_some());
    }
}
