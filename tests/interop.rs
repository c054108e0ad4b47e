//! Works with any OAuth server: the whole flow against node oidc-provider (a real, independent
//! RFC 8705 implementation) in RFC 7662 JSON and RFC 9701 signed modes, with the gateway issuing
//! the JWT the API verifies against the gateway's JWKS. Needs node and npm (the pinned package is
//! installed on first use and the tests fail loudly if that is impossible).

mod common;

use common::{yaml, Identity, Options, System, API};
use std::time::Duration;

fn oidc(response: &'static str) -> Options {
    Options { identity: Identity::OidcProvider, response, cache_max_ttl: "1s", ..Default::default() }
}

async fn echo(sys: &System, p12: &str, token: &str) -> (u16, serde_json::Value) {
    let r = sys.client(p12).get(format!("https://{API}/api/echo")).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// The flow every mode must pass: bound token accepted with a gateway-issued JWT, refused with
/// another certificate, refused once revoked.
async fn full_flow(sys: &System) {
    let token = sys.token("example.client.p12", "partner-client").await;
    assert!(!token.contains('.'), "oidc-provider's access tokens are opaque");
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);

    let (status, body) = echo(sys, "example.client.p12", &token).await;
    assert_eq!(status, 200);
    let claims = &body["claims"];
    assert_eq!(claims["iss"], "https://gateway.example.com");
    assert_eq!(claims["aud"], "api.example.com");
    assert_eq!(claims["client_id"], "partner-client");
    assert_eq!(claims["scope"], "transactions");
    let pem = std::fs::read(common::cert("example.client.pem")).unwrap();
    let der = openssl::x509::X509::from_pem(&pem).unwrap().to_der().unwrap();
    assert_eq!(claims["cnf"]["x5t#S256"], mtls_gateway::token::thumbprint(&der), "cnf copied unchanged");

    let stolen = sys.call_api("other.client.p12", &token).await;
    assert_eq!(stolen.status(), 401);

    sys.revoke(&token).await;
    tokio::time::sleep(Duration::from_millis(1300)).await; // the cache's max_ttl in these tests
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 401);
}

#[tokio::test]
async fn oidc_provider_rfc7662_json_mode() {
    let sys = System::start_with(oidc("json"));
    full_flow(&sys).await;
}

#[tokio::test]
async fn oidc_provider_rfc9701_signed_mode() {
    let sys = System::start_with(oidc("rfc9701"));
    full_flow(&sys).await;
}

#[tokio::test]
async fn an_expired_token_is_refused_in_both_modes() {
    for mode in ["json", "rfc9701"] {
        let sys = System::start_with(Options { token_ttl_seconds: 2, ..oidc(mode) });
        let token = sys.token("example.client.p12", "partner-client").await;
        let (status, body) = echo(&sys, "example.client.p12", &token).await;
        assert_eq!(status, 200, "{mode}");
        let issued = body["claims"]["exp"].as_i64().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!(issued <= now + 2, "{mode}: the gateway's JWT outlives the token ({issued} > {now} + 2)");
        tokio::time::sleep(Duration::from_millis(3200)).await;
        assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 401, "{mode}");
    }
}

#[tokio::test]
async fn es256_gateway_tokens_and_the_published_jwks() {
    // dev-idsvr also answers RFC 7662 JSON: the ES256 path needs no node.
    let sys = System::start_with(Options { response: "json", signing_alg: "ES256", ..Default::default() });
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    let jwks: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{}/jwks", sys.jwks_port)).await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, ["gw-es", "gw-ps"], "the signing key and the one kept for rotation");
    assert!(jwks["keys"][0].get("d").is_none(), "no private parts");
    assert_eq!(sys.call_api("other.client.p12", &token).await.status(), 401);
}

#[tokio::test]
async fn a_forged_rfc9701_answer_is_not_trusted() {
    // dev-idsvr does not sign RFC 9701 answers: in rfc9701 mode the gateway must refuse what it
    // gets (its JSON or JWT is not a verifiable token-introspection+jwt) with 502, never pass.
    let sys = System::start_with(Options { response: "rfc9701", ..Default::default() });
    let token = sys.token("example.client.p12", "partner-client").await;
    let r = sys.call_api("example.client.p12", &token).await;
    assert_eq!(r.status(), 502);
}

