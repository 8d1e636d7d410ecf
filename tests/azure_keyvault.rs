//! The Azure Key Vault provider against the local HTTPS fake in
//! `tests/fakes/azure_keyvault.py`, and the fake against the official Python
//! client. Everything runs on 127.0.0.1 with explicit test credentials, so no
//! test reaches Entra ID, a real vault or instance metadata.
#![cfg(feature = "azure")]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hybrid_runner::redact::Redactor;
use hybrid_runner::secrets::azure::{AzureCredentialKind, AzureProvider, AzureSettings};
use hybrid_runner::secrets::{
    AccessPolicy, FetchError, Resolver, ResolverSettings, SecretError, SecretProvider, SecretRef,
};
use serde_json::{Value, json};

const TENANT: &str = "test-tenant";
const CLIENT_ID: &str = "runner-client";
const CLIENT_SECRET: &str = "runner-client-secret-4Fq~x";
const UNLISTED_CLIENT_ID: &str = "unlisted-client";
const UNLISTED_CLIENT_SECRET: &str = "unlisted-client-secret-9Zp";

const ADLS_PATH: &str = "/collate/hybrid-ingestion/adls/client-secret";
const ADLS_NAME: &str = "collate-hybrid-ingestion-adls-client-secret";
const OLD_VERSION: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const OLD_VALUE: &str = "adls-old-value-1";
const LATEST_VERSION: &str = "ffeeddccbbaa99887766554433221100";
const LATEST_VALUE: &str = "adls-latest-value-2";
const DISABLED_VERSION: &str = "11112222333344445555666677778888";
const DISABLED_VALUE: &str = "disabled-value-3";
const DOTTED_NAME: &str = "collate-hybrid-ingestion-my-db-pass-word";
const DOTTED_VALUE: &str = "dotted-value-4";

/// Every secret value the fake holds, to check that no error contains one.
const VALUES: [&str; 4] = [OLD_VALUE, LATEST_VALUE, DISABLED_VALUE, DOTTED_VALUE];

/// A running fake vault process, killed on drop.
struct FakeVault {
    child: Child,
    /// Held open because the fake exits when its stdin closes.
    _stdin: ChildStdin,
    port: u16,
    dir: tempfile::TempDir,
}

