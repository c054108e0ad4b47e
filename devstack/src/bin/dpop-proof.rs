//! `dpop-proof`: makes one DPoP proof (RFC 9449 §4.2) for `scripts/dpop-client.sh`, with an ES256
//! key kept in a PEM file (made on first use).
//!
//!   dpop-proof --key FILE --htm POST --htu URL [--token ACCESS_TOKEN] [--nonce NONCE]
//!   dpop-proof --key FILE --jkt          the key's RFC 7638 thumbprint (the tokens' cnf.jkt)
//!
//! The proof goes to stdout. Development only: a real client keeps its key in its own key store.

use mtls_dpop_client::ProofKey;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dpop-proof: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let path = value("--key").ok_or("--key FILE is required")?;
    let key = load_or_create(&path)?;
    if args.iter().any(|a| a == "--jkt") {
        return Ok(key.jkt());
    }
    let htm = value("--htm").ok_or("--htm METHOD is required")?;
    let htu = value("--htu").ok_or("--htu URL is required")?;
    let mut extra = serde_json::json!({});
    if let Some(nonce) = value("--nonce").filter(|n| !n.is_empty()) {
        extra["nonce"] = nonce.into();
    }
    Ok(key.proof(&htm, &htu, value("--token").as_deref(), &extra))
}

fn load_or_create(path: &str) -> Result<ProofKey, String> {
    match std::fs::read(path) {
        Ok(pem) => ProofKey::from_pem(&pem).map_err(|e| format!("{path}: not an EC P-256 key: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ProofKey::generate().map_err(|e| e.to_string())?;
            let pem = key.pem().map_err(|e| e.to_string())?;
            write_private(path, &pem).map_err(|e| format!("{path}: {e}"))?;
            Ok(key)
        }
        Err(e) => Err(format!("{path}: {e}")),
    }
}

fn write_private(path: &str, pem: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(pem)
}
