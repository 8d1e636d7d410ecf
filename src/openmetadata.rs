//! Points each workflow config at the runner's OpenMetadata server.
//!
//! With an `openmetadata` section in runner.yaml, the dispatcher calls
//! [`apply`] on the resolved config of every run. It sets the server URL and
//! the bot JWT read at that moment, so a rotated token takes effect at the
//! next run, and it ties the workflow's own pipeline statuses to the run:
//!
//! | config kind | fields set |
//! |---|---|
//! | ingestion workflow (`workflowConfig`) | `workflowConfig.openMetadataServerConfig.{hostPort, authProvider, securityConfig.jwtToken, storeServiceConnection}`, `pipelineRunId` (the run id, when it is a UUID), `ingestionPipelineFQN` (the request's pipeline FQN) |
//! | automation workflow (`workflowType` and `request`) | `openMetadataServerConnection.{hostPort, authProvider, securityConfig.jwtToken, storeServiceConnection}` |
//!
//! `storeServiceConnection` is set to `false`. With `true` (the CLI's
//! default), a workflow that creates its service sends the service
//! connection to the server with the resolved password in clear text
//! (`OMetaServiceMixin.get_create_service_from_source` in
//! openmetadata-ingestion 2.0.7), which would carry the secret out of the
//! customer's environment.

use serde_json::{Map, Value, json};

use crate::config::{OpenMetadataConfig, TokenSource};
use crate::secrets::SecretValue;

/// Reason the bot token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenReadError {
    #[error(
        "cannot read the OpenMetadata bot token file {path}: {source}; check openmetadata.jwt_token_file"
    )]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "environment variable {0} with the OpenMetadata bot token is not set; set it or change openmetadata.jwt_token_env"
    )]
    EnvMissing(String),
    #[error("the OpenMetadata bot token from {0} is empty")]
    Empty(String),
}

/// Reads the bot JWT now: from `openmetadata.jwt_token_file` or
/// `jwt_token_env`, or else from the control plane token source.
pub fn read_token(
    settings: &OpenMetadataConfig,
    control_plane_token: &TokenSource,
) -> Result<SecretValue, TokenReadError> {
    let source = settings.jwt_token.as_ref().unwrap_or(control_plane_token);
    let (text, origin) = match source {
        TokenSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| TokenReadError::File {
                path: path.clone(),
                source,
            })?;
            (text, path.display().to_string())
        }
        TokenSource::Env(name) => {
            let text = std::env::var(name).map_err(|_| TokenReadError::EnvMissing(name.clone()))?;
            (text, format!("${name}"))
        }
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenReadError::Empty(origin));
    }
    Ok(SecretValue::new(token.to_string()))
}

/// Sets the server, the token and the run identity in `config` (see the
/// module documentation). Configs of other kinds are left unchanged.
pub fn apply(
    config: &mut Value,
    host_port: &str,
    token: &SecretValue,
    run_id: &str,
    pipeline_fqn: &str,
) {
    let Some(root) = config.as_object_mut() else {
        return;
    };
    if root.contains_key("workflowType") && root.contains_key("request") {
        let server = take_object(root, "openMetadataServerConnection");
        let server = with_server(server, host_port, token);
        root.insert("openMetadataServerConnection".into(), server);
        return;
    }
    if !root.contains_key("source") {
        return;
    }
    let mut workflow_config = take_object(root, "workflowConfig");
    let server = take_object(&mut workflow_config, "openMetadataServerConfig");
    workflow_config.insert(
        "openMetadataServerConfig".into(),
        with_server(server, host_port, token),
    );
    root.insert("workflowConfig".into(), Value::Object(workflow_config));
    // The CLI reads pipelineRunId as a UUID and fails on anything else.
    if uuid::Uuid::parse_str(run_id).is_ok() {
        root.insert("pipelineRunId".into(), json!(run_id));
    } else {
        tracing::warn!(
            run_id,
            "the run id is not a UUID, so the workflow reports its pipeline status under a run id of its own"
        );
        root.remove("pipelineRunId");
    }
    root.insert("ingestionPipelineFQN".into(), json!(pipeline_fqn));
}

