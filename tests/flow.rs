//! The whole system on loopback: token through the SNI passthrough, API calls through mTLS
//! termination, and every way a request must be refused.

mod common;

use common::{System, API};
use mtls_gateway::request::respond::UNAUTHORIZED_BODY;

fn challenge(r: &reqwest::Response) -> String {
    r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test]
async fn partner_gets_a_token_and_calls_the_api() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    let r = sys.call_api("example.client.p12", &token).await;
    let (status, has_id) = (r.status(), r.headers().contains_key("x-fapi-interaction-id"));
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}\n{}", sys.gateway_log());
    assert!(has_id);
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["message"], "Success response from the Example API");
}

#[tokio::test]
async fn http2_requests_are_bound_too() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    let client = sys.client("example.client.p12");
    let r = client.post(format!("https://{API}/api/transactions")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let stolen = sys.client("other.client.p12");
    let r = stolen.post(format!("https://{API}/api/transactions")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_stolen_token_is_refused_with_another_certificate() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    // The thief holds a valid certificate from the same CA, but not the one the token is bound to.
    let r = sys.call_api("other.client.p12", &token).await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).starts_with(r#"Bearer error="invalid_token""#), "{}", challenge(&r));
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), UNAUTHORIZED_BODY);
    // The rightful owner still gets through afterwards (the refusal did not poison the cache).
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    assert!(sys.log_shows("reason=certificate_mismatch"), "{}", sys.gateway_log());
}

