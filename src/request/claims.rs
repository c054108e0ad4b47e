//! The checks an introspected token's own claims must pass before the gateway vouches for it, in
//! every response mode: `exp` (an integer, not past), `nbf` (not in the future), `token_type` (an
//! access token, when given) and `aud` (one of the configured audiences). A failed check of the
//! token is a 401 with its own reason; a claim of the wrong type makes the whole answer unusable
//! (502), since the identity server is then not speaking RFC 7662.

use crate::config::{ClaimRules, MissingAudience};
use crate::reason::{IdentityAnswer, Token};
use serde_json::{Map, Value};

/// Why the claims were not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// The token is not valid for this API (401 `invalid_token`), with the log reason.
    Refused(Token),
    /// The answer breaks the protocol (502), with the log reason.
    Unusable(IdentityAnswer),
}

/// What the checks found that the rest of the gateway uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub exp: Option<i64>,
    /// The `aud` to put in a JWT the gateway issues: the token's matching audiences, never another.
    pub aud: Option<Value>,
}

/// Checks the claims at `now` (Unix seconds).
pub fn check(claims: &Map<String, Value>, rules: &ClaimRules, now: i64) -> Result<Checked, ClaimError> {
    let leeway = rules.leeway.as_secs() as i64;
    let exp = integer(claims, "exp").map_err(|_| ClaimError::Unusable(IdentityAnswer::BadExp))?;
    if exp.is_some_and(|exp| exp + leeway <= now) {
        return Err(ClaimError::Refused(Token::Expired));
    }
    let nbf = integer(claims, "nbf").map_err(|_| ClaimError::Unusable(IdentityAnswer::BadNbf))?;
    if nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(ClaimError::Refused(Token::NotYetValid));
    }
    if let Some(t) = claims.get("token_type") {
        let t = t.as_str().unwrap_or_default();
        // RFC 9449 §6.2: a DPoP token is an access token bound to a key, which `cnf.jkt` names;
        // without it there is nothing to check a proof against.
        let dpop = t.eq_ignore_ascii_case("dpop");
        if dpop && claims.get("cnf").and_then(|c| c.get("jkt")).and_then(Value::as_str).is_none() {
            return Err(ClaimError::Refused(Token::DpopTokenWithoutJkt));
        }
        if !dpop && !is_access_token_type(t) {
            return Err(ClaimError::Refused(Token::BadType));
        }
    }
    Ok(Checked { exp, aud: audience(claims.get("aud"), rules)? })
}

/// `Ok(None)` when absent; `Err` when present but not an integer (a string, a float, ...).
fn integer(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, ()> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(()),
    }
}

/// RFC 7662 `token_type` values that name an access token presented as a bearer of a
/// certificate-bound token. `DPoP` is refused: the gateway checks no DPoP proof.
fn is_access_token_type(t: &str) -> bool {
    ["bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token"]
        .iter()
        .any(|a| t.eq_ignore_ascii_case(a))
}

/// The audiences to forward, or why the token is not for this API.
fn audience(aud: Option<&Value>, rules: &ClaimRules) -> Result<Option<Value>, ClaimError> {
    let given: Vec<&str> = match aud {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(ClaimError::Unusable(IdentityAnswer::BadAud)),
    };
    if rules.audiences.is_empty() {
        return Ok(aud.filter(|a| !a.is_null()).cloned());
    }
    if given.is_empty() {
        return match rules.missing_audience {
            MissingAudience::Refuse => Err(ClaimError::Refused(Token::NoAudience)),
            MissingAudience::Accept => Ok(Some(one_or_many(rules.audiences.iter().map(String::as_str).collect()))),
        };
    }
    let matching: Vec<&str> = given.into_iter().filter(|a| rules.audiences.iter().any(|r| r == a)).collect();
    if matching.is_empty() {
        return Err(ClaimError::Refused(Token::BadAudience));
    }
    Ok(Some(one_or_many(matching)))
}

