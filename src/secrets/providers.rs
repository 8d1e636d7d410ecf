//! Local providers for development and simple deployments.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{FetchError, SecretProvider, SecretRef, SecretValue};

/// Reads a YAML file that maps reference paths to values.
///
/// The file is read at every fetch, so an edited value is used at the next
/// run without a restart.
pub struct FileProvider {
    path: PathBuf,
}

impl FileProvider {
    pub fn new(path: PathBuf) -> Self {
        FileProvider { path }
    }

    async fn load(&self) -> Result<BTreeMap<String, serde_yaml::Value>, FetchError> {
        // A plain read: the file is a small local development file, and a hop
        // to the blocking pool costs more than the read itself.
        let text = std::fs::read_to_string(&self.path).map_err(|error| {
            FetchError::Other(format!(
                "cannot read secrets file {}: {error}",
                self.path.display()
            ))
        })?;
        // The parser's message can quote the file's content, so only its
        // location is kept.
        serde_yaml::from_str(&text).map_err(|error| {
            let at = error
                .location()
                .map(|location| format!(" at line {}", location.line()))
                .unwrap_or_default();
            FetchError::Other(format!(
                "secrets file {} is not a YAML mapping of paths to strings{at}",
                self.path.display()
            ))
        })
    }
}

#[async_trait::async_trait]
impl SecretProvider for FileProvider {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn map_name(&self, reference: &SecretRef) -> Result<String, String> {
        Ok(reference.path().to_string())
    }

    async fn fetch(&self, name: &str, version: Option<&str>) -> Result<SecretValue, FetchError> {
        if version.is_some() {
            return Err(FetchError::Other(
                "the file provider keeps one version per secret; remove the #version".into(),
            ));
        }
        let entries = self.load().await?;
        match entries.get(name) {
            Some(serde_yaml::Value::String(value)) => Ok(SecretValue::new(value.clone())),
            Some(serde_yaml::Value::Number(value)) => Ok(SecretValue::new(value.to_string())),
            Some(_) => Err(FetchError::Other(format!(
                "entry {name:?} in {} is not a string",
                self.path.display()
            ))),
            None => Err(FetchError::NotFound),
        }
    }
}

/// Reads environment variables named after the reference path:
/// `/collate/hybrid-ingestion/mysql/password` with the default prefix is
/// `HYBRID_RUNNER_SECRET_COLLATE_HYBRID_INGESTION_MYSQL_PASSWORD`.
pub struct EnvProvider {
    prefix: String,
}

impl EnvProvider {
    pub fn new(prefix: String) -> Self {
        EnvProvider { prefix }
    }
}

#[async_trait::async_trait]
impl SecretProvider for EnvProvider {
    fn kind(&self) -> &'static str {
        "env"
    }

    fn map_name(&self, reference: &SecretRef) -> Result<String, String> {
        let mut name = self.prefix.clone();
        let mut last_was_separator = name.ends_with('_') || name.is_empty();
        for c in reference.path().chars() {
            if c.is_ascii_alphanumeric() {
                name.push(c.to_ascii_uppercase());
                last_was_separator = false;
            } else if !last_was_separator {
                name.push('_');
                last_was_separator = true;
            }
        }
        let name = name.trim_end_matches('_').to_string();
        if name.len() <= self.prefix.trim_end_matches('_').len() {
            return Err("the path has no letters or digits".into());
        }
        Ok(name)
    }

    async fn fetch(&self, name: &str, version: Option<&str>) -> Result<SecretValue, FetchError> {
        if version.is_some() {
            return Err(FetchError::Other(
                "the env provider keeps one version per secret; remove the #version".into(),
            ));
        }
        match std::env::var(name) {
            Ok(value) => Ok(SecretValue::new(value)),
            Err(std::env::VarError::NotPresent) => Err(FetchError::NotFound),
            Err(std::env::VarError::NotUnicode(_)) => Err(FetchError::Other(format!(
                "variable {name} is not valid UTF-8"
            ))),
        }
    }
}