/// Calls the API with `token` until it answers 200, at most `tries` times; every status seen.
/// Waiting is bounded and asserts nothing about time: only that recovery happens.
async fn until_ok(sys: &System, token: &str, tries: usize) -> Vec<u16> {
    let mut seen = Vec::new();
    for _ in 0..tries {
        let status = sys.call_api("example.client.p12", token).await.status().as_u16();
        seen.push(status);
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    seen
}

async fn restart_idsvr_and_recover(sys: &mut System) {
    let before = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &before).await.status(), 200);
    sys.stop_idsvr();
    sys.start_idsvr();
    let after = sys.token("example.client.p12", "partner-client").await;
    let seen = until_ok(sys, &after, 30).await;
    assert_eq!(seen.last(), Some(&200), "no recovery without a restart of the gateway or the API: {seen:?}");
    let fetches = sys.gateway_log().matches("next refresh in").count();
    assert!(fetches >= 2, "the gateway refetched the JWKS after the failed signature: {}", sys.gateway_log());
}

#[tokio::test]
async fn rfc9701_a_new_key_under_the_same_kid_is_picked_up_without_a_restart() {
    let rotating = vec![("SIGNING_KID", "rotating-kid".to_string())];
    let mut sys = System::start_with(Options { oidc_env: rotating, ..oidc("rfc9701") });
    restart_idsvr_and_recover(&mut sys).await;
}

/// jwt mode with `verify`: the gateway checks the identity server's JWT, and example-api (same
/// JWKS code) checks it again; after dev-idsvr restarts with a new key under the same kid, both
/// recover by themselves.
#[tokio::test]
async fn jwt_verify_mode_and_example_api_pick_up_a_new_key_under_the_same_kid() {
    let mut sys = System::configured(Options {
        idsvr_patches: vec![("signing_kid", "rotating-kid".into())],
        ..Default::default()
    });
    let verify = format!(
        "{{jwks_url: 'https://login-internal.example.com:{}/oauth/v2/oauth-anonymous/jwks', \
          issuer: 'https://login.example.com/oauth/v2/oauth-anonymous', audiences: [api.example.com], algorithms: [PS256]}}",
        sys.idsvr_port
    );
    sys.opts.patches.push(("introspection.idsvr.verify", yaml::parse(&verify)));
    // The audiences move under verify with the rest of the checks.
    sys.opts.patches.push(("introspection.idsvr.audiences", serde_yaml::Value::Null));
    sys.write_configs();
    sys.start_idsvr();
    sys.start_api();
    sys.start_gateway();
    restart_idsvr_and_recover(&mut sys).await;
    assert!(
        sys.gateway_log().contains("JWKS https://login-internal.example.com"),
        "the gateway verified with the JWKS"
    );
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_in_json_and_rfc9701_modes() {
    for mode in ["json", "rfc9701"] {
        let sys = System::start_with(oidc(mode));
        let other = sys
            .token_with("example.client.p12", "partner-client", &[("resource", "https://other-api.example.com")])
            .await;
        let r = sys.call_api("example.client.p12", &other).await;
        assert_eq!(r.status(), 401, "{mode}");
        assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"), "{mode}");
        assert!(sys.log_shows("reason=bad_audience"), "{mode}: {}", sys.gateway_log());
        let ours =
            sys.token_with("example.client.p12", "partner-client", &[("resource", "https://api.example.com")]).await;
        let (status, body) = echo(&sys, "example.client.p12", &ours).await;
        assert_eq!((status, &body["claims"]["aud"]), (200, &serde_json::json!("api.example.com")), "{mode}");
    }
}

#[tokio::test]
async fn a_wrong_issuer_is_never_200() {
    // rfc9701: the signed answer's iss is oidc-provider's, not the one configured.
    let wrong = vec![("introspection.idsvr.issuer", "https://other-issuer.example.com".into())];
    let sys = System::start_with(Options { patches: wrong, ..oidc("rfc9701") });
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 502);
    assert!(sys.log_shows("reason=introspection_bad_issuer"), "{}", sys.gateway_log());
    let log = sys.gateway_log();
    assert!(!log.contains("bad_signature"), "{log}");
    drop(sys);
    // jwt mode with verify: dev-idsvr's JWT names another issuer than the one configured.
    let mut sys = System::configured(Options::default());
    let verify = format!(
        "{{jwks_url: 'https://login-internal.example.com:{}/oauth/v2/oauth-anonymous/jwks', issuer: 'https://other-issuer.example.com'}}",
        sys.idsvr_port
    );
    sys.opts.patches.push(("introspection.idsvr.verify", yaml::parse(&verify)));
    sys.write_configs();
    sys.start_idsvr();
    sys.start_api();
    sys.start_gateway();
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 502);
    assert!(sys.log_shows("reason=introspection_bad_issuer"), "{}", sys.gateway_log());
}

