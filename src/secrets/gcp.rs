//! GCP Secret Manager provider.
//!
//! Mapping: secret ids contain only `[A-Za-z0-9_-]` and at most 255
//! characters, so the reference path becomes an id in the configured
//! project. Leading `/` characters are dropped and every other character
//! outside that set becomes `_`:
//! `secret:/collate/hybrid-ingestion/my.db/pass word` reads
//! `projects/PROJECT/secrets/collate_hybrid-ingestion_my_db_pass_word`.
//! A path that is a full resource name, `/projects/P/secrets/S` or
//! `/projects/P/secrets/S/versions/V`, is used as written without the
//! leading `/`, which reaches secrets in other projects.
//!
//! Versions: a version after `#` is a version number (`#3`) or `latest`,
//! passed on as the last segment of the version name. Without one the
//! provider reads `latest`.
//!
//! Values: the payload must be UTF-8 text. When the response carries a
//! `dataCrc32c` checksum, the payload is checked against it.
//!
//! Permission: the runner's identity needs `roles/secretmanager.secretAccessor`
//! (`secretmanager.versions.access`) on each secret.
//!
//! Credentials are Application Default Credentials: the file named by
//! `GOOGLE_APPLICATION_CREDENTIALS`, the gcloud user credentials, or the
//! metadata server of GCE, GKE (Workload Identity) and Cloud Run. The client
//! makes one attempt per fetch because the resolver retries.

use std::time::Duration;

use google_cloud_auth::credentials::anonymous;
use google_cloud_gax::error::CredentialsError;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::AccessSecretVersionResponse;

use super::{FetchError, SecretProvider, SecretRef, SecretValue};
use crate::config::reader::{Issues, Section};

/// Environment variable read when runner.yaml names no project.
pub const PROJECT_ENV: &str = "GOOGLE_CLOUD_PROJECT";

/// Maximum length of a secret id, in characters.
const MAX_SECRET_ID_LEN: usize = 255;

/// Settings of the `gcp` provider section of runner.yaml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcpSettings {
    /// Project that contains the secrets. `GOOGLE_CLOUD_PROJECT` is used
    /// when it is unset.
    pub project: Option<String>,
    /// Endpoint URL that replaces `https://secretmanager.googleapis.com`,
    /// for Private Service Connect endpoints and emulators.
    pub endpoint: Option<String>,
    /// Unauthenticated mode for emulators and tests: requests carry no
    /// credentials, so Google's endpoint rejects them.
    pub anonymous: bool,
}

impl GcpSettings {
    /// Reads `project`, `endpoint` and `anonymous` from the provider section.
    /// The caller reports unknown keys with `Section::finish`.
    pub fn read(section: &mut Section, issues: &mut Issues) -> GcpSettings {
        GcpSettings {
            project: non_empty(section, "project", issues),
            endpoint: non_empty(section, "endpoint", issues),
            anonymous: section.bool("anonymous", issues).unwrap_or(false),
        }
    }
}

/// Reads an optional string and records an issue when it is empty.
fn non_empty(section: &mut Section, key: &str, issues: &mut Issues) -> Option<String> {
    let value = section.string(key, issues)?;
    if value.trim().is_empty() {
        issues.push(
            &section.path_of(key),
            "empty value; remove the key or set a value",
        );
        return None;
    }
    Some(value)
}

/// Reads secrets from GCP Secret Manager with `AccessSecretVersion`.
pub struct GcpProvider {
    client: SecretManagerService,
    project: String,
}

impl GcpProvider {
    /// Builds a client for the configured project. Fails when neither the
    /// settings nor `GOOGLE_CLOUD_PROJECT` name a project, or when the
    /// credentials cannot be set up.
    pub async fn new(settings: &GcpSettings) -> Result<GcpProvider, String> {
        let from_env = std::env::var(PROJECT_ENV).ok();
        GcpProvider::with_env_project(settings, from_env).await
    }

