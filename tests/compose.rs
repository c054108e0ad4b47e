//! compose.yaml, checked without a container engine: `docker-compose config` accepts it, every file
//! it mounts or names exists (or is one that scripts/create-certs.sh writes), and every host and
//! port agrees with the configs. scripts/compose-ci.sh runs the stack itself (with podman).

mod common;

use common::port_of;
use serde_yaml::Value;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn compose_config() -> Value {
    let out = Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config"])
        .current_dir(ROOT)
        .output()
        .expect("docker-compose (Debian package docker-compose) is needed to check compose.yaml");
    assert!(out.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&out.stderr));
    serde_yaml::from_slice(&out.stdout).unwrap()
}

fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn str_at<'a>(v: &'a Value, keys: &[&str]) -> &'a str {
    keys.iter().fold(v, |v, k| &v[*k]).as_str().unwrap_or_else(|| panic!("{keys:?} missing"))
}

/// Maps a container path under /app back to the repository.
fn host_path(container: &str) -> std::path::PathBuf {
    Path::new(ROOT).join(container.strip_prefix("/app/").expect("configs live under /app"))
}

/// The service whose network aliases include `host`, and the port its own config listens on.
fn service_for<'a>(services: &'a Value, host: &str) -> (&'a str, Value) {
    let (name, svc) = services
        .as_mapping()
        .unwrap()
        .iter()
        .find(|(_, s)| {
            s["networks"]["default"]["aliases"]
                .as_sequence()
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(host)))
        })
        .unwrap_or_else(|| panic!("no service answers to {host}"));
    let command = svc["command"].as_sequence().unwrap();
    let config = command.last().unwrap().as_str().unwrap();
    (name.as_str().unwrap(), yaml(&host_path(config)))
}

#[test]
fn compose_agrees_with_the_configs_it_mounts() {
    let cfg = compose_config();
    let services = &cfg["services"];

    // Mounts: ./conf exists; ./certs is where scripts/create-certs.sh writes.
    for (_, svc) in services.as_mapping().unwrap() {
        // Redis mounts nothing: it keeps nothing.
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = v.as_str().unwrap();
            let host = spec.split(':').next().unwrap();
            match Path::new(host).file_name().and_then(|n| n.to_str()) {
                Some("conf") => assert!(Path::new(host).is_dir(), "{host}"),
                Some("certs") => assert_eq!(Path::new(host), Path::new(ROOT).join("certs")),
                other => panic!("unexpected mount {other:?}"),
            }
        }
    }

    // The gateway: its config validates, and it publishes the port it listens on.
    let gw = &services["gateway"];
    let gw_conf_path = host_path(gw["command"].as_sequence().unwrap().last().unwrap().as_str().unwrap());
    let gw_conf = yaml(&gw_conf_path);
    let listen = port_of(str_at(&gw_conf, &["listener", "address"]));
    let published = &gw["ports"][0];
    let target = published["target"].as_u64().or_else(|| published.as_str().map(|s| port_of(s) as u64)).unwrap();
    assert_eq!(target, listen as u64, "the gateway publishes the port its config listens on");
    assert_eq!(listen, 443, "the tutorial's single public port");

    // Every internal host:port the gateway uses is a service alias listening on that port.
    let mut targets = vec![str_at(&gw_conf["passthrough"]["routes"][0], &["upstream"]).to_string()];
    for (_, u) in gw_conf["upstreams"].as_mapping().unwrap() {
        targets.extend(backends(u));
    }
    for (_, i) in gw_conf["introspection"].as_mapping().unwrap() {
        let url = url::Url::parse(str_at(i, &["endpoint"])).unwrap();
        targets.push(format!("{}:{}", url.host_str().unwrap(), url.port_or_known_default().unwrap()));
    }
    // Both replicas run the same file, each publishing the port it listens on, and share the
    // cluster server, a service of the stack.
    let second = &services["gateway-2"];
    assert_eq!(second["command"], gw["command"], "the replicas run the same configuration");
    let published = &second["ports"][0];
    assert_eq!(published["target"].as_u64(), Some(listen as u64));
    let cluster = url::Url::parse(str_at(&gw_conf, &["cluster", "url"])).unwrap();
    let redis = &services[cluster.host_str().unwrap()];
    let redis_port = cluster.port().unwrap_or(6379).to_string();
    assert!(redis["expose"].as_sequence().unwrap().iter().any(|p| p.as_str() == Some(&redis_port)));
    for replica in [gw, second] {
        assert_eq!(replica["depends_on"]["redis"]["condition"].as_str(), Some("service_healthy"));
    }
    for target in targets {
        let (host, port) = target.rsplit_once(':').unwrap();
        let (name, svc_conf) = service_for(services, host);
        assert_eq!(port_of(str_at(&svc_conf, &["listen"])), port.parse::<u16>().unwrap(), "{name} listens on {target}");
        let exposed: Vec<String> =
            services[name]["expose"].as_sequence().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        assert!(exposed.contains(&port.to_string()), "{name} exposes {port}");
    }
    // The API runs as two services, one backend each, both checked on the path it answers.
    let api = &gw_conf["upstreams"]["example-api"];
    let instances: std::collections::BTreeSet<&str> =
        backends(api).iter().map(|b| service_for(services, b.rsplit_once(':').unwrap().0).0).collect();
    assert!(instances.len() >= 2, "example-api's backends are one service: {instances:?}");
    assert_eq!(str_at(api, &["health_check", "path"]), "/healthz");
}

