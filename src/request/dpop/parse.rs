//! What is read of a DPoP proof before any key is trusted: its three compact-JWS parts and their
//! base64url JSON; and the comparison form of `htu` (RFC 3986 normalisation, refusing what only a
//! lenient parser forgives). Pure functions over text with no dependency on the rest of the
//! gateway but the escape reader of the request target (`request::normalize::percent`, which the
//! parent module names `percent`), so that they are fuzzed on their own
//! (`fuzz/fuzz_targets/dpop_proof.rs`, which includes both files).

use super::percent::{self, Piece};
use base64::Engine;
use serde_json::{Map, Value};

/// A proof longer than this is refused before it is decoded (an RSA-4096 proof is about 1.5 KiB).
pub const MAX_PROOF_BYTES: usize = 8 * 1024;

/// A JSON object: a JWS header or claims set.
pub type Json = Map<String, Value>;

/// The three base64url parts of a compact JWS, not yet decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compact<'a> {
    pub header: &'a str,
    pub claims: &'a str,
    pub signature: &'a str,
}

/// A proof of bounded size in exactly three dot-separated parts.
pub fn split(proof: &str) -> Option<Compact<'_>> {
    if proof.len() > MAX_PROOF_BYTES {
        return None;
    }
    let mut parts = proof.split('.');
    let compact = Compact { header: parts.next()?, claims: parts.next()?, signature: parts.next()? };
    parts.next().is_none().then_some(compact)
}

/// A header or claims part: unpadded base64url of a JSON object.
pub fn decode_json(part: &str) -> Option<Json> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `htu` in the form it is compared in, or `None` when it is not an absolute `http(s)` URI as RFC
/// 3986 writes one. The WHATWG parser behind [`normalize_uri`] forgives white space and control
/// characters (dropped), `\` (read as `/`), userinfo, an empty port and missing slashes; a proof
/// that needs forgiving names its target ambiguously, so it names none.
pub fn normalize_htu(htu: &str) -> Option<String> {
    if htu.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\') {
        return None;
    }
    let (scheme, rest) = htu.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.ends_with(':') {
        return None;
    }
    normalize_uri(htu)
}

/// RFC 3986 §6.2.2 syntax-based normalisation (case, percent-encoding, dot segments) and §6.2.3
/// scheme-based (default port, empty path), without query and fragment (RFC 9449 §4.3).
pub fn normalize_uri(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("{}://{host}{port}{}", url.scheme(), normalize_percent(url.path())))
}

