//! Loading: reads one file, runs each section's validation (`config::sections`), checks the names
//! that refer to other sections, and builds the model, or reports every problem, each once.

use super::model::*;
use super::problems::Problems;
use super::schema;
use super::sections::route::{FilterRules, RouteFilters};
use super::sections::{
    access_log, admin, cluster, dpop, introspection, limits, listener, metrics, partners, passthrough, pingora,
    refusals, revocation, route, strip_headers, tls, token_issuer, tracing, trusted_hop, upstream,
};
use super::shared::{Check, Names};
use crate::config::closed::ResponseMode;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Reads and validates one configuration file; `filters` checks the routes' filters (the request
/// layer's filter list, see [`FilterRules`]).
pub fn load(path: &Path, filters: &dyn FilterRules) -> Result<Config, Problems> {
    let mut problems = Problems::new(path);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.whole_file(format!("cannot read the file: {e}"));
            return Err(problems);
        }
    };
    let raw: schema::File = match serde_yaml::from_str(&text) {
        Ok(raw) => raw,
        Err(e) => {
            problems.whole_file(e);
            return Err(problems);
        }
    };
    // The filters' references are checked against every name written, as the sections' are.
    let introspection = raw.introspection.keys().cloned().collect();
    let filters = match filters.check(&text, &introspection) {
        Ok(f) => f,
        Err(e) => {
            problems.whole_file(e);
            return Err(problems);
        }
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut check = Check { dir, problems, warnings: Vec::new() };
    let config = model(&mut check, raw, &filters, path);
    check.problems.or(config)
}

fn model(check: &mut Check, raw: schema::File, filters: &[RouteFilters], path: &Path) -> Option<Config> {
    let server = pingora::validate(check, raw.pingora);
    let listener = listener::validate(check, &raw.listener);
    let tls = tls::validate(check, &raw.tls);
    let passthrough = passthrough::validate(check, &raw.passthrough);
    let upstreams: BTreeMap<String, Arc<UpstreamConfig>> = raw
        .upstreams
        .iter()
        .filter_map(|(name, u)| upstream::validate(check, name, u).map(|u| (name.clone(), Arc::new(u))))
        .collect();
    let introspection: BTreeMap<String, IntrospectionConfig> = raw
        .introspection
        .iter()
        .filter_map(|(name, i)| introspection::validate(check, name, i).map(|i| (name.clone(), i)))
        .collect();
    // References are checked against every name written, so that one broken section is one problem.
    let names = Names { upstreams: raw.upstreams.keys().cloned().collect() };
    let limits = limits::validate(check, &raw.limits, passthrough.max_connections);
    let none = RouteFilters::default();
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .filter_map(|(n, r)| {
            let f = filters.get(n).unwrap_or(&none);
            route::validate(check, n, (r, f), (&upstreams, &names), limits.max_body_bytes)
        })
        .collect::<Vec<_>>();
    if raw.routes.is_empty() {
        check.fail("routes", "at least one route is needed");
    }
    let routes_accept_dpop = filters.iter().any(|f| f.accepts_dpop);
    let metrics = raw.metrics.as_ref().and_then(|m| metrics::validate(check, m));
    let strip_headers = strip_headers::validate(check, &raw.strip_headers);
    let refusals = refusals::validate(check, &raw.refusals);
    let files = crate::fdlimit::hard();
    if let Some(l) = &listener {
        if !crate::fdlimit::fits(files, l.max_connections, passthrough.max_connections) {
            check.warnings.push(format!(
                "listener.max_connections ({}) and passthrough.max_connections ({}) need more descriptors than \
                 the file limit ({files}) leaves: at that point the kernel, not the gateway, refuses connections",
                l.max_connections, passthrough.max_connections
            ));
        }
    }
    let token_issuer = raw.token_issuer.as_ref().and_then(|t| token_issuer::validate(check, t));
    let admin = raw.admin.as_ref().and_then(|a| admin::validate(check, a));
    for (name, i) in &raw.introspection {
        let mode = i.response.unwrap_or_default();
        if mode != ResponseMode::Jwt && raw.token_issuer.is_none() {
            check.fail(&format!("introspection.{name}.response"), "json and rfc9701 need a token_issuer section");
        }
    }
    let trusted_hop =
        raw.trusted_hop.as_ref().and_then(|h| trusted_hop::validate(check, h, (&tls.certificate, &tls.key)));
    Some(Config {
        path: path.to_path_buf(),
        server: server?,
        listener: listener?,
        tls,
        passthrough,
        introspection,
        routes,
        metrics,
        strip_headers,
        refusals,
        limits,
        access_format: access_log::format(raw.access_log.as_ref()),
        token_issuer,
        admin,
        partners: partners::validate(check, &raw.partners),
        tracing: tracing::validate(check, &raw.tracing, &raw.partners),
        dpop: dpop::validate(check, raw.dpop.as_ref(), routes_accept_dpop),
        cluster: raw.cluster.as_ref().and_then(|c| cluster::validate(check, c)),
        revocation: revocation::validate(check, raw.revocation.as_ref()),
        trusted_hop,
        warnings: std::mem::take(&mut check.warnings),
    })
}

