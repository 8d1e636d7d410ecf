//! The quickstart's demo database and the connector that logs in to it.
//!
//! The demo database is a small HTTP service on 127.0.0.1 that stores its
//! users' credentials and lists tables after a successful login. The demo
//! connector plays the part of an ingestion workflow: it reads the resolved
//! OpenMetadata config the runner wrote, logs in with the credentials it
//! finds there, and reports the tables. A login succeeds only when the runner
//! delivered the exact secret value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Credentials of one demo database user.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemoUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    #[serde(default)]
    pub tables: Vec<String>,
}

/// A login request from the connector.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Login {
    username: String,
    password: Option<String>,
    private_key: Option<String>,
    passphrase: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Tables {
    tables: Vec<String>,
}

/// Errors of the demo connector.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot read config {0}: {1}")]
    Read(String, std::io::Error),
    #[error("config is not valid JSON or YAML: {0}")]
    Parse(String),
    #[error("config has no {0}")]
    Missing(&'static str),
    #[error("cannot reach the demo database at {0}: {1}")]
    Connect(String, String),
    #[error("login failed for user {0}: the database rejected the credentials")]
    Rejected(String),
    #[error("cannot start: {0}")]
    Runtime(String),
}

/// A running demo database.
pub struct DemoDatabase {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DemoDatabase {
    /// Starts the database on 127.0.0.1 with an ephemeral port.
    pub async fn start(users: BTreeMap<String, DemoUser>) -> std::io::Result<DemoDatabase> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/v1/login", post(login))
            .with_state(Arc::new(users));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(DemoDatabase { addr, task })
    }
}

impl Drop for DemoDatabase {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn login(
    State(users): State<Arc<BTreeMap<String, DemoUser>>>,
    Json(login): Json<Login>,
) -> Result<Json<Tables>, StatusCode> {
    let Some(user) = users.get(&login.username) else {
        return Err(StatusCode::UNAUTHORIZED);
    };
    let password_ok = user.password.is_some() && user.password == login.password;
    let key_ok = user.private_key.is_some()
        && user.private_key == login.private_key
        && user.passphrase == login.passphrase;
    if password_ok || key_ok {
        Ok(Json(Tables {
            tables: user.tables.clone(),
        }))
    } else {
        Err(StatusCode::UNAUTHORIZED)
    }
}

/// Reads a resolved workflow config and logs in to the demo database it names.
pub fn connect(config_path: &Path) -> Result<(), DemoError> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|error| DemoError::Read(config_path.display().to_string(), error))?;
    let config: serde_json::Value =
        serde_yaml::from_str(&text).map_err(|error| DemoError::Parse(error.to_string()))?;
    let connection = config
        .pointer("/source/serviceConnection/config")
        .ok_or(DemoError::Missing("source.serviceConnection.config"))?;
    let text_at = |pointer: &str| {
        connection
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };

    let host_port = text_at("/hostPort").ok_or(DemoError::Missing("hostPort"))?;
    let login = Login {
        username: text_at("/username").ok_or(DemoError::Missing("username"))?,
        password: text_at("/authType/password").or_else(|| text_at("/password")),
        private_key: text_at("/privateKey"),
        passphrase: text_at("/snowflakePrivatekeyPassphrase"),
    };
    let service = config
        .pointer("/source/serviceName")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    let kind = text_at("/type").unwrap_or_default();
    println!("demo connector: ingesting service {service} ({kind}) from {host_port}");

    // Drivers often print the connection URL, password included, in their
    // debug output; this line shows the runner masking it on the way out.
    if let Some(password) = &login.password {
        println!(
            "debug: connection url {}://{}:{password}@{host_port}",
            kind.to_lowercase(),
            login.username
        );
    }
    if let Some(key) = &login.private_key {
        println!("debug: using private key of {} lines:", key.lines().count());
        for line in key.lines() {
            println!("{line}");
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| DemoError::Runtime(error.to_string()))?;
    let tables = runtime.block_on(post_login(&host_port, &login))?;
    println!(
        "authenticated as {}; found {} tables",
        login.username,
        tables.len()
    );
    for table in tables {
        println!("  table {table}");
    }
    Ok(())
}

async fn post_login(host_port: &str, login: &Login) -> Result<Vec<String>, DemoError> {
    let url = format!("http://{host_port}/v1/login");
    let response = reqwest::Client::new()
        .post(&url)
        .json(login)
        .send()
        .await
        .map_err(|error| DemoError::Connect(host_port.to_string(), error.to_string()))?;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err(DemoError::Rejected(login.username.clone()));
    }
    let tables: Tables = response
        .json()
        .await
        .map_err(|error| DemoError::Connect(host_port.to_string(), error.to_string()))?;
    Ok(tables.tables)
}
