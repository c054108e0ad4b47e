//! `mtls-gateway -t`: every shipped configuration validates, and every kind of mistake is reported
//! with the file and the key, before anything is served.

mod common;

use common::{cert, validate, System};
use std::path::Path;

/// Shipped gateway configurations refer to `../certs`: validate copies of them with the test
/// certificates put in that place.
#[test]
fn every_shipped_gateway_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("conf")).unwrap();
    std::os::unix::fs::symlink(common::certs(), work.path().join("certs")).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("conf")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // Gateway files are the ones with a listener section; the dev servers have their own format.
        if !text.contains("\nlistener:") {
            continue;
        }
        let copy = work.path().join("conf").join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        let (ok, out) = validate(&copy);
        assert!(ok, "{}: {out}", path.display());
        checked += 1;
    }
    assert!(checked >= 2, "expected conf/local.yaml and conf/gateway.yaml at least");
}

/// Writes the test system's gateway file with one substitution and validates it.
fn broken(from: &str, to: &str) -> String {
    let sys = System::configured(Default::default());
    let yaml = sys.gateway_yaml();
    assert!(yaml.contains(from), "{from} not in the config");
    let path = sys.dir.path().join("broken.yaml");
    std::fs::write(&path, yaml.replacen(from, to, 1)).unwrap();
    let (ok, out) = validate(&path);
    assert!(!ok, "a broken config passed: {out}");
    assert!(out.contains("broken.yaml"), "the file is not named: {out}");
    out
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    let out = broken("  client_hello_timeout:", "  client_helo_timeout:");
    assert!(out.contains("client_helo_timeout"), "{out}");
    let out = broken("  threads: 2", "  thread: 2");
    assert!(out.contains("pingora.thread: unknown key"), "{out}");
}

#[test]
fn missing_files_and_mismatched_keys_name_the_key() {
    let out = broken(&format!("  key: {}", cert("example.tls.key")), "  key: /nonexistent/key.pem");
    assert!(out.contains("tls.key: cannot read /nonexistent/key.pem"), "{out}");
    let out = broken(&format!("  key: {}", cert("example.tls.key")), &format!("  key: {}", cert("other.client.key")));
    assert!(out.contains("tls.key:") && out.contains("does not match the certificate"), "{out}");
    let out = broken(&format!("  client_ca: {}", cert("root.pem")), &format!("  client_ca: {}", cert("example.tls.key")));
    assert!(out.contains("tls.client_ca"), "{out}");
}

#[test]
fn bad_urls_durations_and_references_are_errors() {
    let out = broken("    endpoint: https://", "    endpoint: http://");
    assert!(out.contains("introspection.idsvr.endpoint") && out.contains("https"), "{out}");
    let out = broken("    connect_timeout: 1s\n    timeout:", "    connect_timeout: 1 parsec\n    timeout:");
    assert!(out.contains("bad duration"), "{out}");
    let out = broken("      - phantom_token: { introspection: idsvr }\n      - cert_binding: {}\n      - scope: { required: [admin] }",
        "      - cert_binding: {}");
    assert!(out.contains("routes[0].filters[0]: needs a phantom_token filter before it"), "{out}");
    let out = broken("    upstream: example-api\n    forward", "    upstream: nowhere\n    forward");
    assert!(out.contains("routes[1].upstream: no upstream named \"nowhere\""), "{out}");
}

#[test]
fn the_gateway_refuses_to_start_on_a_bad_config() {
    let sys = System::configured(Default::default());
    let path = sys.dir.path().join("bad.yaml");
    std::fs::write(&path, sys.gateway_yaml().replace("hosts: [api.example.com]", "hosts: [\"bad host\"]")).unwrap();
    let out = std::process::Command::new(common::bin("mtls-gateway")).arg("-c").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls.hosts[0]") && err.contains("not serving"), "{err}");
}
