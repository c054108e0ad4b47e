//! DPoP (RFC 9449) end to end, against node oidc-provider with its DPoP feature (a real,
//! independent implementation) in `json` and `rfc9701` modes, and against dev-idsvr: a DPoP-bound
//! token passes with a fresh proof on every request and fails with each broken proof (also one
//! whose `htu` only a lenient parser reads as the request's URI); downgrades are refused both ways;
//! nonces are asked for and accepted on retry; a certificate-bound token on the same gateway still
//! works; a client without a certificate can connect only where the host allows it.

mod common;

use common::{at_a_second_boundary, until, yaml, Identity, Options, System, API, LOGIN};
use mtls_dpop_client::ProofKey;
use serde_json::{json, Value};
use std::net::SocketAddr;

const DPOP_API: &str = "dpop-api.example.com";

fn oidc(response: &'static str) -> Options {
    Options { identity: Identity::OidcProvider, response, ..Default::default() }
}

/// A client without a certificate that reaches every host name through the gateway (the API
/// hosts through the balancer when the tests run behind one).
fn no_cert_client(sys: &System) -> reqwest::Client {
    let gw: SocketAddr = sys.api_addr();
    sys.client_builder(None).resolve(DPOP_API, gw).build().unwrap()
}

fn echo_url(sys: &System) -> String {
    format!("https://{DPOP_API}:{}/api/echo", sys.api_port())
}

struct Answer {
    status: u16,
    challenge: String,
    nonce: Option<String>,
    body: Value,
}

/// GET /api/echo with `Authorization: <scheme> <token>` and the given proofs.
async fn call(sys: &System, client: &reqwest::Client, scheme: &str, token: &str, proofs: &[String]) -> Answer {
    let mut req = client.get(echo_url(sys)).header("authorization", format!("{scheme} {token}"));
    for p in proofs {
        req = req.header("dpop", p);
    }
    let r = req.send().await.unwrap();
    let header = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (challenge, nonce) = (header("www-authenticate").unwrap_or_default(), header("dpop-nonce"));
    Answer { status: r.status().as_u16(), challenge, nonce, body: r.json().await.unwrap_or_default() }
}

/// A proof for GET /api/echo on this gateway, with `extra` claims.
fn proof(sys: &System, key: &ProofKey, token: &str, extra: Value) -> String {
    key.proof("GET", &echo_url(sys), Some(token), &extra)
}