/// A copy of the shipped `conf/local.yaml` to change and load, for the tests of every layer that
/// loads a configuration.
#[cfg(test)]
pub(crate) mod test_files {
    use std::path::PathBuf;

    /// `conf/local.yaml` in a temporary folder whose `../certs` holds (empty) files of the same
    /// names: the model only checks that files exist, the build step reads them.
    pub(crate) fn local(change: impl FnOnce(&mut serde_yaml::Value)) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::create_dir_all(dir.path().join("certs")).unwrap();
        for f in ["example.tls.pem", "example.tls.key", "root.pem", "root.crl.pem", "admin.secret"] {
            std::fs::write(dir.path().join("certs").join(f), "").unwrap();
        }
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/local.yaml")).unwrap();
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        change(&mut doc);
        let path = dir.path().join("conf/local.yaml");
        std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
        (dir, path)
    }

    pub(crate) fn set(doc: &mut serde_yaml::Value, path: &[&str], value: serde_yaml::Value) {
        let mut cur = doc;
        for key in path {
            cur = match key.parse::<usize>() {
                Ok(i) => &mut cur[i],
                Err(_) => &mut cur[*key],
            };
        }
        *cur = value;
    }
}

#[cfg(test)]
mod tests {
    use super::test_files::{local, set};
    use super::*;
    use crate::header_name::HeaderPattern;
    use std::collections::BTreeSet;
    use std::time::Duration;

    /// The filters are checked by a higher layer (`app::load` hands them over, and its tests
    /// cover them): here they are taken as written.
    struct AnyFilters;

    impl FilterRules for AnyFilters {
        fn check(&self, _: &str, _: &BTreeSet<String>) -> Result<Vec<RouteFilters>, serde_yaml::Error> {
            Ok(Vec::new())
        }
    }

    fn load(path: &Path) -> Result<Config, Problems> {
        super::load(path, &AnyFilters)
    }

    fn problems(change: impl FnOnce(&mut serde_yaml::Value)) -> Vec<String> {
        let (_dir, path) = local(change);
        match load(&path) {
            Ok(_) => Vec::new(),
            Err(p) => p.lines().to_vec(),
        }
    }

    #[test]
    fn the_shipped_local_file_is_a_valid_model() {
        assert_eq!(problems(|_| {}), Vec::<String>::new());
    }