#[tokio::test]
async fn every_client_authentication_method_works_against_oidc_provider() {
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), "Password1\n").unwrap();
    let at = |k: &'static str, v: serde_yaml::Value| (k, v);
    let null = serde_yaml::Value::Null;
    let methods = [
        ("client_secret_basic", vec![]),
        (
            "client_secret_post",
            vec![
                at("introspection.idsvr.client_id", "introspect-post".into()),
                at("introspection.idsvr.client_auth", "client_secret_post".into()),
                at("introspection.idsvr.client_secret", null.clone()),
                at("introspection.idsvr.client_secret_file", secret_file.path().display().to_string().into()),
            ],
        ),
        (
            "private_key_jwt",
            vec![
                at("introspection.idsvr.client_id", "introspect-jwt".into()),
                at("introspection.idsvr.client_auth", "private_key_jwt".into()),
                at("introspection.idsvr.client_secret", null.clone()),
                at("introspection.idsvr.client_key", common::cert("introspect-jwt.es256.key").into()),
            ],
        ),
        (
            "tls_client_auth",
            vec![
                at("introspection.idsvr.client_id", "introspect-mtls".into()),
                at("introspection.idsvr.client_auth", "tls_client_auth".into()),
                at("introspection.idsvr.client_secret", null.clone()),
                at("introspection.idsvr.client_certificate", common::cert("introspection.client.pem").into()),
                at("introspection.idsvr.client_key", common::cert("introspection.client.key").into()),
            ],
        ),
    ];
    for (method, patches) in methods {
        for mode in ["json", "rfc9701"] {
            let sys = System::start_with(Options { patches: patches.clone(), ..oidc(mode) });
            let token = sys.token("example.client.p12", "partner-client").await;
            let status = sys.call_api("example.client.p12", &token).await.status();
            assert_eq!(status, 200, "{method} in {mode} mode: {}", sys.gateway_log());
        }
    }
}

/// The shipped conf/oidc-provider.yaml section with `discovery` instead of its three URLs,
/// against oidc-provider run with its issuer at a base URL as in a real deployment.
#[tokio::test]
async fn discovery_fills_in_the_endpoint_jwks_and_issuer_from_oidc_provider_metadata() {
    let opts = Options { oidc_env: vec![("ISSUER", "https://login.example.com".into())], ..oidc("rfc9701") };
    let mut sys = System::configured(opts);
    let mut section = yaml::shipped("oidc-provider.yaml")["introspection"]["oidc-provider"].clone();
    for k in ["endpoint", "jwks_url", "issuer"] {
        yaml::remove(&mut section, k);
    }
    yaml::set(&mut section, "discovery", "https://login.example.com");
    yaml::set(&mut section, "resolve", format!("127.0.0.1:{}", sys.idsvr_port));
    yaml::set(&mut section, "ca", common::cert("root.pem"));
    sys.opts.patches.push(("introspection.idsvr", section));
    sys.write_configs();
    sys.start_idsvr();
    let (ok, out) = common::validate(&sys.dir.path().join("gateway.yaml"));
    assert!(ok, "{out}");
    let found = "introspection.idsvr.discovery: https://login.example.com/.well-known/oauth-authorization-server \
                 gives issuer https://login.example.com, introspection_endpoint https://login.example.com/oauth/v2/oauth-introspect, \
                 jwks_uri https://login.example.com/oauth/v2/oauth-anonymous/jwks";
    assert!(out.contains(found), "{out}");
    sys.start_api();
    sys.start_gateway();
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200, "{}", sys.gateway_log());
    assert_eq!(sys.call_api("other.client.p12", &token).await.status(), 401);
}

#[tokio::test]
async fn no_store_answers_are_cached_only_when_the_config_says_so() {
    let hits = |m: &str| m.contains(r#"gateway_token_cache_lookups_total{introspection="idsvr",result="hit"}"#);
    for ignore in [false, true] {
        let patches = vec![("introspection.idsvr.cache.ignore_no_store", ignore.into())];
        let sys = System::start_with(Options { patches, cache_max_ttl: "300s", ..oidc("json") });
        let token = sys.token("example.client.p12", "partner-client").await;
        for _ in 0..3 {
            assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
        }
        assert_eq!(hits(&sys.metrics().await), ignore, "ignore_no_store: {ignore}");
    }
}
