//! A fake of the one Kubernetes API call the `kubernetes` secrets provider
//! makes, `GET /api/v1/namespaces/{namespace}/secrets/{name}`, served over
//! plain HTTP on 127.0.0.1 by the test process itself.
//!
//! It responds like an API server: a `v1` Secret with base64 `data`, or a
//! `Status` object with 401 for a missing or wrong bearer token and 404 for an
//! unknown Secret. It records every request that carried the right token.

use std::collections::BTreeMap;
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

/// One authorized request: the namespace and the Secret name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretRequest {
    pub namespace: String,
    pub name: String,
}

struct ApiState {
    token: String,
    /// Secrets by namespace and name, each a map of data keys to values.
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
    requests: Mutex<Vec<SecretRequest>>,
}

/// Secrets to serve, collected before the server starts.
pub struct KubeApiFake {
    token: String,
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
}

impl KubeApiFake {
    /// Creates a fake that accepts only `Authorization: Bearer <token>`.
    pub fn new(token: &str) -> KubeApiFake {
        KubeApiFake {
            token: token.to_string(),
            secrets: BTreeMap::new(),
        }
    }

    /// Adds a Secret with one data key.
    pub fn secret(mut self, namespace: &str, name: &str, key: &str, value: &str) -> KubeApiFake {
        self.secrets
            .entry((namespace.to_string(), name.to_string()))
            .or_default()
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Starts serving on a free port of 127.0.0.1 in the current tokio runtime.
    pub async fn start(self) -> RunningKubeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(ApiState {
            token: self.token,
            secrets: self.secrets,
            requests: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/secrets/{name}",
                get(get_secret),
            )
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("serve the Kubernetes API fake");
        });
        RunningKubeApi { addr, state, task }
    }
}

/// A started fake. Dropping it aborts the server task.
pub struct RunningKubeApi {
    pub addr: SocketAddr,
    state: Arc<ApiState>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningKubeApi {
    /// Returns the authorized requests so far, oldest first.
    pub fn requests(&self) -> Vec<SecretRequest> {
        self.state
            .requests
            .lock()
            .expect("request log lock")
            .clone()
    }

    /// Writes a kubeconfig into `dir` whose current context reaches this
    /// server as a user with bearer token `token`, and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
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
    user: runner
current-context: fake
",
            addr = self.addr
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

impl Drop for RunningKubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn get_secret(
    State(state): State<Arc<ApiState>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let expected = format!("Bearer {}", state.token);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if authorization != Some(expected.as_str()) {
        return status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    state
        .requests
        .lock()
        .expect("request log lock")
        .push(SecretRequest {
            namespace: namespace.clone(),
            name: name.clone(),
        });

    let Some(data) = state.secrets.get(&(namespace.clone(), name.clone())) else {
        let message = format!("secrets \"{name}\" not found");
        return status_response(StatusCode::NOT_FOUND, "NotFound", &message);
    };
    let encoded: serde_json::Map<String, Value> = data
        .iter()
        .map(|(key, value)| {
            let text = base64::engine::general_purpose::STANDARD.encode(value);
            (key.clone(), Value::String(text))
        })
        .collect();
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "type": "Opaque",
        "data": encoded,
    });
    (StatusCode::OK, axum::Json(secret)).into_response()
}

/// Builds a `Status` error response as the API server returns it.
fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, axum::Json(status)).into_response()
}
