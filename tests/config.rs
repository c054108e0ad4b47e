//! `mtls-gateway -t`: every shipped configuration validates, and every kind of mistake is reported
//! with the file and the key, before anything is served.

mod common;

use common::{cert, validate, yaml, System};
use serde_yaml::Value;
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
        // Round 3: every shipped file names the audience its API accepts.
        assert!(!out.contains("warning:"), "{}: {out}", path.display());
        checked += 1;
    }
    assert!(checked >= 2, "expected conf/local.yaml and conf/gateway.yaml at least");
}

/// Writes the test system's gateway file with `change` applied and validates it.
fn broken(change: impl FnOnce(&mut Value)) -> String {
    let sys = System::configured(Default::default());
    let mut doc = sys.gateway_config();
    change(&mut doc);
    let path = sys.dir.path().join("broken.yaml");
    yaml::write(&doc, &path);
    let (ok, out) = validate(&path);
    assert!(!ok, "a broken config passed: {out}");
    assert!(out.contains("broken.yaml"), "the file is not named: {out}");
    out
}

/// The problem lines of a validation (the last line is the summary).
fn problems(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.starts_with("mtls-gateway:")).collect()
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    let out = broken(|d| {
        let v = yaml::at(d, "listener").as_mapping_mut().unwrap().remove("client_hello_timeout").unwrap();
        yaml::set(d, "listener.client_helo_timeout", v);
    });
    assert!(out.contains("listener: unknown field `client_helo_timeout`"), "{out}");
    let out = broken(|d| yaml::set(d, "routes[1].filters[0].phantom_token.introspecton", "idsvr"));
    assert!(out.contains("routes[1].filters[0].phantom_token: unknown field `introspecton`"), "{out}");
    let out = broken(|d| yaml::set(d, "pingora.thread", 2));
    assert!(out.contains("pingora.thread: unknown key"), "{out}");
}

#[test]
fn one_bad_enum_value_is_one_problem_that_lists_the_choices() {
    let out = broken(|d| yaml::set(d, "introspection.idsvr.response", "rfc7662"));
    assert_eq!(problems(&out).len(), 1, "{out}");
    assert!(
        out.contains(
            "introspection.idsvr.response: unknown variant `rfc7662`, expected one of `jwt`, `json`, `rfc9701`"
        ),
        "{out}"
    );
    let out = broken(|d| yaml::set(d, "routes[0].filters[1]", yaml::parse("cert_bind: {}")));
    assert_eq!(problems(&out).len(), 1, "{out}");
    assert!(out.contains("routes[0].filters[1]: unknown variant `cert_bind`, expected one of `phantom_token`, `cert_binding`, `binding`, `scope`"), "{out}");
    let out = broken(|d| yaml::set(d, "tls.min_version", "1.4"));
    assert!(out.contains("tls.min_version: unknown variant `1.4`, expected `1.2` or `1.3`"), "{out}");
}

#[test]
fn missing_files_and_mismatched_keys_name_the_key() {
    let out = broken(|d| yaml::set(d, "tls.key", "/nonexistent/key.pem"));
    assert!(out.contains("tls.key: cannot read /nonexistent/key.pem"), "{out}");
    assert_eq!(problems(&out).len(), 1, "{out}");
    let out = broken(|d| yaml::set(d, "introspection.idsvr.ca", "/nonexistent/ca.pem"));
    assert!(out.contains("introspection.idsvr.ca: cannot read /nonexistent/ca.pem"), "{out}");
    let out = broken(|d| yaml::set(d, "tls.key", cert("other.client.key")));
    assert!(out.contains("tls.key:") && out.contains("does not match the certificate"), "{out}");
    let out = broken(|d| yaml::set(d, "tls.client_ca", cert("example.tls.key")));
    assert!(out.contains("tls.client_ca"), "{out}");
    let out = broken(|d| yaml::set(d, "upstreams.example-api.ca", cert("example.tls.key")));
    assert!(out.contains("upstreams.example-api.ca:") && out.contains("holds no certificate"), "{out}");
}

#[test]
fn bad_urls_durations_and_references_are_errors() {
    let out = broken(|d| yaml::set(d, "introspection.idsvr.endpoint", "http://login.example.com/introspect"));
    assert!(out.contains("introspection.idsvr.endpoint") && out.contains("https"), "{out}");
    let out = broken(|d| yaml::set(d, "introspection.idsvr.connect_timeout", "1 parsec"));
    assert!(out.contains("bad duration"), "{out}");
    let out = broken(|d| yaml::set(d, "routes[0].filters", yaml::parse("[cert_binding: {}]")));
    assert!(out.contains("routes[0].filters[0]: needs a phantom_token filter before it"), "{out}");
    let out = broken(|d| yaml::set(d, "routes[1].upstream", "nowhere"));
    assert!(out.contains("routes[1].upstream: no upstream named \"nowhere\""), "{out}");
    assert_eq!(problems(&out).len(), 1, "{out}");
}

#[test]
fn a_broken_section_is_not_reported_again_where_it_is_used() {
    // The introspection section is invalid: the routes that name it must not add follow-on errors.
    let out = broken(|d| yaml::set(d, "introspection.idsvr.endpoint", "not a url"));
    assert_eq!(problems(&out).len(), 1, "{out}");
    let out = broken(|d| yaml::set(d, "routes[1].filters[0].phantom_token.introspection", "nowhere"));
    assert_eq!(problems(&out).len(), 1, "{out}");
    assert!(
        out.contains("routes[1].filters[0].phantom_token.introspection: no introspection named \"nowhere\""),
        "{out}"
    );
}

