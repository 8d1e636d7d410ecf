//! The `map_secret` hook as the secrets resolver's name mapping.

use serde_json::{Value, json};

use super::{HookOutcome, HookPoint, HookSet};
use crate::secrets::{MappedName, NameMapper, SecretRef};

#[async_trait::async_trait]
impl NameMapper for HookSet {
    /// Calls `map_secret(ref)` with `reference`, `path`, `version` and
    /// `provider`. The hook returns nil for the default mapping, a name, or a
    /// table with `name` and optionally `version`.
    async fn map(
        &self,
        reference: &SecretRef,
        provider: &'static str,
    ) -> Result<Option<MappedName>, String> {
        let input = json!({
            "reference": reference.to_string(),
            "path": reference.path(),
            "version": reference.version(),
            "provider": provider,
        });
        let returned = match self.fire(HookPoint::MapSecret, input).await {
            Ok(HookOutcome::NotDefined) | Ok(HookOutcome::Returned(Value::Null)) => {
                return Ok(None);
            }
            Ok(HookOutcome::Returned(value)) => value,
            Err(error) => return Err(format!("the map_secret hook failed: {error}")),
        };
        match returned {
            Value::String(name) if !name.is_empty() => Ok(Some(MappedName { name, version: None })),
            Value::Object(fields) => {
                let name = fields.get("name").and_then(Value::as_str).filter(|name| !name.is_empty());
                let Some(name) = name else {
                    return Err("the map_secret hook returned a table without a name".into());
                };
                let version = match fields.get("version") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(version)) => Some(version.clone()),
                    Some(_) => return Err("the map_secret hook returned a version that is not a string".into()),
                };
                Ok(Some(MappedName {
                    name: name.to_string(),
                    version,
                }))
            }
            _ => Err("the map_secret hook returned neither nil, a name, nor a table with name and version".into()),
        }
    }
}
