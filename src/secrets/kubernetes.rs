//! The Kubernetes Secrets provider.
//!
//! A reference names one Secret in one namespace. The provider reads the value
//! from one data key of that Secret (`value` unless `secrets.provider.key`
//! names another), so a secret stored with
//! `kubectl create secret generic NAME --from-literal=value=...` is found.
//!
//! # Name mapping
//!
//! A Secret name is a DNS-1123 subdomain: at most 253 characters, lowercase
//! letters, digits, `-` and `.`, with every `.`-separated label starting and
//! ending with a letter or digit. The reference path maps to a name like this:
//!
//! 1. ASCII letters are lowercased.
//! 2. Every character other than `[a-z0-9.-]` (`/`, space, `_`, non-ASCII
//!    letters and so on) becomes `-`.
//! 3. A run of `-` and `.` collapses to one character: `.` when the run is
//!    only dots, `-` otherwise.
//! 4. Leading and trailing `-` and `.` are dropped.
//! 5. An empty result or one longer than 253 characters is an error.
//!
//! So `/collate/hybrid-ingestion/MySQL/password` becomes
//! `collate-hybrid-ingestion-mysql-password`. The mapping is not one-to-one:
//! `/a/b_c` and `/A/b-c` both become `a-b-c`. A `map_secret` hook can replace
//! it per reference.
//!
//! A Secret has no versions, so a reference with `#version` fails.
//!
//! # Cluster and namespace
//!
//! The API server and credentials come from the first of these that applies:
//!
//! 1. `secrets.provider.kubeconfig`: that kubeconfig file, at
//!    `secrets.provider.context` or its current-context.
//! 2. `secrets.provider.context` alone: that context of the default kubeconfig
//!    (`$KUBECONFIG`, else `~/.kube/config`).
//! 3. Inside a pod (`KUBERNETES_SERVICE_HOST` is set and the service account
//!    token file exists): the pod's service account, through
//!    `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` and the token, CA
//!    and namespace files in `/var/run/secrets/kubernetes.io/serviceaccount/`.
//! 4. Otherwise the default kubeconfig at its current-context.
//!
//! The namespace is `secrets.provider.namespace`, else the namespace of the
//! kubeconfig context or the pod's service account, else `default`.
//!
//! # Permissions
//!
//! The runner's identity needs `get` on `secrets` in that one namespace, and
//! nothing else: no `list` or `watch`, and no ClusterRole. Restrict the Role to
//! the Secrets the runner reads with `resourceNames`:
//!
//! ```yaml
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: Role
//! metadata: {name: hybrid-runner-secrets, namespace: ingestion}
//! rules:
//!   - apiGroups: [""]
//!     resources: [secrets]
//!     verbs: [get]
//!     resourceNames: [collate-hybrid-ingestion-mysql-password]
//! ```
//!
//! bound to the runner's ServiceAccount (or kubeconfig user) with a
//! RoleBinding in the same namespace.
//!
//! # Errors
//!
//! - 404 is `NotFound`.
//! - 401 and 403 are `AccessDenied` with the API server's message.
//! - 429 is `Throttled` with the `Retry-After` delay.
//! - 5xx is `Unavailable`, and a failed connection is `Network`.
//! - A missing data key, a value that is not UTF-8 and a `#version` are
//!   `Other`.
//!
//! The client makes one attempt per fetch, because the resolver retries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Secret;
use kube::client::{AuthError, Body};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::core::Status;
use kube::core::params::GetParams;
use kube::core::request::Request;
use kube::{Client, Config, Resource};

use super::{FetchError, SecretProvider, SecretRef, SecretValue};
use crate::config::reader::{Issues, Section};

/// The data key read when `secrets.provider.key` is not set.
pub const DEFAULT_KEY: &str = "value";

/// Maximum length of a Secret name (a DNS-1123 subdomain).
const MAX_NAME_LEN: usize = 253;

/// Maximum length of a namespace name (a DNS-1123 label).
const MAX_NAMESPACE_LEN: usize = 63;

