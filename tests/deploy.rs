//! deploy/k8s and deploy/systemd, checked without a cluster or systemd: the ConfigMap's gateway YAML
//! passes `mtls-gateway -t` with test certificates where the Deployment mounts the Secrets, and the
//! manifests agree with that YAML (ports, probes, writable paths, shutdown times). The schemas
//! themselves are checked by scripts/k8s-validate.sh.

mod common;

use common::port_of;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn k8s(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/k8s").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect()
}

fn one(file: &str) -> Value {
    let mut docs = k8s(file);
    assert_eq!(docs.len(), 1, "{file}");
    docs.remove(0)
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or_else(|| panic!("{path}: not a string"))
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let found = path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    });
    assert!(!found.is_null(), "{path} missing");
    found
}

fn gateway_yaml() -> String {
    one("configmap.yaml")["data"]["gateway.yaml"].as_str().expect("data.gateway.yaml").to_string()
}

fn container() -> Value {
    let d = one("deployment.yaml");
    at(&d, "spec.template.spec.containers.0").clone()
}

/// The Secret key -> file projection of the Deployment's certs volume.
fn projected() -> BTreeMap<String, (String, String)> {
    let d = one("deployment.yaml");
    let volumes = at(&d, "spec.template.spec.volumes").as_sequence().unwrap();
    let certs = volumes.iter().find(|v| v["name"] == "certs").expect("a certs volume");
    let mut files = BTreeMap::new();
    for source in at(certs, "projected.sources").as_sequence().unwrap() {
        let secret = s(source, "secret.name");
        for item in at(source, "secret.items").as_sequence().unwrap() {
            files.insert(s(item, "path").to_string(), (secret.to_string(), s(item, "key").to_string()));
        }
    }
    files
}

fn mount(name: &str) -> PathBuf {
    let c = container();
    let m = at(&c, "volumeMounts").as_sequence().unwrap().iter().find(|m| m["name"] == name).cloned();
    PathBuf::from(s(&m.unwrap_or_else(|| panic!("no mount {name}")), "mountPath"))
}

