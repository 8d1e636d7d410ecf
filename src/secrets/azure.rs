//! Azure Key Vault provider.
//!
//! # Names
//!
//! Key Vault secret names are 1 to 127 characters from `0-9`, `a-z`, `A-Z`
//! and `-`. A reference path becomes a name this way: every other character
//! (the `/` separators included) becomes `-`, runs of `-` collapse into one,
//! and a leading or trailing `-` is dropped. So
//! `secret:/collate/hybrid-ingestion/adls/client-secret` is read as
//! `collate-hybrid-ingestion-adls-client-secret`. Different paths can map to
//! one name (`/a/b` and `/a-b`); a `map_secret` hook can choose names itself.
//! Key Vault compares names without regard to case.
//!
//! # Versions
//!
//! `secret:/path#<version>` reads that Key Vault version (the 32-character
//! version id the portal shows); without `#<version>` the latest version is
//! read.
//!
//! # Credentials
//!
//! `credential` selects how the runner signs in to Microsoft Entra ID:
//!
//! - `default` tries three credentials in order and keeps the first one that
//!   returns a token:
//!   1. workload identity, only when `AZURE_FEDERATED_TOKEN_FILE` is set, as
//!      AKS workload identity does;
//!   2. managed identity, from App Service or the instance metadata service
//!      of a VM;
//!   3. developer tools: the Azure CLI (`az`), then the Azure Developer CLI
//!      (`azd`).
//!
//!   azure_identity 1.0 has no `DefaultAzureCredential`, so this module
//!   builds the chain from those credentials.
//! - `managed_identity`: the system-assigned identity, or the user-assigned
//!   identity whose client id is `client_id`.
//! - `workload_identity`: the federated token in `AZURE_FEDERATED_TOKEN_FILE`;
//!   `tenant_id` and `client_id` replace `AZURE_TENANT_ID` and `AZURE_CLIENT_ID`.
//! - `client_secret`: a service principal with `tenant_id`, `client_id` and
//!   `client_secret_file`, a file that contains only the secret. Inline
//!   secrets are rejected.
//!
//! With `default`, `tenant_id` and `client_id` apply to workload identity and
//! `client_id` also selects a user-assigned managed identity.
//!
//! # Permissions
//!
//! The identity needs to read secrets of the one vault and nothing else: the
//! built-in role "Key Vault Secrets User" assigned on the vault (vaults that
//! use Azure RBAC), or an access policy with the secret permission `Get`
//! (vaults that use access policies). Listing secrets is never needed.
//!
//! # Transport
//!
//! Every request, token requests included, goes through a reqwest client that
//! trusts the system's roots plus the certificates in `ca_file`. The SDK makes
//! one attempt per fetch because the resolver owns timeouts and retries.
//! `authority_host` replaces the Entra ID host for sovereign or private clouds
//! and tests; without it the SDK reads `AZURE_AUTHORITY_HOST` or uses
//! `https://login.microsoftonline.com`.
//!
//! The SDK checks that the vault host is a subdomain of the resource that the
//! vault's 401 challenge names (`*.vault.azure.net`). An IP address or
//! `localhost` can never pass that check, so it is turned off for such hosts
//! (tests, or a vault reached by address inside a private network).

use std::error::Error as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use azure_core::cloud::CustomConfiguration;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::headers::{RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
use azure_core::http::policies::get_retry_after;
use azure_core::http::{ClientOptions, RawResponse, RetryOptions, StatusCode, Transport, Url};
use azure_core::time::OffsetDateTime;
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

use super::{FetchError, SecretProvider, SecretRef, SecretValue};
use crate::config::reader::{Issues, Section};

/// Maximum length of a Key Vault secret name.
pub const MAX_NAME_LEN: usize = 127;

/// Time allowed to open a connection to the vault or the token endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed between two reads of one response.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect timeout for managed identity inside the `default` chain. Outside
/// Azure, connections to the metadata address often hang until a timeout, so
/// a short limit lets the chain move on to developer tools quickly.
/// NOTE: 2 s is an estimate, not measured on Azure, where the metadata
/// service is a link-local address and is expected to connect fast.
const MANAGED_IDENTITY_PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Variable that AKS workload identity sets to the federated token file.
const FEDERATED_TOKEN_FILE_VARIABLE: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// Credential type the runner uses to sign in to Microsoft Entra ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureCredentialKind {
    Default,
    ManagedIdentity,
    WorkloadIdentity,
    ClientSecret,
}