/// Maximum size of an API response body that is read. The data of a Secret is
/// at most 1 MiB, which grows by a third in base64, and client-side
/// `kubectl apply` stores a second copy in an annotation.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The service account token that kube's in-cluster config reads.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Settings of the `kubernetes` provider from `secrets.provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// Namespace of the Secrets. `None` takes it from the kubeconfig context or
    /// the pod's service account.
    pub namespace: Option<String>,
    /// Kubeconfig file. `None` uses the pod's service account when running in
    /// a cluster, else the default kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context. `None` uses the current-context.
    pub context: Option<String>,
    /// Data key of the Secret whose value is returned.
    pub key: String,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        KubernetesSettings {
            namespace: None,
            kubeconfig: None,
            context: None,
            key: DEFAULT_KEY.to_string(),
        }
    }
}

impl KubernetesSettings {
    /// Reads `namespace`, `kubeconfig`, `context` and `key` from the provider
    /// section, recording an issue for each invalid value. The caller reads
    /// `type` and calls `finish`.
    pub fn read(section: &mut Section, issues: &mut Issues) -> KubernetesSettings {
        let namespace = section.string("namespace", issues);
        if let Some(namespace) = &namespace
            && let Err(problem) = check_namespace(namespace)
        {
            issues.push(&section.path_of("namespace"), problem);
        }

        let kubeconfig = section.path("kubeconfig", issues);

        let context = section.string("context", issues);
        if context
            .as_deref()
            .is_some_and(|context| context.trim().is_empty())
        {
            issues.push(
                &section.path_of("context"),
                "empty context name; remove the key to use the kubeconfig's current-context",
            );
        }

        let key = section
            .string("key", issues)
            .unwrap_or_else(|| DEFAULT_KEY.to_string());
        if let Err(problem) = check_key(&key) {
            issues.push(&section.path_of("key"), problem);
        }

        KubernetesSettings {
            namespace,
            kubeconfig,
            context,
            key,
        }
    }
}

/// Source of the client configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConfigSource {
    /// A kubeconfig file named in the settings.
    KubeconfigFile(PathBuf),
    /// `$KUBECONFIG`, else `~/.kube/config`.
    DefaultKubeconfig,
    /// The pod's service account.
    InCluster,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::KubeconfigFile(path) => write!(f, "kubeconfig {}", path.display()),
            ConfigSource::DefaultKubeconfig => f.write_str("the default kubeconfig"),
            ConfigSource::InCluster => f.write_str("the pod's service account"),
        }
    }
}

/// Chooses the configuration source in the order the module documentation
/// lists. `in_cluster` is called only when no kubeconfig or context is set.
fn choose_source(settings: &KubernetesSettings, in_cluster: impl FnOnce() -> bool) -> ConfigSource {
    if let Some(path) = &settings.kubeconfig {
        return ConfigSource::KubeconfigFile(path.clone());
    }
    if settings.context.is_none() && in_cluster() {
        return ConfigSource::InCluster;
    }
    ConfigSource::DefaultKubeconfig
}

/// Returns true inside a pod that has a service account token mounted.
fn in_cluster_environment() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && Path::new(SERVICE_ACCOUNT_TOKEN).is_file()
}

/// Reads Secrets from one namespace through the Kubernetes API.
pub struct KubernetesProvider {
    client: Client,
    /// API path of the Secrets collection, `/api/v1/namespaces/NS/secrets`.
    collection_path: String,
    namespace: String,
    key: String,
    /// API server URL, for messages.
    cluster_url: String,
}