/// An upstream's `host:port` entries: `address`, or each of `backends` (`host:port` or
/// `{address: host:port, weight: N}`).
fn backends(upstream: &Value) -> Vec<String> {
    match upstream["backends"].as_sequence() {
        Some(list) => list.iter().map(|b| b.as_str().unwrap_or_else(|| str_at(b, &["address"])).to_string()).collect(),
        None => vec![str_at(upstream, &["address"]).to_string()],
    }
}

#[test]
fn every_certificate_the_compose_configs_name_is_made_by_create_certs() {
    let made: Vec<String> = std::fs::read_dir(common::certs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let cfg = compose_config();
    for (_, svc) in cfg["services"].as_mapping().unwrap() {
        let Some(command) = svc["command"].as_sequence() else { continue };
        let config = host_path(command.last().unwrap().as_str().unwrap());
        let text = std::fs::read_to_string(&config).unwrap();
        for word in text.split_whitespace() {
            if let Some(name) = word.strip_prefix("../certs/") {
                assert!(made.iter().any(|m| m == name), "{}: {name} is not made by create-certs.sh", config.display());
            }
        }
    }
}

/// Seconds of a compose duration such as `20s` or `1m30s`.
fn seconds(d: &str) -> u64 {
    let (mut total, mut n) = (0, 0);
    for c in d.chars() {
        match c {
            '0'..='9' => n = n * 10 + c.to_digit(10).unwrap() as u64,
            'h' => (total, n) = (total + n * 3600, 0),
            'm' => (total, n) = (total + n * 60, 0),
            's' => (total, n) = (total + n, 0),
            _ => panic!("duration {d}"),
        }
    }
    total + n
}

#[test]
fn healthchecks_and_shutdown_fit_the_configs() {
    let cfg = compose_config();
    let services = &cfg["services"];
    for (name, svc) in services.as_mapping().unwrap() {
        // podman 4.3 splits CMD arguments on spaces; CMD-SHELL works with both engines.
        let test = svc["healthcheck"]["test"].as_sequence().unwrap_or_else(|| panic!("{name:?} has no healthcheck"));
        assert_eq!(test[0].as_str(), Some("CMD-SHELL"), "{name:?}");
        let command = test[1].as_str().unwrap();
        // Every service listens where its own healthcheck looks (Redis on the port it exposes).
        let Some(args) = svc["command"].as_sequence() else {
            let exposed = svc["expose"][0].as_str().unwrap();
            assert!(command.contains("127.0.0.1") && exposed == "6379", "{name:?}: {command}");
            continue;
        };
        let conf = yaml(&host_path(args.last().unwrap().as_str().unwrap()));
        let port = match conf["metrics"]["address"].as_str() {
            Some(ops) => port_of(ops),
            None => port_of(str_at(&conf, &["listen"])),
        };
        assert!(
            command.contains(&format!("127.0.0.1:{port}")) || command.contains(&format!("127.0.0.1/{port}")),
            "{name:?}: {command}"
        );
    }
    // The gateway probes readiness with its own command, and compose waits for pingora's graceful
    // shutdown (grace period, then the runtimes' timeout) before it kills the process.
    let gw = &services["gateway"];
    assert!(gw["healthcheck"]["test"][1].as_str().unwrap().starts_with("mtls-gateway health "));
    let conf = yaml(&host_path(gw["command"].as_sequence().unwrap().last().unwrap().as_str().unwrap()));
    let graceful = conf["pingora"]["grace_period_seconds"].as_u64().unwrap()
        + conf["pingora"]["graceful_shutdown_timeout_seconds"].as_u64().unwrap();
    let stop = seconds(gw["stop_grace_period"].as_str().expect("the gateway sets stop_grace_period"));
    assert!(stop > graceful, "stop_grace_period {stop}s must exceed pingora's {graceful}s");
    // The gateway's dependencies are healthy before it starts (its readiness probes them).
    for dep in ["login-internal", "api-internal", "api-internal-2"] {
        assert_eq!(gw["depends_on"][dep]["condition"].as_str(), Some("service_healthy"), "{dep}");
    }
}
