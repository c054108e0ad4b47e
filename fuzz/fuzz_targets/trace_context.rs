//! Fuzzes the W3C trace context parser. Properties: a parsed `traceparent` renders back to the
//! first 55 characters of its text, lower case (and version 00 has no more); any `traceparent`
//! rendered from fields parses back to them unless its version or ids are invalid; a parsed
//! `tracestate` renders to printable text no longer than its own that parses to the same members.
#![no_main]

#[path = "../../src/trace/context.rs"]
mod context;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        traceparent_text(text);
        tracestate_text(text);
    }
    traceparent_fields(data);
});

fn traceparent_text(text: &str) {
    let Some(p) = context::parse_traceparent(text) else { return };
    assert_eq!(p.render(), text[..55].to_ascii_lowercase(), "{text:?}");
    assert!(p.version != 0 || text.len() == 55, "{text:?}");
    assert!(p.version != 0xff && p.trace_id != [0; 16] && p.parent_id != [0; 8], "{text:?}");
}

fn traceparent_fields(data: &[u8]) {
    let Some(fields) = data.get(..26) else { return };
    let p = context::TraceParent {
        version: fields[0],
        trace_id: fields[1..17].try_into().unwrap(),
        parent_id: fields[17..25].try_into().unwrap(),
        flags: fields[25],
    };
    let valid = p.version != 0xff && p.trace_id != [0; 16] && p.parent_id != [0; 8];
    assert_eq!(context::parse_traceparent(&p.render()), valid.then_some(p), "{p:?}");
}

fn tracestate_text(text: &str) {
    let Some(members) = context::parse_tracestate(text) else { return };
    assert!(members.len() <= 32);
    let rendered = context::render_tracestate(&members);
    assert!(rendered.len() <= text.len(), "{text:?} -> {rendered:?}");
    assert!(rendered.bytes().all(|b| (0x20..0x7f).contains(&b)), "{rendered:?}");
    assert_eq!(context::parse_tracestate(&rendered).as_ref(), Some(&members), "{text:?} -> {rendered:?}");
}
