//! The HTTP header-name grammar the gateway compares names in (RFC 9110 `tchar`, canonical
//! spelling) and the header patterns of `strip_headers`: shared by the configuration and the
//! request layer.

/// A request header name, or every name that starts with a prefix (`x-acme-*`). Lower case, and
/// `_` is kept as `-`: servers that map headers to CGI-style variables read `X_Foo` as `X-Foo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPattern {
    Exact(String),
    Prefix(String),
}

/// Headers the gateway needs to frame, route or authorize a request: no pattern may strip them.
const NEEDED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "authorization", "connection"];

/// Why a `strip_headers` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderPatternError {
    #[error("{0:?} is not a header name or a prefix like x-acme-*")]
    NotAName(String),
    #[error("{text:?} would strip {needed}, which every request needs")]
    WouldStrip { text: String, needed: &'static str },
}

impl HeaderPattern {
    pub fn parse(text: &str) -> Result<Self, HeaderPatternError> {
        let name = canonical_header_name(text.trim()).into_owned();
        let (stem, prefix) = match name.strip_suffix('*') {
            Some(stem) => (stem.to_string(), true),
            None => (name, false),
        };
        if stem.is_empty() || !stem.bytes().all(is_tchar) || stem.contains('*') {
            return Err(HeaderPatternError::NotAName(text.to_string()));
        }
        let pattern = if prefix { HeaderPattern::Prefix(stem) } else { HeaderPattern::Exact(stem) };
        match NEEDED_HEADERS.iter().find(|n| pattern.matches(n)) {
            Some(needed) => Err(HeaderPatternError::WouldStrip { text: text.to_string(), needed }),
            None => Ok(pattern),
        }
    }

    /// `name` must already be canonical (see [`canonical_header_name`]).
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HeaderPattern::Exact(n) => n == name,
            HeaderPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

impl std::fmt::Display for HeaderPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderPattern::Exact(n) => f.write_str(n),
            HeaderPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// Lower case with `_` read as `-`, the spelling header patterns are compared in.
pub fn canonical_header_name(name: &str) -> std::borrow::Cow<'_, str> {
    // Names off the wire are lower case already and rarely hold `_`: borrow them, since every
    // request compares each of its header names.
    if !name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        return std::borrow::Cow::Borrowed(name);
    }
    name.bytes().map(|b| if b == b'_' { '-' } else { b.to_ascii_lowercase() as char }).collect()
}

/// RFC 9110 §5.6.2 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
