//! Secret references, the access policy, providers and resolution.
//!
//! A reference is a string `secret:<path>[#<version>]` in a secret field of a
//! workflow config. The resolver checks each reference against the allowed
//! prefixes, asks the configured provider for the value and registers the
//! value with the redactor before anyone else sees it. Values are held in
//! [`SecretValue`], whose Debug and Display print a mask.

pub mod fields;
mod providers;
mod reference;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, stream};

use crate::config::{ProviderConfig, SecretsConfig};
use crate::redact::{MASK, Redactor, Registration};
pub use providers::{EnvProvider, FileProvider};
pub use reference::{REFERENCE_PREFIX, ReferenceError, SecretRef};

/// Number of references of one run fetched at once.
const FETCH_CONCURRENCY: usize = 8;

/// A resolved secret value. Debug and Display print a mask, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: String) -> Self {
        SecretValue(value)
    }

    /// Returns the value itself; callers must not log or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

impl std::fmt::Display for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

/// Why a reference could not be resolved. Messages name the reference and the
/// provider-side name, never a value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "{reference} is outside the allowed prefixes ({allowed}); store it under one of them or add its prefix to secrets.allowed_prefixes"
    )]
    Denied { reference: String, allowed: String },
    #[error("{reference} was not found in the {provider} store (looked up as {name:?})")]
    NotFound {
        reference: String,
        provider: &'static str,
        name: String,
    },
    #[error(
        "access to {reference} was denied by the {provider} store (looked up as {name:?}): {detail}"
    )]
    AccessDenied {
        reference: String,
        provider: &'static str,
        name: String,
        detail: String,
    },
    #[error("cannot map {reference} to a {provider} secret name: {detail}")]
    InvalidName {
        reference: String,
        provider: &'static str,
        detail: String,
    },
    #[error(
        "reading {reference} from the {provider} store failed (looked up as {name:?}): {detail}"
    )]
    Provider {
        reference: String,
        provider: &'static str,
        name: String,
        detail: String,
    },
}

impl SecretError {
    /// Returns the reference the error is about, in its
    /// `secret:<path>[#<version>]` form.
    pub fn reference(&self) -> &str {
        match self {
            SecretError::Denied { reference, .. }
            | SecretError::NotFound { reference, .. }
            | SecretError::AccessDenied { reference, .. }
            | SecretError::InvalidName { reference, .. }
            | SecretError::Provider { reference, .. } => reference,
        }
    }
}

/// A provider-side failure, before the reference is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    NotFound,
    AccessDenied(String),
    Other(String),
}

/// A secrets store.
#[async_trait::async_trait]
pub trait SecretProvider: Send + Sync {
    /// Short name used in messages, such as `file` or `aws`.
    fn kind(&self) -> &'static str;

    /// Maps a reference to the name the store uses.
    fn map_name(&self, reference: &SecretRef) -> Result<String, String>;

    /// Fetches one value by its store name.
    async fn fetch(&self, name: &str, version: Option<&str>) -> Result<SecretValue, FetchError>;
}

/// Builds the provider selected in runner.yaml.
pub fn provider_from_config(config: &ProviderConfig) -> Arc<dyn SecretProvider> {
    match config {
        ProviderConfig::File { path } => Arc::new(FileProvider::new(path.clone())),
        ProviderConfig::Env { prefix } => Arc::new(EnvProvider::new(prefix.clone())),
    }
}

/// The allowed reference prefixes.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    prefixes: Vec<String>,
}

impl AccessPolicy {
    pub fn new(prefixes: Vec<String>) -> Self {
        AccessPolicy { prefixes }
    }

    /// Allows a reference under one of the prefixes. References never hold
    /// `.` or `..` segments (the parser rejects them), so a prefix match
    /// cannot be escaped.
    pub fn check(&self, reference: &SecretRef) -> Result<(), SecretError> {
        if self
            .prefixes
            .iter()
            .any(|prefix| reference.path().starts_with(prefix.as_str()))
        {
            return Ok(());
        }
        Err(SecretError::Denied {
            reference: reference.to_string(),
            allowed: self.prefixes.join(", "),
        })
    }
}