#[test]
fn the_gateway_refuses_to_start_on_a_bad_config() {
    let sys = System::configured(Default::default());
    let path = sys.dir.path().join("bad.yaml");
    let mut doc = sys.gateway_config();
    yaml::set(&mut doc, "tls.hosts[0]", "bad host");
    yaml::write(&doc, &path);
    let out = std::process::Command::new(common::bin("mtls-gateway")).arg("-c").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls.hosts[0]") && err.contains("not serving"), "{err}");
}

/// `-t` and serving share one build step: a key that does not match its certificate stops both
/// with the same message.
#[test]
fn validate_and_serve_refuse_a_mismatched_key_with_the_same_message() {
    let sys = System::configured(Default::default());
    let path = sys.dir.path().join("mismatch.yaml");
    let mut doc = sys.gateway_config();
    yaml::set(&mut doc, "tls.key", cert("other.client.key"));
    yaml::write(&doc, &path);
    let (ok, checked) = validate(&path);
    assert!(!ok);
    let served = std::process::Command::new(common::bin("mtls-gateway")).arg("-c").arg(&path).output().unwrap();
    assert!(!served.status.success());
    let served = String::from_utf8_lossy(&served.stderr);
    let line = problems(&checked).into_iter().find(|l| l.contains("tls.key:")).expect("a tls.key problem");
    assert!(line.contains("does not match the certificate"), "{checked}");
    assert!(served.contains(line), "serve said:\n{served}\n-t said:\n{checked}");
}

/// Round 3: an introspection section without audiences is allowed, loudly; `["*"]` says "any
/// audience" on purpose; `"*"` among other audiences is a mistake.
#[test]
fn a_section_without_audiences_is_warned_about_and_star_means_any() {
    let sys = System::configured(Default::default());
    let path = sys.dir.path().join("gateway.yaml");
    let mut doc = sys.gateway_config();
    yaml::remove(&mut doc, "introspection.idsvr.audiences");
    yaml::write(&doc, &path);
    let (ok, out) = validate(&path);
    assert!(ok, "{out}");
    assert!(out.contains("warning: introspection.idsvr.audiences: none set"), "{out}");
    yaml::set(&mut doc, "introspection.idsvr.audiences", yaml::parse("['*']"));
    yaml::write(&doc, &path);
    let (ok, out) = validate(&path);
    assert!(ok && !out.contains("warning"), "{out}");
    yaml::set(&mut doc, "introspection.idsvr.audiences", yaml::parse("['*', api.example.com]"));
    yaml::write(&doc, &path);
    let (ok, out) = validate(&path);
    assert!(!ok && out.contains("introspection.idsvr.audiences"), "{out}");
}

#[test]
fn tracing_mistakes_name_their_keys() {
    let out = broken(|doc| {
        *yaml::at(doc, "tracing") = yaml::parse(
            "{otlp_endpoint: 'grpc://collector:4317', trusted_sources: ['10.0.0.0/33'], \
             trusted_partners: [nobody], sample_ratio: 1.5}",
        );
    });
    for key in
        ["tracing.otlp_endpoint", "tracing.trusted_sources[0]", "tracing.trusted_partners[0]", "tracing.sample_ratio"]
    {
        assert!(out.contains(key), "{key} not named: {out}");
    }
}

#[test]
fn cluster_mistakes_name_their_keys() {
    let out = broken(|doc| {
        *yaml::at(doc, "cluster") = yaml::parse(
            "{url: 'redis://:secret@127.0.0.1:6379', password_file: /nonexistent/redis.password, \
             timeout: 0s}",
        );
    });
    for (key, why) in
        [("cluster.url", "password_file"), ("cluster.password_file", "cannot read"), ("cluster.timeout", "")]
    {
        assert!(out.lines().any(|l| l.contains(key) && l.contains(why)), "{key} not named: {out}");
    }
    // TLS settings on a plain URL, and a client certificate without its key.
    let out = broken(|doc| {
        *yaml::at(doc, "cluster") = yaml::parse(&format!(
            "{{url: 'redis://127.0.0.1:6379', ca: {}, client_certificate: {}}}",
            cert("root.pem"),
            cert("root.pem")
        ));
    });
    assert!(out.lines().any(|l| l.contains("cluster.ca") && l.contains("rediss://")), "{out}");
    assert!(out.lines().any(|l| l.contains("cluster.client_key") && l.contains("needs its key")), "{out}");
    assert!(!out.contains("secret"), "the URL's password is not echoed: {out}");
    // A client key that is not the certificate's, and a CA file that holds no certificate.
    let out = broken(|doc| {
        *yaml::at(doc, "cluster") = yaml::parse(&format!(
            "{{url: 'rediss://127.0.0.1:6379', client_certificate: {}, client_key: {}}}",
            cert("example.client.pem"),
            cert("other.client.key")
        ));
    });
    assert!(out.lines().any(|l| l.contains("cluster.client_key") && l.contains("does not match")), "{out}");
    let out = broken(|doc| {
        *yaml::at(doc, "cluster") =
            yaml::parse(&format!("{{url: 'rediss://127.0.0.1:6379', ca: {}}}", cert("root.key")));
    });
    assert!(out.lines().any(|l| l.contains("cluster.ca")), "{out}");
}
