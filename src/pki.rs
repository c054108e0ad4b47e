//! Certificates, keys and CRLs: reading PEM files with errors that name the file, HTTP clients
//! that trust exactly one CA bundle, and the facts the gateway states about a certificate in logs,
//! metrics and headers (its subject and issuer as RFC 4514 names, its times as Unix seconds).
//! Used by the build step, the TLS layer, the dev stack and the tests alike.

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509Crl, X509NameRef, X509Ref, X509};
use std::path::{Path, PathBuf};

/// Why a certificate, key or CRL file cannot be used; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not PEM certificates: {source}", path.display())]
    NotCertificates { path: PathBuf, source: ErrorStack },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} is not a PEM private key: {source}", path.display())]
    NotKey { path: PathBuf, source: ErrorStack },
    #[error("{} holds a CRL that is not PEM: {source}", path.display())]
    NotCrl { path: PathBuf, source: ErrorStack },
    #[error("{} holds no PEM CRL", path.display())]
    NoCrl { path: PathBuf },
    /// OpenSSL could not re-encode what it read.
    #[error("{}: {source}", path.display())]
    Encode { path: PathBuf, source: ErrorStack },
    /// The HTTP client refused a certificate of the CA bundle.
    #[error("{}: {source}", path.display())]
    Trust { path: PathBuf, source: reqwest::Error },
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|source| PkiError::Read { path: path.into(), source })
}

fn encode(path: &Path) -> impl Fn(ErrorStack) -> PkiError + '_ {
    move |source| PkiError::Encode { path: path.into(), source }
}