/// Resolves references through the policy and a provider, registering every
/// value with the redactor as it arrives.
pub struct Resolver {
    provider: Arc<dyn SecretProvider>,
    policy: AccessPolicy,
    redactor: Arc<Redactor>,
    /// References already warned about for being too short to redact.
    warned_short: Mutex<BTreeSet<String>>,
}

impl Resolver {
    pub fn new(
        provider: Arc<dyn SecretProvider>,
        policy: AccessPolicy,
        redactor: Arc<Redactor>,
    ) -> Self {
        Resolver {
            provider,
            policy,
            redactor,
            warned_short: Mutex::new(BTreeSet::new()),
        }
    }

    /// Builds a resolver from the `secrets` section of runner.yaml.
    pub fn from_config(config: &SecretsConfig, redactor: Arc<Redactor>) -> Self {
        Resolver::new(
            provider_from_config(&config.provider),
            AccessPolicy::new(config.allowed_prefixes.clone()),
            redactor,
        )
    }

    pub fn policy(&self) -> &AccessPolicy {
        &self.policy
    }

    pub fn provider_kind(&self) -> &'static str {
        self.provider.kind()
    }

    /// Maps a reference to its store name, as `resolve` would.
    pub fn mapped_name(&self, reference: &SecretRef) -> Result<String, SecretError> {
        self.provider
            .map_name(reference)
            .map_err(|detail| SecretError::InvalidName {
                reference: reference.to_string(),
                provider: self.provider.kind(),
                detail,
            })
    }

    /// Resolves one reference.
    pub async fn resolve(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
        if let Err(error) = self.policy.check(reference) {
            tracing::warn!(reference = %reference, "secret reference denied by policy");
            return Err(error);
        }
        let name = self.mapped_name(reference)?;
        let provider = self.provider.kind();
        let value = self
            .provider
            .fetch(&name, reference.version())
            .await
            .map_err(|error| match error {
                FetchError::NotFound => SecretError::NotFound {
                    reference: reference.to_string(),
                    provider,
                    name: name.clone(),
                },
                FetchError::AccessDenied(detail) => SecretError::AccessDenied {
                    reference: reference.to_string(),
                    provider,
                    name: name.clone(),
                    detail,
                },
                FetchError::Other(detail) => SecretError::Provider {
                    reference: reference.to_string(),
                    provider,
                    name: name.clone(),
                    detail,
                },
            })?;
        self.register(reference, &value);
        Ok(value)
    }

    /// Resolves distinct references concurrently; returns the first failure
    /// in reference order when any fails.
    pub async fn resolve_all(
        &self,
        references: &BTreeSet<SecretRef>,
    ) -> Result<BTreeMap<SecretRef, SecretValue>, SecretError> {
        // Policy first, so a denied reference stops the run before any fetch.
        for reference in references {
            if let Err(error) = self.policy.check(reference) {
                tracing::warn!(reference = %reference, "secret reference denied by policy");
                return Err(error);
            }
        }
        let results: Vec<(SecretRef, Result<SecretValue, SecretError>)> =
            stream::iter(references.iter().cloned())
                .map(|reference| async move {
                    let result = self.resolve(&reference).await;
                    (reference, result)
                })
                .buffer_unordered(FETCH_CONCURRENCY)
                .collect()
                .await;
        let mut values = BTreeMap::new();
        let mut failures = BTreeMap::new();
        for (reference, result) in results {
            match result {
                Ok(value) => {
                    values.insert(reference, value);
                }
                Err(error) => {
                    failures.insert(reference, error);
                }
            }
        }
        match failures.into_values().next() {
            Some(error) => Err(error),
            None => Ok(values),
        }
    }

    /// Registers a value with the redactor; warns once per reference when the
    /// value is too short to redact.
    fn register(&self, reference: &SecretRef, value: &SecretValue) {
        if self.redactor.register(value.expose()) == Registration::TooShort {
            let mut warned = self.warned_short.lock().unwrap_or_else(|e| e.into_inner());
            if warned.insert(reference.to_string()) {
                tracing::warn!(
                    reference = %reference,
                    min_length = self.redactor.min_len(),
                    "secret value is shorter than the redaction minimum and will not be masked in output"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