impl AzureCredentialKind {
    /// Every kind, in the order shown in messages.
    pub const ALL: [AzureCredentialKind; 4] = [
        AzureCredentialKind::Default,
        AzureCredentialKind::ManagedIdentity,
        AzureCredentialKind::WorkloadIdentity,
        AzureCredentialKind::ClientSecret,
    ];

    /// Returns the name used in runner.yaml.
    pub fn name(self) -> &'static str {
        match self {
            AzureCredentialKind::Default => "default",
            AzureCredentialKind::ManagedIdentity => "managed_identity",
            AzureCredentialKind::WorkloadIdentity => "workload_identity",
            AzureCredentialKind::ClientSecret => "client_secret",
        }
    }

    /// Parses a runner.yaml name.
    pub fn from_name(name: &str) -> Option<AzureCredentialKind> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// Settings of the Azure Key Vault provider, from `secrets.provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureSettings {
    /// Vault URI, such as `https://my-vault.vault.azure.net/`.
    pub vault_url: String,
    pub credential: AzureCredentialKind,
    /// Directory (tenant) id of the service principal or workload identity.
    pub tenant_id: Option<String>,
    /// Client (application) id, or the client id of a user-assigned managed identity.
    pub client_id: Option<String>,
    /// File that contains only the client secret, for `client_secret`.
    pub client_secret_file: Option<PathBuf>,
    /// Entra ID host, such as `https://login.microsoftonline.us`.
    pub authority_host: Option<String>,
    /// PEM file of extra CA certificates trusted for the vault and Entra ID.
    pub ca_file: Option<PathBuf>,
}

impl AzureSettings {
    /// Returns settings for a vault with ambient credentials (`default`).
    pub fn new(vault_url: impl Into<String>) -> Self {
        AzureSettings {
            vault_url: vault_url.into(),
            credential: AzureCredentialKind::Default,
            tenant_id: None,
            client_id: None,
            client_secret_file: None,
            authority_host: None,
            ca_file: None,
        }
    }
}

/// Reads the Azure keys of a `secrets.provider` section.
///
/// Records an issue for every problem and returns `None` when there was
/// any. Leaves unknown-key checks to the caller's `finish`.
pub fn read(section: &mut Section, issues: &mut Issues) -> Option<AzureSettings> {
    let issues_before = issues.0.len();
    let vault_url = section.required_string("vault_url", issues);
    if let Some(Err(problem)) = vault_url.as_deref().map(check_vault_url) {
        issues.push(&section.path_of("vault_url"), problem);
    }
    let credential = match section.string("credential", issues).as_deref() {
        None => Some(AzureCredentialKind::Default),
        Some(name) => AzureCredentialKind::from_name(name).or_else(|| {
            let choices: Vec<&str> = AzureCredentialKind::ALL.iter().map(|k| k.name()).collect();
            issues.push(
                &section.path_of("credential"),
                format!(
                    "unknown credential {name:?}; use one of: {}",
                    choices.join(", ")
                ),
            );
            None
        }),
    };
    let settings = AzureSettings {
        vault_url: vault_url.unwrap_or_default(),
        credential: credential.unwrap_or(AzureCredentialKind::Default),
        tenant_id: section.string("tenant_id", issues),
        client_id: section.string("client_id", issues),
        client_secret_file: section.path("client_secret_file", issues),
        authority_host: section.string("authority_host", issues),
        ca_file: section.path("ca_file", issues),
    };
    if section.raw("client_secret").is_some() {
        issues.push(
            &section.path_of("client_secret"),
            "inline client secrets are not accepted; write the secret to a file only the runner can read and set client_secret_file to its path",
        );
    }
    check_settings(section, &settings, issues);
    (issues.0.len() == issues_before).then_some(settings)
}