    /// Builds the provider with `from_env` as the value of
    /// `GOOGLE_CLOUD_PROJECT`.
    async fn with_env_project(
        settings: &GcpSettings,
        from_env: Option<String>,
    ) -> Result<GcpProvider, String> {
        let project = resolve_project(settings.project.as_deref(), from_env)?;
        let mut builder = SecretManagerService::builder().with_retry_policy(NeverRetry);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        if settings.anonymous {
            builder = builder.with_credentials(anonymous::Builder::new().build());
        }
        let client = builder.build().await.map_err(|error| {
            format!(
                "cannot create the GCP Secret Manager client: {error}; check \
                     GOOGLE_APPLICATION_CREDENTIALS and secrets.provider.endpoint"
            )
        })?;
        Ok(GcpProvider { client, project })
    }

    /// Returns the project that contains the secrets named by id.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// Builds `projects/P/secrets/S/versions/V` from a mapped name (a full
    /// secret or version name, or a bare secret id) and a version.
    fn version_name(&self, name: &str, version: Option<&str>) -> Result<String, FetchError> {
        let secret = if name.starts_with("projects/") {
            name.to_string()
        } else {
            format!("projects/{}/secrets/{name}", self.project)
        };
        if !secret.contains("/versions/") {
            return Ok(format!("{secret}/versions/{}", version.unwrap_or("latest")));
        }
        match version {
            None => Ok(secret),
            Some(version) => Err(FetchError::InvalidName(format!(
                "{secret} already names a version, so #{version} cannot be added; remove one of them"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl SecretProvider for GcpProvider {
    fn kind(&self) -> &'static str {
        "gcp"
    }

    fn map_name(&self, reference: &SecretRef) -> Result<String, String> {
        if let Some(name) = resource_name(reference.path())? {
            if name.contains("/versions/") && reference.version().is_some() {
                return Err(format!(
                    "{name} names a version in its path and again after '#'; remove one of them"
                ));
            }
            return Ok(name);
        }
        let id = secret_id(reference.path())?;
        Ok(format!("projects/{}/secrets/{id}", self.project))
    }

    async fn fetch(&self, name: &str, version: Option<&str>) -> Result<SecretValue, FetchError> {
        let version_name = self.version_name(name, version)?;
        let response = self
            .client
            .access_secret_version()
            .set_name(&version_name)
            .send()
            .await
            .map_err(map_gax_error)?;
        decode_payload(&version_name, response)
    }
}

/// Picks the project from the settings, else from `GOOGLE_CLOUD_PROJECT`.
fn resolve_project(configured: Option<&str>, from_env: Option<String>) -> Result<String, String> {
    let project = match configured {
        Some(project) => project.trim().to_string(),
        None => from_env.unwrap_or_default().trim().to_string(),
    };
    if project.is_empty() {
        return Err(format!(
            "no GCP project is configured for the gcp secrets provider; \
             set secrets.provider.project in runner.yaml or the {PROJECT_ENV} environment variable"
        ));
    }
    if project.contains('/') || project.contains(char::is_whitespace) {
        return Err(format!(
            "invalid GCP project {project:?}: a project id or number contains no '/' or spaces"
        ));
    }
    Ok(project)
}

/// Recognises a path written as `/projects/P/secrets/S[/versions/V]` and
/// returns it without the leading `/`. Returns `Ok(None)` for other paths.
fn resource_name(path: &str) -> Result<Option<String>, String> {
    let name = path.trim_start_matches('/');
    let segments: Vec<&str> = name.split('/').collect();
    let shaped = matches!(
        segments.as_slice(),
        ["projects", _, "secrets", _] | ["projects", _, "secrets", _, "versions", _]
    );
    if !shaped {
        return Ok(None);
    }
    let secret = segments[3];
    if !is_secret_id(secret) {
        return Err(format!(
            "secret id {secret:?} in {name} is invalid: ids contain only letters, digits, '_' and '-', \
             at most {MAX_SECRET_ID_LEN} characters"
        ));
    }
    Ok(Some(name.to_string()))
}

/// Maps a path to a secret id: leading `/` dropped, other characters outside
/// `[A-Za-z0-9_-]` replaced by `_`.
fn secret_id(path: &str) -> Result<String, String> {
    let id: String = path
        .trim_start_matches('/')
        .chars()
        .map(|c| if is_id_char(c) { c } else { '_' })
        .collect();
    let length = id.chars().count();
    if length == 0 {
        return Err("the path is empty".into());
    }
    if length > MAX_SECRET_ID_LEN {
        return Err(format!(
            "the secret id {id:?} is {length} characters long, more than the {MAX_SECRET_ID_LEN} \
             GCP allows; shorten the path or map it with a map_secret hook"
        ));
    }
    Ok(id)
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_secret_id(text: &str) -> bool {
    !text.is_empty() && text.chars().count() <= MAX_SECRET_ID_LEN && text.chars().all(is_id_char)
}

/// Checks the checksum and decodes the payload as UTF-8 text.
fn decode_payload(
    version_name: &str,
    response: AccessSecretVersionResponse,
) -> Result<SecretValue, FetchError> {
    let Some(payload) = response.payload else {
        return Err(FetchError::Other(format!(
            "the response for {version_name} has no payload"
        )));
    };
    verify_crc32c(version_name, &payload.data, payload.data_crc32c)?;
    match String::from_utf8(payload.data.to_vec()) {
        Ok(text) => Ok(SecretValue::new(text)),
        Err(_) => Err(FetchError::Other(format!(
            "{version_name} contains bytes that are not valid UTF-8; store the value as text"
        ))),
    }
}

/// Compares the CRC32C (Castagnoli) checksum of `data` with the
/// `dataCrc32c` the service sent, if it sent one.
fn verify_crc32c(version_name: &str, data: &[u8], expected: Option<i64>) -> Result<(), FetchError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = i64::from(crc32c::crc32c(data));
    if actual == expected {
        return Ok(());
    }
    Err(FetchError::Other(format!(
        "checksum mismatch for {version_name}: the payload's CRC32C is {actual} but dataCrc32c \
         is {expected}, so the response was corrupted in transit"
    )))
}

/// Sorts a client error into the provider error kinds.
fn map_gax_error(error: google_cloud_secretmanager_v1::Error) -> FetchError {
    let retry_after = error
        .http_headers()
        .and_then(|headers| headers.get("retry-after"))
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after);
    if let Some(status) = error.status() {
        let detail = format!("{}: {}", status.code.name(), status.message);
        return map_status_code(status.code, detail, retry_after);
    }
    if let Some(http_status) = error.http_status_code() {
        return map_http_status(http_status, error.to_string(), retry_after);
    }
    if error.is_authentication() {
        return map_credentials_error(&error);
    }
    if error.is_timeout() || error.is_connect() || error.is_transport() || error.is_io() {
        return FetchError::Network(error.to_string());
    }
    FetchError::Other(error.to_string())
}

/// Maps the canonical status code of a service error.
fn map_status_code(code: Code, detail: String, retry_after: Option<Duration>) -> FetchError {
    match code {
        Code::NotFound => FetchError::NotFound,
        Code::PermissionDenied | Code::Unauthenticated => FetchError::AccessDenied(detail),
        Code::ResourceExhausted => FetchError::Throttled { retry_after },
        Code::FailedPrecondition => FetchError::Disabled(detail),
        Code::InvalidArgument => FetchError::InvalidName(detail),
        Code::Unavailable | Code::Internal | Code::Unknown | Code::DeadlineExceeded => {
            FetchError::Unavailable(detail)
        }
        _ => FetchError::Other(detail),
    }
}

/// Maps an HTTP error whose body is not a Google error status.
fn map_http_status(status: u16, detail: String, retry_after: Option<Duration>) -> FetchError {
    match status {
        404 => FetchError::NotFound,
        401 | 403 => FetchError::AccessDenied(detail),
        429 => FetchError::Throttled { retry_after },
        500..=599 => FetchError::Unavailable(detail),
        _ => FetchError::Other(detail),
    }
}

/// Maps a failure to obtain an access token. A transient one, such as a
/// metadata server that did not respond, is a network error.
fn map_credentials_error(error: &google_cloud_secretmanager_v1::Error) -> FetchError {
    let transient = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<CredentialsError>())
        .is_some_and(CredentialsError::is_transient);
    if transient {
        return FetchError::Network(error.to_string());
    }
    FetchError::Other(format!(
        "{error}; configure Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, \
         `gcloud auth application-default login`, or a service account attached to the workload)"
    ))
}

/// Parses a `Retry-After` value in seconds.
// NOTE: the HTTP-date form of Retry-After is not parsed, so it yields None.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests;
