//! Fuzzes the ClientHello SNI parser: it must never panic, and "need more bytes" must always ask
//! for more than it was given.
#![no_main]

#[path = "../../src/connection/sni.rs"]
#[allow(dead_code)]
mod sni;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for max in [512usize, 16 * 1024] {
        match sni::parse(data, max) {
            sni::Hello::NeedMore(n) => assert!(n > data.len()),
            sni::Hello::Sni(name) => assert!(!name.is_empty() && name.len() <= 253),
            sni::Hello::NoSni | sni::Hello::NotTls(_) => {}
        }
    }
});
