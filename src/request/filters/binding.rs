//! The sender-constraint filter: a token is checked the way it is bound. `cnf."x5t#S256"` must be
//! the thumbprint of this connection's client certificate (RFC 8705 §3); `cnf.jkt` must be the
//! thumbprint of the key of a valid DPoP proof sent with the `DPoP` scheme (RFC 9449 §7). A route
//! accepts certificate binding, DPoP, or either; an unbound token is refused, and so is a token
//! bound in a way the route does not accept. Downgrades are refused both ways (§7.2): a DPoP-bound
//! token sent as `Bearer`, and a token that is not DPoP-bound sent as `DPoP`.

use super::{Accepts, BuildContext, BuildError, Filter, FilterState, Outcome, Scheme, Section};
use crate::config::Problem;
use crate::metrics;
use crate::reason::{ProofResult, SharedCheck, Token};
use crate::request::dpop::{DpopVerifier, ProofError, ProofFailure};
use crate::request::respond::Refusal;
use crate::token::same;
use async_trait::async_trait;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::sync::Arc;

/// The `binding` section: the sender constraints the route accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub accept: Vec<BindingKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingKind {
    /// RFC 8705: `cnf."x5t#S256"` and the connection's client certificate.
    Certificate,
    /// RFC 9449: `cnf.jkt` and a DPoP proof.
    Dpop,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("names certificate, dpop or both")]
    NothingAccepted,
}

/// What the build step did not make for the filter.
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    #[error("dpop is accepted but no DPoP checks were built")]
    DpopChecks,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.accept.is_empty() {
            true => Err(ConfigError::NothingAccepted),
            false => Ok(()),
        }
    }
}

impl Section for Config {
    fn check(&self, _ctx: &super::CheckContext) -> Vec<Problem> {
        self.validate().err().map(|e| Problem::new("binding.accept", e)).into_iter().collect()
    }

    fn reads_token(&self) -> bool {
        true
    }

    fn accepts(&self) -> Accepts {
        Accepts {
            certificate: self.accept.contains(&BindingKind::Certificate),
            dpop: self.accept.contains(&BindingKind::Dpop),
        }
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Filter>, BuildError> {
        let accepts = self.accepts();
        let dpop = match accepts.dpop {
            true => Some(ctx.parts.dpop.clone().ok_or_else(|| BuildError::new(Missing::DpopChecks))?),
            false => None,
        };
        Ok(Box::new(Binding { certificate: accepts.certificate, dpop }))
    }
}

pub struct Binding {
    pub certificate: bool,
    /// Set when the route accepts DPoP.
    pub dpop: Option<Arc<DpopVerifier>>,
}

#[async_trait]
impl Filter for Binding {
    fn name(&self) -> &'static str {
        "binding"
    }

    async fn run(&self, req: &RequestHeader, state: &mut FilterState) -> Outcome {
        match self.check(req, state).await {
            Ok(()) => Outcome::Continue,
            Err(refusal) => Outcome::Respond(refusal),
        }
    }
}

impl Binding {
    async fn check(&self, req: &RequestHeader, state: &mut FilterState) -> Result<(), Refusal> {
        let token = state.token.clone().ok_or(Refusal::NoToken)?;
        let (x5t, jkt) = (token.claims.bound_thumbprint(), token.claims.bound_jkt());
        if x5t.is_none() && jkt.is_none() {
            return Err(Refusal::InvalidToken(Token::TokenNotBound));
        }
        match jkt {
            Some(jkt) => state.proven_jkt = Some(self.dpop_binding(req, state, jkt).await?),
            None if state.scheme == Some(Scheme::Dpop) => return Err(Refusal::InvalidToken(Token::BearerTokenAsDpop)),
            None => {}
        }
        if let Some(x5t) = x5t {
            if !self.certificate {
                return Err(Refusal::InvalidToken(Token::CertificateBindingNotAccepted));
            }
            certificate_binding(state, x5t)?;
        }
        Ok(())
    }

    /// The token's key binding, proven by the request's proof: the key's thumbprint.
    async fn dpop_binding(&self, req: &RequestHeader, state: &FilterState, jkt: &str) -> Result<String, Refusal> {
        let verifier = self.dpop.as_ref().ok_or(Refusal::InvalidToken(Token::DpopBindingNotAccepted))?;
        if state.scheme != Some(Scheme::Dpop) {
            return Err(Refusal::InvalidToken(Token::DpopTokenAsBearer));
        }
        let hash = state.token_hash.as_ref().ok_or(Refusal::NoToken)?;
        let proven = verifier.verify(req, hash, jkt).await.map_err(|f| match f {
            ProofFailure::Proof(e) => {
                metrics::dpop_proof(ProofResult::Refused(e));
                match e {
                    ProofError::Nonce => Refusal::UseDpopNonce,
                    e => Refusal::InvalidDpopProof(e),
                }
            }
            ProofFailure::KeyMismatch => {
                metrics::dpop_proof(ProofResult::KeyMismatch);
                Refusal::InvalidToken(Token::DpopKeyMismatch)
            }
            ProofFailure::ReplayStoreUnavailable => {
                metrics::dpop_proof(ProofResult::ReplayStoreUnavailable);
                Refusal::SharedStateUnavailable(SharedCheck::DpopReplay)
            }
        })?;
        metrics::dpop_proof(ProofResult::Ok);
        Ok(proven.jkt)
    }
}

