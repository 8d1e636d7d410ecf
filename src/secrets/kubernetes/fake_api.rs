//! A fake of the Kubernetes Secrets API for tests, on 127.0.0.1.
//!
//! It serves `GET /api/v1/namespaces/{namespace}/secrets/{name}` the way an
//! API server does: a Secret object with base64 data, or a `Status` object for
//! 401 (wrong bearer token), 403 (names marked forbidden), 404, and any status
//! configured for a name. It records every requested namespace and name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};

/// The user the fake names in its 403 messages.
pub const FAKE_USER: &str = "system:serviceaccount:ingestion:hybrid-runner";

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub namespace: String,
    pub name: String,
}

/// The content of a fake API server, built before it starts.
#[derive(Default)]
pub struct FakeSecretsApi {
    token: String,
    /// Secrets by (namespace, name), each a map of data keys to raw bytes.
    secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    forbidden: BTreeSet<String>,
    /// Names that get a fixed error status: code, `Retry-After` seconds, reason.
    failures: BTreeMap<String, (u16, Option<u64>, String)>,
}

impl FakeSecretsApi {
    /// Creates a fake that accepts `Authorization: Bearer <token>`.
    pub fn new(token: &str) -> Self {
        FakeSecretsApi {
            token: token.to_string(),
            ..FakeSecretsApi::default()
        }
    }

    /// Adds a Secret with the given data keys and raw values.
    pub fn secret(mut self, namespace: &str, name: &str, data: &[(&str, &[u8])]) -> Self {
        let data = data
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_vec()))
            .collect();
        self.secrets
            .insert((namespace.to_string(), name.to_string()), data);
        self
    }

    /// Makes every request for `name` fail with 403, as RBAC does.
    pub fn forbid(mut self, name: &str) -> Self {
        self.forbidden.insert(name.to_string());
        self
    }

    /// Makes every request for `name` fail with `code`, with an optional
    /// `Retry-After` header in seconds.
    pub fn fail(mut self, name: &str, code: u16, retry_after: Option<u64>, reason: &str) -> Self {
        self.failures
            .insert(name.to_string(), (code, retry_after, reason.to_string()));
        self
    }

    /// Starts serving on an ephemeral port of 127.0.0.1.
    pub async fn start(self) -> RunningFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FakeState {
            api: self,
            requests: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/secrets/{name}",
                get(get_secret),
            )
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        RunningFake { addr, state, task }
    }
}

struct FakeState {
    api: FakeSecretsApi,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A started fake; the server stops when this is dropped.
pub struct RunningFake {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningFake {
    /// Returns the requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Returns the requested Secret names, oldest first.
    pub fn requested_names(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.name).collect()
    }

    /// Writes a kubeconfig for this server with user token `token`. Context
    /// `fake` is the current-context and has `namespace`, if given; context
    /// `other` has namespace `other-team`.
    pub fn write_kubeconfig(&self, dir: &Path, token: &str, namespace: Option<&str>) -> PathBuf {
        let namespace_line = namespace
            .map(|namespace| format!("\n    namespace: {namespace}"))
            .unwrap_or_default();
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://{addr}
users:
- name: runner
  user:
    token: {token}
contexts:
- name: fake
  context:
    cluster: fake
    user: runner{namespace_line}
- name: other
  context:
    cluster: fake
    user: runner
    namespace: other-team
current-context: fake
",
            addr = self.addr
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for RunningFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn get_secret(
    State(state): State<Arc<FakeState>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    state.requests.lock().unwrap().push(RecordedRequest {
        namespace: namespace.clone(),
        name: name.clone(),
    });
    let api = &state.api;

    let expected = format!("Bearer {}", api.token);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if authorization != Some(expected.as_str()) {
        return status_response(401, "Unauthorized", "Unauthorized", None);
    }

    if api.forbidden.contains(&name) {
        let message = format!(
            "secrets \"{name}\" is forbidden: User \"{FAKE_USER}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"{namespace}\""
        );
        return status_response(403, "Forbidden", &message, Some(&name));
    }

    if let Some((code, retry_after, reason)) = api.failures.get(&name) {
        let mut response = status_response(*code, reason, "injected failure", Some(&name));
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
        }
        return response;
    }

    match api.secrets.get(&(namespace.clone(), name.clone())) {
        Some(data) => (
            StatusCode::OK,
            axum::Json(secret_json(&namespace, &name, data)),
        )
            .into_response(),
        None => status_response(
            404,
            "NotFound",
            &format!("secrets \"{name}\" not found"),
            Some(&name),
        ),
    }
}

/// Builds a Secret object as the API server returns it.
fn secret_json(namespace: &str, name: &str, data: &BTreeMap<String, Vec<u8>>) -> Value {
    let encoded: serde_json::Map<String, Value> = data
        .iter()
        .map(|(key, value)| {
            let text = base64::engine::general_purpose::STANDARD.encode(value);
            (key.clone(), Value::String(text))
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "0b6a1f9e-3f1c-4c55-9d0e-5b8f2a6c7d10",
            "resourceVersion": "48213",
            "creationTimestamp": "2025-01-15T09:30:00Z"
        },
        "type": "Opaque",
        "data": encoded
    })
}

/// Builds a `Status` error response as the API server returns it.
fn status_response(code: u16, reason: &str, message: &str, name: Option<&str>) -> Response {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    });
    if let Some(name) = name {
        status["details"] = json!({"name": name, "kind": "secrets"});
    }
    let code = StatusCode::from_u16(code).unwrap();
    (code, axum::Json(status)).into_response()
}