/// Records issues for keys that are missing, unused or malformed for the
/// chosen credential.
fn check_settings(section: &Section, settings: &AzureSettings, issues: &mut Issues) {
    if let Some(Err(problem)) = settings.authority_host.as_deref().map(check_authority_host) {
        issues.push(&section.path_of("authority_host"), problem);
    }
    if let Some(tenant_id) = &settings.tenant_id
        && !is_valid_tenant_id(tenant_id)
    {
        issues.push(
            &section.path_of("tenant_id"),
            format!("invalid tenant id {tenant_id:?}; write the directory (tenant) id, a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47"),
        );
    }
    if settings.credential == AzureCredentialKind::ClientSecret {
        check_client_secret_keys(section, settings, issues);
    } else if settings.client_secret_file.is_some() {
        issues.push(
            &section.path_of("client_secret_file"),
            format!(
                "client_secret_file is used only with credential: client_secret, but credential is {}; remove it or change credential",
                settings.credential.name()
            ),
        );
    }
    if settings.credential == AzureCredentialKind::ManagedIdentity && settings.tenant_id.is_some() {
        issues.push(
            &section.path_of("tenant_id"),
            "tenant_id is not used with credential: managed_identity; remove it (set client_id to select a user-assigned identity)",
        );
    }
}

/// Records an issue for each key that `client_secret` requires and that is
/// missing, unless that key already has an issue.
fn check_client_secret_keys(section: &Section, settings: &AzureSettings, issues: &mut Issues) {
    let required = [
        (
            "tenant_id",
            settings.tenant_id.is_some(),
            "the directory (tenant) id of the service principal",
        ),
        (
            "client_id",
            settings.client_id.is_some(),
            "the application (client) id of the service principal",
        ),
        (
            "client_secret_file",
            settings.client_secret_file.is_some(),
            "the path of a file that contains only the client secret",
        ),
    ];
    for (key, present, description) in required {
        let path = section.path_of(key);
        if present || issues.0.iter().any(|issue| issue.path == path) {
            continue;
        }
        issues.push(
            &path,
            format!(
                "missing required value for credential: client_secret; set it to {description}"
            ),
        );
    }
}

/// Checks that `text` is an https vault URI without path, query or fragment.
pub fn check_vault_url(text: &str) -> Result<Url, String> {
    let invalid = |why: &str| {
        format!(
            "invalid vault URL {text:?}: {why}; write the vault URI shown in the Azure portal, such as https://my-vault.vault.azure.net/"
        )
    };
    let url = Url::parse(text).map_err(|error| invalid(&error.to_string()))?;
    if url.scheme() != "https" {
        return Err(invalid("Key Vault is reached only over https"));
    }
    if url.host_str().is_none() {
        return Err(invalid("the host is missing"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a path, query or fragment is not allowed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("user information is not allowed"));
    }
    Ok(url)
}

fn check_authority_host(text: &str) -> Result<(), String> {
    match Url::parse(text) {
        Ok(url) if url.scheme() == "https" && url.host_str().is_some() => Ok(()),
        _ => Err(format!(
            "invalid authority host {text:?}; write an https URL such as https://login.microsoftonline.com"
        )),
    }
}

/// Returns true for the characters azure_identity 1.0 accepts in a tenant id.
fn is_valid_tenant_id(tenant_id: &str) -> bool {
    !tenant_id.is_empty()
        && tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// Maps a reference path to a Key Vault secret name, as the module
/// documentation describes.
pub fn map_path(path: &str) -> Result<String, String> {
    let mut name = String::with_capacity(path.len());
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_end_matches('-').to_string();
    check_name(&name).map(|()| name)
}

/// Checks a name against the Key Vault rules. The error explains why a name fails.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty because the path has no letters or digits; Key Vault names need at least one".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
    {
        return Err(format!(
            "{name:?} contains {c:?}; Key Vault names contain only letters, digits and '-'"
        ));
    }
    let length = name.chars().count();
    if length > MAX_NAME_LEN {
        return Err(format!(
            "{:?}... is {length} characters long; Key Vault allows at most {MAX_NAME_LEN}, so shorten the path or map it with a map_secret hook",
            name.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

/// Checks a version id. Key Vault versions contain only letters and digits.
fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "invalid Key Vault version {version:?}; write the 32-character version id shown in the Azure portal"
        ));
    }
    Ok(())
}

/// Reads secrets from one Azure Key Vault.
pub struct AzureProvider {
    client: SecretClient,
    vault_url: String,
}

impl std::fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureProvider")
            .field("vault_url", &self.vault_url)
            .finish_non_exhaustive()
    }
}