/// Decodes percent-encoded unreserved characters, upper-cases the hex of the others and encodes a
/// `%` that starts no escape (which the WHATWG parser keeps): otherwise `%c%39` would become `%c9`,
/// an escape that normalises again to `%C9`.
fn normalize_percent(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for piece in percent::pieces(path.as_bytes()) {
        match piece {
            Piece::Escaped(v) if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => out.push(v as char),
            Piece::Escaped(v) => out.push_str(&format!("%{v:02X}")),
            Piece::StrayPercent => out.push_str("%25"),
            Piece::Raw(b) => out.push(b as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_has_three_parts_and_a_bounded_size() {
        let c = split("aa.bb.cc").unwrap();
        assert_eq!((c.header, c.claims, c.signature), ("aa", "bb", "cc"));
        assert!(split("aa..").is_some(), "empty parts are the decoder's to refuse");
        for bad in ["", "a.b", "a.b.c.d", "abc"] {
            assert_eq!(split(bad), None, "{bad}");
        }
        assert_eq!(split(&format!("{}.b.c", "a".repeat(MAX_PROOF_BYTES))), None);
    }

    #[test]
    fn parts_are_unpadded_base64url_json_objects() {
        assert_eq!(decode_json("eyJhIjoxfQ").unwrap()["a"], 1);
        for bad in ["eyJhIjoxfQ==", "WzFd", "!!", "eyJhIjox"] {
            assert_eq!(decode_json(bad), None, "{bad}");
        }
    }

    #[test]
    fn htu_is_normalised() {
        for (htu, want) in [
            ("HTTPS://API.Example.com:443/api/%7Etransactions", "https://api.example.com/api/~transactions"),
            ("https://api.example.com:8443/api/x?q=1#f", "https://api.example.com:8443/api/x"),
            ("https://api.example.com/api/a%2fb", "https://api.example.com/api/a%2Fb"),
            ("https://api.example.com", "https://api.example.com/"),
            ("https://api.example.com/a/./b/../c", "https://api.example.com/a/c"),
            ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ] {
            assert_eq!(normalize_htu(htu).as_deref(), Some(want), "{htu}");
        }
    }

    #[test]
    fn a_percent_that_starts_no_escape_is_encoded_so_that_normalising_twice_changes_nothing() {
        for (uri, want) in [
            ("https://h/%c%39Ati", "https://h/%25c9Ati"),
            ("https://h/50%", "https://h/50%25"),
            ("https://h/%%41", "https://h/%25A"),
        ] {
            assert_eq!(normalize_uri(uri).as_deref(), Some(want), "{uri}");
            assert_eq!(normalize_uri(want).as_deref(), Some(want), "{want}");
        }
    }

    /// `%+1` is no escape (RFC 3986: `%` and two hex digits), though `u8::from_str_radix` would
    /// read `+1` as a number.
    #[test]
    fn a_sign_after_a_percent_is_no_hex_digit() {
        assert_eq!(normalize_uri("https://h/%+1%-1").as_deref(), Some("https://h/%25+1%25-1"));
    }

    #[test]
    fn each_refused_htu_is_one_the_lenient_parser_reads_as_the_plain_uri() {
        let plain = normalize_uri("https://api.example.com:8443/api/x");
        for htu in [
            "https://u:p@api.example.com:8443/api/x",
            "https://api.example.com:8443\\api/x",
            "https://api.example.com:8443/api/\tx",
            " https://api.example.com:8443/api/x\r\n",
            "https:api.example.com:8443/api/x",
        ] {
            assert_eq!(normalize_uri(htu), plain, "{htu:?}");
            assert_eq!(normalize_htu(htu), None, "{htu:?}");
        }
    }

    #[test]
    fn htu_with_userinfo_is_refused() {
        for htu in ["https://u:p@api.example.com/p", "https://u@api.example.com/p", "https://@api.example.com/p"] {
            assert_eq!(normalize_htu(htu), None, "{htu}");
        }
    }

    #[test]
    fn htu_with_a_backslash_is_refused() {
        for htu in ["https://api.example.com\\p", "https://api.example.com/a\\..\\p", "https:\\\\api.example.com/p"] {
            assert_eq!(normalize_htu(htu), None, "{htu}");
        }
    }

    #[test]
    fn htu_with_white_space_or_a_control_character_is_refused() {
        for htu in [
            "https://api.example.com/a\tb",
            "https://api.example.com/a\rb",
            "https://api.example.com/a\nb",
            "https://api.example.com/a b",
            " https://api.example.com/p",
            "https://api.example.com/p\t",
            "https://api.example.com/a\u{0}b",
            "https://api.example.com/a\u{7f}b",
            "https://api.example.com/a\u{85}b",
            "https://api.example.com/a\u{a0}b",
        ] {
            assert_eq!(normalize_htu(htu), None, "{htu:?}");
        }
    }

    #[test]
    fn htu_with_an_empty_port_is_refused() {
        for htu in ["https://api.example.com:/p", "https://[::1]:/p", "https://api.example.com:"] {
            assert_eq!(normalize_htu(htu), None, "{htu}");
        }
    }

    #[test]
    fn htu_without_an_authority_is_refused() {
        for htu in ["https:api.example.com/p", "https:/api.example.com/p", "https:///api.example.com/p", "ftp://h/p"] {
            assert_eq!(normalize_htu(htu), None, "{htu}");
        }
    }
}
