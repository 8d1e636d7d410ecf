//! Resolution of references: policy, routing to a store, name mapping,
//! timeouts, retries, single-flight, the optional cache and the audit log.
//!
//! Concurrent lookups of the same store name and version share one request.
//! The cache is off unless `secrets.cache_ttl` is set, so a rotated value is
//! seen at the next run. Every value is registered with the redactor inside
//! the shared fetch, before any caller sees it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::{StreamExt, stream};

use super::audit::{self, AuditEntry, AuditLog, Outcome};
use super::policy::Scope;
use super::routing::{NamedProvider, ProviderSet};
use super::{
    AccessPolicy, FetchError, NameMapper, SecretError, SecretProvider, SecretRef, SecretValue,
};
use crate::redact::{Redactor, Registration};

/// Longest `Retry-After` honoured; longer requests are cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Timeouts, retries, concurrency and caching of lookups.
#[derive(Debug, Clone)]
pub struct ResolverSettings {
    /// Time limit of one fetch attempt.
    pub timeout: Duration,
    /// Attempts per lookup, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a fetched value is reused; `None` turns the cache off.
    pub cache_ttl: Option<Duration>,
    /// Distinct references of one run fetched at once.
    pub concurrency: usize,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            timeout: Duration::from_secs(10),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            cache_ttl: None,
            concurrency: 16,
        }
    }
}

/// Origin of a resolved value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Store,
    Cache,
}

/// A store, its store-side name and version: the key of the cache and of
/// in-flight requests.
type Key = (String, String, Option<String>);

/// Location of a reference: the store, the store-side name and the version.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub provider: NamedProvider,
    pub name: String,
    pub version: Option<String>,
}

type SharedFetch = Shared<BoxFuture<'static, Result<SecretValue, SecretError>>>;

struct Inner {
    providers: ProviderSet,
    policy: AccessPolicy,
    audit: std::sync::OnceLock<AuditLog>,
    redactor: Arc<Redactor>,
    settings: ResolverSettings,
    in_flight: Mutex<HashMap<Key, SharedFetch>>,
    cache: Mutex<HashMap<Key, (Instant, SecretValue)>>,
    /// References already warned about for being too short to redact.
    warned_short: Mutex<BTreeSet<String>>,
    /// A mapping consulted before the provider's default one.
    mapper: std::sync::RwLock<Option<Arc<dyn NameMapper>>>,
}