impl FakeVault {
    fn start() -> FakeVault {
        let dir = tempfile::tempdir().unwrap();
        let certificate = hybrid_runner::tls::local_certificate().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &certificate.cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &certificate.key_pem).unwrap();
        let fixture = fixture().to_string();
        std::fs::write(dir.path().join("secrets.json"), fixture).unwrap();
        let log = std::fs::File::create(dir.path().join("fake.log")).unwrap();

        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/azure_keyvault.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", "0", "--exit-with-stdin"])
            .arg("--cert")
            .arg(dir.path().join("ca.pem"))
            .arg("--key")
            .arg(dir.path().join("key.pem"))
            .arg("--secrets")
            .arg(dir.path().join("secrets.json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("python3 (3.11 or newer) must be on PATH to run the Key Vault fake");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(port) = line
            .trim()
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|port| port.parse().ok())
        else {
            let log = std::fs::read_to_string(dir.path().join("fake.log")).unwrap_or_default();
            panic!("the Key Vault fake did not start: {line:?}\n{log}");
        };
        FakeVault {
            child,
            _stdin: stdin,
            port,
            dir,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes a client secret file readable only by its owner.
    fn secret_file(&self, client_id: &str, secret: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{client_id}.secret"));
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// Settings for a service principal, with the fake as vault and authority.
    fn settings(&self, client_id: &str, secret: &str) -> AzureSettings {
        AzureSettings {
            vault_url: format!("{}/", self.url()),
            credential: AzureCredentialKind::ClientSecret,
            tenant_id: Some(TENANT.into()),
            client_id: Some(client_id.into()),
            client_secret_file: Some(self.secret_file(client_id, secret)),
            authority_host: Some(self.url()),
            ca_file: Some(self.ca_file()),
        }
    }

    async fn provider(&self) -> AzureProvider {
        AzureProvider::new(&self.settings(CLIENT_ID, CLIENT_SECRET))
            .await
            .unwrap()
    }

    async fn control(&self, method: reqwest::Method, path: &str) -> Value {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.ca_file()).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap();
        let response = client
            .request(method, format!("{}{path}", self.url()))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Returns the request log entries for secret reads that carried a token.
    async fn secret_reads(&self) -> Vec<Value> {
        let log = self.control(reqwest::Method::GET, "/_fake/requests").await;
        log.as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry.get("name").is_some() && entry.get("client_id").is_some())
            .cloned()
            .collect()
    }

    async fn requested_names(&self) -> Vec<String> {
        self.secret_reads()
            .await
            .iter()
            .map(|entry| entry["name"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture() -> Value {
    json!({
        "tenant": TENANT,
        "clients": {CLIENT_ID: CLIENT_SECRET, UNLISTED_CLIENT_ID: UNLISTED_CLIENT_SECRET},
        "readers": [CLIENT_ID],
        "secrets": {
            ADLS_NAME: [
                {"version": OLD_VERSION, "value": OLD_VALUE},
                {"version": DISABLED_VERSION, "value": DISABLED_VALUE, "enabled": false},
                {"version": LATEST_VERSION, "value": LATEST_VALUE},
            ],
            DOTTED_NAME: [{"value": DOTTED_VALUE}],
        },
    })
}

fn resolver(provider: AzureProvider) -> Resolver {
    Resolver::new(
        Arc::new(provider),
        AccessPolicy::new(vec!["/collate/hybrid-ingestion/".into()]),
        Arc::new(Redactor::default()),
        ResolverSettings::default(),
    )
}

fn assert_no_values(error: &impl std::fmt::Debug) {
    let text = format!("{error:?}");
    for value in VALUES
        .iter()
        .chain([&CLIENT_SECRET, &UNLISTED_CLIENT_SECRET])
    {
        assert!(!text.contains(value), "error contains a secret: {text}");
    }
}

#[tokio::test]
async fn latest_value_is_read() {
    let vault = FakeVault::start();
    let provider = vault.provider().await;

    let value = provider.fetch(ADLS_NAME, None).await.unwrap();

    assert_eq!(value.expose(), LATEST_VALUE);
    let reads = vault.secret_reads().await;
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0]["version"], Value::Null);
}

#[tokio::test]
async fn pinned_version_is_read() {
    let vault = FakeVault::start();
    let resolver = resolver(vault.provider().await);
    let reference = SecretRef::parse(&format!("secret:{ADLS_PATH}#{OLD_VERSION}")).unwrap();

    let value = resolver.resolve(&reference).await.unwrap();

    assert_eq!(value.expose(), OLD_VALUE);
    let reads = vault.secret_reads().await;
    assert_eq!(reads[0]["version"], OLD_VERSION);
}

#[tokio::test]
async fn missing_secret_and_version_are_not_found() {
    let vault = FakeVault::start();
    let provider = vault.provider().await;

    let missing = provider.fetch("no-such-secret", None).await.unwrap_err();
    let missing_version = provider
        .fetch(ADLS_NAME, Some("99999999999999999999999999999999"))
        .await
        .unwrap_err();

    assert_eq!(missing, FetchError::NotFound);
    assert_eq!(missing_version, FetchError::NotFound);
}

#[tokio::test]
async fn disabled_version_is_disabled() {
    let vault = FakeVault::start();
    let provider = vault.provider().await;

    let error = provider
        .fetch(ADLS_NAME, Some(DISABLED_VERSION))
        .await
        .unwrap_err();

    let FetchError::Disabled(detail) = &error else {
        panic!("expected Disabled, got {error:?}");
    };
    assert!(detail.contains("disabled secret"), "{detail}");
    assert_no_values(&error);
}

#[tokio::test]
async fn throttling_returns_retry_after() {
    let vault = FakeVault::start();
    let provider = vault.provider().await;
    vault
        .control(reqwest::Method::POST, "/_fake/throttle?count=1")
        .await;

    let throttled = provider.fetch(ADLS_NAME, None).await.unwrap_err();
    let after = provider.fetch(ADLS_NAME, None).await.unwrap();

    assert_eq!(
        throttled,
        FetchError::Throttled {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert_eq!(after.expose(), LATEST_VALUE);
    // One attempt per fetch: the SDK itself must not retry the 429.
    assert_eq!(vault.secret_reads().await.len(), 2);
}

#[tokio::test]
async fn server_error_is_unavailable() {
    let vault = FakeVault::start();
    let provider = vault.provider().await;
    vault
        .control(reqwest::Method::POST, "/_fake/fail?count=1&status=503")
        .await;

    let error = provider.fetch(ADLS_NAME, None).await.unwrap_err();

    let FetchError::Unavailable(detail) = &error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert!(detail.contains("HTTP 503"), "{detail}");
    assert_eq!(vault.secret_reads().await.len(), 1);
}

#[tokio::test]
async fn default_mapping_requests_dashed_name() {
    let vault = FakeVault::start();
    let resolver = resolver(vault.provider().await);
    let reference = SecretRef::parse(&format!("secret:{ADLS_PATH}")).unwrap();

    let value = resolver.resolve(&reference).await.unwrap();

    assert_eq!(value.expose(), LATEST_VALUE);
    assert_eq!(vault.requested_names().await, vec![ADLS_NAME.to_string()]);
}

#[tokio::test]
async fn spaces_and_dots_map_to_dashes() {
    let vault = FakeVault::start();
    let resolver = resolver(vault.provider().await);
    let reference = SecretRef::parse("secret:/collate/hybrid-ingestion/my db/pass.word").unwrap();

    let value = resolver.resolve(&reference).await.unwrap();

    assert_eq!(value.expose(), DOTTED_VALUE);
    assert_eq!(vault.requested_names().await, vec![DOTTED_NAME.to_string()]);
}

#[tokio::test]
async fn overlong_name_is_rejected_without_request() {
    let vault = FakeVault::start();
    let resolver = resolver(vault.provider().await);
    let long = "x".repeat(120);
    let reference = SecretRef::parse(&format!("secret:/collate/hybrid-ingestion/{long}")).unwrap();

    let error = resolver.resolve(&reference).await.unwrap_err();

    let SecretError::InvalidName { detail, .. } = &error else {
        panic!("expected InvalidName, got {error:?}");
    };
    assert!(detail.contains("145 characters long"), "{detail}");
    assert!(detail.contains("at most 127"), "{detail}");
    assert_eq!(vault.requested_names().await, Vec::<String>::new());
}

#[tokio::test]
async fn client_secret_file_signs_in() {
    let vault = FakeVault::start();
    let provider = vault.provider().await;

    provider.fetch(ADLS_NAME, None).await.unwrap();

    let log = vault.control(reqwest::Method::GET, "/_fake/requests").await;
    let token_requests: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["path"] == format!("/{TENANT}/oauth2/v2.0/token"))
        .collect();
    assert_eq!(token_requests.len(), 1, "{log}");
    assert_eq!(token_requests[0]["client_id"], CLIENT_ID);
    assert_eq!(token_requests[0]["status"], 200);
    // The first vault request carries no token, so the vault returns the 401 challenge.
    assert_eq!(log[0]["status"], 401, "{log}");
}

#[tokio::test]
async fn wrong_client_secret_is_access_denied() {
    let vault = FakeVault::start();
    let settings = vault.settings(CLIENT_ID, "wrong-secret-value-7");
    let provider = AzureProvider::new(&settings).await.unwrap();

    let error = provider.fetch(ADLS_NAME, None).await.unwrap_err();

    let FetchError::AccessDenied(detail) = &error else {
        panic!("expected AccessDenied, got {error:?}");
    };
    assert!(detail.contains("ClientSecretCredential"), "{detail}");
    assert!(detail.contains("AADSTS7000215"), "{detail}");
    assert!(!detail.contains("wrong-secret-value-7"), "{detail}");
    assert_no_values(&error);
    assert_eq!(vault.requested_names().await, Vec::<String>::new());
}

#[tokio::test]
async fn identity_without_role_is_access_denied() {
    let vault = FakeVault::start();
    let settings = vault.settings(UNLISTED_CLIENT_ID, UNLISTED_CLIENT_SECRET);
    let provider = AzureProvider::new(&settings).await.unwrap();

    let error = provider.fetch(ADLS_NAME, None).await.unwrap_err();

    let FetchError::AccessDenied(detail) = &error else {
        panic!("expected AccessDenied, got {error:?}");
    };
    assert!(detail.contains("HTTP 403 Forbidden"), "{detail}");
    assert!(detail.contains("Key Vault Secrets User"), "{detail}");
    assert_no_values(&error);
}

#[tokio::test]
async fn missing_client_secret_file_fails_setup() {
    let vault = FakeVault::start();
    let mut settings = vault.settings(CLIENT_ID, CLIENT_SECRET);
    settings.client_secret_file = Some(vault.dir.path().join("absent.secret"));

    let error = AzureProvider::new(&settings).await.unwrap_err();

    assert!(error.contains("cannot read client_secret_file"), "{error}");
    assert!(error.contains("absent.secret"), "{error}");
}

#[tokio::test]
async fn untrusted_certificate_is_network_error() {
    let vault = FakeVault::start();
    let mut settings = vault.settings(CLIENT_ID, CLIENT_SECRET);
    settings.ca_file = None;
    let provider = AzureProvider::new(&settings).await.unwrap();

    let error = provider.fetch(ADLS_NAME, None).await.unwrap_err();

    let FetchError::Network(detail) = &error else {
        panic!("expected Network, got {error:?}");
    };
    assert!(detail.to_lowercase().contains("certificate"), "{detail}");
}

#[tokio::test]
async fn closed_port_is_network_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let vault = FakeVault::start();
    let mut settings = vault.settings(CLIENT_ID, CLIENT_SECRET);
    settings.vault_url = format!("https://{address}/");

    let provider = AzureProvider::new(&settings).await.unwrap();
    let error = provider.fetch(ADLS_NAME, None).await.unwrap_err();

    assert!(matches!(error, FetchError::Network(_)), "{error:?}");
}

#[tokio::test]
async fn unreachable_authority_is_network_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let vault = FakeVault::start();
    let mut settings = vault.settings(CLIENT_ID, CLIENT_SECRET);
    settings.authority_host = Some(format!("https://{address}"));

    let provider = AzureProvider::new(&settings).await.unwrap();
    let error = provider.fetch(ADLS_NAME, None).await.unwrap_err();

    let FetchError::Network(detail) = &error else {
        panic!("expected Network, got {error:?}");
    };
    assert!(detail.contains("token endpoint"), "{detail}");
}

/// Runs the official azure-keyvault-secrets client against the fake: latest
/// and pinned reads, and a 404 raised as `ResourceNotFoundError`.
const PYTHON_CLIENT: &str = r#"
import json, sys
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

vault, ca, tenant, client_id, secret_file, name, version = sys.argv[1:8]
with open(secret_file, encoding="utf-8") as file:
    client_secret = file.read().strip()
credential = ClientSecretCredential(
    tenant, client_id, client_secret,
    authority=vault, disable_instance_discovery=True, connection_verify=ca,
)
client = SecretClient(vault, credential, verify_challenge_resource=False, connection_verify=ca)
latest = client.get_secret(name)
pinned = client.get_secret(name, version)
try:
    client.get_secret("no-such-secret")
    missing = "found"
except ResourceNotFoundError as error:
    missing = type(error).__name__
print(json.dumps({
    "latest": latest.value, "latest_version": latest.properties.version,
    "pinned": pinned.value, "pinned_version": pinned.properties.version,
    "missing": missing,
}))
"#;

/// Returns the interpreter that has the official Azure packages.
fn python_with_azure_packages() -> PathBuf {
    if let Some(path) = std::env::var_os("HYBRID_RUNNER_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing. This test checks the Key Vault fake with the official Python client; install it with \
         `python3 -m venv .venv && .venv/bin/pip install azure-keyvault-secrets azure-identity` in the crate root, \
         or set HYBRID_RUNNER_PYTHON to an interpreter that has both packages",
        venv.display()
    );
    venv
}

#[test]
fn official_python_client_reads_fake() {
    let python = python_with_azure_packages();
    let vault = FakeVault::start();
    let secret_file = vault.secret_file(CLIENT_ID, CLIENT_SECRET);

    let output = Command::new(&python)
        .arg("-c")
        .arg(PYTHON_CLIENT)
        .arg(vault.url())
        .arg(vault.ca_file())
        .args([TENANT, CLIENT_ID])
        .arg(&secret_file)
        .args([ADLS_NAME, OLD_VERSION])
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()));

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", python.display());
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["latest"], LATEST_VALUE);
    assert_eq!(result["latest_version"], LATEST_VERSION);
    assert_eq!(result["pinned"], OLD_VALUE);
    assert_eq!(result["pinned_version"], OLD_VERSION);
    assert_eq!(result["missing"], "ResourceNotFoundError");
}
