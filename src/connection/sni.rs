//! TLS ClientHello peeking: finds the SNI host name in the first bytes of a connection without
//! decrypting or consuming anything.
//!
//! The parser is pure and incremental: it is handed everything read so far and says whether it needs
//! more bytes, whether the bytes are not a TLS handshake at all, or what the server name is. It
//! reassembles a ClientHello split across several TLS records (RFC 8446 §5.1 allows that, and large
//! post-quantum key shares make it common) and stops at a caller-given size cap.

/// What the bytes seen so far say about the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// The ClientHello is not complete yet: at least this many bytes in total are needed.
    NeedMore(usize),
    /// A complete ClientHello with a `server_name` extension carrying this host name (lower case).
    Sni(String),
    /// A complete ClientHello without a usable `server_name` extension.
    NoSni,
    /// Not a TLS handshake, a malformed one, or one larger than the cap: close the connection.
    NotTls(&'static str),
}

/// Why the bytes are not a ClientHello the gateway reads. The parser is also built alone by the
/// fuzzer, so this stays a plain enum of std.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    NotHandshake,
    UnknownVersion,
    BadRecordLength,
    NotClientHello,
    TooLarge,
    Truncated,
    BadHostName,
}

impl Malformed {
    /// The words [`Hello::NotTls`] carries to the connection layer's log.
    fn as_str(self) -> &'static str {
        match self {
            Malformed::NotHandshake => "not a TLS handshake record",
            Malformed::UnknownVersion => "unknown record version",
            Malformed::BadRecordLength => "bad record length",
            Malformed::NotClientHello => "first handshake message is not a ClientHello",
            Malformed::TooLarge => "ClientHello larger than the configured maximum",
            Malformed::Truncated => "truncated ClientHello",
            Malformed::BadHostName => "invalid SNI host name",
        }
    }
}

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;
/// RFC 8446 §5.1: a record's plaintext fragment is at most 2^14 bytes.
const MAX_RECORD: usize = 1 << 14;

/// Parses the start of a connection. `max_hello` caps the ClientHello message (handshake header
/// included); a longer one is refused rather than buffered.
pub fn parse(buf: &[u8], max_hello: usize) -> Hello {
    let message = match reassemble(buf, max_hello) {
        Ok(msg) => msg,
        Err(Reassembly::NeedMore(n)) => return Hello::NeedMore(n),
        Err(Reassembly::Bad(why)) => return Hello::NotTls(why.as_str()),
    };
    match client_hello_sni(&message) {
        Ok(Some(name)) => Hello::Sni(name),
        Ok(None) => Hello::NoSni,
        Err(why) => Hello::NotTls(why.as_str()),
    }
}

enum Reassembly {
    NeedMore(usize),
    Bad(Malformed),
}

/// Concatenates handshake record fragments until the whole first handshake message is present.
fn reassemble(buf: &[u8], max_hello: usize) -> Result<Vec<u8>, Reassembly> {
    let mut message: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let header = match buf.get(pos..pos + RECORD_HEADER) {
            Some(h) => h,
            None => {
                // Check what we have of the first header early, so garbage is refused at once.
                check_partial_header(&buf[pos.min(buf.len())..])?;
                return Err(Reassembly::NeedMore(pos + RECORD_HEADER));
            }
        };
        check_header(header)?;
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Err(Reassembly::Bad(Malformed::BadRecordLength));
        }
        let body_start = pos + RECORD_HEADER;
        let available = buf.len().saturating_sub(body_start).min(len);
        message.extend_from_slice(&buf[body_start..body_start + available]);
        if message.len() >= 4 {
            if message[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(Reassembly::Bad(Malformed::NotClientHello));
            }
            let hello_len = 4 + be24(&message[1..4]);
            if hello_len > max_hello {
                return Err(Reassembly::Bad(Malformed::TooLarge));
            }
            if message.len() >= hello_len {
                message.truncate(hello_len);
                return Ok(message);
            }
        }
        if available < len {
            return Err(Reassembly::NeedMore(body_start + len));
        }
        // Every record adds at least one byte and the message is capped, so this loop is bounded.
        pos = body_start + len;
    }
}

