//! The `map_secret` hook as the secrets resolver's name mapping.

use serde_json::{Value, json};

use super::{HookOutcome, HookPoint, HookSet};
use crate::secrets::{MappedName, NameMapper, SecretRef};

#[async_trait::async_trait]
impl NameMapper for HookSet {
    /// Calls `map_secret(ref)` with `reference`, `path`, `version`,
    /// `provider` (the routed store's name) and `kind` (its type). The hook
    /// returns nil for the default mapping, a name, or a table with `name` and
    /// optionally `version` and `provider`.
    async fn map(
        &self,
        reference: &SecretRef,
        provider: &str,
        kind: &'static str,
    ) -> Result<Option<MappedName>, String> {
        let input = json!({
            "reference": reference.to_string(),
            "path": reference.path(),
            "version": reference.version(),
            "provider": provider,
            "kind": kind,
        });
        let returned = match self.fire(HookPoint::MapSecret, input).await {
            Ok(HookOutcome::NotDefined) | Ok(HookOutcome::Returned(Value::Null)) => {
                return Ok(None);
            }
            Ok(HookOutcome::Returned(value)) => value,
            Err(error) => return Err(format!("the map_secret hook failed: {error}")),
        };
        match returned {
            Value::String(name) if !name.is_empty() => Ok(Some(MappedName {
                name,
                version: None,
                provider: None,
            })),
            Value::Object(fields) => {
                let name = fields.get("name").and_then(Value::as_str).filter(|name| !name.is_empty());
                let Some(name) = name else {
                    return Err("the map_secret hook returned a table without a name".into());
                };
                let version = optional_string(&fields, "version")?;
                let provider = optional_string(&fields, "provider")?;
                Ok(Some(MappedName {
                    name: name.to_string(),
                    version,
                    provider,
                }))
            }
            _ => Err("the map_secret hook returned neither nil, a name, nor a table with name, version and provider".into()),
        }
    }
}

/// Returns the string field `key` of a returned table, or `None` when absent.
fn optional_string(
    fields: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
        Some(_) => Err(format!(
            "the map_secret hook returned a {key} that is not a non-empty string"
        )),
    }
}
