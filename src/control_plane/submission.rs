//! Run submissions: the body of `POST /v1/runs` and its validation.

use std::fmt;

use serde_json::{Map, Value};

use super::ControlPlaneError;
use crate::protocol::RunRequest;

/// Maximum length of a caller-chosen run id.
const MAX_RUN_ID_LEN: usize = 128;

/// Fields accepted in the body of `POST /v1/runs`.
const FIELDS: [&str; 7] = [
    "agentId",
    "pipelineFqn",
    "pipelineType",
    "config",
    "timeoutSeconds",
    "secretFields",
    "runId",
];

/// A request to run one workflow on one runner.
///
/// `POST /v1/runs` and [`ControlPlaneHandle::submit`] both accept it.
///
/// [`ControlPlaneHandle::submit`]: super::ControlPlaneHandle::submit
#[derive(Clone, PartialEq)]
pub struct RunSubmission {
    /// Agent id of the connected runner that should run the workflow.
    pub agent_id: String,
    pub pipeline_fqn: String,
    pub pipeline_type: String,
    /// OpenMetadata workflow config, a YAML or JSON string or a JSON object,
    /// passed to the runner unchanged.
    pub config: Value,
    pub timeout_seconds: Option<u64>,
    /// Extra dotted config paths the runner treats as secret fields.
    pub secret_fields: Vec<String>,
    /// Run id to use, or `None` to generate a UUID v4.
    pub run_id: Option<String>,
}

/// Prints the submission without the workflow config, which may name secrets.
impl fmt::Debug for RunSubmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunSubmission")
            .field("agent_id", &self.agent_id)
            .field("pipeline_fqn", &self.pipeline_fqn)
            .field("pipeline_type", &self.pipeline_type)
            .field("config", &"<omitted>")
            .field("timeout_seconds", &self.timeout_seconds)
            .field("secret_fields", &self.secret_fields)
            .field("run_id", &self.run_id)
            .finish()
    }
}

impl RunSubmission {
    /// Creates a submission without timeout, extra secret fields or run id.
    pub fn new(
        agent_id: impl Into<String>,
        pipeline_fqn: impl Into<String>,
        pipeline_type: impl Into<String>,
        config: Value,
    ) -> Self {
        RunSubmission {
            agent_id: agent_id.into(),
            pipeline_fqn: pipeline_fqn.into(),
            pipeline_type: pipeline_type.into(),
            config,
            timeout_seconds: None,
            secret_fields: Vec::new(),
            run_id: None,
        }
    }

    /// Parses and validates the JSON body of `POST /v1/runs`. The error names
    /// the first invalid field.
    pub(super) fn from_json(body: &Value) -> Result<Self, ControlPlaneError> {
        let Some(object) = body.as_object() else {
            return Err(invalid(format!(
                "the body must be a JSON object with the fields {}; got {}",
                FIELDS.join(", "),
                json_type(body)
            )));
        };
        if let Some(unknown) = object.keys().find(|key| !FIELDS.contains(&key.as_str())) {
            return Err(invalid(format!(
                "unknown field {unknown:?}; the accepted fields are {}",
                FIELDS.join(", ")
            )));
        }
        let submission = RunSubmission {
            agent_id: required_string(object, "agentId")?,
            pipeline_fqn: required_string(object, "pipelineFqn")?,
            pipeline_type: required_string(object, "pipelineType")?,
            config: object.get("config").cloned().unwrap_or(Value::Null),
            timeout_seconds: optional_u64(object, "timeoutSeconds")?,
            secret_fields: optional_strings(object, "secretFields")?,
            run_id: optional_string(object, "runId")?,
        };
        submission.validate()?;
        Ok(submission)
    }

    /// Checks the fields that `from_json` cannot check by type alone. The
    /// in-process path calls it too.
    pub(super) fn validate(&self) -> Result<(), ControlPlaneError> {
        check_not_blank("agentId", &self.agent_id)?;
        check_not_blank("pipelineFqn", &self.pipeline_fqn)?;
        check_not_blank("pipelineType", &self.pipeline_type)?;
        check_config(&self.config)?;
        if self.timeout_seconds == Some(0) {
            return Err(invalid(
                "timeoutSeconds is 0; set at least 1, or omit it to use the runner's default"
                    .to_string(),
            ));
        }
        if let Some(index) = self.secret_fields.iter().position(|f| f.trim().is_empty()) {
            return Err(invalid(format!(
                "secretFields[{index}] is empty; list dotted config paths such as \"source.serviceConnection.config.password\""
            )));
        }
        if let Some(run_id) = &self.run_id {
            check_run_id(run_id)?;
        }
        Ok(())
    }

    /// Builds the wire request for the given run id.
    pub(super) fn to_request(&self, run_id: &str) -> RunRequest {
        RunRequest {
            run_id: run_id.to_string(),
            pipeline_fqn: self.pipeline_fqn.clone(),
            pipeline_type: self.pipeline_type.clone(),
            config: self.config.clone(),
            timeout_seconds: self.timeout_seconds,
            secret_fields: self.secret_fields.clone(),
        }
    }
}

fn invalid(message: String) -> ControlPlaneError {
    ControlPlaneError::InvalidSubmission(message)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required_string(object: &Map<String, Value>, field: &str) -> Result<String, ControlPlaneError> {
    match object.get(field) {
        Some(Value::String(text)) => Ok(text.clone()),
        None | Some(Value::Null) => Err(invalid(format!("{field} is missing; set it to a string"))),
        Some(other) => Err(invalid(format!(
            "{field} must be a string; got {}",
            json_type(other)
        ))),
    }
}

fn optional_string(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ControlPlaneError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(invalid(format!(
            "{field} must be a string; got {}",
            json_type(other)
        ))),
    }
}

