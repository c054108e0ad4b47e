//! Reading PEM files (certificates, keys, CRLs) with errors that name the file, and HTTP clients
//! that trust exactly one CA bundle. Used by the build step, the dev stack and the tests alike.

use openssl::pkey::{PKey, Private};
use openssl::x509::{X509Crl, X509};
use std::path::Path;

/// Reads every PEM certificate in a file; an empty file is an error.
pub fn read_certs(path: &Path) -> Result<Vec<X509>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PKey<Private>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PKey::private_key_from_pem(&pem).map_err(|e| format!("{} is not a PEM private key: {e}", path.display()))
}

/// A certificate file and its key as TLS libraries that take PEM bytes want them: the chain
/// re-encoded, and the key in PKCS#8 whatever PEM form it was written in.
pub fn pem_identity(certificate: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let chain = certs_pem(certificate)?;
    let pkey = read_key(key)?;
    let pkcs8 = pkey.private_key_to_pem_pkcs8().map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((chain, pkcs8))
}

/// Every certificate of a file, re-encoded as PEM.
pub fn certs_pem(path: &Path) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for cert in read_certs(path)? {
        out.extend(cert.to_pem().map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Ok(out)
}

/// Every CRL of a PEM bundle (one per issuing CA), at least one.
pub fn read_crls(path: &Path) -> Result<Vec<X509Crl>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&pem);
    const BEGIN: &str = "-----BEGIN X509 CRL-----";
    let crls: Vec<X509Crl> = text
        .match_indices(BEGIN)
        .map(|(at, _)| &text[at..])
        .map(|block| X509Crl::from_pem(block.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} holds a CRL that is not PEM: {e}", path.display()))?;
    if crls.is_empty() {
        return Err(format!("{} holds no PEM CRL", path.display()));
    }
    Ok(crls)
}

/// A reqwest client builder that trusts only the certificates in `ca` (a PEM file), follows no
/// redirects and ignores proxy settings from the environment.
pub fn pinned_client(ca: &Path) -> Result<reqwest::ClientBuilder, String> {
    let certs = read_certs(ca)?;
    let mut roots = Vec::with_capacity(certs.len());
    for cert in certs {
        let der = cert.to_der().map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.push(reqwest::Certificate::from_der(&der).map_err(|e| format!("{}: {e}", ca.display()))?);
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