impl KubernetesProvider {
    /// Loads the client configuration and builds the client. Nothing is sent
    /// to the API server until the first fetch.
    pub async fn new(settings: &KubernetesSettings) -> Result<KubernetesProvider, String> {
        check_key(&settings.key).map_err(|problem| format!("secrets.provider.key: {problem}"))?;
        crate::tls::install_crypto_provider();

        let source = choose_source(settings, in_cluster_environment);
        let mut config = load_config(&source, settings.context.as_deref()).await?;
        // The resolver retries with its own backoff, so kube's retry layer is
        // turned off to keep one request per fetch.
        config.default_retry = false;

        let (namespace, origin) = match &settings.namespace {
            Some(namespace) => (namespace.clone(), "secrets.provider.namespace".to_string()),
            None => (
                config.default_namespace.clone(),
                format!("the namespace of {source}"),
            ),
        };
        check_namespace(&namespace).map_err(|problem| {
            format!("{problem}; the value came from {origin}, so set secrets.provider.namespace to a valid name")
        })?;

        let cluster_url = config.cluster_url.to_string();
        let cluster_url = cluster_url.trim_end_matches('/').to_string();
        let client = Client::try_from(config).map_err(|error| {
            format!(
                "cannot build a Kubernetes client for {cluster_url} from {source}: {}",
                describe_kube_error(&error)
            )
        })?;
        tracing::info!(
            source = %source,
            cluster = %cluster_url,
            namespace = %namespace,
            key = %settings.key,
            "kubernetes secrets provider configured"
        );
        Ok(KubernetesProvider {
            client,
            collection_path: Secret::url_path(&(), Some(&namespace)),
            namespace,
            key: settings.key.clone(),
            cluster_url,
        })
    }

    /// Returns the namespace the Secrets are read from.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Sends one GET for a Secret and returns it, or the error the response
    /// status maps to.
    async fn get_secret(&self, name: &str) -> Result<Secret, FetchError> {
        let request = Request::new(self.collection_path.as_str())
            .get(name, &GetParams::default())
            .map_err(|error| FetchError::InvalidName(format!("{name:?}: {error}")))?;
        let response = self
            .client
            .send(request.map(Body::from))
            .await
            .map_err(|error| self.send_error(&error))?;

        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_body(response.into_body(), name).await?;

        if (200..300).contains(&status) {
            return parse_secret(&body, name);
        }
        Err(self.status_error(status, &body, retry_after, name))
    }

    /// Maps a failed request (no HTTP response) to a fetch error.
    fn send_error(&self, error: &kube::Error) -> FetchError {
        match error {
            kube::Error::Auth(_) => FetchError::Other(format!(
                "cannot get credentials for the Kubernetes API server {}: {}; check the kubeconfig user or the service account token",
                self.cluster_url,
                describe_kube_error(error)
            )),
            _ => FetchError::Network(format!(
                "request to the Kubernetes API server {} failed: {}",
                self.cluster_url,
                error_chain(error)
            )),
        }
    }

    /// Maps an error response to a fetch error, keeping the API server's
    /// message.
    fn status_error(
        &self,
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
        name: &str,
    ) -> FetchError {
        let parsed: Option<Status> = serde_json::from_slice(body).ok();
        let message = match &parsed {
            Some(parsed) if !parsed.message.is_empty() => parsed.message.clone(),
            _ => body_excerpt(body),
        };
        match status {
            404 => FetchError::NotFound,
            401 => FetchError::AccessDenied(format!(
                "the Kubernetes API server rejected the credentials (401 {message}); check the token or certificate of the kubeconfig user, or the service account token"
            )),
            403 => FetchError::AccessDenied(format!(
                "{message}; grant the runner's identity get on secrets in namespace {} with a Role and RoleBinding",
                self.namespace
            )),
            429 => FetchError::Throttled {
                retry_after: retry_after.or_else(|| {
                    parsed
                        .and_then(|parsed| parsed.details)
                        .map(|details| details.retry_after_seconds)
                        .filter(|seconds| *seconds > 0)
                        .map(|seconds| Duration::from_secs(u64::from(seconds)))
                }),
            },
            500..=599 => FetchError::Unavailable(format!(
                "the Kubernetes API server {} returned {status}: {message}",
                self.cluster_url
            )),
            _ => FetchError::Other(format!(
                "the Kubernetes API server {} returned {status} for secret {name} in namespace {}: {message}",
                self.cluster_url, self.namespace
            )),
        }
    }
}

#[async_trait::async_trait]
impl SecretProvider for KubernetesProvider {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn map_name(&self, reference: &SecretRef) -> Result<String, String> {
        secret_name(reference.path())
    }