/// Behind the balancer (which does not verify partners), the same certificates complete its
/// handshake, and the gateway refuses them on its own check of the forwarded certificate.
#[tokio::test]
async fn certificates_outside_the_trust_are_refused_at_the_handshake() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    for p12 in ["untrusted.client.p12", "revoked.client.p12"] {
        let r = sys.client(p12).post(format!("https://{API}/api/transactions")).bearer_auth(&token).send().await;
        match sys.balancer {
            None => assert!(r.is_err(), "{p12} must not get an HTTP answer: {:?}", r.map(|r| r.status())),
            Some(_) => assert_eq!(r.unwrap().status(), 401, "{p12} forwarded by the balancer"),
        }
    }
    if sys.balancer.is_some() {
        assert!(sys.log_shows("reason=forwarded_certificate_refused"), "{}", sys.gateway_log());
        let m = sys.metrics().await;
        assert!(common::metric(&m, "gateway_forwarded_certificates_total", r#"result="unknown_ca""#) >= 1.0);
        assert!(common::metric(&m, "gateway_forwarded_certificates_total", r#"result="revoked""#) >= 1.0);
    }
    // No certificate at all (KrakenD #323: "mTLS" that still admitted clients without one).
    let anonymous = sys.client_builder(None).build().unwrap();
    let r = anonymous.post(format!("https://{API}/api/transactions")).bearer_auth(&token).send().await;
    match sys.balancer {
        None => assert!(r.is_err(), "a client without a certificate must not get an HTTP answer"),
        Some(_) => assert_eq!(r.unwrap().status(), 401, "no certificate behind the balancer"),
    }
    // The untrusted certificate cannot get a token through the passthrough either: the identity
    // server verifies it itself.
    let r = sys
        .client("untrusted.client.p12")
        .post(format!("https://{}/oauth/v2/oauth-token-mutual-tls", common::LOGIN))
        .form(&[("client_id", "partner-client"), ("grant_type", "client_credentials")])
        .send()
        .await;
    assert!(r.is_err() || r.unwrap().status() == 401);
}

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_get_rfc6750_401s() {
    let sys = System::start();
    let client = sys.client("example.client.p12");
    let url = format!("https://{API}/api/transactions");
    let r = client.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(challenge(&r), "Bearer");
    assert_eq!(r.text().await.unwrap(), UNAUTHORIZED_BODY);
    for auth in ["Bearer", "Bearer two words", "Basic dXNlcjpwYXNz", "Bearer unknown-token-value"] {
        let r = client.post(&url).header("authorization", auth).send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth}");
        assert!(challenge(&r).starts_with(r#"Bearer error="invalid_token""#), "{auth}: {}", challenge(&r));
        assert_eq!(r.text().await.unwrap(), UNAUTHORIZED_BODY);
    }
    // HEAD gets the status and headers, no body.
    let r = client.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), "");
}

#[tokio::test]
async fn tokens_in_the_query_string_are_refused() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    let r = sys
        .client("example.client.p12")
        .post(format!("https://{API}/api/transactions?access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(challenge(&r).contains("invalid_request"));
}

#[tokio::test]
async fn a_route_needing_a_scope_the_token_lacks_is_403_even_from_the_cache() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    // Cache the token through a route it is good for, then try the admin route.
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    let r = sys
        .client("example.client.p12")
        .get(format!("https://{API}/admin/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(challenge(&r).starts_with(r#"Bearer error="insufficient_scope""#), "{}", challenge(&r));
    assert!(sys.log_shows("cache=hit refused_by=scope"), "{}", sys.gateway_log());
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped_and_the_verified_certificate_forwarded() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    let r = sys
        .client("example.client.p12")
        .get(format!("https://{API}/api/echo"))
        .bearer_auth(&token)
        .header("client-cert", ":AAAA:")
        .header("x-forwarded-client-cert", "Hash=evil")
        .header("x-example-client-public-key", "evil")
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let h = &body["headers"];
    assert!(h.get("x-forwarded-client-cert").is_none());
    assert!(h.get("x-example-client-public-key").is_none());
    // The gateway's peer: the balancer's address behind it.
    let peer = if sys.balancer.is_some() { common::balancer::HOP_SOURCE } else { "127.0.0.1" };
    assert_eq!(h["x-forwarded-for"], peer);
    // RFC 9440: the verified leaf, base64 DER between colons, replacing the client's copy.
    let sent = h["client-cert"].as_str().unwrap();
    let pem = std::fs::read(common::cert("example.client.pem")).unwrap();
    let der = openssl::x509::X509::from_pem(&pem).unwrap().to_der().unwrap();
    use base64::Engine;
    assert_eq!(sent, format!(":{}:", base64::engine::general_purpose::STANDARD.encode(&der)));
    // The API received a JWT, not the opaque token.
    let auth = h["authorization"].as_str().unwrap();
    assert!(auth.starts_with("Bearer ey") && !auth.contains(&token));
    assert_eq!(body["claims"]["cnf"]["x5t#S256"], mtls_gateway::token::thumbprint(&der));
}

#[tokio::test]
async fn a_revoked_token_is_refused_once_its_cache_entry_ends() {
    let sys = System::start_with(common::Options { cache_max_ttl: "1s", ..Default::default() });
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    let r = sys
        .client("example.client.p12")
        .post(format!("https://{}/oauth/v2/oauth-revoke", common::LOGIN))
        .form(&[("client_id", "partner-client"), ("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 401);
}

#[tokio::test]
async fn metrics_count_requests_refusals_and_introspection() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    assert_eq!(sys.call_api("other.client.p12", &token).await.status(), 401);
    let m = sys.metrics().await;
    assert!(m.contains(r#"gateway_refusals_total{filter="cert_binding",reason="certificate_mismatch"} 1"#), "{m}");
    assert!(m.contains(r#"gateway_introspection_requests_total{introspection="idsvr",result="active"} 1"#), "{m}");
    assert!(m.contains(r#"result="hit"} 1"#), "{m}");
    assert!(m.contains("gateway_request_duration_seconds_bucket"), "{m}");
}

#[tokio::test]
async fn no_token_or_jwt_is_ever_logged() {
    let sys = System::start();
    let token = sys.token("example.client.p12", "partner-client").await;
    assert_eq!(sys.call_api("example.client.p12", &token).await.status(), 200);
    assert_eq!(sys.call_api("other.client.p12", &token).await.status(), 401);
    let log = sys.gateway_log();
    assert!(log.contains("method=POST path=/api/transactions status=200"), "{log}");
    assert!(!log.contains(&token), "the opaque token leaked into the log");
    assert!(!log.contains("eyJ"), "a JWT leaked into the log");
}
