//! Percent-encoding (RFC 3986 §2.1) read one piece at a time: a byte as written, an escape (`%`
//! and two hex digits) with the byte it encodes, or a `%` that starts no escape. The one reader of
//! escapes in the request path: the normalisation step decodes and checks the target with it
//! ([`super::target`]) and the DPoP verifier normalises `htu` with it (`request::dpop::parse`).
//! Each caller decides what a stray `%` or an escaped separator means to it, which is why this is
//! not a decoder to a string (such as the `percent-encoding` crate's, which keeps a stray `%`
//! silently). Pure and std only, so that the fuzz targets include this file as they include its
//! users.

/// One piece of percent-encoded text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// A byte as written (a `%` is never one).
    Raw(u8),
    /// `%` and two hex digits (either case): the byte they encode.
    Escaped(u8),
    /// A `%` not followed by two hex digits.
    StrayPercent,
}

/// The pieces of `text`, in order.
pub fn pieces(text: &[u8]) -> Pieces<'_> {
    Pieces { rest: text }
}

/// The iterator of [`pieces`].
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    rest: &'a [u8],
}

impl Iterator for Pieces<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        let (&first, tail) = self.rest.split_first()?;
        if first != b'%' {
            self.rest = tail;
            return Some(Piece::Raw(first));
        }
        match (tail.first().copied().and_then(hex), tail.get(1).copied().and_then(hex)) {
            (Some(hi), Some(lo)) => {
                self.rest = tail.get(2..).unwrap_or_default();
                Some(Piece::Escaped(hi << 4 | lo))
            }
            _ => {
                self.rest = tail;
                Some(Piece::StrayPercent)
            }
        }
    }
}

/// An ASCII hex digit's value; nothing else is one (not a sign, as `u8::from_str_radix` allows).
fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_raw_bytes_and_stray_percents_are_told_apart() {
        use Piece::*;
        let got: Vec<Piece> = pieces(b"a%2F%2f%%41%4%+1%").collect();
        #[rustfmt::skip]
        let want = [
            Raw(b'a'), Escaped(b'/'), Escaped(b'/'), StrayPercent, Escaped(b'A'), StrayPercent, Raw(b'4'),
            StrayPercent, Raw(b'+'), Raw(b'1'), StrayPercent,
        ];
        assert_eq!(got, want);
        assert_eq!(pieces(b"").count(), 0);
        assert_eq!(
            pieces("%C2%85é".as_bytes()).collect::<Vec<_>>(),
            [Escaped(0xc2), Escaped(0x85), Raw(0xc3), Raw(0xa9)]
        );
    }
}
