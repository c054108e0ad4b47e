//! The admin listener's JSON, shared by the service and the `admin` command: what a purge asks
//! for ([`PurgeRequest`]) and what it answers ([`PurgeAnswer`], or an [`AdminError`]).

use crate::token::{PurgeTarget, MIN_TOKEN_ID_CHARS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /purge`: exactly one of `token`, `token_id`, `thumbprint` or `all`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// The access token itself (it is hashed at once and never logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The `token=` value of the access log, or a longer prefix of the token's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Every token bound to this client certificate (`x5t#S256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// Every cached token.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all: bool,
    /// With `thumbprint`: also end that certificate's open connections.
    #[serde(default, skip_serializing_if = "is_false")]
    pub end_connections: bool,
    /// With `token_id`: purge even when the id matches several cached tokens.
    #[serde(default, skip_serializing_if = "is_false")]
    pub several: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why a purge request names no valid target: the listener answers it as `bad_request`, the
/// command refuses it before calling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("name exactly one of token, token_id, thumbprint or all")]
    NotOne,
    #[error("end_connections goes with thumbprint")]
    EndConnectionsWithoutThumbprint,
    #[error("several goes with token_id")]
    SeveralWithoutTokenId,
    #[error("token is empty")]
    EmptyToken,
    #[error("token_id is {MIN_TOKEN_ID_CHARS} to 43 base64url characters, as the access log's token=")]
    TokenId,
    #[error("thumbprint is an x5t#S256: 43 base64url characters")]
    Thumbprint,
}

impl PurgeRequest {
    /// The one target named, or why the request does not name exactly one.
    pub fn target(&self) -> Result<PurgeTarget, TargetError> {
        let named = [self.token.is_some(), self.token_id.is_some(), self.thumbprint.is_some(), self.all];
        if named.iter().filter(|n| **n).count() != 1 {
            return Err(TargetError::NotOne);
        }
        if self.end_connections && self.thumbprint.is_none() {
            return Err(TargetError::EndConnectionsWithoutThumbprint);
        }
        if self.several && self.token_id.is_none() {
            return Err(TargetError::SeveralWithoutTokenId);
        }
        if let Some(token) = &self.token {
            if token.is_empty() {
                return Err(TargetError::EmptyToken);
            }
            return Ok(PurgeTarget::Key(crate::token::cache_key(token)));
        }
        if let Some(id) = &self.token_id {
            return token_id(id).map(PurgeTarget::IdPrefix);
        }
        if let Some(x5t) = &self.thumbprint {
            return thumbprint(x5t).map(PurgeTarget::Thumbprint);
        }
        Ok(PurgeTarget::All)
    }
}

fn base64url(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A prefix of the base64url SHA-256 (43 characters) at least as long as the access log's.
pub fn token_id(id: &str) -> Result<String, TargetError> {
    if !(MIN_TOKEN_ID_CHARS..=43).contains(&id.len()) || !base64url(id) {
        return Err(TargetError::TokenId);
    }
    Ok(id.to_string())
}

/// RFC 8705 `x5t#S256`: base64url of a SHA-256, 43 characters without padding.
pub fn thumbprint(x5t: &str) -> Result<String, TargetError> {
    if x5t.len() != 43 || !base64url(x5t) {
        return Err(TargetError::Thumbprint);
    }
    Ok(x5t.to_string())
}

/// What a purge did on one gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeAnswer {
    /// Cache entries removed, over every introspection section.
    pub purged: u64,
    /// The same per introspection section.
    pub introspection: BTreeMap<String, u64>,
    /// Connections told to end (with `end_connections`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_ended: Option<usize>,
    /// With a cluster: `published` (every replica purges too) or `not_published`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<String>,
}

/// A refused or failed admin call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminError {
    /// `unauthenticated`, `forbidden`, `bad_request`, `ambiguous_token_id`, `not_found`, ...
    pub error: String,
    pub message: String,
    /// With `ambiguous_token_id`: how many cached tokens the id matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Option<PurgeTarget> {
        serde_json::from_str::<PurgeRequest>(json).ok()?.target().ok()
    }

    #[test]
    fn a_request_names_exactly_one_target() {
        assert_eq!(parse(r#"{"all": true}"#), Some(PurgeTarget::All));
        assert_eq!(parse(r#"{"token": "abc"}"#), Some(PurgeTarget::Key(crate::token::cache_key("abc"))));
        assert_eq!(parse(r#"{"token_id": "AbCd-_12"}"#), Some(PurgeTarget::IdPrefix("AbCd-_12".into())));
        let x5t = "a".repeat(43);
        let with_end = format!(r#"{{"thumbprint": "{x5t}", "end_connections": true}}"#);
        assert_eq!(parse(&with_end), Some(PurgeTarget::Thumbprint(x5t)));
        for bad in [
            "{}",
            r#"{"all": true, "token": "abc"}"#,
            r#"{"all": false}"#,
            r#"{"token": ""}"#,
            r#"{"token_id": "short"}"#,
            r#"{"token_id": "not/base64url"}"#,
            r#"{"thumbprint": "tooshort"}"#,
            r#"{"all": true, "end_connections": true}"#,
            r#"{"token": "abc", "several": true}"#,
            r#"{"all": true, "extra": 1}"#,
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