fn optional_u64(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<u64>, ControlPlaneError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| {
            invalid(format!(
                "{field} must be a whole number of seconds of at least 1; got {value}"
            ))
        }),
    }
}

fn optional_strings(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Vec<String>, ControlPlaneError> {
    let items = match object.get(field) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(invalid(format!(
                "{field} must be an array of strings; got {}",
                json_type(other)
            )));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::String(text) => Ok(text.clone()),
            other => Err(invalid(format!(
                "{field}[{index}] must be a string; got {}",
                json_type(other)
            ))),
        })
        .collect()
}

fn check_not_blank(field: &str, value: &str) -> Result<(), ControlPlaneError> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{field} is empty; set a non-empty value")));
    }
    Ok(())
}

fn check_config(config: &Value) -> Result<(), ControlPlaneError> {
    match config {
        Value::Object(_) => Ok(()),
        Value::String(text) if !text.trim().is_empty() => Ok(()),
        Value::String(_) => Err(invalid(
            "config is an empty string; send the workflow config as a YAML or JSON string or a JSON object"
                .to_string(),
        )),
        Value::Null => Err(invalid(
            "config is missing; send the workflow config as a YAML or JSON string or a JSON object"
                .to_string(),
        )),
        other => Err(invalid(format!(
            "config must be a YAML or JSON string or a JSON object; got {}",
            json_type(other)
        ))),
    }
}

/// Checks a caller-chosen run id, which appears in URL paths of the API.
pub(super) fn check_run_id(run_id: &str) -> Result<(), ControlPlaneError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if run_id.is_empty() || run_id.len() > MAX_RUN_ID_LEN || !run_id.chars().all(allowed) {
        return Err(invalid(format!(
            "runId {run_id:?} is invalid; use 1 to {MAX_RUN_ID_LEN} letters, digits, '.', '_' or '-', \
             or omit runId to get a UUID"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid_body() -> Value {
        json!({
            "agentId": "agent-1",
            "pipelineFqn": "mysql.ingest",
            "pipelineType": "metadata",
            "config": {"source": {"type": "mysql"}},
        })
    }

    fn error_of(body: Value) -> String {
        RunSubmission::from_json(&body).unwrap_err().to_string()
    }

    #[test]
    fn parses_full_body() {
        let body = json!({
            "agentId": "agent-1",
            "pipelineFqn": "mysql.ingest",
            "pipelineType": "metadata",
            "config": "source:\n  type: mysql\n",
            "timeoutSeconds": 60,
            "secretFields": ["source.x"],
            "runId": "run-1",
        });
        let submission = RunSubmission::from_json(&body).unwrap();
        assert_eq!(submission.agent_id, "agent-1");
        assert_eq!(submission.config, json!("source:\n  type: mysql\n"));
        assert_eq!(submission.timeout_seconds, Some(60));
        assert_eq!(submission.secret_fields, vec!["source.x".to_string()]);
        assert_eq!(submission.run_id.as_deref(), Some("run-1"));
    }

    #[test]
    fn optional_fields_may_be_null() {
        let mut body = valid_body();
        body["timeoutSeconds"] = Value::Null;
        body["secretFields"] = Value::Null;
        body["runId"] = Value::Null;
        let submission = RunSubmission::from_json(&body).unwrap();
        assert_eq!(submission.timeout_seconds, None);
        assert!(submission.secret_fields.is_empty());
        assert_eq!(submission.run_id, None);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("agentId", Value::Null, "agentId is missing"),
            (
                "agentId",
                json!(5),
                "agentId must be a string; got a number",
            ),
            ("pipelineFqn", json!(" "), "pipelineFqn is empty"),
            (
                "pipelineType",
                json!(["x"]),
                "pipelineType must be a string; got an array",
            ),
            (
                "config",
                json!(7),
                "config must be a YAML or JSON string or a JSON object",
            ),
            ("config", json!(""), "config is an empty string"),
            ("config", Value::Null, "config is missing"),
            (
                "timeoutSeconds",
                json!(-1),
                "timeoutSeconds must be a whole number",
            ),
            (
                "timeoutSeconds",
                json!("10"),
                "timeoutSeconds must be a whole number",
            ),
            ("timeoutSeconds", json!(0), "timeoutSeconds is 0"),
            (
                "secretFields",
                json!("a"),
                "secretFields must be an array of strings",
            ),
            (
                "secretFields",
                json!(["a", 1]),
                "secretFields[1] must be a string",
            ),
            ("secretFields", json!([""]), "secretFields[0] is empty"),
            ("runId", json!("a/b"), "runId \"a/b\" is invalid"),
            ("runId", json!(""), "runId \"\" is invalid"),
        ];
        for (field, value, expected) in cases {
            let mut body = valid_body();
            body[field] = value.clone();
            let error = error_of(body);
            assert!(error.contains(expected), "{field}={value}: {error}");
        }
    }

    #[test]
    fn unknown_field_is_rejected() {
        let mut body = valid_body();
        body["command"] = json!(["sh", "-c", "id"]);
        let error = error_of(body);
        assert!(error.contains("unknown field \"command\""), "{error}");
    }

    #[test]
    fn non_object_body_is_rejected() {
        let error = error_of(json!([1, 2]));
        assert!(error.contains("must be a JSON object"), "{error}");
        assert!(error.contains("got an array"), "{error}");
    }

    #[test]
    fn debug_omits_config() {
        let submission = RunSubmission::new("a", "b", "c", json!({"password": "secret:/x"}));
        let printed = format!("{submission:?}");
        assert!(!printed.contains("secret:/x"), "{printed}");
        assert!(printed.contains("<omitted>"), "{printed}");
    }
}
