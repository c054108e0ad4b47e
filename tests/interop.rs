//! Works with any OAuth server: the whole flow against node oidc-provider (a real, independent
//! RFC 8705 implementation) in RFC 7662 JSON and RFC 9701 signed modes, with the gateway issuing
//! the JWT the API verifies against the gateway's JWKS. Needs node and npm (the pinned package is
//! installed on first use and the tests fail loudly if that is impossible).

mod common;

use common::{Identity, Options, System, API, LOGIN};
use std::time::Duration;

fn oidc(response: &'static str) -> Options {
    Options { identity: Identity::OidcProvider, response, cache_max_ttl: "1s", ..Default::default() }
}

async fn echo(sys: &System, p12: &str, token: &str) -> (u16, serde_json::Value) {
    let r = sys.client(p12).get(format!("https://{API}/api/echo")).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn revoke(sys: &System, p12: &str, token: &str) {
    let r = sys
        .client(p12)
        .post(format!("https://{LOGIN}/oauth/v2/oauth-revoke"))
        .form(&[("client_id", "partner-client"), ("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "revocation");
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

    revoke(sys, "example.client.p12", &token).await;
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