impl AzureProvider {
    /// Builds the HTTPS client, the credential and the Key Vault client.
    /// Reads `client_secret_file` once, here. No request is sent yet.
    pub async fn new(settings: &AzureSettings) -> Result<AzureProvider, String> {
        let url = check_vault_url(&settings.vault_url)?;
        crate::tls::install_crypto_provider();
        let transport = build_transport(settings.ca_file.as_deref(), CONNECT_TIMEOUT)?;
        let credential = credential(settings, &transport).await?;
        let options = SecretClientOptions {
            client_options: client_options(&transport, None),
            verify_challenge_resource: Some(verifies_challenge_resource(&url)),
            ..Default::default()
        };
        let client = SecretClient::new(url.as_str(), credential, Some(options))
            .map_err(|error| format!("cannot create the Key Vault client for {url}: {error}"))?;
        Ok(AzureProvider {
            client,
            vault_url: url.to_string(),
        })
    }

    /// Returns the vault URL requests go to.
    pub fn vault_url(&self) -> &str {
        &self.vault_url
    }
}

#[async_trait::async_trait]
impl SecretProvider for AzureProvider {
    fn kind(&self) -> &'static str {
        "azure"
    }

    fn map_name(&self, reference: &SecretRef) -> Result<String, String> {
        map_path(reference.path())
    }

    async fn fetch(&self, name: &str, version: Option<&str>) -> Result<SecretValue, FetchError> {
        // The SDK puts the name and version into the URL path as they are, so
        // they are checked first: a name from a hook could contain '/' or '?'.
        check_name(name).map_err(FetchError::InvalidName)?;
        if let Some(version) = version {
            check_version(version).map_err(FetchError::InvalidName)?;
        }
        let options = SecretClientGetSecretOptions {
            secret_version: version.map(str::to_string),
            ..Default::default()
        };
        let response = self
            .client
            .get_secret(name, Some(options))
            .await
            .map_err(|error| fetch_error(&error, &self.vault_url))?;
        // The body contains the value, so a parse error is reported without
        // the parser's message, which can quote the body.
        let secret = response.into_model().map_err(|_| {
            FetchError::Other(format!(
                "Key Vault {} returned a response for {name:?} that is not a secret bundle",
                self.vault_url
            ))
        })?;
        secret.value.map(SecretValue::new).ok_or_else(|| {
            FetchError::Other(format!(
                "Key Vault {} returned no value for {name:?}",
                self.vault_url
            ))
        })
    }
}

/// Builds the SDK transport: a reqwest client trusting the system's roots
/// plus `ca_file`, with no redirects.
fn build_transport(ca_file: Option<&Path>, connect_timeout: Duration) -> Result<Transport, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|error| {
            format!(
                "cannot read ca_file {}: {error}; check secrets.provider.ca_file",
                path.display()
            )
        })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
            format!(
                "ca_file {} is not a PEM certificate bundle: {error}",
                path.display()
            )
        })?;
        if certificates.is_empty() {
            return Err(format!(
                "ca_file {} contains no PEM certificate",
                path.display()
            ));
        }
        builder = builder.tls_certs_merge(certificates);
    }
    let client = builder
        .build()
        .map_err(|error| format!("cannot build the HTTPS client for Key Vault: {error}"))?;
    Ok(Transport::new(Arc::new(client)))
}

/// Returns SDK client options: the given transport, no retries and an
/// optional Entra ID host.
fn client_options(transport: &Transport, authority_host: Option<&str>) -> ClientOptions {
    let mut options = ClientOptions {
        retry: RetryOptions::none(),
        transport: Some(transport.clone()),
        ..Default::default()
    };
    if let Some(host) = authority_host {
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = host.trim_end_matches('/').to_string();
        options.cloud = Some(Arc::new(cloud.into()));
    }
    options
}

fn verifies_challenge_resource(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    !(bare.parse::<IpAddr>().is_ok() || bare.eq_ignore_ascii_case("localhost"))
}