/// Resolves references through the policy and a provider.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl Resolver {
    /// Creates a resolver with a single store.
    pub fn new(
        provider: Arc<dyn SecretProvider>,
        policy: AccessPolicy,
        redactor: Arc<Redactor>,
        settings: ResolverSettings,
    ) -> Self {
        Self::with_providers(ProviderSet::single(provider), policy, redactor, settings)
    }

    /// Creates a resolver with several stores and routes.
    pub fn with_providers(
        providers: ProviderSet,
        policy: AccessPolicy,
        redactor: Arc<Redactor>,
        settings: ResolverSettings,
    ) -> Self {
        Resolver {
            inner: Arc::new(Inner {
                providers,
                policy,
                audit: std::sync::OnceLock::new(),
                redactor,
                settings,
                in_flight: Mutex::new(HashMap::new()),
                cache: Mutex::new(HashMap::new()),
                warned_short: Mutex::new(BTreeSet::new()),
                mapper: std::sync::RwLock::new(None),
            }),
        }
    }

    pub fn policy(&self) -> &AccessPolicy {
        &self.inner.policy
    }

    pub fn providers(&self) -> &ProviderSet {
        &self.inner.providers
    }

    /// Sets the audit log that records every resolution attempt. Only the
    /// first call has an effect.
    pub fn set_audit(&self, log: AuditLog) {
        let _ = self.inner.audit.set(log);
    }

    /// Sets the mapping consulted before the provider's default one.
    pub fn set_mapper(&self, mapper: Arc<dyn NameMapper>) {
        let mut slot = self
            .inner
            .mapper
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some(mapper);
    }

    /// Maps a reference to its store, store-side name and version, as
    /// `resolve` does. The route picks the store. A mapper, when set, may then
    /// pick the name, the version and another store; when it returns nothing,
    /// the store's default mapping applies.
    pub async fn mapped(&self, reference: &SecretRef) -> Result<Mapped, SecretError> {
        let routed = self.inner.providers.route(reference);
        let mapper = self
            .inner
            .mapper
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(mapper) = mapper {
            let invalid = |detail: String| SecretError::InvalidName {
                reference: reference.to_string(),
                provider: routed.label(),
                detail,
            };
            let mapped = mapper
                .map(reference, &routed.name, routed.provider.kind())
                .await
                .map_err(invalid)?;
            if let Some(mapped) = mapped {
                let provider = match &mapped.provider {
                    None => routed,
                    Some(name) => self.inner.providers.get(name).ok_or_else(|| {
                        invalid(format!(
                            "the mapping chose provider {name:?}, which is not configured; configured providers: {}",
                            self.inner.providers.names().join(", ")
                        ))
                    })?,
                };
                let version = mapped
                    .version
                    .or_else(|| reference.version().map(str::to_string));
                return Ok(Mapped {
                    provider: provider.clone(),
                    name: mapped.name,
                    version,
                });
            }
        }
        let name = default_name(routed, reference)?;
        Ok(Mapped {
            provider: routed.clone(),
            name,
            version: reference.version().map(str::to_string),
        })
    }

    /// Resolves one reference outside any run.
    pub async fn resolve(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
        self.resolve_in(reference, &Scope::default())
            .await
            .map(|(value, _)| value)
    }

    /// Resolves one reference outside any run and returns whether the cache
    /// served it.
    pub async fn resolve_with_source(
        &self,
        reference: &SecretRef,
    ) -> Result<(SecretValue, Source), SecretError> {
        self.resolve_in(reference, &Scope::default()).await
    }

    /// Checks a reference against the policy for `scope`, recording a denial
    /// in the audit log.
    pub async fn authorize(&self, reference: &SecretRef, scope: &Scope) -> Result<(), SecretError> {
        let started = Instant::now();
        let Err(error) = self.inner.policy.check(reference, scope) else {
            return Ok(());
        };
        tracing::warn!(reference = %reference, run_id = scope.run_id.as_deref().unwrap_or("-"), "secret reference denied by policy");
        let mut entry = AuditEntry::new(reference, scope);
        self.finish_entry(&mut entry, started, Err(&error));
        self.write_audit(reference, entry).await?;
        Err(error)
    }

    /// Resolves one reference for `scope` and returns whether the cache
    /// served it. Every attempt is written to the audit log when one is set.
    pub async fn resolve_in(
        &self,
        reference: &SecretRef,
        scope: &Scope,
    ) -> Result<(SecretValue, Source), SecretError> {
        self.authorize(reference, scope).await?;
        let started = Instant::now();
        let mut entry = AuditEntry::new(reference, scope);
        let result = self.lookup(reference, &mut entry).await;
        let outcome = result.as_ref().map(|(_, source)| *source);
        self.finish_entry(&mut entry, started, outcome);
        self.write_audit(reference, entry).await?;
        result
    }

    /// Maps and fetches, filling in the store-side part of `entry`.
    async fn lookup(
        &self,
        reference: &SecretRef,
        entry: &mut AuditEntry,
    ) -> Result<(SecretValue, Source), SecretError> {
        entry.provider = Some(self.inner.providers.route(reference).name.clone());
        let mapped = self.mapped(reference).await?;
        entry.provider = Some(mapped.provider.name.clone());
        entry.name = Some(mapped.name.clone());
        entry.version = mapped.version.clone();
        let key: Key = (
            mapped.provider.name.clone(),
            mapped.name.clone(),
            mapped.version.clone(),
        );
        if let Some(value) = self.cached(&key) {
            return Ok((value, Source::Cache));
        }

        let fetch = self.shared_fetch(reference, &mapped, &key);
        let result = fetch.await;
        self.lock_in_flight().remove(&key);
        let value = result?;
        if let Some(ttl) = self.inner.settings.cache_ttl {
            let expires = Instant::now() + ttl;
            self.lock_cache().insert(key, (expires, value.clone()));
        }
        Ok((value, Source::Store))
    }

    fn finish_entry(
        &self,
        entry: &mut AuditEntry,
        started: Instant,
        result: Result<Source, &SecretError>,
    ) {
        entry.duration_ms = audit::millis(started.elapsed());
        match result {
            Ok(source) => {
                entry.outcome = Outcome::Resolved;
                entry.cached = source == Source::Cache;
            }
            Err(error) => {
                entry.outcome = Outcome::of_error(error);
                entry.error = Some(error.to_string());
            }
        }
    }

    /// Appends `entry` to the audit log, when one is set. A failed write fails
    /// the resolution.
    async fn write_audit(
        &self,
        reference: &SecretRef,
        entry: AuditEntry,
    ) -> Result<(), SecretError> {
        let Some(log) = self.inner.audit.get() else {
            return Ok(());
        };
        log.append(entry).await.map_err(|error| {
            tracing::error!(reference = %reference, %error, "cannot write the secret audit log");
            SecretError::Audit {
                reference: reference.to_string(),
                detail: error.to_string(),
            }
        })
    }

    /// Resolves distinct references concurrently for `scope`. The policy is
    /// checked for all of them first, so a denied reference stops the run
    /// before any fetch. Returns the first failure in reference order when any
    /// fails.
    pub async fn resolve_all(
        &self,
        references: &BTreeSet<SecretRef>,
        scope: &Scope,
    ) -> Result<BTreeMap<SecretRef, SecretValue>, SecretError> {
        let mut denied = None;
        for reference in references {
            if let Err(error) = self.authorize(reference, scope).await {
                denied.get_or_insert(error);
            }
        }
        if let Some(error) = denied {
            return Err(error);
        }
        let results: Vec<(SecretRef, Result<SecretValue, SecretError>)> =
            stream::iter(references.iter().cloned())
                .map(|reference| async move {
                    let result = self
                        .resolve_in(&reference, scope)
                        .await
                        .map(|(value, _)| value);
                    (reference, result)
                })
                .buffer_unordered(self.inner.settings.concurrency.max(1))
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

    fn cached(&self, key: &Key) -> Option<SecretValue> {
        self.inner.settings.cache_ttl?;
        let mut cache = self.lock_cache();
        match cache.get(key) {
            Some((expires, value)) if *expires > Instant::now() => Some(value.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    /// Returns the in-flight fetch of `key`, starting one when there is none.
    fn shared_fetch(&self, reference: &SecretRef, mapped: &Mapped, key: &Key) -> SharedFetch {
        let mut in_flight = self.lock_in_flight();
        if let Some(fetch) = in_flight.get(key) {
            return fetch.clone();
        }
        let inner = Arc::clone(&self.inner);
        let reference = reference.clone();
        let mapped = mapped.clone();
        let fetch = async move {
            let value = fetch_with_retry(&inner, &reference, &mapped).await?;
            register(&inner, &reference, &value);
            Ok(value)
        }
        .boxed()
        .shared();
        in_flight.insert(key.clone(), fetch.clone());
        fetch
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Key, SharedFetch>> {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, SecretValue)>> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Fetches with a time limit per attempt, retrying throttling, 5xx and
/// network failures with backoff; a `Retry-After` from the store is honoured.
async fn fetch_with_retry(
    inner: &Inner,
    reference: &SecretRef,
    mapped: &Mapped,
) -> Result<SecretValue, SecretError> {
    let settings = &inner.settings;
    let provider = &mapped.provider;
    let (name, version) = (mapped.name.as_str(), mapped.version.as_deref());
    let max_attempts = settings.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let result = tokio::time::timeout(settings.timeout, provider.provider.fetch(name, version))
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::Network(format!(
                    "timed out after {}",
                    humantime::format_duration(settings.timeout)
                )))
            });
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let retryable = matches!(
            error,
            FetchError::Throttled { .. } | FetchError::Network(_) | FetchError::Unavailable(_)
        );
        if !retryable || attempt >= max_attempts {
            return Err(to_secret_error(error, provider, reference, name, attempt));
        }
        let delay = match &error {
            FetchError::Throttled {
                retry_after: Some(after),
            } => (*after).min(MAX_RETRY_AFTER),
            _ => {
                crate::backoff::full_jitter(attempt, settings.initial_backoff, settings.max_backoff)
            }
        };
        tracing::warn!(
            reference = %reference,
            provider = %provider.label(),
            attempt,
            delay_ms = delay.as_millis() as u64,
            error = %describe(&error),
            "secret fetch failed; retrying"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

fn describe(error: &FetchError) -> String {
    match error {
        FetchError::NotFound => "not found".into(),
        FetchError::AccessDenied(detail) => format!("access denied: {detail}"),
        FetchError::Throttled { .. } => "throttled".into(),
        FetchError::Disabled(detail) => format!("disabled: {detail}"),
        FetchError::InvalidName(detail) => format!("invalid name: {detail}"),
        FetchError::Network(detail) => format!("network failure: {detail}"),
        FetchError::Unavailable(detail) => format!("store unavailable: {detail}"),
        FetchError::Other(detail) => detail.clone(),
    }
}

fn to_secret_error(
    error: FetchError,
    provider: &NamedProvider,
    reference: &SecretRef,
    name: &str,
    attempts: u32,
) -> SecretError {
    let reference = reference.to_string();
    let provider = provider.label();
    let name = name.to_string();
    match error {
        FetchError::NotFound => SecretError::NotFound {
            reference,
            provider,
            name,
        },
        FetchError::AccessDenied(detail) => SecretError::AccessDenied {
            reference,
            provider,
            name,
            detail,
        },
        FetchError::Throttled { .. } => SecretError::Throttled {
            reference,
            provider,
            name,
            attempts,
        },
        FetchError::Disabled(detail) => SecretError::Disabled {
            reference,
            provider,
            name,
            detail,
        },
        FetchError::InvalidName(detail) => SecretError::InvalidName {
            reference,
            provider,
            detail,
        },
        FetchError::Network(detail) => SecretError::Network {
            reference,
            provider,
            name,
            attempts,
            detail,
        },
        FetchError::Unavailable(detail) | FetchError::Other(detail) => SecretError::Provider {
            reference,
            provider,
            name,
            detail,
        },
    }
}

/// Maps a reference with the default mapping of `provider`.
fn default_name(provider: &NamedProvider, reference: &SecretRef) -> Result<String, SecretError> {
    provider
        .provider
        .map_name(reference)
        .map_err(|detail| SecretError::InvalidName {
            reference: reference.to_string(),
            provider: provider.label(),
            detail,
        })
}

/// Registers a value with the redactor; warns once per reference when the
/// value is too short to redact.
fn register(inner: &Inner, reference: &SecretRef, value: &SecretValue) {
    if inner.redactor.register(value.expose()) != Registration::TooShort {
        return;
    }
    let mut warned = inner
        .warned_short
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if warned.insert(reference.to_string()) {
        tracing::warn!(
            reference = %reference,
            min_length = inner.redactor.min_len(),
            "secret value is shorter than the redaction minimum and will not be masked in output"
        );
    }
}
