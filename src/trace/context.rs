//! W3C Trace Context's two headers as text: `traceparent` (version, trace id, parent id, flags) and
//! `tracestate` (a list of vendor keys and values), parsed as strictly as the recommendation writes
//! them, and rendered back. Only a trusted caller's headers reach this, but they are still bytes
//! from the network that are forwarded to the API, so nothing loosely read goes on. Pure functions
//! with no dependency on the rest of the gateway, so that they are fuzzed on their own
//! (`fuzz/fuzz_targets/trace_context.rs`).

/// `00-` + 32 + `-` + 16 + `-` + 2: a version-00 `traceparent`, and the prefix every version shares.
const TRACEPARENT_LEN: usize = 55;
/// At most this many list members in a `tracestate`.
const MAX_MEMBERS: usize = 32;
/// Keys and values are at most this long.
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 256;

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub version: u8,
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// `version-traceid-parentid-flags` in lower-case hex; a version after 00 may append fields after
/// a `-`, which are ignored. Version `ff` and all-zero ids are invalid.
pub fn parse_traceparent(text: &str) -> Option<TraceParent> {
    let b = text.as_bytes();
    let prefix = b.get(..TRACEPARENT_LEN)?;
    if [prefix[2], prefix[35], prefix[52]] != [b'-'; 3] {
        return None;
    }
    let [version] = lower_hex::<1>(&prefix[..2])?;
    let more = &b[TRACEPARENT_LEN..];
    let ends_right = match version {
        0 => more.is_empty(),
        0xff => false,
        _ => more.is_empty() || more[0] == b'-',
    };
    let trace_id = lower_hex::<16>(&prefix[3..35])?;
    let parent_id = lower_hex::<8>(&prefix[36..52])?;
    let [flags] = lower_hex::<1>(&prefix[53..55])?;
    let valid = ends_right && trace_id != [0; 16] && parent_id != [0; 8];
    valid.then_some(TraceParent { version, trace_id, parent_id, flags })
}

impl TraceParent {
    /// The header's text (its version's four fields).
    pub fn render(&self) -> String {
        format!("{:02x}-{}-{}-{:02x}", self.version, hex(&self.trace_id), hex(&self.parent_id), self.flags)
    }
}

/// `N` bytes from exactly `2N` lower-case hex digits.
fn lower_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `tracestate`'s members in order, or `None` when any member is invalid, a key repeats or
/// there are more than 32 (W3C: a state that does not parse is not propagated at all). Empty
/// members and the optional white space around members are dropped.
pub fn parse_tracestate(text: &str) -> Option<Vec<(&str, &str)>> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    for member in text.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()) {
        let (key, value) = member.split_once('=')?;
        if !valid_key(key) || !valid_value(value) || members.iter().any(|(k, _)| *k == key) {
            return None;
        }
        members.push((key, value));
    }
    (members.len() <= MAX_MEMBERS).then_some(members)
}

/// The header's text: members joined by commas, without white space around them.
pub fn render_tracestate(members: &[(&str, &str)]) -> String {
    members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `simple-key` or `tenant-id@system-id`: lower-case letters, digits and `_-*/`, starting with a
/// letter (a tenant id may start with a digit), with at most 241 and 14 characters around the `@`.
fn valid_key(key: &str) -> bool {
    let rest_ok = |s: &str| s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b));
    let starts = |s: &str, digit_too: bool| {
        s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || (digit_too && b.is_ascii_digit()))
    };
    match key.split_once('@') {
        None => key.len() <= MAX_KEY && starts(key, false) && rest_ok(key),
        Some((tenant, system)) => {
            tenant.len() <= 241
                && system.len() <= 14
                && starts(tenant, true)
                && starts(system, false)
                && rest_ok(tenant)
                && rest_ok(system)
        }
    }
}

/// 1 to 256 printable ASCII characters other than `,` and `=`, not ending in a space.
fn valid_value(value: &str) -> bool {
    let printable = value.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=');
    !value.is_empty() && value.len() <= MAX_VALUE && printable && !value.ends_with(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_is_read_and_rendered_back() {
        let p = parse_traceparent(PARENT).unwrap();
        assert_eq!((p.version, p.flags, p.parent_id[7]), (0, 1, 0xb7));
        assert_eq!(p.render(), PARENT);
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes-next";
        assert_eq!(parse_traceparent(later).unwrap().render(), later[..TRACEPARENT_LEN]);
    }

    #[test]
    fn a_traceparent_is_refused_unless_written_exactly() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_tracestate_is_read_as_members_and_rendered_without_white_space() {
        let m = parse_tracestate(" rojo=00f067aa0ba902b7 ,,\tcongo=t61rcWkgMzE, tenant@vendor=a b").unwrap();
        assert_eq!(m, [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE"), ("tenant@vendor", "a b")]);
        assert_eq!(render_tracestate(&m), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,tenant@vendor=a b");
        assert_eq!(parse_tracestate(""), Some(vec![]));
    }

    #[test]
    fn a_tracestate_with_any_bad_member_is_refused() {
        let many = (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        for bad in [
            "novalue",
            "Upper=x",
            "1digit=x",
            "k=",
            "k=a,k=b",
            "k=a=b",
            "k=tab\tinside",
            "@vendor=x",
            "tenant@=x",
            "tenant@fifteen-letters=x",
            "k=\u{e9}",
            &many,
        ] {
            assert_eq!(parse_tracestate(bad), None, "{bad:?}");
        }
    }
}