/// Builds the credential chosen in the settings.
async fn credential(
    settings: &AzureSettings,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, String> {
    match settings.credential {
        AzureCredentialKind::ClientSecret => client_secret_credential(settings, transport).await,
        AzureCredentialKind::ManagedIdentity => managed_identity(settings, transport),
        AzureCredentialKind::WorkloadIdentity => workload_identity(settings, transport),
        AzureCredentialKind::Default => default_chain(settings, transport),
    }
}

async fn client_secret_credential(
    settings: &AzureSettings,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, String> {
    let (Some(tenant_id), Some(client_id), Some(path)) = (
        settings.tenant_id.as_deref(),
        settings.client_id.as_deref(),
        settings.client_secret_file.as_deref(),
    ) else {
        return Err("credential client_secret needs tenant_id, client_id and client_secret_file; set all three in secrets.provider".into());
    };
    let secret = read_client_secret(path).await?;
    let options = ClientSecretCredentialOptions {
        client_options: client_options(transport, settings.authority_host.as_deref()),
    };
    let credential =
        ClientSecretCredential::new(tenant_id, client_id.to_string(), secret, Some(options))
            .map_err(|error| format!("invalid client_secret credential settings: {error}"))?;
    Ok(credential)
}

/// Reads the client secret file and trims surrounding whitespace, such as
/// the final newline an editor adds.
async fn read_client_secret(path: &Path) -> Result<Secret, String> {
    let text = tokio::fs::read_to_string(path).await.map_err(|error| {
        format!(
            "cannot read client_secret_file {}: {error}; check secrets.provider.client_secret_file",
            path.display()
        )
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!(
            "client_secret_file {} is empty; write the client secret value into it",
            path.display()
        ));
    }
    warn_if_shared(path).await;
    Ok(Secret::new(secret.to_string()))
}

/// Warns when users other than the owner can read the secret file.
async fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = tokio::fs::metadata(path).await
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "client_secret_file can be read by other users; restrict it with chmod 600"
        );
    }
}

fn managed_identity(
    settings: &AzureSettings,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, String> {
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: settings.client_id.clone().map(UserAssignedId::ClientId),
        client_options: client_options(transport, None),
    };
    let credential = ManagedIdentityCredential::new(Some(options))
        .map_err(|error| format!("cannot set up the managed identity credential: {error}"))?;
    Ok(credential)
}

fn workload_identity(
    settings: &AzureSettings,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, String> {
    let options = WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: client_options(transport, settings.authority_host.as_deref()),
        },
        client_id: settings.client_id.clone(),
        tenant_id: settings.tenant_id.clone(),
        ..Default::default()
    };
    let credential = WorkloadIdentityCredential::new(Some(options)).map_err(|error| {
        format!("cannot set up the workload identity credential: {error}; set AZURE_TENANT_ID, AZURE_CLIENT_ID and {FEDERATED_TOKEN_FILE_VARIABLE} (AKS workload identity sets them) or tenant_id and client_id")
    })?;
    Ok(credential)
}

/// Builds the `default` chain: workload identity when its token file
/// variable is set, managed identity, then developer tools.
fn default_chain(
    settings: &AzureSettings,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, String> {
    let mut sources: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
    if std::env::var_os(FEDERATED_TOKEN_FILE_VARIABLE).is_some() {
        sources.push(("workload identity", workload_identity(settings, transport)?));
    }
    let probe = build_transport(
        settings.ca_file.as_deref(),
        MANAGED_IDENTITY_PROBE_CONNECT_TIMEOUT,
    )?;
    sources.push(("managed identity", managed_identity(settings, &probe)?));
    let developer_tools = DeveloperToolsCredential::new(None)
        .map_err(|error| format!("cannot set up the developer tools credential: {error}"))?;
    sources.push(("developer tools (az, azd)", developer_tools));
    Ok(Arc::new(ChainedCredential::new(sources)))
}

/// Tries credentials in order and keeps using the first that returns a token.
struct ChainedCredential {
    sources: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    /// Index of the source in use; `usize::MAX` until one returned a token.
    selected: AtomicUsize,
}

impl ChainedCredential {
    fn new(sources: Vec<(&'static str, Arc<dyn TokenCredential>)>) -> Self {
        ChainedCredential {
            sources,
            selected: AtomicUsize::new(usize::MAX),
        }
    }

    fn names(&self) -> Vec<&'static str> {
        self.sources.iter().map(|(name, _)| *name).collect()
    }
}

impl std::fmt::Debug for ChainedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainedCredential")
            .field("sources", &self.names())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for ChainedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some((_, source)) = self.sources.get(self.selected.load(Ordering::Acquire)) {
            return source.get_token(scopes, options).await;
        }
        let mut failures = Vec::new();
        for (index, (name, source)) in self.sources.iter().enumerate() {
            match source.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    self.selected.store(index, Ordering::Release);
                    tracing::info!(credential = name, "Azure credential chain selected {name}");
                    return Ok(token);
                }
                Err(error) => failures.push(format!("{name}: {}", describe(&error))),
            }
        }
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!(
                "no credential of the default chain returned a token ({}); set secrets.provider.credential to the one this host should use",
                failures.join("; ")
            ),
        ))
    }
}

