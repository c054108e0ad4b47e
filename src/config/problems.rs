//! How configuration problems are reported: each names its key and the file, all are collected
//! before anything stops, and they print as `FILE: key.path: message`.

use std::path::Path;

/// One problem, named by the key it is about (`tls.key`, `routes[1].filters[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Problem { key: key.into(), message: message.to_string() }
    }
}

/// Every problem found in one configuration file, each as `FILE: key: message`.
#[derive(Debug, Clone)]
pub struct Problems {
    file: String,
    lines: Vec<String>,
}

impl Problems {
    pub fn new(file: &Path) -> Self {
        Problems { file: file.display().to_string(), lines: Vec::new() }
    }

    pub fn fail(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.lines.push(format!("{}: {key}: {msg}", self.file));
    }

    pub fn add(&mut self, p: Problem) {
        self.fail(&p.key, p.message);
    }

    /// A problem that belongs to no key (the file cannot be read or parsed).
    pub(super) fn whole_file(&mut self, msg: impl std::fmt::Display) {
        self.lines.push(format!("{}: {msg}", self.file));
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    pub(super) fn ok<T, E: std::fmt::Display>(&mut self, key: &str, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| self.fail(key, e)).ok()
    }

    /// `value` if nothing was found wrong, else every problem.
    pub fn or<T>(self, value: Option<T>) -> Result<T, Problems> {
        match value {
            Some(v) if self.is_empty() => Ok(v),
            _ => Err(self),
        }
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}