    async fn fetch(&self, name: &str, version: Option<&str>) -> Result<SecretValue, FetchError> {
        if let Some(version) = version {
            return Err(FetchError::Other(format!(
                "Kubernetes Secrets have no versions, so version {version:?} cannot be read; remove #{version} from the reference"
            )));
        }
        // A map_secret hook can return any string, and kube puts the name into
        // the URL path without escaping it.
        if !is_dns1123_subdomain(name) {
            return Err(FetchError::InvalidName(format!(
                "{name:?} is not a valid Kubernetes Secret name; a name has at most {MAX_NAME_LEN} lowercase letters, digits, '-' and '.', and each '.'-separated part starts and ends with a letter or digit"
            )));
        }
        let secret = self.get_secret(name).await?;
        value_of(&secret, name, &self.key)
    }
}

/// Loads the client configuration from `source`.
///
/// NOTE: the tests reach the API server only through a kubeconfig file with
/// an `http://` server and a bearer token. The in-cluster and default
/// kubeconfig branches, TLS with the kubeconfig's CA, client certificates and
/// exec plugins are left to kube and are not exercised here.
async fn load_config(source: &ConfigSource, context: Option<&str>) -> Result<Config, String> {
    let kubeconfig = match source {
        ConfigSource::InCluster => {
            return Config::incluster().map_err(|error| {
                format!(
                    "cannot load the in-cluster Kubernetes config: {}; check that the pod mounts its service account token, or set secrets.provider.kubeconfig",
                    error_chain(&error)
                )
            });
        }
        ConfigSource::KubeconfigFile(path) => Kubeconfig::read_from(path).map_err(|error| {
            format!(
                "cannot read kubeconfig {}: {}; check secrets.provider.kubeconfig",
                path.display(),
                describe_kubeconfig_error(&error)
            )
        })?,
        ConfigSource::DefaultKubeconfig => Kubeconfig::read().map_err(|error| {
            format!(
                "cannot read the default kubeconfig ($KUBECONFIG, else ~/.kube/config): {}; set secrets.provider.kubeconfig to the kubeconfig file to use",
                describe_kubeconfig_error(&error)
            )
        })?,
    };
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|error| {
            let context = match context {
                Some(context) => format!("context {context:?}"),
                None => "the current-context".to_string(),
            };
            format!(
                "cannot use {context} of {source}: {}; check secrets.provider.context and the kubeconfig",
                describe_kubeconfig_error(&error)
            )
        })
}

/// Maps a reference path to a Secret name by the rules in the module
/// documentation.
pub fn secret_name(path: &str) -> Result<String, String> {
    let mut name = String::with_capacity(path.len());
    // Separators (`-` and `.`) seen since the last letter or digit.
    let mut pending = String::new();
    for c in path.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if !name.is_empty() && !pending.is_empty() {
                name.push(if pending.chars().all(|p| p == '.') {
                    '.'
                } else {
                    '-'
                });
            }
            pending.clear();
            name.push(c);
        } else {
            pending.push(if c == '.' { '.' } else { '-' });
        }
    }

    if name.is_empty() {
        return Err(format!(
            "the path {path:?} has no letters or digits, so it maps to an empty Kubernetes Secret name"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the path maps to a Kubernetes Secret name of {} characters, more than the {MAX_NAME_LEN} allowed; use a shorter path or map it with a map_secret hook",
            name.len()
        ));
    }
    Ok(name)
}

/// Returns true for a DNS-1123 label of any length: lowercase letters, digits
/// and `-`, starting and ending with a letter or digit.
fn is_dns1123_label(label: &str) -> bool {
    let valid_chars = label
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    !label.is_empty() && valid_chars && !label.starts_with('-') && !label.ends_with('-')
}

/// Returns true for a DNS-1123 subdomain, the form of a Secret name.
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN && name.split('.').all(is_dns1123_label)
}

/// Checks a namespace name: a DNS-1123 label.
fn check_namespace(namespace: &str) -> Result<(), String> {
    if namespace.len() <= MAX_NAMESPACE_LEN && is_dns1123_label(namespace) {
        return Ok(());
    }
    Err(format!(
        "invalid namespace {namespace:?}; a namespace name has 1 to {MAX_NAMESPACE_LEN} lowercase letters, digits and '-', and starts and ends with a letter or digit"
    ))
}