/// Classifies an SDK error from one `get_secret` call.
fn fetch_error(error: &azure_core::Error, vault_url: &str) -> FetchError {
    match error.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => http_error(
            *status,
            error_code.as_deref(),
            raw_response.as_deref(),
            error,
        ),
        ErrorKind::Connection | ErrorKind::Io => {
            let cause = describe(error);
            let hint = if cause.contains("certificate") {
                "; if the vault's certificate comes from a private CA, set secrets.provider.ca_file"
            } else {
                ""
            };
            FetchError::Network(format!(
                "request to Key Vault {vault_url} failed: {cause}{hint}"
            ))
        }
        ErrorKind::Credential => credential_error(error),
        _ => FetchError::Other(format!(
            "reading from Key Vault {vault_url} failed: {}",
            describe(error)
        )),
    }
}

/// Classifies an error response of the vault. Error bodies name secrets but
/// never contain values.
fn http_error(
    status: StatusCode,
    code: Option<&str>,
    response: Option<&RawResponse>,
    error: &azure_core::Error,
) -> FetchError {
    let status = u16::from(status);
    let message = error.to_string();
    let detail = format!(
        "HTTP {status} {}: {}",
        code.unwrap_or("(no error code)"),
        message.trim_end_matches('.')
    );
    match status {
        404 if code == Some("SecretNotFound") => FetchError::NotFound,
        403 if response.and_then(inner_error_code).as_deref() == Some("SecretDisabled") => {
            FetchError::Disabled(detail)
        }
        403 => FetchError::AccessDenied(format!(
            "{detail}; give the runner's identity the Key Vault Secrets User role, or an access policy with secret Get, on this vault"
        )),
        401 => FetchError::AccessDenied(format!(
            "{detail}; the vault rejected the runner's token, so check that the identity belongs to the vault's tenant"
        )),
        429 => FetchError::Throttled {
            retry_after: response.and_then(retry_after),
        },
        500..=599 => FetchError::Unavailable(detail),
        _ => FetchError::Other(detail),
    }
}

/// Returns `error.innererror.code` of a Key Vault error body.
fn inner_error_code(response: &RawResponse) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(response.body()).ok()?;
    body.pointer("/error/innererror/code")?
        .as_str()
        .map(str::to_string)
}

/// Reads `x-ms-retry-after-ms`, `retry-after-ms` or `Retry-After` (seconds
/// or an HTTP date).
fn retry_after(response: &RawResponse) -> Option<Duration> {
    let delay = get_retry_after(
        response.headers(),
        OffsetDateTime::now_utc,
        &[X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS, RETRY_AFTER],
    )?;
    u64::try_from(delay.whole_milliseconds())
        .ok()
        .map(Duration::from_millis)
}

/// Classifies a credential failure: unreachable token endpoints are network
/// errors, everything else is a denied sign-in with the credential's message.
fn credential_error(error: &azure_core::Error) -> FetchError {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(inner) = cause.downcast_ref::<azure_core::Error>()
            && matches!(inner.kind(), ErrorKind::Connection | ErrorKind::Io)
        {
            return FetchError::Network(format!(
                "cannot reach the Entra ID token endpoint: {}",
                describe(error)
            ));
        }
        source = cause.source();
    }
    FetchError::AccessDenied(format!("sign-in to Entra ID failed: {}", describe(error)))
}

