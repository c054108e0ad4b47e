//! The request target's bytes as the normalisation step checks them: no control characters (raw
//! or escaped), no path spelling that an application server resolves to another path than the one
//! the route and scope were chosen for, and no method override in the query. A pure function over
//! bytes with no dependency on the rest of the gateway but the escape reader beside it
//! ([`super::percent`]), so that both are fuzzed on their own (`fuzz/fuzz_targets/request_target.rs`).

use super::percent::{self, Piece};

/// Query parameters that override the method (Rails, Laravel and Symfony read `_method`), compared
/// lower case.
const METHOD_OVERRIDE_PARAMS: &[&str] =
    &["_method", "x-http-method-override", "x-http-method", "x-method-override", "_httpmethod"];

/// Why a request target was refused; the normalisation step turns each into its refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    ControlCharacter,
    PathEncoding,
    DotSegments,
    PathParameters,
    MethodOverride,
}

/// Control characters (raw, or as pingora's HTTP/1.1 parser escapes them: `%00`-`%1F`, `%7F`),
/// path spellings that an application server resolves to another path than the one the route
/// and scope were chosen for, and method overrides in the query.
pub fn check(raw: &[u8]) -> Result<(), TargetError> {
    if raw.iter().all(|&b| is_plain(b)) {
        // Nothing to decode, no query, no dot, no `;`, no control: no check of `full_check` can fail.
        return Ok(());
    }
    full_check(raw)
}

/// [`check`] without its shortcut for plain targets.
fn full_check(raw: &[u8]) -> Result<(), TargetError> {
    let raw_control = raw.iter().any(|&b| b <= b' ' || b == 0x7f);
    if raw_control || has_encoded_control(raw) {
        return Err(TargetError::ControlCharacter);
    }
    let mut parts = raw.splitn(2, |&b| b == b'?');
    let (path, query) = (parts.next().unwrap_or_default(), parts.next());
    let decoded = decode_path(path).ok_or(TargetError::PathEncoding)?;
    if decoded.chars().any(char::is_control) {
        // C1 controls (U+0080-U+009F), raw or escaped as UTF-8: NEL ends a line for some readers
        // of logs and paths.
        return Err(TargetError::ControlCharacter);
    }
    if has_dot_segments(&decoded) {
        // "/api/../admin" would match the /api/ route here and reach /admin at the API.
        return Err(TargetError::DotSegments);
    }
    if decoded.contains(';') {
        // Tomcat and Jetty drop `;params` from each segment: "/api/x/..;/admin" and
        // "/admin;x/users" reach /admin/ there, whatever route matched here.
        return Err(TargetError::PathParameters);
    }
    if query.is_some_and(has_method_override_param) {
        return Err(TargetError::MethodOverride);
    }
    Ok(())
}

/// The path with its escapes decoded once, or `None` when it holds an escape that servers read
/// differently: a double-encoded one (`%252e`), a bare `%` or IIS's `%u002e`, an encoded slash or
/// backslash (servers that allow them decode them into separators), or bytes that are not UTF-8
/// once decoded (overlong forms such as `%c0%ae` are decoded to `.` by lenient servers).
fn decode_path(path: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(path.len());
    for piece in percent::pieces(path) {
        match piece {
            Piece::Raw(b'\\') => out.push(b'/'),
            Piece::Raw(b) => out.push(b),
            Piece::Escaped(b'%' | b'/' | b'\\') | Piece::StrayPercent => return None,
            Piece::Escaped(b) => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a decoded path has `.` or `..` segments, also with a trailing `;param` or surrounding
/// white space (`..;`, `..%20`), which some servers ignore.
fn has_dot_segments(decoded: &str) -> bool {
    decoded.split('/').any(|seg| {
        let seg = seg.split(';').next().unwrap_or_default().trim_matches(|c: char| c.is_whitespace());
        seg == "." || seg == ".."
    })
}

/// Whether the query names a method-override parameter (`_method=DELETE`).
fn has_method_override_param(query: &[u8]) -> bool {
    query.split(|&b| b == b'&' || b == b';').any(|pair| {
        let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
        let name = decode_path(name).unwrap_or_else(|| String::from_utf8_lossy(name).into_owned());
        let name = name.trim().to_ascii_lowercase();
        METHOD_OVERRIDE_PARAMS.contains(&name.as_str())
            || METHOD_OVERRIDE_PARAMS.contains(&name.replace('_', "-").as_str())
    })
}

/// Bytes of a target that can take part in none of the spellings [`check`] refuses: most
/// targets are made of them only, and are passed without decoding.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'~')
}

fn has_encoded_control(raw: &[u8]) -> bool {
    percent::pieces(raw).any(|p| matches!(p, Piece::Escaped(b) if b < 0x20 || b == 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_kind() {
        for (raw, want) in [
            ("/api/x?q=1", Ok(())),
            ("/api/a%20b", Ok(())),
            ("/api/a b", Err(TargetError::ControlCharacter)),
            ("/api/a%7f", Err(TargetError::ControlCharacter)),
            ("/api/%2", Err(TargetError::PathEncoding)),
            ("/api/%c0%ae", Err(TargetError::PathEncoding)),
            ("/api/a%5cb", Err(TargetError::PathEncoding)),
            ("/api/x\\..\\admin", Err(TargetError::DotSegments)),
            ("/api/%2E%2e/admin", Err(TargetError::DotSegments)),
            ("/api/a;b", Err(TargetError::PathParameters)),
            ("/api/x?%5Fmethod=PUT", Err(TargetError::MethodOverride)),
        ] {
            assert_eq!(check(raw.as_bytes()), want, "{raw}");
        }
    }

    #[test]
    fn plain_targets_pass_as_the_full_check_passes_them() {
        for raw in ["/api/transactions", "/", "/api/a-b_c~d/0123456789/XYZ", "", "//api//x"] {
            assert!(raw.bytes().all(is_plain), "{raw}");
            assert_eq!(full_check(raw.as_bytes()), Ok(()), "{raw}");
        }
        for b in 0..=u8::MAX {
            if is_plain(b) {
                assert!(!matches!(b, b'%' | b'\\' | b'.' | b';' | b'?' | b'&' | b'=') && b > b' ' && b < 0x7f, "{b}");
            }
        }
    }

    #[test]
    fn c1_controls_raw_or_escaped_are_control_characters() {
        for raw in ["/api/a\u{85}b", "/api/a%C2%85b", "/api/%c2%9f", "/:::q\u{8e}"] {
            assert_eq!(check(raw.as_bytes()), Err(TargetError::ControlCharacter), "{raw:?}");
        }
        assert_eq!(check("/api/caf\u{e9}%C2%A0".as_bytes()), Ok(()), "U+00E9 and U+00A0 are no controls");
    }

    #[test]
    fn bytes_that_are_not_utf8_once_decoded_are_refused() {
        assert_eq!(check(b"/api/\xff"), Err(TargetError::PathEncoding));
        assert_eq!(check(b"/api/%ff"), Err(TargetError::PathEncoding));
    }
}