/// Checks a Secret data key: letters, digits, `-`, `_` and `.`.
fn check_key(key: &str) -> Result<(), String> {
    let valid_chars = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !key.is_empty() && key.len() <= MAX_NAME_LEN && valid_chars && key != "." && key != ".." {
        return Ok(());
    }
    Err(format!(
        "invalid Secret data key {key:?}; a key has 1 to {MAX_NAME_LEN} letters, digits, '-', '_' and '.', and is not '.' or '..'"
    ))
}

/// Extracts the value under `key` from a Secret.
fn value_of(secret: &Secret, name: &str, key: &str) -> Result<SecretValue, FetchError> {
    let data = secret.data.as_ref();
    let Some(bytes) = data.and_then(|data| data.get(key)) else {
        let keys: Vec<&str> = data
            .map(|data| data.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let present = if keys.is_empty() {
            "it has no data keys".to_string()
        } else {
            format!("its keys are: {}", keys.join(", "))
        };
        return Err(FetchError::Other(format!(
            "secret {name} has no key {key}; set secrets.provider.key to the key that contains the value, or add key {key} to the Secret ({present})"
        )));
    };
    match String::from_utf8(bytes.0.clone()) {
        Ok(value) => Ok(SecretValue::new(value)),
        Err(_) => Err(FetchError::Other(format!(
            "key {key} of secret {name} is not valid UTF-8; store the value as text"
        ))),
    }
}

/// Reads a response body of at most `MAX_RESPONSE_BYTES`.
async fn read_body(body: Body, name: &str) -> Result<Vec<u8>, FetchError> {
    match http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(FetchError::Other(format!(
                "the response for secret {name} is larger than {MAX_RESPONSE_BYTES} bytes, more than any Secret; check that the kubeconfig's server is a Kubernetes API server"
            )))
        }
        Err(error) => Err(FetchError::Network(format!(
            "reading the response for secret {name} failed: {}",
            error_chain(error.as_ref())
        ))),
    }
}

/// Parses a Secret. Serde's message can quote the data it failed on, so only
/// the position is kept.
fn parse_secret(body: &[u8], name: &str) -> Result<Secret, FetchError> {
    serde_json::from_slice(body).map_err(|error| {
        FetchError::Other(format!(
            "the response for secret {name} is not a valid Secret object (JSON error at line {} column {})",
            error.line(),
            error.column()
        ))
    })
}

/// Parses a `Retry-After` value in seconds. The API server sends seconds; an
/// HTTP date is ignored.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Returns the start of a response body that is not a `Status` object, such as
/// a proxy's error page, on one line.
fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let excerpt: String = text
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let excerpt = excerpt.trim();
    if excerpt.is_empty() {
        "no message".to_string()
    } else {
        excerpt.to_string()
    }
}

/// Describes a kubeconfig error. The YAML parser's message quotes lines of
/// the file, which can contain a token, so only the position is kept.
fn describe_kubeconfig_error(error: &KubeconfigError) -> String {
    match error {
        KubeconfigError::ReadConfig(io_error, _) => io_error.to_string(),
        KubeconfigError::Parse(parse_error) => match parse_error.location() {
            Some(at) => format!(
                "invalid kubeconfig YAML at line {} column {}",
                at.line(),
                at.column()
            ),
            None => "invalid kubeconfig YAML".to_string(),
        },
        other => error_chain(other),
    }
}

/// Describes a kube client error. The output of an auth exec plugin, and
/// parser messages that quote it, can contain credentials and are left out.
fn describe_kube_error(error: &kube::Error) -> String {
    let kube::Error::Auth(auth_error) = error else {
        return error_chain(error);
    };
    match auth_error {
        AuthError::AuthExecRun { cmd, out } => format!(
            "auth exec command {cmd:?} failed with {}; its output is not shown because it can contain credentials",
            out.status
        ),
        AuthError::AuthExecParse(_) => {
            "the output of the auth exec command is not a valid ExecCredential".to_string()
        }
        AuthError::ParseTokenKey(_) => "the token key is not valid JSON".to_string(),
        other => error_chain(other),
    }
}

/// Formats an error and its sources, skipping a source whose text the
/// previous message already contains.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod tests;
