//! OpenMetadata workflow configs as they arrive in run requests.
//!
//! A config is parsed with limits on size and nesting, checked for the few
//! things the runner must know (the `sourceConfig` type, secret references),
//! and walked to find its secret fields. Error messages name field paths and
//! references, never field values.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::secrets::fields::is_secret_field;
use crate::secrets::{SecretRef, SecretValue};

/// Deepest nesting accepted in a workflow config.
pub const MAX_DEPTH: usize = 64;

/// `sourceConfig.config.type` values of OpenMetadata ingestion workflows
/// (`openmetadata-spec` `metadataIngestion/*Pipeline.json`).
pub const SOURCE_CONFIG_TYPES: &[&str] = &[
    "DatabaseMetadata",
    "DatabaseUsage",
    "DatabaseLineage",
    "DashboardMetadata",
    "DashboardUsage",
    "MessagingMetadata",
    "PipelineMetadata",
    "MlModelMetadata",
    "StorageMetadata",
    "SearchMetadata",
    "ApiMetadata",
    "DriveMetadata",
    "SecurityMetadata",
    "Profiler",
    "AutoClassification",
    "TestSuite",
    "DBT",
    "dbt",
    "DataInsight",
    "Application",
    "MetadataToElasticSearch",
];

/// Reason a workflow config was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkflowError {
    #[error(
        "workflow config is {size} bytes, over the limit of {limit} bytes (runs.max_config_bytes)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("workflow config is not valid YAML or JSON: {0}")]
    Syntax(String),
    #[error("workflow config is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error(
        "workflow config must be a mapping with a source section, or an automation workflow with workflowType and request"
    )]
    NotAMapping,
    #[error("{path}: unknown value {value:?}; expected one of: {expected}")]
    UnknownEnum {
        path: String,
        value: String,
        expected: String,
    },
    #[error("{0}")]
    Fields(FieldErrors),
}

/// Problems with secret references, one per field.
#[derive(Debug, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<String>);

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// A parsed workflow config.
#[derive(Debug, Clone)]
pub struct Workflow {
    value: Value,
}

/// A secret reference found in a secret field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceField {
    /// Dotted path of the field, with array items as `[N]`.
    pub path: String,
    /// JSON pointer of the field, exact even when keys contain dots.
    pub pointer: String,
    pub reference: SecretRef,
}

/// Contents of the secret fields of a workflow.
#[derive(Debug, Default)]
pub struct SecretPlan {
    pub references: Vec<ReferenceField>,
    /// Literal values in secret fields; they are redacted like fetched values.
    pub literals: Vec<String>,
}

impl SecretPlan {
    /// Returns the distinct references.
    pub fn distinct(&self) -> BTreeSet<SecretRef> {
        self.references
            .iter()
            .map(|field| field.reference.clone())
            .collect()
    }
}

impl Workflow {
    /// Parses the `config` of a run request: a YAML or JSON string, or an object.
    pub fn from_request(config: &Value, max_bytes: usize) -> Result<Workflow, WorkflowError> {
        let value = match config {
            Value::String(text) => {
                if text.len() > max_bytes {
                    return Err(WorkflowError::TooLarge {
                        size: text.len(),
                        limit: max_bytes,
                    });
                }
                // The parser's message may quote the input, which can hold a
                // literal password, so only its location is kept.
                serde_yaml::from_str::<Value>(text)
                    .map_err(|error| WorkflowError::Syntax(describe_yaml_error(&error)))?
            }
            other => other.clone(),
        };
        if depth(&value) > MAX_DEPTH {
            return Err(WorkflowError::TooDeep);
        }
        let workflow = Workflow { value };
        workflow.validate()?;
        Ok(workflow)
    }

    /// Returns the config as JSON.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Returns `source.serviceConnection.config.type`.
    pub fn connection_type(&self) -> Option<&str> {
        self.value
            .pointer("/source/serviceConnection/config/type")
            .and_then(Value::as_str)
    }

