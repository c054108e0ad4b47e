//! The access log: one line per request, as `key=value` text or as one JSON object (for log
//! pipelines). Never a token or a JWT: the token appears as its hash prefix, the client as its
//! certificate subject and a thumbprint prefix.
//!
//! A line is one line to every reader: control characters (C0, DEL, C1 such as U+0085 NEL) and the
//! Unicode line and paragraph separators U+2028 and U+2029 are escaped in every field, in both
//! forms, whoever chose the text (a client chooses the path).

use crate::reason::{Cache, Party, Reason, RefusedBy};
use serde::Serialize;
use std::borrow::Cow;

/// One request's line. Built only when the `access` log target is enabled.
#[derive(Debug, Serialize)]
pub struct AccessLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub client: Option<&'a str>,
    pub x5t: Option<&'a str>,
    pub token: Option<&'a str>,
    pub cache: Option<Cache>,
    pub refused_by: Option<RefusedBy>,
    pub reason: Option<Reason>,
    pub ended_by: Party,
    pub interaction_id: &'a str,
    pub error: Option<&'a str>,
    /// The backend of the last attempt, and how many attempts before it failed (retries).
    pub backend: Option<String>,
    pub retries: usize,
}

impl AccessLine<'_> {
    pub fn json(&self) -> String {
        // serde_json escapes C0 controls, `"` and `\` only. What else breaks a line can appear only
        // inside a string of the output, where a JSON escape means the same character.
        let json = serde_json::to_string(self).unwrap_or_default();
        match json.chars().any(breaks_a_line) {
            false => json,
            true => json.chars().fold(String::with_capacity(json.len() + 8), |mut out, c| {
                match breaks_a_line(c) {
                    true => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    false => out.push(c),
                }
                out
            }),
        }
    }

    pub fn text(&self) -> String {
        let or_dash = |v: Option<&str>| escaped(v.unwrap_or("-")).into_owned();
        format!(
            "method={} path={} status={} duration_ms={:.2} upstream_ms={} client=\"{}\" x5t={} token={} cache={} refused_by={} reason={} ended_by={} interaction_id={} error={} backend={} retries={}",
            escaped(self.method),
            escaped(self.path),
            self.status,
            self.duration_ms,
            self.upstream_ms.map(|d| format!("{d:.2}")).unwrap_or_else(|| "-".into()),
            or_dash(self.client),
            or_dash(self.x5t),
            or_dash(self.token),
            or_dash(self.cache.map(Cache::as_str)),
            or_dash(self.refused_by.map(RefusedBy::as_str)),
            or_dash(self.reason.map(Reason::as_str)),
            self.ended_by.as_str(),
            escaped(self.interaction_id),
            or_dash(self.error),
            self.backend.as_deref().unwrap_or("-"),
            self.retries,
        )
    }
}

/// Characters that some reader takes for the end of a line, or that hide what follows.
fn breaks_a_line(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` with each such character as `\u{..}`; borrowed when there is none (nearly always).
fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(breaks_a_line) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().map(|c| if breaks_a_line(c) { c.escape_unicode().to_string() } else { c.into() }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_carry_the_same_fields() {
        let line = AccessLine {
            method: "POST",
            path: "/api/x",
            status: 401,
            duration_ms: 1.5,
            upstream_ms: None,
            client: Some("CN=demo-partner"),
            x5t: Some("abcdefgh"),
            token: Some("tok123"),
            cache: Some(Cache::Miss),
            refused_by: Some(RefusedBy::Filter("phantom_token")),
            reason: Some(Reason::Token(crate::reason::Token::InactiveToken)),
            ended_by: Party::Gateway,
            interaction_id: "c770aef3-6784-41f7-8e0e-ff5f97bddb3a",
            error: None,
            backend: None,
            retries: 0,
        };
        let text = line.text();
        assert!(text.starts_with("method=POST path=/api/x status=401 duration_ms=1.50 upstream_ms=-"), "{text}");
        assert!(text.contains("client=\"CN=demo-partner\" x5t=abcdefgh token=tok123"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&line.json()).unwrap();
        assert_eq!(json["status"], 401);
        assert_eq!(json["reason"], "inactive_token");
        assert_eq!(json["upstream_ms"], serde_json::Value::Null);
    }
}

#[cfg(test)]
mod escape_tests {
    use super::*;

    #[test]
    fn nothing_breaks_a_line_in_either_form() {
        let path = "/api/a\u{85}b\u{2028}c\u{2029}d\re\u{7f}f\u{9b}g";
        let line = AccessLine {
            method: "GET",
            path,
            status: 404,
            duration_ms: 0.1,
            upstream_ms: None,
            client: Some("CN=x\u{2028}status=200"),
            x5t: None,
            token: None,
            cache: None,
            refused_by: Some(RefusedBy::Router),
            reason: Some(Reason::NoRoute),
            ended_by: Party::Gateway,
            interaction_id: "i",
            error: None,
            backend: None,
            retries: 0,
        };
        let text = line.text();
        assert!(text.contains(r"path=/api/a\u{85}b\u{2028}c\u{2029}d\u{d}e\u{7f}f\u{9b}g "), "{text}");
        assert!(text.contains(r#"client="CN=x\u{2028}status=200""#), "{text}");
        let json = line.json();
        for line in [&text, &json] {
            assert!(!line.chars().any(breaks_a_line), "{line:?}");
        }
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["path"], path, "the JSON escapes read back as the characters");
        assert_eq!(escaped("/api/plain"), Cow::Borrowed("/api/plain"));
    }
}