fn one_or_many(v: Vec<&str>) -> Value {
    match v.as_slice() {
        [one] => Value::String(one.to_string()),
        _ => Value::Array(v.into_iter().map(|s| Value::String(s.to_string())).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    const NOW: i64 = 1_800_000_000;

    fn rules(audiences: &[&str]) -> ClaimRules {
        ClaimRules {
            audiences: audiences.iter().map(|s| s.to_string()).collect(),
            missing_audience: MissingAudience::Refuse,
            leeway: Duration::from_secs(30),
        }
    }

    fn run(claims: Value, r: &ClaimRules) -> Result<Checked, ClaimError> {
        check(claims.as_object().unwrap(), r, NOW)
    }

    #[test]
    fn exp_must_be_an_integer_in_the_future() {
        let r = rules(&[]);
        assert_eq!(run(json!({ "exp": "1" }), &r), Err(ClaimError::Unusable(IdentityAnswer::BadExp)));
        assert_eq!(run(json!({ "exp": 1.5e9 }), &r), Err(ClaimError::Unusable(IdentityAnswer::BadExp)));
        assert_eq!(run(json!({ "exp": NOW - 31 }), &r), Err(ClaimError::Refused(Token::Expired)));
        assert_eq!(run(json!({ "exp": NOW + 60 }), &r).unwrap().exp, Some(NOW + 60));
        assert_eq!(run(json!({}), &r).unwrap().exp, None, "no exp: the gateway's own lifetime applies");
    }

    #[test]
    fn nbf_in_the_future_beyond_the_leeway_is_refused() {
        let r = rules(&[]);
        assert_eq!(run(json!({ "nbf": NOW + 31 }), &r), Err(ClaimError::Refused(Token::NotYetValid)));
        assert!(run(json!({ "nbf": NOW + 29 }), &r).is_ok(), "within the leeway");
        assert!(run(json!({ "nbf": NOW - 100 }), &r).is_ok());
        assert_eq!(run(json!({ "nbf": "soon" }), &r), Err(ClaimError::Unusable(IdentityAnswer::BadNbf)));
    }

    #[test]
    fn only_access_tokens_are_accepted() {
        let r = rules(&[]);
        for ok in ["Bearer", "bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token"] {
            assert!(run(json!({ "token_type": ok }), &r).is_ok(), "{ok}");
        }
        for bad in [json!("refresh_token"), json!("urn:ietf:params:oauth:token-type:refresh_token"), json!(1)] {
            assert_eq!(run(json!({ "token_type": bad }), &r), Err(ClaimError::Refused(Token::BadType)), "{bad}");
        }
        assert!(run(json!({}), &r).is_ok(), "token_type is optional");
        assert!(run(json!({ "token_type": "DPoP", "cnf": { "jkt": "abc" } }), &r).is_ok());
        let unbound = run(json!({ "token_type": "DPoP" }), &r);
        assert_eq!(unbound, Err(ClaimError::Refused(Token::DpopTokenWithoutJkt)));
    }

    #[test]
    fn audiences_as_string_or_array_and_only_matching_ones_are_forwarded() {
        let r = rules(&["api.example.com"]);
        assert_eq!(run(json!({ "aud": "api.example.com" }), &r).unwrap().aud, Some(json!("api.example.com")));
        let both = run(json!({ "aud": ["other-api.example.com", "api.example.com"] }), &r).unwrap();
        assert_eq!(both.aud, Some(json!("api.example.com")), "the other API's audience is not passed on");
        assert_eq!(run(json!({ "aud": "other-api.example.com" }), &r), Err(ClaimError::Refused(Token::BadAudience)));
        assert_eq!(run(json!({ "aud": ["x", "y"] }), &r), Err(ClaimError::Refused(Token::BadAudience)));
        assert_eq!(run(json!({ "aud": 7 }), &r), Err(ClaimError::Unusable(IdentityAnswer::BadAud)));
    }

    #[test]
    fn a_missing_audience_is_refused_unless_accepted_explicitly() {
        let mut r = rules(&["api.example.com"]);
        assert_eq!(run(json!({}), &r), Err(ClaimError::Refused(Token::NoAudience)));
        assert_eq!(run(json!({ "aud": [] }), &r), Err(ClaimError::Refused(Token::NoAudience)));
        r.missing_audience = MissingAudience::Accept;
        assert_eq!(run(json!({}), &r).unwrap().aud, Some(json!("api.example.com")));
        // Without audiences nothing is checked and the token's aud, if any, is kept as it is.
        assert_eq!(run(json!({ "aud": "other" }), &rules(&[])).unwrap().aud, Some(json!("other")));
        assert_eq!(run(json!({}), &rules(&[])).unwrap().aud, None);
    }
}
