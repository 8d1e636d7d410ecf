//! AWS Secrets Manager provider.
//!
//! Mapping: the reference path is the secret name, unchanged, so
//! `secret:/collate/hybrid-ingestion/mysql/password` reads the secret named
//! `/collate/hybrid-ingestion/mysql/password`.
//!
//! Versions: a version after `#` that has the shape of a UUID
//! (`8-4-4-4-12` hex digits, as in `#a1b2c3d4-...`) is sent as `VersionId`.
//! Any other version is sent as `VersionStage`, so `#AWSPREVIOUS` reads the
//! previous value. Without a version the store returns the `AWSCURRENT` stage.
//!
//! Values: the secret must hold a `SecretString`, stored as plain text. A
//! secret that holds only `SecretBinary` fails with an error.
//!
//! Permission: the runner's IAM identity needs `secretsmanager:GetSecretValue`
//! on each secret's ARN, and `kms:Decrypt` on the KMS key when the secret is
//! encrypted with a customer managed key.
//!
//! Credentials come from the standard AWS chain: environment variables, the
//! shared config and credentials files (with the configured profile), web
//! identity (IRSA on EKS), then container and instance metadata. The SDK makes
//! one attempt per fetch because the resolver retries.
//!
//! AWS secret names contain only ASCII letters, digits and `/_+=.@-` and are
//! at most 512 characters, so a path with other characters (such as a space)
//! is rejected with an error naming them instead of failing as not found.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::{
    GetSecretValueError, GetSecretValueOutput,
};

use super::{FetchError, SecretProvider, SecretRef, SecretValue};

/// Maximum secret name length AWS Secrets Manager accepts.
const MAX_NAME_LEN: usize = 512;
use crate::config::reader::{Issues, Section};

/// Settings of the `aws` provider section of runner.yaml. Each one that is
/// unset falls back to the AWS SDK's own lookup (environment variables and the
/// shared config file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// AWS region, such as `us-east-1`.
    pub region: Option<String>,
    /// Endpoint URL that replaces the regional Secrets Manager endpoint, for
    /// VPC endpoints and test servers.
    pub endpoint_url: Option<String>,
    /// Named profile of the shared AWS config and credentials files.
    pub profile: Option<String>,
}

impl AwsSettings {
    /// Reads `region`, `endpoint_url` and `profile` from the provider section.
    /// The caller reports unknown keys with `Section::finish`.
    pub fn read(section: &mut Section, issues: &mut Issues) -> AwsSettings {
        AwsSettings {
            region: non_empty(section, "region", issues),
            endpoint_url: non_empty(section, "endpoint_url", issues),
            profile: non_empty(section, "profile", issues),
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

/// Reads secrets from AWS Secrets Manager with `GetSecretValue`.
pub struct AwsProvider {
    client: Client,
}

impl AwsProvider {
    /// Builds a client from the standard AWS configuration chain with the
    /// settings applied on top. Credentials are loaded at the first fetch.
    pub async fn new(settings: &AwsSettings) -> Result<AwsProvider, String> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint_url) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint_url.clone());
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile.clone());
        }
        let config = loader.retry_config(RetryConfig::disabled()).load().await;
        if config.region().is_none() {
            return Err(
                "no AWS region is configured; set secrets.provider.region in runner.yaml \
                 or the AWS_REGION environment variable"
                    .into(),
            );
        }
        Ok(AwsProvider::from_sdk_config(&config))
    }

    /// Builds a provider from a ready SDK configuration. Retries are
    /// disabled even when the configuration enables them.
    pub fn from_sdk_config(config: &aws_config::SdkConfig) -> AwsProvider {
        let client_config = aws_sdk_secretsmanager::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .build();
        AwsProvider {
            client: Client::from_conf(client_config),
        }
    }
}

#[async_trait::async_trait]
impl SecretProvider for AwsProvider {
    fn kind(&self) -> &'static str {
        "aws"
    }

    fn map_name(&self, reference: &SecretRef) -> Result<String, String> {
        let name = reference.path();
        let invalid: Vec<char> = name
            .chars()
            .filter(|c| !c.is_ascii_alphanumeric() && !"/_+=.@-".contains(*c))
            .collect();
        if !invalid.is_empty() {
            return Err(format!(
                "AWS secret names may contain only ASCII letters, digits and /_+=.@-, not {invalid:?}; rename the secret and its reference, or map it with a map_secret hook"
            ));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(format!(
                "AWS secret names are at most {MAX_NAME_LEN} characters"
            ));
        }
        Ok(name.to_string())
    }

    async fn fetch(&self, name: &str, version: Option<&str>) -> Result<SecretValue, FetchError> {
        let mut request = self.client.get_secret_value().secret_id(name);
        request = match version {
            Some(version) if is_uuid(version) => request.version_id(version),
            Some(stage) => request.version_stage(stage),
            None => request,
        };
        let output = request.send().await.map_err(map_sdk_error)?;
        secret_string(name, output)
    }
}

