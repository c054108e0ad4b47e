//! CORS for routes that trust web origins: which `Origin` may read the answer, and the pre-flight
//! answer (pre-flights carry no token, so the gateway answers them itself).

use crate::config::CorsConfig;
use pingora_http::{RequestHeader, ResponseHeader};

/// The request's `Origin`, when the route trusts it.
pub fn allowed_origin(req: &RequestHeader, cors: &CorsConfig) -> Option<String> {
    req.headers.get("origin").and_then(|o| o.to_str().ok()).filter(|o| cors.allows(o)).map(str::to_string)
}

pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == http::Method::OPTIONS && req.headers.contains_key("access-control-request-method")
}

/// The 204 answer to an allowed pre-flight, with `common` headers (interaction id, origin).
pub fn preflight_answer(cors: &CorsConfig, common: &[(&'static str, &str)]) -> pingora_core::Result<ResponseHeader> {
    let mut h = ResponseHeader::build(204, Some(8))?;
    for (name, value) in common {
        h.insert_header(*name, *value)?;
    }
    h.insert_header("access-control-allow-methods", &cors.methods)?;
    h.insert_header("access-control-allow-headers", &cors.headers)?;
    h.insert_header("access-control-max-age", &cors.max_age)?;
    h.insert_header("content-length", "0")?;
    Ok(h)
}