    #[test]
    fn the_trusted_hop_is_off_by_default_and_never_open_to_everyone() {
        let (_dir, path) = local(|_| {});
        assert!(load(&path).unwrap().trusted_hop.is_none());
        let with = |section: &str| problems(|d| set(d, &["trusted_hop"], serde_yaml::from_str(section).unwrap()));
        assert_eq!(with("{address: 127.0.0.1:9445, sources: [10.0.0.0/8, 127.0.0.2]}"), Vec::<String>::new());
        let expect = [
            ("{address: 127.0.0.1:9445, sources: []}", "trusted_hop.sources: names no source"),
            ("{address: 127.0.0.1:9445, sources: [0.0.0.0/0]}", "trusted_hop.sources: a /0 network"),
            ("{address: 127.0.0.1:9445, sources: [ten]}", "trusted_hop.sources[0]: \"ten\" is not an address"),
            ("{address: nowhere, sources: [10.0.0.1]}", "trusted_hop.address"),
            ("{address: 127.0.0.1:9445, sources: [10.0.0.1], header: 'a b'}", "trusted_hop.header"),
            (
                "{address: 127.0.0.1:9445, sources: [10.0.0.1], hop_subjects: [CN=lb]}",
                "trusted_hop.hop_ca: hop_subjects need",
            ),
            ("{address: 127.0.0.1:9445, sources: [10.0.0.1], hop_ca: ../certs/root.pem}", "trusted_hop.hop_subjects:"),
            ("{address: 127.0.0.1:9445, sources: [10.0.0.1], format: pem}", "unknown variant `pem`"),
        ];
        for (section, problem) in expect {
            let p = with(section);
            assert!(p.len() == 1 && p[0].contains(problem), "{section}: {p:?}");
        }
    }

    #[test]
    fn the_admin_listener_is_off_by_default_and_never_open() {
        let (_dir, path) = local(|_| {});
        assert!(load(&path).unwrap().admin.is_none());
        let base = "{address: 127.0.0.1:9443, certificate: ../certs/example.tls.pem, key: ../certs/example.tls.key}";
        let with = |extra: &str| {
            let mut v: serde_yaml::Value = serde_yaml::from_str(base).unwrap();
            let extra: serde_yaml::Mapping = serde_yaml::from_str(extra).unwrap();
            v.as_mapping_mut().unwrap().extend(extra);
            problems(|d| set(d, &["admin"], v))
        };
        assert_eq!(with("{secret_file: ../certs/admin.secret}"), Vec::<String>::new());
        assert_eq!(with("{client_ca: ../certs/root.pem, client_subjects: [CN=gateway-admin]}"), Vec::<String>::new());
        let expect = [
            ("{}", "admin: needs client_subjects (with client_ca) or secret_file"),
            ("{client_subjects: [CN=gateway-admin]}", "admin.client_ca: client_subjects need the CA"),
            ("{client_ca: ../certs/root.pem}", "admin.client_subjects: client_ca is set but no subject"),
            ("{secret_file: ../certs/none}", "admin.secret_file: cannot read"),
            (
                "{secret_file: ../certs/admin.secret, client_subjects: [x], client_ca: ../certs/root.pem}",
                "admin.client_subjects[0]",
            ),
            ("{secret_file: ../certs/admin.secret, secret: x}", "unknown field `secret`"),
        ];
        for (extra, problem) in expect {
            let p = with(extra);
            assert!(p.len() == 1 && p[0].contains(problem), "{extra}: {p:?}");
        }
    }

