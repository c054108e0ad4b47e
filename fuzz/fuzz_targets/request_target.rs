//! Fuzzes the request-target check of the normalisation step. Properties of an accepted target:
//! no control character, raw or escaped; a path whose escapes all decode, to UTF-8 without control
//! characters, `;` or dot segments (also with `\` as a separator and white space around them); and
//! a WHATWG parser (which reads `%2e` as a dot and `\` as `/`) keeps every one of its segments.
#![no_main]

#[path = "../../src/request/normalize/percent.rs"]
mod percent;
#[path = "../../src/request/normalize/target.rs"]
mod target;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    if target::check(raw).is_err() {
        return;
    }
    assert!(!raw.iter().any(|&b| b <= b' ' || b == 0x7f), "{raw:?}");
    let path = raw.split(|&b| b == b'?').next().unwrap_or_default();
    let decoded = percent_decode(path).expect("an accepted path's escapes decode");
    let decoded = String::from_utf8(decoded).expect("an accepted path is UTF-8");
    assert!(!decoded.chars().any(char::is_control), "{decoded:?}");
    assert!(!decoded.contains(';'), "{decoded:?}");
    for segment in decoded.split(['/', '\\']).map(str::trim) {
        assert!(segment != "." && segment != "..", "{decoded:?}");
    }
    whatwg_keeps_every_segment(path);
});

/// Every `%XX` decoded, `None` at a `%` without two hex digits. Decoded by the `percent-encoding`
/// crate, not by the gateway's own reader of escapes, which is part of what is checked.
fn percent_decode(path: &[u8]) -> Option<Vec<u8>> {
    let whole = |i: usize| path.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
    let every_escape_whole = path.iter().enumerate().all(|(i, &b)| b != b'%' || whole(i));
    every_escape_whole.then(|| percent_encoding::percent_decode(path).collect())
}

fn whatwg_keeps_every_segment(path: &[u8]) {
    let Ok(path) = std::str::from_utf8(path) else { return };
    if !path.starts_with('/') || path.contains('#') {
        return;
    }
    let Ok(url) = url::Url::parse(&format!("https://h{path}")) else { return };
    let ours = path.split(['/', '\\']).count();
    assert_eq!(url.path().split('/').count(), ours, "{path:?} is {:?} to a WHATWG parser", url.path());
}
