//! The access log: one line per request, as `key=value` text or as one JSON object (for log
//! pipelines). Never a token or a JWT: the token appears as its hash prefix, the client as its
//! certificate subject and a thumbprint prefix.

use serde::Serialize;

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
    pub cache: Option<&'a str>,
    pub refused_by: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub ended_by: &'a str,
    pub interaction_id: &'a str,
    pub error: Option<&'a str>,
}

impl AccessLine<'_> {
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        let or_dash = |v: Option<&str>| v.unwrap_or("-").to_string();
        format!(
            "method={} path={} status={} duration_ms={:.2} upstream_ms={} client=\"{}\" x5t={} token={} cache={} refused_by={} reason={} ended_by={} interaction_id={} error={}",
            self.method,
            self.path,
            self.status,
            self.duration_ms,
            self.upstream_ms.map(|d| format!("{d:.2}")).unwrap_or_else(|| "-".into()),
            or_dash(self.client),
            or_dash(self.x5t),
            or_dash(self.token),
            or_dash(self.cache),
            or_dash(self.refused_by),
            or_dash(self.reason),
            self.ended_by,
            self.interaction_id,
            or_dash(self.error),
        )
    }
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
            cache: Some("miss"),
            refused_by: Some("phantom_token"),
            reason: Some("inactive_token"),
            ended_by: "gateway",
            interaction_id: "c770aef3-6784-41f7-8e0e-ff5f97bddb3a",
            error: None,
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
