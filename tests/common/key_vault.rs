//! The Azure Key Vault fake in `tests/fakes/azure_keyvault.py`, run as a local
//! HTTPS process on 127.0.0.1. It serves both the vault and the Entra ID token
//! endpoint, so it is the `vault_url` and the `authority_host` of a runner.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// A running Key Vault fake, killed on drop.
pub struct KeyVaultFake {
    child: Child,
    /// Held open because the fake exits when its stdin closes.
    _stdin: ChildStdin,
    pub port: u16,
    dir: TempDir,
}

impl KeyVaultFake {
    /// Starts the fake with `fixture` as its secrets file: the tenant, the
    /// clients with their secrets, and the secrets with their versions, in
    /// the format the script's docstring describes.
    pub fn start(fixture: &Value) -> KeyVaultFake {
        let dir = tempfile::tempdir().expect("create Key Vault fake folder");
        let certificate = hybrid_runner::tls::local_certificate().expect("generate certificate");
        std::fs::write(dir.path().join("ca.pem"), &certificate.cert_pem).expect("write ca.pem");
        std::fs::write(dir.path().join("key.pem"), &certificate.key_pem).expect("write key.pem");
        std::fs::write(dir.path().join("secrets.json"), fixture.to_string())
            .expect("write secrets.json");
        let log = std::fs::File::create(dir.path().join("fake.log")).expect("create fake.log");

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
        let stdin = child.stdin.take().expect("fake stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("fake stdout"))
            .read_line(&mut line)
            .expect("read the fake's first line");
        let port = line
            .trim()
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|port| port.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("fake.log")).unwrap_or_default();
            panic!("the Key Vault fake did not start: {line:?}\n{log}");
        };
        KeyVaultFake {
            child,
            _stdin: stdin,
            port,
            dir,
        }
    }

    /// Returns `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Returns the fake's self-signed certificate, which clients must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes a client secret file readable only by its owner.
    pub fn write_secret_file(&self, client_id: &str, secret: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{client_id}.secret"));
        std::fs::write(&path, format!("{secret}\n")).expect("write client secret file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("set client secret file mode");
        path
    }

    /// Returns the fake's request log, oldest first.
    pub async fn requests(&self) -> Vec<Value> {
        let pem = std::fs::read(self.ca_file()).expect("read ca.pem");
        let certificate = reqwest::Certificate::from_pem(&pem).expect("parse ca.pem");
        let client = reqwest::Client::builder()
            .tls_certs_only([certificate])
            .build()
            .expect("build HTTP client");
        let url = format!("{}/_fake/requests", self.url());
        let response = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {url} failed: {error}"));
        let status = response.status();
        assert!(status.is_success(), "GET {url}: {status}");
        let log: Value = response
            .json()
            .await
            .unwrap_or_else(|error| panic!("GET {url} returned no JSON: {error}"));
        log.as_array()
            .unwrap_or_else(|| panic!("GET {url} returned no list: {log}"))
            .clone()
    }

    /// Returns the secret names of the vault requests that carried a valid
    /// token, oldest first. Requests without a token, such as the client's
    /// first one that receives the 401 challenge, are left out.
    pub async fn requested_names(&self) -> Vec<String> {
        self.requests()
            .await
            .iter()
            .filter(|entry| entry.get("client_id").is_some())
            .filter_map(|entry| entry["name"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for KeyVaultFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