#[test]
fn the_configmap_config_validates_with_certificates_where_the_deployment_puts_them() {
    // Where the pod has things: the config file the container is started with, in the ConfigMap's
    // mount; `../certs` from there is the projected Secrets' mount.
    let c = container();
    let args: Vec<&str> = at(&c, "args").as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let config_path = Path::new(args[args.iter().position(|a| *a == "-c").unwrap() + 1]);
    assert_eq!(config_path.parent().unwrap(), mount("config"));
    assert_eq!(config_path.parent().unwrap().parent().unwrap().join("certs"), mount("certs"));

    // The same layout in a temporary directory, with the test certificates for each Secret key.
    let for_key = |secret: &str, key: &str| -> Option<&str> {
        Some(match (secret, key) {
            ("mtls-gateway-tls", "tls.crt") => "example.tls.pem",
            ("mtls-gateway-tls", "tls.key") => "example.tls.key",
            ("mtls-gateway-trust", "client-ca.pem" | "internal-ca.pem") => "root.pem",
            ("mtls-gateway-trust", "client-ca.crl.pem") => "root.crl.pem",
            _ => return None,
        })
    };
    let work = tempfile::tempdir().unwrap();
    let (conf, certs) = (work.path().join("conf"), work.path().join("certs"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&certs).unwrap();
    let files = projected();
    for (path, (secret, key)) in &files {
        match for_key(secret, key) {
            Some(test_cert) => std::fs::copy(common::cert(test_cert), certs.join(path)).map(drop).unwrap(),
            None if (secret.as_str(), key.as_str()) == ("mtls-gateway-introspection", "client-secret") => {
                std::fs::write(certs.join(path), "Password1").unwrap()
            }
            None => panic!("no test file for {secret}/{key}"),
        }
    }
    let text = gateway_yaml();
    // Every file the config names is one the Deployment projects.
    for word in text.split_whitespace() {
        if let Some(name) = word.strip_prefix("../certs/") {
            assert!(files.contains_key(name), "{name} is not in the certs volume");
        }
    }
    let copy = conf.join(config_path.file_name().unwrap());
    std::fs::write(&copy, &text).unwrap();
    let (ok, out) = common::validate(&copy);
    assert!(ok, "{out}");
    assert!(out.contains("configuration OK"), "{out}");

    // The same file with a certificate that does not match the key fails: the check reads them.
    std::fs::copy(common::cert("other.client.pem"), certs.join("server.pem")).unwrap();
    let (ok, out) = common::validate(&copy);
    assert!(!ok && out.contains("does not match the certificate"), "{out}");
}

#[test]
fn the_deployment_agrees_with_the_gateway_config() {
    let cfg: Value = serde_yaml::from_str(&gateway_yaml()).unwrap();
    let c = container();
    let port = |name: &str| {
        let ports = at(&c, "ports").as_sequence().unwrap();
        at(ports.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no port {name}")), "containerPort")
            .as_u64()
            .unwrap()
    };
    assert_eq!(port("https"), u64::from(port_of(s(&cfg, "listener.address"))));
    assert_eq!(port("ops"), u64::from(port_of(s(&cfg, "metrics.address"))));
    assert!(s(&cfg, "metrics.address").starts_with("0.0.0.0:"), "the kubelet probes the pod's address");
    // Probes: live on /healthz, ready on /readyz, both on the operations listener.
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")] {
        assert_eq!(s(&c, &format!("{probe}.httpGet.path")), path);
        assert_eq!(s(&c, &format!("{probe}.httpGet.port")), "ops");
    }
    // Non-root, nothing writable but /tmp, where pingora keeps its pid file and upgrade socket.
    let d = one("deployment.yaml");
    assert_eq!(at(&d, "spec.template.spec.securityContext.runAsNonRoot").as_bool(), Some(true));
    assert_eq!(at(&c, "securityContext.readOnlyRootFilesystem").as_bool(), Some(true));
    assert_eq!(at(&c, "securityContext.allowPrivilegeEscalation").as_bool(), Some(false));
    assert_eq!(mount("tmp"), Path::new("/tmp"));
    for key in ["pingora.pid_file", "pingora.upgrade_sock"] {
        assert!(s(&cfg, key).starts_with("/tmp/"), "{key}");
    }
    // Shutdown: the kubelet waits for preStop, pingora's grace period and its runtimes' timeout.
    let pre_stop: Vec<&str> =
        at(&c, "lifecycle.preStop.exec.command").as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(pre_stop[0], "sleep");
    let pre_stop: u64 = pre_stop[1].parse().unwrap();
    let grace = at(&cfg, "pingora.grace_period_seconds").as_u64().unwrap();
    let runtimes = at(&cfg, "pingora.graceful_shutdown_timeout_seconds").as_u64().unwrap();
    let budget = at(&d, "spec.template.spec.terminationGracePeriodSeconds").as_u64().unwrap();
    assert!(
        budget > pre_stop + grace + runtimes,
        "terminationGracePeriodSeconds {budget} <= {pre_stop}+{grace}+{runtimes}"
    );
    // A request may take the upstream's whole read timeout: the grace period lets it finish.
    for (name, u) in at(&cfg, "upstreams").as_mapping().unwrap() {
        let read = s(u, "read_timeout").strip_suffix('s').unwrap().parse::<u64>().unwrap();
        assert!(grace >= read, "{name:?}: read_timeout {read}s > grace_period_seconds {grace}");
    }
    // pingora runs `threads` workers: as many as the CPU limit allows.
    let cpu_limit: u64 = s(&c, "resources.limits.cpu").parse().unwrap();
    assert_eq!(at(&cfg, "pingora.threads").as_u64(), Some(cpu_limit));
}

#[test]
fn services_pdb_and_hpa_select_the_deployment() {
    let d = one("deployment.yaml");
    let labels = at(&d, "spec.template.metadata.labels");
    let public = one("service.yaml");
    assert_eq!(s(&public, "spec.type"), "LoadBalancer");
    // The per-source limits need the client's own address; the listener reads no PROXY header.
    assert_eq!(s(&public, "spec.externalTrafficPolicy"), "Local");
    let ports = at(&public, "spec.ports").as_sequence().unwrap();
    assert_eq!(ports.len(), 1, "one public port");
    assert_eq!(at(&ports[0], "port").as_u64(), Some(443));
    assert_eq!(s(&ports[0], "targetPort"), "https");
    let admin = one("service-admin.yaml");
    assert_eq!(s(&admin, "metadata.name"), "mtls-gateway-admin");
    assert_eq!(s(&admin, "spec.clusterIP"), "None", "headless: one address per replica");
    assert_eq!(at(&admin, "spec.ports.0.port").as_u64(), Some(9443));
    assert_eq!(s(&admin, "spec.ports.0.targetPort"), "admin");
    for selector in
        [at(&public, "spec.selector"), at(&admin, "spec.selector"), at(&one("pdb.yaml"), "spec.selector.matchLabels")]
    {
        for (k, v) in selector.as_mapping().unwrap() {
            assert_eq!(&labels[k], v, "{k:?}");
        }
    }
    let hpa = one("hpa.yaml");
    assert_eq!(s(&hpa, "spec.scaleTargetRef.name"), s(&d, "metadata.name"));
    assert_eq!(s(&hpa, "spec.metrics.0.resource.name"), "cpu");
    assert!(at(&hpa, "spec.minReplicas").as_u64().unwrap() >= 2, "more than one replica");
}

#[test]
fn secrets_hold_placeholders_only() {
    for secret in k8s("secret.yaml") {
        for (key, value) in at(&secret, "stringData").as_mapping().unwrap() {
            let value = value.as_str().unwrap();
            assert!(value.contains("REPLACE-ME"), "{key:?} must be a placeholder");
            assert!(!value.contains("MII"), "{key:?} looks like a real key or certificate");
        }
    }
}
