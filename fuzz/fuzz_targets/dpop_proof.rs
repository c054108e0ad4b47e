//! Fuzzes what the DPoP verifier reads before it trusts any key: the proof's compact form, its
//! header and claims, and the form `htu` is compared in. Properties: a split proof joins back to
//! its text; a decoded part re-encodes to the same object; a normalised `htu` is a fixpoint, is
//! what the lenient parser also gives, and has no userinfo, query, fragment, white space, control
//! character, backslash or dot segment.
#![no_main]

#[path = "../../src/request/dpop/parse.rs"]
mod parse;
#[path = "../../src/request/normalize/percent.rs"]
mod percent;

use base64::Engine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check_proof(text);
    check_htu(text);
});

fn check_proof(text: &str) {
    let Some(parts) = parse::split(text) else {
        assert!(text.len() > parse::MAX_PROOF_BYTES || text.split('.').count() != 3, "{text:?}");
        return;
    };
    assert_eq!(format!("{}.{}.{}", parts.header, parts.claims, parts.signature), text);
    for part in [parts.header, parts.claims] {
        let Some(json) = parse::decode_json(part) else { continue };
        let again = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap());
        assert_eq!(parse::decode_json(&again).as_ref(), Some(&json));
        if let Some(htu) = json.get("htu").and_then(|v| v.as_str()) {
            check_htu(htu);
        }
    }
}

fn check_htu(htu: &str) {
    let Some(n) = parse::normalize_htu(htu) else { return };
    assert_eq!(parse::normalize_uri(htu).as_deref(), Some(n.as_str()), "the lenient parser reads {htu:?} otherwise");
    assert_eq!(parse::normalize_htu(&n).as_deref(), Some(n.as_str()), "{htu:?} -> {n:?} is no fixpoint");
    let (scheme, rest) = n.split_once("://").unwrap();
    assert!(scheme == "https" || scheme == "http", "{n:?}");
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    assert!(!authority.is_empty() && !authority.contains('@') && !authority.ends_with(':'), "{n:?}");
    assert!(!n.contains(['?', '#', '\\']) && !n.chars().any(|c| c.is_control() || c.is_whitespace()), "{n:?}");
    assert!(!path.split('/').any(|s| s == "." || s == ".."), "{htu:?} -> {n:?} has a dot segment");
}
