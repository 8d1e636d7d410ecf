//! Secret references, the access policy, providers and resolution.
//!
//! A reference is a string `secret:<path>[#<version>]` in a secret field of a
//! workflow config. The resolver checks each reference against the allowed
//! prefixes, fetches the value from the configured provider and registers it
//! with the redactor before returning it. Values are kept in [`SecretValue`],
//! whose Debug and Display print a mask.

pub mod audit;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(all(test, any(feature = "aws", feature = "gcp")))]
#[allow(dead_code)]
#[path = "../../tests/common/emulators.rs"]
mod emulators;
pub mod fields;
#[cfg(feature = "gcp")]
pub mod gcp;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod policy;
mod providers;
mod reference;
mod resolver;
pub mod routing;

use std::sync::Arc;

use crate::config::{ProviderConfig, SecretsConfig};
use crate::redact::{MASK, Redactor};
pub use policy::{AccessPolicy, Scope};
pub use providers::{EnvProvider, FileProvider};
pub use reference::{REFERENCE_PREFIX, ReferenceError, SecretRef};
pub use resolver::{Mapped, Resolver, ResolverSettings, Source};
pub use routing::{NamedProvider, ProviderSet, Route};

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

/// Failure to resolve a reference. Messages name the reference and the
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
        provider: String,
        name: String,
    },
    #[error(
        "access to {reference} was denied by the {provider} store (looked up as {name:?}): {detail}"
    )]
    AccessDenied {
        reference: String,
        provider: String,
        name: String,
        detail: String,
    },
    #[error("cannot map {reference} to a {provider} secret name: {detail}")]
    InvalidName {
        reference: String,
        provider: String,
        detail: String,
    },
    #[error(
        "reading {reference} from the {provider} store was throttled {attempts} times (looked up as {name:?}); retry later or raise the store's request quota"
    )]
    Throttled {
        reference: String,
        provider: String,
        name: String,
        attempts: u32,
    },
    #[error(
        "{reference} is disabled in the {provider} store (looked up as {name:?}): {detail}; enable it or pin another version"
    )]
    Disabled {
        reference: String,
        provider: String,
        name: String,
        detail: String,
    },
    #[error(
        "cannot reach the {provider} store for {reference} after {attempts} attempts (looked up as {name:?}): {detail}"
    )]
    Network {
        reference: String,
        provider: String,
        name: String,
        attempts: u32,
        detail: String,
    },
    #[error(
        "reading {reference} from the {provider} store failed (looked up as {name:?}): {detail}"
    )]
    Provider {
        reference: String,
        provider: String,
        name: String,
        detail: String,
    },
    #[error(
        "cannot write the audit record for {reference}, so its value is not used: {detail}; check that secrets.audit.path is writable"
    )]
    Audit { reference: String, detail: String },
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
            | SecretError::Throttled { reference, .. }
            | SecretError::Disabled { reference, .. }
            | SecretError::Network { reference, .. }
            | SecretError::Provider { reference, .. }
            | SecretError::Audit { reference, .. } => reference,
        }
    }
}

/// A provider-side failure of one fetch attempt, before the reference is
/// attached. Details never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The secret (or the requested version) does not exist.
    NotFound,
    /// The store denied access (403, missing permission); the detail names the cause.
    AccessDenied(String),
    /// The store asked to slow down (429 or a throttling error code).
    Throttled {
        retry_after: Option<std::time::Duration>,
    },
    /// The requested version exists but is disabled or destroyed.
    Disabled(String),
    /// The store rejected the name as invalid.
    InvalidName(String),
    /// The store could not be reached or the connection failed; retryable.
    Network(String),
    /// The store returned a server error (5xx); retryable.
    Unavailable(String),
    /// Any other failure; not retried.
    Other(String),
}

/// A store name chosen for a reference by a mapping other than the
/// provider's default, such as a Lua `map_secret` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedName {
    pub name: String,
    /// A version to read; the reference's own version when `None`.
    pub version: Option<String>,
    /// The store to read from, by name; the routed store when `None`.
    pub provider: Option<String>,
}

/// Maps references to store names ahead of the provider's default mapping.
/// The hook engine implements it, so this module needs nothing from hooks.
#[async_trait::async_trait]
pub trait NameMapper: Send + Sync {
    /// Returns the name to use, or `None` for the default mapping of the
    /// routed store. `provider` is the routed store's name and `kind` its type.
    async fn map(
        &self,
        reference: &SecretRef,
        provider: &str,
        kind: &'static str,
    ) -> Result<Option<MappedName>, String>;
}

/// A secrets store. `fetch` makes one attempt; the resolver adds timeouts
/// and retries around it.
#[async_trait::async_trait]
pub trait SecretProvider: Send + Sync {
    /// Short name used in messages, such as `file` or `aws`.
    fn kind(&self) -> &'static str;

    /// Maps a reference to the name the store uses.
    fn map_name(&self, reference: &SecretRef) -> Result<String, String>;

    /// Fetches one value by its store name and optional version.
    async fn fetch(&self, name: &str, version: Option<&str>) -> Result<SecretValue, FetchError>;
}

/// Builds the provider selected in runner.yaml. Cloud providers load their
/// credentials here, so a setup error stops the runner at startup.
pub async fn build_provider(config: &ProviderConfig) -> Result<Arc<dyn SecretProvider>, String> {
    Ok(match config {
        ProviderConfig::File { path } => Arc::new(FileProvider::new(path.clone())),
        ProviderConfig::Env { prefix } => Arc::new(EnvProvider::new(prefix.clone())),
        #[cfg(feature = "aws")]
        ProviderConfig::Aws(settings) => Arc::new(aws::AwsProvider::new(settings).await?),
        #[cfg(feature = "azure")]
        ProviderConfig::Azure(settings) => Arc::new(azure::AzureProvider::new(settings).await?),
        #[cfg(feature = "gcp")]
        ProviderConfig::Gcp(settings) => Arc::new(gcp::GcpProvider::new(settings).await?),
        #[cfg(feature = "kubernetes")]
        ProviderConfig::Kubernetes(settings) => {
            Arc::new(kubernetes::KubernetesProvider::new(settings).await?)
        }
    })
}

/// Builds the resolver described by the `secrets` section of runner.yaml,
/// with its stores and its audit log. A store or audit log that cannot be set
/// up stops the runner at startup.
pub async fn resolver_from_config(
    config: &SecretsConfig,
    redactor: Arc<Redactor>,
) -> Result<Resolver, String> {
    let mut providers = std::collections::BTreeMap::new();
    for (name, provider) in &config.providers {
        let built = build_provider(provider)
            .await
            .map_err(|error| format!("provider {name:?}: {error}"))?;
        providers.insert(name.clone(), built);
    }
    let providers = ProviderSet::new(
        providers,
        config.routes.clone(),
        config.default_provider.clone(),
    )?;
    let resolver = Resolver::with_providers(
        providers,
        AccessPolicy::new(config.allowed_prefixes.clone()),
        redactor,
        config.resolver.clone(),
    );
    let audit = audit::AuditLog::open(config.audit.clone()).map_err(|error| {
        format!(
            "cannot open the audit log {}: {error}; check secrets.audit.path",
            config.audit.path.display()
        )
    })?;
    resolver.set_audit(audit);
    Ok(resolver)
}

#[cfg(test)]
mod tests;