/// RFC 8705 §3: the same thumbprint as this very connection's certificate.
pub fn certificate_binding(state: &FilterState, x5t: &str) -> Result<(), Refusal> {
    let presented = state.client.as_ref().map(|c| c.thumbprint.as_str());
    let presented = presented.ok_or(Refusal::InvalidToken(Token::NoClientCertificate))?;
    if same(x5t.as_bytes(), presented.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::InvalidToken(Token::CertificateMismatch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DpopConfig;
    use crate::request::dpop::test_support::es256;
    use crate::request::filters::test_support::{client, token_with};
    use crate::token::Confirmation;
    use sha2::Digest;

    const HTU: &str = "https://api.example.com/api/transactions";

    fn state(cnf: Confirmation, scheme: Scheme, client_x5t: Option<&str>) -> FilterState {
        FilterState {
            client: client_x5t.map(client),
            token: Some(token_with("t", Some(cnf))),
            scheme: Some(scheme),
            token_hash: Some(sha2::Sha256::digest(b"tok").into()),
            ..Default::default()
        }
    }

    fn req(proof: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/api/transactions", None).unwrap();
        r.insert_header("host", "api.example.com").unwrap();
        if let Some(p) = proof {
            r.insert_header("dpop", p).unwrap();
        }
        r
    }

    fn either() -> Binding {
        Binding { certificate: true, dpop: Some(Arc::new(DpopVerifier::local(DpopConfig::default()))) }
    }

    fn refused(r: Outcome) -> &'static str {
        match r {
            Outcome::Respond(refusal) => refusal.reason().as_str(),
            Outcome::Continue => "passed",
        }
    }

    #[tokio::test]
    async fn each_token_is_checked_the_way_it_is_bound() {
        let key = es256();
        let dpop_cnf = || Confirmation { jkt: Some(key.jkt()), ..Default::default() };
        let cert_cnf = || Confirmation { x5t_s256: Some("abc".into()), ..Default::default() };
        let proof = || key.proof("POST", HTU, "tok", serde_json::Value::Null);
        let f = either();
        assert_eq!(refused(f.run(&req(Some(&proof())), &mut state(dpop_cnf(), Scheme::Dpop, None)).await), "passed");
        assert_eq!(refused(f.run(&req(None), &mut state(cert_cnf(), Scheme::Bearer, Some("abc"))).await), "passed");
        // Downgrades, both ways.
        let mut s = state(dpop_cnf(), Scheme::Bearer, None);
        assert_eq!(refused(f.run(&req(Some(&proof())), &mut s).await), "dpop_token_as_bearer");
        let mut s = state(cert_cnf(), Scheme::Dpop, Some("abc"));
        assert_eq!(refused(f.run(&req(Some(&proof())), &mut s).await), "bearer_token_as_dpop");
        // A proof made with another key than the one the token is bound to.
        let other = es256();
        let foreign = other.proof("POST", HTU, "tok", serde_json::Value::Null);
        let mut s = state(dpop_cnf(), Scheme::Dpop, None);
        assert_eq!(refused(f.run(&req(Some(&foreign)), &mut s).await), "dpop_key_mismatch");
        // No proof at all.
        assert_eq!(refused(f.run(&req(None), &mut state(dpop_cnf(), Scheme::Dpop, None)).await), "dpop_proof_missing");
        // Unbound, and bound in a way the route does not accept.
        let mut s = state(Confirmation::default(), Scheme::Bearer, Some("abc"));
        assert_eq!(refused(f.run(&req(None), &mut s).await), "token_not_bound");
        let dpop_only = Binding { certificate: false, ..either() };
        let mut s = state(cert_cnf(), Scheme::Bearer, Some("abc"));
        assert_eq!(refused(dpop_only.run(&req(None), &mut s).await), "certificate_binding_not_accepted");
        let cert_only = Binding { certificate: true, dpop: None };
        let mut s = state(dpop_cnf(), Scheme::Dpop, None);
        assert_eq!(refused(cert_only.run(&req(Some(&proof())), &mut s).await), "dpop_binding_not_accepted");
        // A certificate-bound token on a connection without a certificate.
        assert_eq!(
            refused(f.run(&req(None), &mut state(cert_cnf(), Scheme::Bearer, None)).await),
            "no_client_certificate"
        );
    }
}