/// Reads every PEM certificate in a file; an empty file is an error.
pub fn read_certs(path: &Path) -> Result<Vec<X509>, PkiError> {
    let pem = read(path)?;
    let certs = X509::stack_from_pem(&pem).map_err(|source| PkiError::NotCertificates { path: path.into(), source })?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PKey<Private>, PkiError> {
    let pem = read(path)?;
    PKey::private_key_from_pem(&pem).map_err(|source| PkiError::NotKey { path: path.into(), source })
}

/// A certificate file and its key as TLS libraries that take PEM bytes want them: the chain
/// re-encoded, and the key in PKCS#8 whatever PEM form it was written in.
pub fn pem_identity(certificate: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    let chain = certs_pem(certificate)?;
    let pkey = read_key(key)?;
    let pkcs8 = pkey.private_key_to_pem_pkcs8().map_err(encode(key))?;
    Ok((chain, pkcs8))
}

/// Every certificate of a file, re-encoded as PEM.
pub fn certs_pem(path: &Path) -> Result<Vec<u8>, PkiError> {
    let mut out = Vec::new();
    for cert in read_certs(path)? {
        out.extend(cert.to_pem().map_err(encode(path))?);
    }
    Ok(out)
}

/// Every CRL of a PEM bundle (one per issuing CA), at least one.
pub fn read_crls(path: &Path) -> Result<Vec<X509Crl>, PkiError> {
    let pem = read(path)?;
    let text = String::from_utf8_lossy(&pem);
    const BEGIN: &str = "-----BEGIN X509 CRL-----";
    let crls: Vec<X509Crl> = text
        .match_indices(BEGIN)
        .map(|(at, _)| &text[at..])
        .map(|block| X509Crl::from_pem(block.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|source| PkiError::NotCrl { path: path.into(), source })?;
    if crls.is_empty() {
        return Err(PkiError::NoCrl { path: path.into() });
    }
    Ok(crls)
}

/// A reqwest client builder that trusts only the certificates in `ca` (a PEM file), follows no
/// redirects and ignores proxy settings from the environment.
pub fn pinned_client(ca: &Path) -> Result<reqwest::ClientBuilder, PkiError> {
    let certs = read_certs(ca)?;
    let mut roots = Vec::with_capacity(certs.len());
    for cert in certs {
        let der = cert.to_der().map_err(encode(ca))?;
        let root =
            reqwest::Certificate::from_der(&der).map_err(|source| PkiError::Trust { path: ca.into(), source })?;
        roots.push(root);
    }
    Ok(reqwest::Client::builder().tls_certs_only(roots).redirect(reqwest::redirect::Policy::none()).no_proxy())
}

/// An error with its whole chain of causes, for logs: reqwest's top-level message alone rarely says
/// what went wrong (the TLS or connect error is a cause further down).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// An ASN.1 time (`notAfter`, a CRL's `nextUpdate`) as seconds since the epoch.
pub fn unix(t: &Asn1TimeRef) -> Option<i64> {
    let diff = Asn1Time::from_unix(0).ok()?.diff(t).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// Subject DN in RFC 4514 order (most specific RDN first), e.g. `CN=demo-partner,O=Example`.
/// A multi-valued RDN keeps its `+` (`CN=a+O=b` is one RDN, not two), and values are escaped so
/// that nothing in a certificate can split a log line or pass for another subject.
pub fn subject_dn(cert: &X509Ref) -> String {
    name_dn(cert.subject_name())
}

/// The issuer DN, written as [`subject_dn`] writes subjects.
pub fn issuer_dn(cert: &X509Ref) -> String {
    name_dn(cert.issuer_name())
}

/// A distinguished name in RFC 4514 order, escaped.
pub fn name_dn(name: &X509NameRef) -> String {
    let avas: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?").to_string();
            let key = if e.object().nid() == Nid::COMMONNAME { "CN".to_string() } else { key };
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={}", escape_dn_value(&value))
        })
        .collect();
    // Without the RDN structure (never seen: the DER comes from a parsed certificate), each
    // attribute counts as its own RDN.
    let sizes = name.to_der().ok().and_then(|der| rdn_sizes(&der)).filter(|s| s.iter().sum::<usize>() == avas.len());
    let sizes = sizes.unwrap_or_else(|| vec![1; avas.len()]);
    let mut rdns = Vec::with_capacity(sizes.len());
    let mut rest = avas.as_slice();
    for n in sizes {
        let (rdn, tail) = rest.split_at(n.min(rest.len()));
        rdns.push(rdn.join("+"));
        rest = tail;
    }
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// How many attributes each RDN of a DER `Name` (a SEQUENCE of SETs) holds, in order.
fn rdn_sizes(der: &[u8]) -> Option<Vec<usize>> {
    let (tag, body, _) = der_item(der)?;
    if tag != 0x30 {
        return None;
    }
    let mut sizes = Vec::new();
    let mut rdns = body;
    while !rdns.is_empty() {
        let (tag, set, rest) = der_item(rdns)?;
        if tag != 0x31 {
            return None;
        }
        let mut count = 0;
        let mut avas = set;
        while !avas.is_empty() {
            avas = der_item(avas)?.2;
            count += 1;
        }
        sizes.push(count);
        rdns = rest;
    }
    Some(sizes)
}

/// One DER item: (tag, contents, what follows it).
fn der_item(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, &b| acc << 8 | b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// RFC 4514 escaping, and control characters as `\XX` so that a value cannot end a log line.
fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let leading = i == 0 && (c == ' ' || c == '#');
        if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:02X}"));
            }
            continue;
        }
        if leading || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("a,b=c"), "a\\,b\\=c");
        assert_eq!(escape_dn_value("#x"), "\\#x");
        assert_eq!(escape_dn_value("a\nstatus=200"), "a\\0Astatus\\=200");
        assert_eq!(escape_dn_value("a\u{85}b"), "a\\C2\\85b");
    }

    /// A self-signed certificate for `subject` in openssl's `/A=x+B=y/C=z` form.
    fn cert_with(subject: &str) -> X509 {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("c.pem");
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(["-multivalue-rdn", "-keyout", "/dev/null", "-subj", subject, "-out"])
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        X509::from_pem(&std::fs::read(out).unwrap()).unwrap()
    }

    #[test]
    fn a_multi_valued_rdn_is_not_rendered_as_two() {
        assert_eq!(subject_dn(&cert_with("/O=b/CN=a")), "CN=a,O=b");
        assert_eq!(subject_dn(&cert_with("/CN=a+O=b")), "CN=a+O=b");
        let newline = cert_with("/CN=a\nstatus=200 client=CN=admin");
        assert!(!subject_dn(&newline).contains('\n'), "{}", subject_dn(&newline));
    }
}