fn check_partial_header(partial: &[u8]) -> Result<(), Reassembly> {
    if let Some(&ct) = partial.first() {
        if ct != CONTENT_HANDSHAKE {
            return Err(Reassembly::Bad(Malformed::NotHandshake));
        }
    }
    if let Some(&major) = partial.get(1) {
        if major != 3 {
            return Err(Reassembly::Bad(Malformed::UnknownVersion));
        }
    }
    Ok(())
}

fn check_header(header: &[u8]) -> Result<(), Reassembly> {
    check_partial_header(header)?;
    // Legacy record versions 3.0 .. 3.4 are all seen on the first flight.
    if header[2] > 4 {
        return Err(Reassembly::Bad(Malformed::UnknownVersion));
    }
    Ok(())
}

fn be24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.data.len() < n {
            return Err(Malformed::Truncated);
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Result<&'a [u8], Malformed> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], Malformed> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

/// Walks a complete ClientHello handshake message (with its 4-byte header) to the SNI extension.
fn client_hello_sni(message: &[u8]) -> Result<Option<String>, Malformed> {
    let mut r = Reader { data: message.get(4..).ok_or(Malformed::Truncated)? };
    let _legacy_version = r.u16()?;
    let _random = r.take(32)?;
    let _session_id = r.vec8()?;
    let _cipher_suites = r.vec16()?;
    let _compression = r.vec8()?;
    if r.data.is_empty() {
        return Ok(None); // SSLv3-style hello without extensions
    }
    let mut exts = Reader { data: r.vec16()? };
    while !exts.data.is_empty() {
        let ext_type = exts.u16()?;
        let body = exts.vec16()?;
        if ext_type == EXT_SERVER_NAME {
            return server_name(body);
        }
    }
    Ok(None)
}

/// RFC 6066 §3: a list of (type, name); only host_name (0) is defined.
fn server_name(body: &[u8]) -> Result<Option<String>, Malformed> {
    let mut list = Reader { data: Reader { data: body }.vec16()? };
    while !list.data.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type == NAME_TYPE_HOST {
            return host_name(name).map(Some);
        }
    }
    Ok(None)
}

