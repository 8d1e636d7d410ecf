//! The `secret:` reference syntax.
//!
//! `secret:/collate/hybrid-ingestion/mysql/password` names a secret by path;
//! `secret:/collate/hybrid-ingestion/mysql/password#3` pins a version (a
//! version id or stage on AWS, a version on Azure and GCP). Paths are
//! absolute, with no empty, `.` or `..` segments and no control characters.

use std::fmt;

/// The prefix that marks a value as a reference.
pub const REFERENCE_PREFIX: &str = "secret:";

/// Maximum length of a reference path, in bytes.
const MAX_PATH_BYTES: usize = 1024;

/// A parsed secret reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    path: String,
    version: Option<String>,
}

/// Reason a reference is malformed. Only the reference text is shown, which is a
/// name, not a value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error(
        "invalid secret reference {0:?}: the path must start with '/', as in secret:/collate/hybrid-ingestion/db/password"
    )]
    NotAbsolute(String),
    #[error("invalid secret reference {0:?}: empty, '.' or '..' path segments are not allowed")]
    BadSegment(String),
    #[error("invalid secret reference {0:?}: control characters are not allowed")]
    ControlCharacter(String),
    #[error("invalid secret reference {0:?}: the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong(String),
    #[error(
        "invalid secret reference {0:?}: a version after '#' may contain only letters, digits, '.', '_' and '-'"
    )]
    BadVersion(String),
}

impl SecretRef {
    /// Returns true when `text` is written as a reference.
    pub fn is_reference(text: &str) -> bool {
        text.starts_with(REFERENCE_PREFIX)
    }

    /// Parses `secret:<path>[#<version>]`.
    pub fn parse(text: &str) -> Result<SecretRef, ReferenceError> {
        let body = text.strip_prefix(REFERENCE_PREFIX).unwrap_or(text);
        let shown = || truncate(text);
        let (path, version) = match body.split_once('#') {
            Some((path, version)) => (path, Some(version)),
            None => (body, None),
        };
        if path.len() > MAX_PATH_BYTES {
            return Err(ReferenceError::TooLong(shown()));
        }
        if path.chars().any(char::is_control) {
            return Err(ReferenceError::ControlCharacter(shown()));
        }
        let Some(relative) = path.strip_prefix('/') else {
            return Err(ReferenceError::NotAbsolute(shown()));
        };
        if relative
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(ReferenceError::BadSegment(shown()));
        }
        if let Some(version) = version {
            let valid = !version.is_empty()
                && version.len() <= 128
                && version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                return Err(ReferenceError::BadVersion(shown()));
            }
        }
        Ok(SecretRef {
            path: path.to_string(),
            version: version.map(str::to_string),
        })
    }

    /// Returns the path, starting with '/'.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Returns the pinned version, if any.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{REFERENCE_PREFIX}{}", self.path)?;
        if let Some(version) = &self.version {
            write!(f, "#{version}")?;
        }
        Ok(())
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_version() {
        let reference = SecretRef::parse("secret:/a/b c/d.e#v-3").unwrap();
        assert_eq!(reference.path(), "/a/b c/d.e");
        assert_eq!(reference.version(), Some("v-3"));
        assert_eq!(reference.to_string(), "secret:/a/b c/d.e#v-3");
    }

    #[test]
    fn rejects_escapes_and_malformed_paths() {
        let cases = [
            ("secret:a/b", "must start with '/'"),
            ("secret:/a/../b", "'..' path segments"),
            ("secret:/a//b", "empty"),
            ("secret:/a/./b", "'.'"),
            ("secret:/a/", "empty"),
            ("secret:/a\nb", "control characters"),
            ("secret:/a#", "version"),
            ("secret:/a#v/1", "version"),
        ];
        for (text, expected) in cases {
            let error = SecretRef::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
