//! The certificate-binding filter (RFC 8705 §3): the token's `cnf."x5t#S256"` must be the
//! thumbprint of this very connection's client certificate.

use super::binding::certificate_binding;
use super::{Filter, FilterState, Outcome};
use crate::request::respond::Refusal;
use async_trait::async_trait;
use pingora_http::RequestHeader;

pub struct CertBinding;

#[async_trait]
impl Filter for CertBinding {
    fn name(&self) -> &'static str {
        "cert_binding"
    }

    async fn run(&self, _req: &RequestHeader, state: &mut FilterState) -> Outcome {
        if state.client.is_none() {
            return Outcome::Respond(Refusal::InvalidToken("no_client_certificate"));
        }
        let Some(x5t) = state.token.as_ref().and_then(|t| t.claims.bound_thumbprint()) else {
            return Outcome::Respond(Refusal::InvalidToken("token_not_certificate_bound"));
        };
        match certificate_binding(state, x5t) {
            Ok(()) => Outcome::Continue,
            Err(r) => Outcome::Respond(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::filters::test_support::{client, req, token};

    #[tokio::test]
    async fn binding_needs_the_same_thumbprint() {
        // A thumbprint with several '-' and '_' (the reference API replaced only the first '/').
        let x5t = "ls2Lhy1SwH4o1F_sU40C66HWfjQ-49Iz8w7_-gii6wU";
        let r = req("POST", "/api/transactions", &[]);
        let mut s = FilterState { client: Some(client(x5t)), token: Some(token("t", Some(x5t))), ..Default::default() };
        assert_eq!(CertBinding.run(&r, &mut s).await, Outcome::Continue);
        s.client = Some(client("ls2Lhy1SwH4o1F/sU40C66HWfjQ+49Iz8w7/+gii6wU"));
        assert_eq!(CertBinding.run(&r, &mut s).await, Outcome::Respond(Refusal::InvalidToken("certificate_mismatch")));
        s.client = None;
        assert_eq!(CertBinding.run(&r, &mut s).await, Outcome::Respond(Refusal::InvalidToken("no_client_certificate")));
        let mut unbound =
            FilterState { client: Some(client(x5t)), token: Some(token("t", None)), ..Default::default() };
        assert_eq!(
            CertBinding.run(&r, &mut unbound).await,
            Outcome::Respond(Refusal::InvalidToken("token_not_certificate_bound"))
        );
    }
}