/// The proof refusals: each broken proof fails with its own reason in the challenge.
async fn broken_proofs_fail(sys: &System, key: &ProofKey, token: &str) {
    let client = no_cert_client(sys);
    let other = ProofKey::generate().unwrap();
    let now = mtls_gateway::token::unix_now();
    let signed = |header: Value, claims: Value| key.sign(&header, &claims).unwrap();
    let claims = json!({ "jti": uuid::Uuid::new_v4().to_string(), "htm": "GET", "htu": echo_url(sys), "iat": now,
        "ath": mtls_gateway::token::b64url(&mtls_gateway::token::cache_key(token)) });
    let mut private = key.jwk.clone();
    private["d"] = "c2VjcmV0".into();
    let none = format!(
        "{}.{}.",
        mtls_gateway::token::b64url(json!({ "typ": "dpop+jwt", "alg": "none", "jwk": key.jwk }).to_string().as_bytes()),
        mtls_gateway::token::b64url(claims.to_string().as_bytes())
    );
    let mut cases: Vec<(&str, String)> = vec![
        ("dpop_htm_mismatch", key.proof("POST", &echo_url(sys), Some(token), &json!({}))),
        ("dpop_htu_mismatch", key.proof("GET", &format!("https://{DPOP_API}/api/echo"), Some(token), &json!({}))),
        (
            "dpop_htu_mismatch",
            key.proof("GET", &format!("https://{API}:{}/api/echo", sys.api_port()), Some(token), &json!({})),
        ),
        ("dpop_ath_mismatch", key.proof("GET", &echo_url(sys), Some("another-token"), &json!({}))),
        ("dpop_iat_out_of_window", proof(sys, key, token, json!({ "iat": now - 600 }))),
        ("dpop_bad_alg", none),
        ("dpop_private_key", signed(json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": private }), claims.clone())),
        ("dpop_bad_typ", signed(json!({ "typ": "JWT", "alg": "ES256", "jwk": key.jwk }), claims.clone())),
        ("dpop_bad_signature", {
            let p = signed(json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk }), claims.clone());
            let s = other.sign(&json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk }), &claims).unwrap();
            format!("{}.{}", p.rsplit_once('.').unwrap().0, s.rsplit_once('.').unwrap().1)
        }),
    ];
    // What only a lenient (WHATWG) parser reads as this request's URI: userinfo, `\` for `/`, a
    // dropped tab or leading space.
    let port = sys.api_port();
    let lenient = [
        format!("https://u:p@{DPOP_API}:{port}/api/echo"),
        format!("https://{DPOP_API}:{port}\\api/echo"),
        format!("https://{DPOP_API}:{port}/api/\techo"),
        format!(" https://{DPOP_API}:{port}/api/echo"),
    ];
    cases.extend(lenient.iter().map(|htu| ("dpop_htu_mismatch", key.proof("GET", htu, Some(token), &json!({})))));
    for (reason, p) in cases {
        let a = call(sys, &client, "DPoP", token, &[p]).await;
        assert_eq!(a.status, 401, "{reason}");
        assert!(a.challenge.contains(r#"DPoP error="invalid_dpop_proof""#), "{reason}: {}", a.challenge);
        assert!(a.challenge.contains(reason) && a.challenge.contains("algs=\""), "{reason}: {}", a.challenge);
    }
    let a = call(sys, &client, "DPoP", token, &[]).await;
    assert!(a.status == 401 && a.challenge.contains("dpop_proof_missing"), "{}", a.challenge);
    let p = proof(sys, key, token, json!({}));
    let a = call(sys, &client, "DPoP", token, &[p.clone(), p]).await;
    assert!(a.status == 401 && a.challenge.contains("dpop_proof_multiple"), "{}", a.challenge);
    // A valid proof by another key: the token is not bound to it.
    let a = call(sys, &client, "DPoP", token, &[proof(sys, &other, token, json!({}))]).await;
    assert!(a.status == 401 && a.challenge.contains(r#"DPoP error="invalid_token""#), "{}", a.challenge);
    assert!(sys.log_shows("reason=dpop_key_mismatch"));
    // The proof is replayed: refused the second time.
    let p = proof(sys, key, token, json!({}));
    assert_eq!(call(sys, &client, "DPoP", token, std::slice::from_ref(&p)).await.status, 200);
    let a = call(sys, &client, "DPoP", token, &[p]).await;
    assert!(a.status == 401 && a.challenge.contains("dpop_replayed"), "{}", a.challenge);
    // Downgrade: the DPoP-bound token as a bearer token, with or without a proof.
    let a = call(sys, &client, "Bearer", token, &[proof(sys, key, token, json!({}))]).await;
    assert!(a.status == 401 && a.challenge.starts_with(r#"Bearer error="invalid_token""#), "{}", a.challenge);
    assert!(sys.log_shows("reason=dpop_token_as_bearer"));
}

/// The whole DPoP flow against one identity server.
async fn dpop_flow(sys: &System) {
    let key = ProofKey::generate().unwrap();
    let token = sys.dpop_token(&no_cert_client(sys), &key).await;
    let client = no_cert_client(sys);
    for _ in 0..2 {
        let a = call(sys, &client, "DPoP", &token, &[proof(sys, &key, &token, json!({}))]).await;
        assert_eq!(a.status, 200, "{}", a.challenge);
        assert_eq!(a.body["claims"]["cnf"]["jkt"], key.jkt(), "the API's JWT keeps the binding");
    }
    broken_proofs_fail(sys, &key, &token).await;

    // A certificate-bound token on the same gateway: on the mTLS host, and as a bearer token with a
    // certificate on the host that accepts either; never with the DPoP scheme.
    let cert_token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &cert_token).await.status(), 200);
    let gw: SocketAddr = sys.api_addr();
    let with_cert = sys.client_builder(Some("example.client.p12")).resolve(DPOP_API, gw).build().unwrap();
    assert_eq!(call(sys, &with_cert, "Bearer", &cert_token, &[]).await.status, 200);
    let a = call(sys, &with_cert, "DPoP", &cert_token, &[proof(sys, &key, &cert_token, json!({}))]).await;
    assert_eq!(a.status, 401, "a certificate-bound token sent as DPoP");
    assert!(sys.log_shows("reason=bearer_token_as_dpop"));
    // Without a certificate, the certificate-bound token is refused on the optional host ...
    let a = call(sys, &client, "Bearer", &cert_token, &[]).await;
    assert!(a.status == 401 && a.challenge.contains("DPoP algs="), "{}", a.challenge);
    assert!(sys.log_shows("reason=no_client_certificate"));
    // ... and the mTLS host still refuses the handshake (behind the balancer, which does not
    // verify partners, the gateway refuses the request: no certificate was forwarded).
    let r = no_cert_client(sys).get(format!("https://{API}:{}/api/echo", sys.api_port())).send().await;
    match sys.balancer {
        None => assert!(r.is_err(), "a connection without a certificate to the mTLS host: {r:?}"),
        Some(_) => assert_eq!(r.unwrap().status(), 401, "no certificate forwarded to the mTLS host"),
    }
}

#[tokio::test]
async fn oidc_provider_dpop_tokens_in_json_mode() {
    let sys = System::start_with(oidc("json"));
    dpop_flow(&sys).await;
}

#[tokio::test]
async fn oidc_provider_dpop_tokens_in_rfc9701_mode() {
    let sys = System::start_with(oidc("rfc9701"));
    dpop_flow(&sys).await;
}

#[tokio::test]
async fn dev_idsvr_dpop_tokens_in_jwt_mode() {
    let sys = System::start();
    dpop_flow(&sys).await;
}

#[tokio::test]
async fn a_nonce_is_asked_for_and_accepted_on_retry_by_any_replica_with_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("nonce.secret");
    std::fs::write(&secret, "a shared secret of at least thirty-two bytes\n").unwrap();
    let nonce = yaml::parse(&format!("{{secret_file: {}, lifetime: 60s}}", secret.display()));
    let sys = System::start_with(Options { patches: vec![("dpop.nonce", nonce)], ..Default::default() });
    let key = ProofKey::generate().unwrap();
    let token = sys.dpop_token(&no_cert_client(&sys), &key).await;
    let client = no_cert_client(&sys);
    let first = call(&sys, &client, "DPoP", &token, &[proof(&sys, &key, &token, json!({}))]).await;
    assert_eq!(first.status, 401);
    assert!(first.challenge.contains(r#"DPoP error="use_dpop_nonce""#), "{}", first.challenge);
    let nonce = first.nonce.expect("a DPoP-Nonce with the challenge");
    let retry = call(&sys, &client, "DPoP", &token, &[proof(&sys, &key, &token, json!({ "nonce": nonce }))]).await;
    assert_eq!(retry.status, 200, "{}", retry.challenge);
    assert!(retry.nonce.is_some(), "answers carry a fresh nonce");
    let made_up = proof(&sys, &key, &token, json!({ "nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }));
    assert_eq!(call(&sys, &client, "DPoP", &token, &[made_up]).await.status, 401);
}

/// The tutorial's DPoP client, as a user runs it, against the local stack.
#[tokio::test]
async fn the_dpop_client_script_calls_the_api() {
    let sys = System::start();
    let bin = common::bin("dpop-proof");
    let out = tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dpop-client.sh"))
        .env("GATEWAY", format!("127.0.0.1:{}", sys.gateway_port))
        .env("API_GATEWAY", sys.api_addr().to_string())
        .env("CERTS_DIR", common::certs())
        .env("DPOP_PROOF", bin)
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("successfully created the API transaction using DPoP"), "{text}");
}

/// The `x5t#S256` of a client certificate: base64url SHA-256 of its DER.
fn thumbprint(p12: &str) -> String {
    let der = std::fs::read(common::cert(p12)).unwrap();
    let parsed = openssl::pkcs12::Pkcs12::from_der(&der).unwrap().parse2("Password1").unwrap();
    let cert = parsed.cert.unwrap().to_der().unwrap();
    mtls_gateway::token::b64url(&openssl::sha::sha256(&cert))
}

/// Tokens from dev-idsvr's `/dev/mint`, bound to `x5t` and, when given, to `jkt` too.
async fn minted(sys: &System, x5t: &str, jkt: Option<&str>) -> String {
    let body = json!({ "count": 1, "client_id": "partner-client", "x5t": x5t, "jkt": jkt, "scope": "transactions" });
    let url = format!("https://{LOGIN}:{}/dev/mint", sys.idsvr_port);
    let root = reqwest::Certificate::from_pem(&std::fs::read(common::cert("root.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .resolve(LOGIN, ([127, 0, 0, 1], sys.idsvr_port).into())
        .no_proxy()
        .build()
        .unwrap();
    let answer: Value = client.post(url).json(&body).send().await.unwrap().json().await.unwrap();
    answer["tokens"][0].as_str().unwrap().to_string()
}

/// Issue 29: a token bound to the right certificate and to a key whose proof is never shown was
/// served as `Bearer` on a `cert_binding` route. Every route that checks a binding checks every
/// binding the token carries: the certificate-only route refuses it, the route that accepts both
/// wants the proof of the key as well, and the same token without the key binding passes.
#[tokio::test]
async fn a_token_bound_to_a_certificate_and_a_key_must_prove_both() {
    let sys = System::start();
    let x5t = thumbprint("example.client.p12");
    let key = ProofKey::generate().unwrap();
    let both = minted(&sys, &x5t, Some(&key.jkt())).await;
    let r = sys.call_api("example.client.p12", &both).await;
    assert_eq!(r.status(), 401, "a cert_binding route served a token whose key binding it cannot check");
    assert!(sys.log_shows("refused_by=cert_binding reason=dpop_binding_not_accepted"), "{}", sys.gateway_log());

    let gw: SocketAddr = sys.api_addr();
    let with_cert = sys.client_builder(Some("example.client.p12")).resolve(DPOP_API, gw).build().unwrap();
    let a = call(&sys, &with_cert, "Bearer", &both, &[]).await;
    assert_eq!(a.status, 401, "as Bearer on the route that accepts both");
    let other = ProofKey::generate().unwrap();
    let a = call(&sys, &with_cert, "DPoP", &both, &[proof(&sys, &other, &both, json!({}))]).await;
    assert_eq!(a.status, 401, "a proof by another key");
    let a = call(&sys, &with_cert, "DPoP", &both, &[proof(&sys, &key, &both, json!({}))]).await;
    assert_eq!(a.status, 200, "both bindings proven: {}", a.challenge);
    let a = call(&sys, &no_cert_client(&sys), "DPoP", &both, &[proof(&sys, &key, &both, json!({}))]).await;
    assert_eq!(a.status, 401, "the key proven, but no certificate");

    let cert_only = minted(&sys, &x5t, None).await;
    assert_eq!(sys.call_api("example.client.p12", &cert_only).await.status(), 200);
}

/// Issue 29: a proof's id was kept for the window counted from its first use, while its `iat`
/// (read in whole seconds, up to the leeway ahead) lets it pass for up to a second longer, so a
/// proof dated ahead could be replayed at the window's edge. With `max_age: 2s` and
/// `leeway: 5s`, a proof dated 5 s ahead and used at once passes until `iat + 3 s`; the old entry
/// lived 7 s from first use. Replayed half a second before the proof's window ends, it is refused.
#[tokio::test]
async fn a_proof_dated_ahead_cannot_be_replayed_at_the_edge_of_its_window() {
    let sys = System::start_with(Options {
        patches: vec![("dpop.max_age", "2s".into()), ("dpop.leeway", "5s".into())],
        ..Default::default()
    });
    let key = ProofKey::generate().unwrap();
    let token = sys.dpop_token(&no_cert_client(&sys), &key).await;
    let client = no_cert_client(&sys);
    let second = at_a_second_boundary().await;
    let ahead = proof(&sys, &key, &token, json!({ "iat": second + 5 }));
    let first = call(&sys, &client, "DPoP", &token, std::slice::from_ref(&ahead)).await;
    assert_eq!(first.status, 200, "{}", first.challenge);
    until(second as f64 + 7.5).await;
    let replay = call(&sys, &client, "DPoP", &token, std::slice::from_ref(&ahead)).await;
    assert!(
        replay.status == 401 && replay.challenge.contains("dpop_replayed"),
        "{}: {}",
        replay.status,
        replay.challenge
    );
    until(second as f64 + 8.3).await;
    let late = call(&sys, &client, "DPoP", &token, &[ahead]).await;
    assert!(late.challenge.contains("dpop_iat_out_of_window"), "the window has closed: {}", late.challenge);
}

/// Issue 29: proofs whose key is not the token's took a place in the replay cache, so that enough
/// of them pushed out the id of a captured proof, which was then accepted again. A proof takes a
/// place only once it passed every check, the token's `cnf.jkt` included.
#[tokio::test]
async fn proofs_by_another_key_cannot_push_a_used_proof_out_of_the_replay_cache() {
    let sys =
        System::start_with(Options { patches: vec![("dpop.replay_cache_entries", 20.into())], ..Default::default() });
    let (victim, attacker) = (ProofKey::generate().unwrap(), ProofKey::generate().unwrap());
    let token = sys.dpop_token(&no_cert_client(&sys), &victim).await;
    let client = no_cert_client(&sys);
    let captured = proof(&sys, &victim, &token, json!({}));
    assert_eq!(call(&sys, &client, "DPoP", &token, std::slice::from_ref(&captured)).await.status, 200);
    for _ in 0..200 {
        let junk = call(&sys, &client, "DPoP", &token, &[proof(&sys, &attacker, &token, json!({}))]).await;
        assert_eq!(junk.status, 401);
    }
    let replay = call(&sys, &client, "DPoP", &token, &[captured]).await;
    assert!(
        replay.status == 401 && replay.challenge.contains("dpop_replayed"),
        "{}: {}",
        replay.status,
        replay.challenge
    );
    let text = sys.metrics().await;
    let evicted = text.lines().find_map(|l| l.strip_prefix("gateway_dpop_replay_evictions_total "));
    assert_eq!(evicted.map(str::trim), Some("0"), "no proof id was pushed out");
}
