//! The certificate-binding filter (RFC 8705 §3): `binding` that accepts certificate binding only,
//! under the name routes have always used. A token's `cnf."x5t#S256"` must be the thumbprint of
//! this very connection's client certificate, and a token that is also bound to a key (`cnf.jkt`)
//! is refused: such a route takes no DPoP proof, so the key binding could never be checked.

use super::binding::Binding;
use super::{Accepts, BuildContext, BuildError, Filter, FilterState, Outcome, Section};
use crate::request::respond::Refusal;
use async_trait::async_trait;
use pingora_http::RequestHeader;
use serde::Deserialize;

/// The `cert_binding` section: nothing to set (`cert_binding: {}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

impl Section for Config {
    fn reads_token(&self) -> bool {
        true
    }

    fn accepts(&self) -> Accepts {
        Accepts { certificate: true, dpop: false }
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Filter>, BuildError> {
        Ok(Box::new(CertBinding::new()))
    }
}

pub struct CertBinding(Binding);

impl CertBinding {
    pub fn new() -> Self {
        CertBinding(Binding { certificate: true, dpop: None })
    }
}

impl Default for CertBinding {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Filter for CertBinding {
    fn name(&self) -> &'static str {
        "cert_binding"
    }

    async fn run(&self, req: &RequestHeader, state: &mut FilterState) -> Outcome {
        // Nothing such a route serves can pass without a certificate, whatever the token.
        if state.client.is_none() {
            return Outcome::Respond(Refusal::InvalidToken(crate::reason::Token::NoClientCertificate));
        }
        self.0.run(req, state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::filters::test_support::{client, req, token, token_with};
    use crate::token::Confirmation;

    fn refused(reason: &'static str) -> Outcome {
        let token = crate::reason::Token::ALL.iter().find(|t| t.as_str() == reason);
        Outcome::Respond(Refusal::InvalidToken(*token.expect("a token reason")))
    }

    #[tokio::test]
    async fn binding_needs_the_same_thumbprint() {
        // A thumbprint with several '-' and '_' (the reference API replaced only the first '/').
        let x5t = "ls2Lhy1SwH4o1F_sU40C66HWfjQ-49Iz8w7_-gii6wU";
        let r = req("POST", "/api/transactions", &[]);
        let f = CertBinding::new();
        let mut s = FilterState { client: Some(client(x5t)), token: Some(token("t", Some(x5t))), ..Default::default() };
        assert_eq!(f.run(&r, &mut s).await, Outcome::Continue);
        s.client = Some(client("ls2Lhy1SwH4o1F/sU40C66HWfjQ+49Iz8w7/+gii6wU"));
        assert_eq!(f.run(&r, &mut s).await, refused("certificate_mismatch"));
        s.client = None;
        assert_eq!(f.run(&r, &mut s).await, refused("no_client_certificate"));
        let mut unbound =
            FilterState { client: Some(client(x5t)), token: Some(token("t", None)), ..Default::default() };
        assert_eq!(f.run(&r, &mut unbound).await, refused("token_not_bound"));
    }

    /// A token bound to the right certificate and to a key is not served without a proof of the
    /// key: the route cannot check the second binding, so it refuses the token.
    #[tokio::test]
    async fn a_token_also_bound_to_a_key_is_refused() {
        let x5t = "ls2Lhy1SwH4o1F_sU40C66HWfjQ-49Iz8w7_-gii6wU";
        let both = Confirmation { x5t_s256: Some(x5t.into()), jkt: Some("some-key-thumbprint".into()) };
        let mut s = FilterState {
            client: Some(client(x5t)),
            token: Some(token_with("t", Some(both))),
            scheme: Some(crate::request::filters::Scheme::Bearer),
            ..Default::default()
        };
        let r = req("POST", "/api/transactions", &[]);
        assert_eq!(CertBinding::new().run(&r, &mut s).await, refused("dpop_binding_not_accepted"));
        let key_only = Confirmation { jkt: Some("some-key-thumbprint".into()), ..Default::default() };
        s.token = Some(token_with("t", Some(key_only)));
        assert_eq!(CertBinding::new().run(&r, &mut s).await, refused("dpop_binding_not_accepted"));
    }
}