    fn validate(&self) -> Result<(), WorkflowError> {
        let Some(root) = self.value.as_object() else {
            return Err(WorkflowError::NotAMapping);
        };
        if let Some(kind) = self.value.pointer("/source/sourceConfig/config/type") {
            let kind = kind.as_str().unwrap_or_default();
            if !SOURCE_CONFIG_TYPES.contains(&kind) {
                return Err(WorkflowError::UnknownEnum {
                    path: "source.sourceConfig.config.type".into(),
                    value: kind.chars().take(100).collect(),
                    expected: SOURCE_CONFIG_TYPES.join(", "),
                });
            }
        }
        // Automation workflows, such as a test connection, carry a `request`
        // and a `workflowType` in place of a source.
        let automation = root.contains_key("workflowType") && root.contains_key("request");
        if !root.contains_key("source") && !root.contains_key("sourcePythonClass") && !automation {
            return Err(WorkflowError::NotAMapping);
        }
        Ok(())
    }

    /// Finds the references and literal values in secret fields, and rejects
    /// references anywhere else. `extra_fields` are dotted paths the run
    /// request marks as secret.
    pub fn plan_secrets(&self, extra_fields: &[String]) -> Result<SecretPlan, WorkflowError> {
        let mut plan = SecretPlan::default();
        let mut errors = Vec::new();
        let context = WalkContext {
            connection_type: self.connection_type(),
            extra_fields,
        };
        let at = Location {
            path: String::new(),
            pointer: String::new(),
        };
        walk(&self.value, &at, None, &context, &mut plan, &mut errors);
        if errors.is_empty() {
            Ok(plan)
        } else {
            Err(WorkflowError::Fields(FieldErrors(errors)))
        }
    }

    /// Returns a copy with every reference replaced by its value.
    pub fn resolved(
        &self,
        plan: &SecretPlan,
        lookup: &dyn Fn(&SecretRef) -> Option<SecretValue>,
    ) -> Value {
        let mut value = self.value.clone();
        for field in &plan.references {
            if let (Some(slot), Some(secret)) =
                (value.pointer_mut(&field.pointer), lookup(&field.reference))
            {
                *slot = Value::String(secret.expose().to_string());
            }
        }
        value
    }
}

struct WalkContext<'a> {
    connection_type: Option<&'a str>,
    extra_fields: &'a [String],
}

/// Location of a value: its dotted path for messages and its JSON pointer.
struct Location {
    path: String,
    pointer: String,
}

impl Location {
    fn key(&self, name: &str) -> Location {
        let escaped = name.replace('~', "~0").replace('/', "~1");
        Location {
            path: if self.path.is_empty() {
                name.to_string()
            } else {
                format!("{}.{name}", self.path)
            },
            pointer: format!("{}/{escaped}", self.pointer),
        }
    }

    fn index(&self, index: usize) -> Location {
        Location {
            path: format!("{}[{index}]", self.path),
            pointer: format!("{}/{index}", self.pointer),
        }
    }
}

fn walk(
    value: &Value,
    at: &Location,
    key: Option<&str>,
    context: &WalkContext,
    plan: &mut SecretPlan,
    errors: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            for (name, item) in map {
                walk(item, &at.key(name), Some(name), context, plan, errors);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, &at.index(index), key, context, plan, errors);
            }
        }
        Value::String(text) => {
            let secret_field = key
                .is_some_and(|key| is_secret_field(&at.path, key, context.connection_type))
                || context.extra_fields.contains(&at.path);
            check_string(text, at, secret_field, plan, errors);
        }
        _ => {}
    }
}

fn check_string(
    text: &str,
    at: &Location,
    secret_field: bool,
    plan: &mut SecretPlan,
    errors: &mut Vec<String>,
) {
    let path = &at.path;
    let is_reference = SecretRef::is_reference(text);
    match (secret_field, is_reference) {
        (true, true) => match SecretRef::parse(text) {
            Ok(reference) => plan.references.push(ReferenceField {
                path: path.clone(),
                pointer: at.pointer.clone(),
                reference,
            }),
            Err(error) => errors.push(format!("{path}: {error}")),
        },
        (true, false) => plan.literals.push(text.to_string()),
        (false, true) => errors.push(format!(
            "{path}: secret references are only allowed in secret fields (fields OpenMetadata marks as passwords, or listed in the run request's secretFields); found {}",
            shorten(text)
        )),
        (false, false) => {}
    }
}

/// Returns a reference's text for a message, cut to a readable length.
fn shorten(text: &str) -> String {
    let short: String = text.chars().take(200).collect();
    format!("{short:?}")
}

fn describe_yaml_error(error: &serde_yaml::Error) -> String {
    let text = error.to_string();
    // Messages that quote no input are safe to pass on whole.
    let safe = [
        "recursion limit exceeded",
        "repetition limit exceeded",
        "invalid unicode",
    ];
    if let Some(known) = safe.iter().find(|known| text.contains(*known)) {
        return known.to_string();
    }
    match error.location() {
        Some(location) => format!(
            "syntax error at line {}, column {}",
            location.line(),
            location.column()
        ),
        None => "syntax error".into(),
    }
}