/// Returns `server` with the URL, the auth provider and the token set.
fn with_server(mut server: Map<String, Value>, host_port: &str, token: &SecretValue) -> Value {
    server.insert("hostPort".into(), json!(host_port));
    server.insert("authProvider".into(), json!("openmetadata"));
    server.insert("storeServiceConnection".into(), json!(false));
    let mut security = take_object(&mut server, "securityConfig");
    security.insert("jwtToken".into(), json!(token.expose()));
    server.insert("securityConfig".into(), Value::Object(security));
    Value::Object(server)
}

/// Removes and returns the object under `key`; a missing or non-object
/// value gives an empty object.
fn take_object(parent: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match parent.remove(key) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN_ID: &str = "5b0c1f3e-8d55-4a57-9c4e-2f6a0e1d9b11";

    fn token() -> SecretValue {
        SecretValue::new("jwt-now".to_string())
    }

    #[test]
    fn ingestion_config_points_at_server() {
        let mut config = json!({
            "source": {"type": "postgres"},
            "workflowConfig": {"openMetadataServerConfig": {
                "hostPort": "http://stale:8585/api",
                "authProvider": "openmetadata",
                "securityConfig": {"jwtToken": "jwt-old"},
            }},
            "pipelineRunId": "ignored",
        });
        apply(
            &mut config,
            "http://127.0.0.1:9/api",
            &token(),
            RUN_ID,
            "svc.ingest",
        );
        let server = &config["workflowConfig"]["openMetadataServerConfig"];
        assert_eq!(server["hostPort"], "http://127.0.0.1:9/api");
        assert_eq!(server["securityConfig"]["jwtToken"], "jwt-now");
        assert_eq!(server["storeServiceConnection"], false);
        assert_eq!(config["pipelineRunId"], RUN_ID);
        assert_eq!(config["ingestionPipelineFQN"], "svc.ingest");
    }

    #[test]
    fn missing_sections_created() {
        let mut config = json!({"source": {}, "workflowConfig": "x"});
        apply(
            &mut config,
            "http://127.0.0.1:9/api",
            &token(),
            "run-1",
            "svc.p",
        );
        let server = &config["workflowConfig"]["openMetadataServerConfig"];
        assert_eq!(server["authProvider"], "openmetadata");
        assert!(config.get("pipelineRunId").is_none(), "non-UUID run id");
    }

    #[test]
    fn automation_config_points_at_server() {
        let mut config = json!({"workflowType": "TEST_CONNECTION", "request": {}});
        apply(
            &mut config,
            "http://127.0.0.1:9/api",
            &token(),
            RUN_ID,
            "svc.p",
        );
        let server = &config["openMetadataServerConnection"];
        assert_eq!(server["hostPort"], "http://127.0.0.1:9/api");
        assert_eq!(server["securityConfig"]["jwtToken"], "jwt-now");
        assert!(config.get("pipelineRunId").is_none());
    }

    #[test]
    fn token_read_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt");
        std::fs::write(&path, "first-token\n").unwrap();
        let settings = OpenMetadataConfig {
            host_port: "http://127.0.0.1:9/api".into(),
            jwt_token: Some(TokenSource::File(path.clone())),
        };
        let fallback = TokenSource::Env("HYBRID_RUNNER_TEST_UNSET_TOKEN".into());
        assert_eq!(
            read_token(&settings, &fallback).unwrap().expose(),
            "first-token"
        );
        std::fs::write(&path, "second-token").unwrap();
        assert_eq!(
            read_token(&settings, &fallback).unwrap().expose(),
            "second-token"
        );
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(
            read_token(&settings, &fallback),
            Err(TokenReadError::Empty(_))
        ));
    }
}