/// Takes the `SecretString` out of a response.
fn secret_string(name: &str, output: GetSecretValueOutput) -> Result<SecretValue, FetchError> {
    if let Some(value) = output.secret_string {
        return Ok(SecretValue::new(value));
    }
    if output.secret_binary.is_some() {
        return Err(FetchError::Other(format!(
            "secret {name:?} is a binary secret; store the value as a SecretString"
        )));
    }
    Err(FetchError::Other(format!(
        "secret {name:?} has neither a SecretString nor a SecretBinary"
    )))
}

/// Returns true for the `8-4-4-4-12` hex digit form that Secrets Manager
/// uses for version ids.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    groups.len() == lengths.len()
        && groups.iter().zip(lengths).all(|(group, length)| {
            group.len() == length && group.chars().all(|c| c.is_ascii_hexdigit())
        })
}

/// Sorts an SDK error into the provider error kinds.
fn map_sdk_error(error: SdkError<GetSecretValueError>) -> FetchError {
    match &error {
        SdkError::ServiceError(context) => {
            let raw = context.raw();
            let status = raw.status().as_u16();
            let retry_after = raw.headers().get("retry-after").and_then(parse_retry_after);
            map_service_error(context.err(), status, retry_after)
        }
        SdkError::ResponseError(context) => {
            let status = context.raw().status().as_u16();
            let detail = format!(
                "unexpected response with HTTP status {status}: {}",
                DisplayErrorContext(&error)
            );
            map_http_status(status, None, detail)
        }
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            FetchError::Other(DisplayErrorContext(&error).to_string())
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            FetchError::Network(DisplayErrorContext(&error).to_string())
        }
        _ => FetchError::Other(DisplayErrorContext(&error).to_string()),
    }
}

/// Maps an error response by its error code, then by its HTTP status.
fn map_service_error(
    error: &GetSecretValueError,
    status: u16,
    retry_after: Option<Duration>,
) -> FetchError {
    let code = error.code().unwrap_or_default();
    let message = error.message().unwrap_or_default();
    let detail = if message.is_empty() {
        format!("{code} (HTTP {status})")
    } else {
        format!("{code}: {message}")
    };
    match code {
        "ResourceNotFoundException" => FetchError::NotFound,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException" => FetchError::AccessDenied(detail),
        "DecryptionFailure" => FetchError::AccessDenied(format!(
            "{detail}; check that the runner may use kms:Decrypt on the secret's KMS key"
        )),
        "ThrottlingException"
        | "TooManyRequestsException"
        | "TooManyRequests"
        | "RequestLimitExceeded" => FetchError::Throttled { retry_after },
        "InvalidRequestException" if is_deletion_message(message) => FetchError::Disabled(detail),
        "InvalidParameterException" | "ValidationException"
            if !message.to_ascii_lowercase().contains("version") =>
        {
            FetchError::InvalidName(detail)
        }
        "InternalServiceError" | "InternalFailure" | "ServiceUnavailable" => {
            FetchError::Unavailable(detail)
        }
        _ => map_http_status(status, retry_after, detail),
    }
}

/// Maps an HTTP status when the error code alone does not decide.
fn map_http_status(status: u16, retry_after: Option<Duration>, detail: String) -> FetchError {
    match status {
        403 => FetchError::AccessDenied(detail),
        429 => FetchError::Throttled { retry_after },
        500..=599 => FetchError::Unavailable(detail),
        _ => FetchError::Other(detail),
    }
}

/// Returns true for the message of a secret scheduled for deletion. AWS
/// writes "marked for deletion" and moto writes "marked deleted".
fn is_deletion_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("marked for deletion") || message.contains("marked deleted")
}

/// Parses a `Retry-After` value in seconds.
// NOTE: the HTTP-date form of Retry-After is not parsed, so it yields None.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests;
