//! Host names and `*.domain` wildcards, as written in the configuration and compared with a
//! request's SNI or `Host`: case-insensitive, a wildcard matching exactly one more label.

/// A host name or a `*.domain` wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches exactly one more label.
    Wildcard(String),
    Any,
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Text that is neither a host name nor a `*.domain` wildcard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host name or *.domain wildcard")]
pub struct BadHost(pub String);

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, BadHost> {
        let lower = text.trim().to_ascii_lowercase();
        if lower == "*" {
            return Ok(HostPattern::Any);
        }
        let (wild, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower.clone()),
        };
        let ok = !rest.is_empty()
            && rest.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !ok {
            return Err(BadHost(text.to_string()));
        }
        Ok(if wild { HostPattern::Wildcard(format!(".{rest}")) } else { HostPattern::Exact(rest) })
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(name),
            HostPattern::Wildcard(suffix) => {
                name.len() > suffix.len()
                    && name.is_char_boundary(name.len() - suffix.len())
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && !name[..name.len() - suffix.len()].contains('.')
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_one_label_only() {
        let p = HostPattern::parse("*.Example.com").unwrap();
        assert!(p.matches("api.example.com"));
        assert!(p.matches("API.EXAMPLE.COM"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("a.b.example.com"));
        assert!(!p.matches("evilexample.com"));
        assert!(!p.matches("é.example.co"));
        assert!(HostPattern::parse("bad host").is_err());
        assert!(HostPattern::parse("*.").is_err());
    }
}