    #[test]
    fn one_bad_enum_value_is_one_problem_listing_the_choices() {
        let p = problems(|d| set(d, &["listener", "unknown_sni"], "drop".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("listener.unknown_sni: unknown variant `drop`, expected `terminate` or `close` at line"),
            "{p:?}"
        );
        let p = problems(|d| set(d, &["introspection", "idsvr", "response"], "rfc7662".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("introspection.idsvr.response: unknown variant `rfc7662`"), "{p:?}");
        let p = problems(|d| set(d, &["tls", "min_version"], serde_yaml::from_str("1.3").unwrap()));
        assert_eq!(p, Vec::<String>::new(), "an unquoted 1.3 is accepted");
    }

    #[test]
    fn a_missing_file_names_the_key_that_points_to_it() {
        let p = problems(|d| set(d, &["tls", "client_crl"], "../certs/none.crl.pem".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("local.yaml: tls.client_crl: cannot read ") && p[0].contains("none.crl.pem"), "{p:?}");
    }

    #[test]
    fn rfc9701_needs_an_issuer_and_keys_a_mode_ignores_are_errors() {
        let p = problems(|d| {
            set(d, &["introspection", "idsvr", "response"], "rfc9701".into());
            set(d, &["introspection", "idsvr", "jwks_url"], "https://login.example.com/jwks".into());
        });
        assert!(p.iter().any(|l| l.contains("introspection.idsvr.issuer: rfc9701 needs")), "{p:?}");
        let p = problems(|d| set(d, &["introspection", "idsvr", "issuer"], "https://x".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("introspection.idsvr.issuer: does not apply to response: jwt (write it under verify)"));
        let p = problems(|d| {
            set(d, &["introspection", "idsvr", "response"], "json".into());
            set(d, &["introspection", "idsvr", "jwks_url"], "https://x/jwks".into());
        });
        assert!(
            p.iter().any(|l| l.contains("introspection.idsvr.jwks_url: does not apply to response: json")),
            "{p:?}"
        );
        let p = problems(|d| {
            set(d, &["introspection", "idsvr", "verify"], serde_yaml::from_str("{audiences: [a]}").unwrap())
        });
        assert!(p.iter().any(|l| l.contains("introspection.idsvr.verify.issuer: verification needs")), "{p:?}");
    }

    #[test]
    fn a_resolve_port_that_would_be_ignored_is_an_error() {
        let p = problems(|d| set(d, &["introspection", "idsvr", "resolve"], "127.0.0.1:9999".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("introspection.idsvr.resolve: port 9999 differs from the port 8444"), "{p:?}");
    }

    #[test]
    fn client_authentication_keys_must_fit_the_method() {
        let p = problems(|d| set(d, &["introspection", "idsvr", "client_auth"], "private_key_jwt".into()));
        assert!(p
            .iter()
            .any(|l| l.contains("introspection.idsvr.client_secret: does not apply to client_auth: private_key_jwt")));
        assert!(p.iter().any(|l| l.contains("introspection.idsvr.client_key: client_auth: private_key_jwt needs it")));
        let p = problems(|d| set(d, &["introspection", "idsvr", "client_secret_env"], "X".into()));
        assert!(p
            .iter()
            .any(|l| l.contains("give exactly one of client_secret, client_secret_file, client_secret_env")));
        let p = problems(|d| {
            set(d, &["introspection", "idsvr", "client_secret"], serde_yaml::Value::Null);
            set(d, &["introspection", "idsvr", "client_secret_file"], "../certs/none.secret".into());
        });
        assert!(p.iter().any(|l| l.contains("client_secret_file: cannot read")), "{p:?}");
    }

    #[test]
    fn an_outage_cache_is_short_and_defaults_to_a_second() {
        let cluster = |more: &str| {
            serde_yaml::from_str::<serde_yaml::Value>(&format!("{{url: \"redis://127.0.0.1:6379\"{more}}}")).unwrap()
        };
        let (_dir, path) = local(|d| set(d, &["cluster"], cluster("")));
        let cfg = load(&path).map(|c| c.cluster.map(|c| c.outage_cache_ttl)).ok().flatten();
        assert_eq!(cfg, Some(Duration::from_secs(1)));
        assert_eq!(problems(|d| set(d, &["cluster"], cluster(", outage_cache_ttl: 0s"))), Vec::<String>::new());
        let p = problems(|d| set(d, &["cluster"], cluster(", outage_cache_ttl: 2m")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("cluster.outage_cache_ttl: at most 60s"), "{p:?}");
    }

    #[test]
    fn header_patterns_match_in_canonical_spelling() {
        let prefix = HeaderPattern::parse("X-Acme-*").unwrap();
        assert_eq!(prefix, HeaderPattern::Prefix("x-acme-".into()));
        assert!(prefix.matches(&crate::header_name::canonical_header_name("X_ACME_TENANT")));
        assert!(!prefix.matches("x-acmetenant"));
        assert_eq!(HeaderPattern::parse("Ssl_Client_Cert").unwrap(), HeaderPattern::Exact("ssl-client-cert".into()));
        assert!(HeaderPattern::parse("auth*").is_err(), "would strip authorization");
    }
}