fn depth(value: &Value) -> usize {
    // Iterative, so a deeply nested object given as JSON cannot overflow the stack.
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        if level > MAX_DEPTH {
            return level;
        }
        match value {
            Value::Object(map) => stack.extend(map.values().map(|item| (item, level + 1))),
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, level + 1))),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(yaml: &str) -> Workflow {
        Workflow::from_request(&Value::String(yaml.into()), 1 << 20).unwrap()
    }

    const MYSQL: &str = "
source:
  type: mysql
  serviceName: local_mysql
  serviceConnection:
    config:
      type: Mysql
      username: openmetadata_user
      authType:
        password: secret:/collate/hybrid-ingestion/mysql/password
      hostPort: mysql.internal:3306
  sourceConfig:
    config:
      type: DatabaseMetadata
workflowConfig:
  openMetadataServerConfig:
    securityConfig:
      jwtToken: plain-bot-token-7Q2w9Zr4
";

    #[test]
    fn plan_finds_references_and_literals() {
        let plan = workflow(MYSQL).plan_secrets(&[]).unwrap();
        assert_eq!(plan.references.len(), 1);
        assert_eq!(
            plan.references[0].path,
            "source.serviceConnection.config.authType.password"
        );
        assert_eq!(plan.literals, vec!["plain-bot-token-7Q2w9Zr4"]);
    }

    #[test]
    fn reference_in_hostport_is_rejected() {
        let yaml = MYSQL.replace(
            "mysql.internal:3306",
            "secret:/collate/hybrid-ingestion/pg/host",
        );
        let error = workflow(&yaml).plan_secrets(&[]).unwrap_err().to_string();
        assert!(
            error.starts_with("source.serviceConnection.config.hostPort: secret references are only allowed in secret fields"),
            "{error}"
        );
    }

    #[test]
    fn request_listed_field_is_secret() {
        let yaml = MYSQL.replace(
            "openmetadata_user",
            "secret:/collate/hybrid-ingestion/mysql/user",
        );
        let fields = vec!["source.serviceConnection.config.username".to_string()];
        let plan = workflow(&yaml).plan_secrets(&fields).unwrap();
        assert_eq!(plan.references.len(), 2);
    }

    #[test]
    fn unknown_source_config_type_names_path_and_value() {
        let yaml = MYSQL.replace("type: DatabaseMetadata", "type: DatabaseMetadataa");
        let error = Workflow::from_request(&Value::String(yaml), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "source.sourceConfig.config.type: unknown value \"DatabaseMetadataa\""
            ),
            "{error}"
        );
        assert!(!error.contains("plain-bot-token"));
    }

    #[test]
    fn resolved_replaces_only_references() {
        let workflow = workflow(MYSQL);
        let plan = workflow.plan_secrets(&[]).unwrap();
        let resolved = workflow.resolved(&plan, &|_| Some(SecretValue::new("line1\nline2".into())));
        assert_eq!(
            resolved.pointer("/source/serviceConnection/config/authType/password"),
            Some(&Value::String("line1\nline2".into()))
        );
        assert_eq!(
            resolved.pointer("/source/serviceConnection/config/hostPort"),
            Some(&Value::String("mysql.internal:3306".into()))
        );
    }

    #[test]
    fn hostile_inputs_are_rejected() {
        let big = "a".repeat(2048);
        assert!(matches!(
            Workflow::from_request(&Value::String(big), 1024),
            Err(WorkflowError::TooLarge { .. })
        ));

        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let error = Workflow::from_request(&Value::String(deep), 1 << 20).unwrap_err();
        assert!(
            matches!(error, WorkflowError::TooDeep | WorkflowError::Syntax(_)),
            "{error}"
        );

        let bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n";
        let error = Workflow::from_request(&Value::String(bomb.into()), 1 << 20).unwrap_err();
        assert!(matches!(error, WorkflowError::Syntax(_)), "{error}");
    }

    #[test]
    fn syntax_error_does_not_quote_input() {
        let yaml = "source:\n  password: \"plain-secret-value\n  other: [";
        let error = Workflow::from_request(&Value::String(yaml.into()), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(!error.contains("plain-secret-value"), "{error}");
    }
}