/// Joins an error and its causes, skipping repeated messages.
fn describe(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(cause) = current {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(text.trim())) {
            parts.push(text.trim().to_string());
        }
        current = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_yaml::Value;

    use super::*;

    fn read_yaml(yaml: &str) -> (Option<AzureSettings>, Vec<String>) {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        let mut issues = Issues::default();
        let base = Path::new("/etc/hybrid-runner");
        let mut section = Section::new(Some(&value), "secrets.provider", base, &mut issues);
        let settings = read(&mut section, &mut issues);
        let messages = issues.0.iter().map(ToString::to_string).collect();
        (settings, messages)
    }

    #[test]
    fn vault_url_alone_uses_default_credential() {
        let (settings, issues) = read_yaml("vault_url: https://my-vault.vault.azure.net/\n");
        assert_eq!(issues, Vec::<String>::new());
        assert_eq!(
            settings,
            Some(AzureSettings::new("https://my-vault.vault.azure.net/"))
        );
    }

    #[test]
    fn client_secret_settings_resolve_paths() {
        let (settings, issues) = read_yaml(
            "vault_url: https://my-vault.vault.azure.net\ncredential: client_secret\ntenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47\nclient_id: runner-app\nclient_secret_file: azure-client-secret\nca_file: /etc/ssl/private-ca.pem\nauthority_host: https://login.microsoftonline.us\n",
        );
        assert_eq!(issues, Vec::<String>::new());
        let settings = settings.unwrap();
        assert_eq!(settings.credential, AzureCredentialKind::ClientSecret);
        assert_eq!(
            settings.client_secret_file,
            Some(PathBuf::from("/etc/hybrid-runner/azure-client-secret"))
        );
        assert_eq!(
            settings.ca_file,
            Some(PathBuf::from("/etc/ssl/private-ca.pem"))
        );
        assert_eq!(
            settings.authority_host.as_deref(),
            Some("https://login.microsoftonline.us")
        );
    }

    #[test]
    fn client_secret_requires_three_keys() {
        let (settings, issues) =
            read_yaml("vault_url: https://v.vault.azure.net/\ncredential: client_secret\n");
        assert_eq!(settings, None);
        assert_eq!(issues.len(), 3, "{issues:?}");
        for key in ["tenant_id", "client_id", "client_secret_file"] {
            assert!(
                issues.iter().any(|issue| issue
                    .starts_with(&format!("secrets.provider.{key}: missing required value"))),
                "{key}: {issues:?}"
            );
        }
    }

    #[test]
    fn invalid_settings_are_reported() {
        let cases = [
            (
                "credential: default\n",
                "secrets.provider.vault_url: missing required value",
            ),
            ("vault_url: http://v.vault.azure.net/\n", "only over https"),
            (
                "vault_url: https://v.vault.azure.net/secrets\n",
                "a path, query or fragment",
            ),
            ("vault_url: v.vault.azure.net\n", "invalid vault URL"),
            (
                "vault_url: https://v.vault.azure.net/\ncredential: password\n",
                "unknown credential \"password\"; use one of: default, managed_identity, workload_identity, client_secret",
            ),
            (
                "vault_url: https://v.vault.azure.net/\nclient_secret: hunter2\n",
                "inline client secrets are not accepted",
            ),
            (
                "vault_url: https://v.vault.azure.net/\nclient_secret_file: s.txt\n",
                "used only with credential: client_secret",
            ),
            (
                "vault_url: https://v.vault.azure.net/\ncredential: managed_identity\ntenant_id: t\n",
                "tenant_id is not used with credential: managed_identity",
            ),
            (
                "vault_url: https://v.vault.azure.net/\ntenant_id: bad_tenant\n",
                "invalid tenant id",
            ),
            (
                "vault_url: https://v.vault.azure.net/\nauthority_host: http://login.local\n",
                "invalid authority host",
            ),
        ];
        for (yaml, expected) in cases {
            let (settings, issues) = read_yaml(yaml);
            assert_eq!(settings, None, "{yaml}");
            assert!(
                issues.iter().any(|issue| issue.contains(expected)),
                "{yaml}: expected {expected:?} in {issues:?}"
            );
        }
    }

    #[test]
    fn inline_secret_is_not_echoed() {
        let (_, issues) =
            read_yaml("vault_url: https://v.vault.azure.net/\nclient_secret: hunter2-value\n");
        assert!(!issues.iter().any(|issue| issue.contains("hunter2-value")));
    }

    #[test]
    fn path_maps_to_vault_name() {
        let cases = [
            (
                "/collate/hybrid-ingestion/adls/client-secret",
                "collate-hybrid-ingestion-adls-client-secret",
            ),
            (
                "/collate/hybrid-ingestion/my db/pass.word",
                "collate-hybrid-ingestion-my-db-pass-word",
            ),
            ("/a--b//c/", "a-b-c"),
            ("/-x-/", "x"),
            ("/Upper/Case9", "Upper-Case9"),
            ("/caf\u{e9}/na\u{ef}ve", "caf-na-ve"),
        ];
        for (path, expected) in cases {
            assert_eq!(map_path(path).as_deref(), Ok(expected), "{path}");
        }
    }

    #[test]
    fn unmappable_paths_are_errors() {
        let empty = map_path("/-/./").unwrap_err();
        assert!(empty.contains("no letters or digits"), "{empty}");

        let long = format!("/{}", "a".repeat(MAX_NAME_LEN + 1));
        let error = map_path(&long).unwrap_err();
        assert!(error.contains("128 characters long"), "{error}");
        assert!(error.contains("at most 127"), "{error}");

        let exact = format!("/{}", "a".repeat(MAX_NAME_LEN));
        assert_eq!(map_path(&exact).map(|name| name.len()), Ok(MAX_NAME_LEN));
    }

    #[test]
    fn names_and_versions_are_checked_before_requests() {
        assert!(check_name("a/b").unwrap_err().contains("'/'"));
        assert!(check_name("a?b").is_err());
        assert!(check_version("..").is_err());
        assert!(check_version("0a1b2c3d4e5f60718293a4b5c6d7e8f9").is_ok());
    }

    #[test]
    fn challenge_verification_is_off_only_for_addresses() {
        let check = |url: &str| verifies_challenge_resource(&Url::parse(url).unwrap());
        assert!(check("https://my-vault.vault.azure.net/"));
        assert!(check("https://my-vault.vault.usgovcloudapi.net/"));
        assert!(!check("https://127.0.0.1:8443/"));
        assert!(!check("https://[::1]:8443/"));
        assert!(!check("https://localhost:8443/"));
    }

    /// A credential that returns a token or fails, counting calls.
    #[derive(Debug)]
    struct StubCredential {
        succeeds: bool,
        calls: AtomicUsize,
    }

    impl StubCredential {
        fn new(succeeds: bool) -> Arc<Self> {
            Arc::new(StubCredential {
                succeeds,
                calls: AtomicUsize::new(0),
            })
        }
    }

    #[async_trait::async_trait]
    impl TokenCredential for StubCredential {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.succeeds {
                Ok(AccessToken::new(
                    "stub-token",
                    OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
                ))
            } else {
                Err(azure_core::Error::with_message(
                    ErrorKind::Credential,
                    "stub credential is not available here",
                ))
            }
        }
    }

    #[tokio::test]
    async fn chain_keeps_first_working_credential() {
        let failing = StubCredential::new(false);
        let working = StubCredential::new(true);
        let unused = StubCredential::new(true);
        let chain = ChainedCredential::new(vec![
            ("first", failing.clone()),
            ("second", working.clone()),
            ("third", unused.clone()),
        ]);

        for _ in 0..2 {
            chain
                .get_token(&["https://vault.azure.net/.default"], None)
                .await
                .unwrap();
        }

        assert_eq!(failing.calls.load(Ordering::SeqCst), 1);
        assert_eq!(working.calls.load(Ordering::SeqCst), 2);
        assert_eq!(unused.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn chain_failure_names_every_credential() {
        let chain = ChainedCredential::new(vec![
            ("first", StubCredential::new(false)),
            ("second", StubCredential::new(false)),
        ]);

        let error = chain
            .get_token(&["https://vault.azure.net/.default"], None)
            .await
            .unwrap_err();

        let FetchError::AccessDenied(detail) = credential_error(&error) else {
            panic!("expected AccessDenied for {error}");
        };
        assert!(
            detail.contains("first: stub credential is not available here"),
            "{detail}"
        );
        assert!(detail.contains("second: stub credential"), "{detail}");
        assert!(
            detail.contains("set secrets.provider.credential"),
            "{detail}"
        );
    }

    #[test]
    fn default_chain_order() {
        let settings = AzureSettings::new("https://v.vault.azure.net/");
        crate::tls::install_crypto_provider();
        let transport = build_transport(None, CONNECT_TIMEOUT).unwrap();
        let chain = default_chain(&settings, &transport).unwrap();
        let text = format!("{chain:?}");
        let managed = text.find("managed identity").unwrap();
        let tools = text.find("developer tools").unwrap();
        assert!(managed < tools, "{text}");
        if let Some(workload) = text.find("workload identity") {
            assert!(workload < managed, "{text}");
        }
    }
}
