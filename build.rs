//! Build-time facts for `mtls-gateway --version`: the pingora version this build links, read from
//! `Cargo.lock` (the resolved version, not the requirement in `Cargo.toml`).

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    println!("cargo:rustc-env=MTLS_GATEWAY_PINGORA_VERSION={}", locked_version(&lock, "pingora-core"));
}

/// The version of `package` in a `Cargo.lock`, or `unknown` when it is not there.
fn locked_version(lock: &str, package: &str) -> String {
    let name = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == name {
            let version = lines.next().and_then(|l| l.trim().strip_prefix("version = "));
            if let Some(v) = version {
                return v.trim_matches('"').to_string();
            }
        }
    }
    "unknown".to_string()
}