fn host_name(raw: &[u8]) -> Result<String, Malformed> {
    let valid = !raw.is_empty()
        && raw.len() <= 253
        && raw.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid {
        return Err(Malformed::BadHostName);
    }
    // A trailing dot names the same host; a name of dots alone names none.
    let name = String::from_utf8_lossy(raw).to_ascii_lowercase().trim_end_matches('.').to_string();
    if name.is_empty() {
        return Err(Malformed::BadHostName);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a ClientHello message (handshake header included) with the given extensions.
    fn hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x0a, 0x0a]); // suites incl. GREASE
        body.extend_from_slice(&[1, 0]); // null compression
        let mut ext_bytes = Vec::new();
        for (t, data) in exts {
            ext_bytes.extend_from_slice(&t.to_be_bytes());
            ext_bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext_bytes.extend_from_slice(data);
        }
        body.extend_from_slice(&(ext_bytes.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext_bytes);
        let mut msg = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg[1] = (body.len() >> 16) as u8;
        msg.extend_from_slice(&body);
        msg
    }

    fn sni_ext(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name.as_bytes());
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        (0, data)
    }

    /// Splits a handshake message into records of at most `chunk` bytes each.
    fn records(msg: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in msg.chunks(chunk) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn finds_sni_with_grease_and_other_extensions_first() {
        let msg = hello(&[(0x0a0a, vec![]), (10, vec![0, 2, 0, 29]), sni_ext("API.Example.com")]);
        assert_eq!(parse(&records(&msg, 16384), 65536), Hello::Sni("api.example.com".into()));
    }

    #[test]
    fn every_prefix_needs_more_and_never_errs() {
        let wire = records(&hello(&[sni_ext("login.example.com")]), 16384);
        for n in 0..wire.len() {
            match parse(&wire[..n], 65536) {
                Hello::NeedMore(want) => assert!(want > n, "prefix {n} wants {want}"),
                other => panic!("prefix {n} gave {other:?}"),
            }
        }
        assert_eq!(parse(&wire, 65536), Hello::Sni("login.example.com".into()));
    }

    #[test]
    fn reassembles_a_hello_split_over_many_records() {
        let big = vec![0u8; 3000]; // like a post-quantum key share
        let msg = hello(&[(51, big), sni_ext("login.example.com")]);
        let wire = records(&msg, 100);
        assert_eq!(parse(&wire, 65536), Hello::Sni("login.example.com".into()));
        for n in 0..wire.len() {
            assert!(matches!(parse(&wire[..n], 65536), Hello::NeedMore(_)), "prefix {n}");
        }
    }

    #[test]
    fn no_sni_is_distinct() {
        let wire = records(&hello(&[(10, vec![0, 2, 0, 29])]), 16384);
        assert_eq!(parse(&wire, 65536), Hello::NoSni);
    }

    #[test]
    fn cap_and_garbage_are_refused() {
        let msg = hello(&[(51, vec![0u8; 5000]), sni_ext("a.example.com")]);
        assert!(matches!(parse(&records(&msg, 16384), 4096), Hello::NotTls(_)));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n", 4096), Hello::NotTls(_)));
        assert!(matches!(parse(b"G", 4096), Hello::NotTls(_)));
        assert!(matches!(parse(&[22, 3, 1, 0, 0], 4096), Hello::NotTls(_)));
        // A handshake message that is not a ClientHello (a ServerHello).
        assert!(matches!(parse(&[22, 3, 3, 0, 4, 2, 0, 0, 0], 4096), Hello::NotTls(_)));
    }

    #[test]
    fn bad_host_names_are_refused() {
        for bad in ["evil\0name", ".", "..."] {
            let wire = records(&hello(&[sni_ext(bad)]), 16384);
            assert!(matches!(parse(&wire, 65536), Hello::NotTls(_)), "{bad:?}");
        }
        let wire = records(&hello(&[sni_ext("api.example.com.")]), 16384);
        assert_eq!(parse(&wire, 65536), Hello::Sni("api.example.com".into()));
    }

    /// Real first flights from curl and openssl s_client (scripts/capture-clienthellos.sh).
    const CAPTURED: &[(&str, &[u8], Option<&str>)] = &[
        (
            "openssl-tls12-sni",
            include_bytes!("../../tests/fixtures/clienthello/openssl-tls12-sni.bin"),
            Some("login.example.com"),
        ),
        (
            "openssl-tls13-sni",
            include_bytes!("../../tests/fixtures/clienthello/openssl-tls13-sni.bin"),
            Some("api.example.com"),
        ),
        ("openssl-nosni", include_bytes!("../../tests/fixtures/clienthello/openssl-nosni.bin"), None),
        ("curl-sni", include_bytes!("../../tests/fixtures/clienthello/curl-sni.bin"), Some("login.example.com")),
        (
            "openssl-large-sni",
            include_bytes!("../../tests/fixtures/clienthello/openssl-large-sni.bin"),
            Some("login.example.com"),
        ),
    ];

    fn expected(sni: Option<&str>) -> Hello {
        sni.map(|s| Hello::Sni(s.to_string())).unwrap_or(Hello::NoSni)
    }

    #[test]
    fn captured_client_hellos_at_every_prefix() {
        for (name, wire, sni) in CAPTURED {
            assert_eq!(parse(wire, 16384), expected(*sni), "{name}");
            for n in 0..wire.len() {
                match parse(&wire[..n], 16384) {
                    Hello::NeedMore(want) => assert!(want > n && want <= wire.len(), "{name} prefix {n} wants {want}"),
                    other => panic!("{name} prefix {n}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn captured_client_hellos_reframed_into_small_records() {
        for (name, wire, sni) in CAPTURED {
            // One record each as captured: take its handshake message and split it up.
            let message = &wire[5..];
            for chunk in [1, 7, 100, 1000] {
                let reframed = records(message, chunk);
                assert_eq!(parse(&reframed, 16384), expected(*sni), "{name} in {chunk}-byte records");
            }
        }
    }

    #[test]
    fn the_large_capture_is_large_and_capped() {
        let (_, wire, _) = CAPTURED[4];
        assert!(wire.len() > 1500);
        assert!(matches!(parse(wire, 1024), Hello::NotTls(_)));
    }
}
