//! Fuzzes the request-target check of the normalisation step. Properties of an accepted target:
//! no control character, raw or escaped; a path whose escapes all decode, to UTF-8 without control
//! characters, `;` or dot segments (also with `\` as a separator and white space around them); and
//! a WHATWG parser (which reads `%2e` as a dot and `\` as `/`) keeps every one of its segments.
#![no_main]

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

/// Every `%XX` decoded, `None` at a `%` without two hex digits.
fn percent_decode(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'%' {
            out.push(b);
            rest = tail;
            continue;
        }
        let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
        out.push(u8::from_str_radix(hex, 16).ok().filter(|_| hex.bytes().all(|h| h.is_ascii_hexdigit()))?);
        rest = &tail[2..];
    }
    Some(out)
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
