//! A validating reader over a parsed YAML tree.
//!
//! Serde stops at the first error. Operators fixing a config want every
//! problem at once, each with its YAML path, so the loader walks the tree
//! with this reader: each accessor records an error and carries on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

/// One problem found in the config, with its YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "(top level)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// Collects issues while a config is read.
#[derive(Debug, Default)]
pub struct Issues(pub Vec<ConfigIssue>);

impl Issues {
    /// Records an issue. Only the first issue of a path is kept: a later one
    /// is usually a consequence of it (an unset variable that leaves an
    /// invalid URL behind).
    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        if self.0.iter().any(|issue| issue.path == path) {
            return;
        }
        self.0.push(ConfigIssue {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// Joins a parent path and a key.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The fields of one YAML mapping; reports keys that no accessor asked for.
pub struct Section<'a> {
    path: String,
    map: Option<&'a Mapping>,
    seen: BTreeSet<String>,
    base_dir: &'a Path,
}

impl<'a> Section<'a> {
    /// Opens a mapping, or records an issue when `value` is not one.
    pub fn new(
        value: Option<&'a Value>,
        path: &str,
        base_dir: &'a Path,
        issues: &mut Issues,
    ) -> Self {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(map)) => Some(map),
            Some(other) => {
                issues.push(
                    path,
                    format!("expected a mapping, found {}", kind_of(other)),
                );
                None
            }
        };
        Section {
            path: path.to_string(),
            map,
            seen: BTreeSet::new(),
            base_dir,
        }
    }

    /// Returns the YAML path of a key of this section.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Returns the folder relative paths are resolved from.
    pub fn base_dir(&self) -> &'a Path {
        self.base_dir
    }

    /// Returns true when the section exists in the file.
    pub fn is_present(&self) -> bool {
        self.map.is_some()
    }

    /// Returns the raw value of a key and marks it as known.
    pub fn raw(&mut self, key: &str) -> Option<&'a Value> {
        self.seen.insert(key.to_string());
        match self.map?.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some(value),
        }
    }

    /// Opens a nested section.
    pub fn section(&mut self, key: &str, issues: &mut Issues) -> Section<'a> {
        let value = self.raw(key);
        Section::new(value, &self.path_of(key), self.base_dir, issues)
    }

    pub fn string(&mut self, key: &str, issues: &mut Issues) -> Option<String> {
        let path = self.path_of(key);
        match self.raw(key)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            other => {
                issues.push(
                    &path,
                    format!("expected a string, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    pub fn required_string(&mut self, key: &str, issues: &mut Issues) -> Option<String> {
        let value = self.string(key, issues);
        if value.is_none() && !self.has_issue_at(key, issues) {
            issues.push(&self.path_of(key), "missing required value");
        }
        value
    }

    pub fn bool(&mut self, key: &str, issues: &mut Issues) -> Option<bool> {
        let path = self.path_of(key);
        match self.raw(key)? {
            Value::Bool(flag) => Some(*flag),
            other => {
                issues.push(
                    &path,
                    format!("expected true or false, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// Reads an integer in `min..=max`.
    pub fn integer(&mut self, key: &str, min: u64, max: u64, issues: &mut Issues) -> Option<u64> {
        let path = self.path_of(key);
        let value = self.raw(key)?;
        match value.as_u64() {
            Some(number) if (min..=max).contains(&number) => Some(number),
            _ => {
                issues.push(
                    &path,
                    format!(
                        "expected an integer from {min} to {max}, found {}",
                        describe(value)
                    ),
                );
                None
            }
        }
    }

    /// Reads a duration such as `30s`, `5m`, `1h 30m` or a number of seconds.
    pub fn duration(&mut self, key: &str, issues: &mut Issues) -> Option<Duration> {
        let path = self.path_of(key);
        let value = self.raw(key)?;
        let parsed = match value {
            Value::Number(number) => number.as_u64().map(Duration::from_secs),
            Value::String(text) => humantime::parse_duration(text.trim()).ok(),
            _ => None,
        };
        if parsed.is_none() {
            issues.push(
                &path,
                format!(
                    "invalid duration {}; write a number of seconds or a value like 500ms, 30s, 5m, 2h",
                    describe(value)
                ),
            );
        }
        parsed
    }

    /// Opens each item of a list of mappings as a section, with paths such
    /// as `secrets.routes[0]`.
    pub fn list_sections(&mut self, key: &str, issues: &mut Issues) -> Vec<Section<'a>> {
        let path = self.path_of(key);
        let Some(value) = self.raw(key) else {
            return Vec::new();
        };
        let Value::Sequence(items) = value else {
            issues.push(&path, format!("expected a list, found {}", kind_of(value)));
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                Section::new(
                    Some(item),
                    &format!("{path}[{index}]"),
                    self.base_dir,
                    issues,
                )
            })
            .collect()
    }

    /// Reads a list of strings.
    pub fn string_list(&mut self, key: &str, issues: &mut Issues) -> Option<Vec<String>> {
        let path = self.path_of(key);
        let Value::Sequence(items) = self.raw(key)? else {
            issues.push(&path, "expected a list of strings");
            return None;
        };
        let mut list = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(text) => list.push(text.clone()),
                other => issues.push(
                    &format!("{path}[{index}]"),
                    format!("expected a string, found {}", kind_of(other)),
                ),
            }
        }
        Some(list)
    }

    /// Reads a map of string keys to string values.
    pub fn string_map(&mut self, key: &str, issues: &mut Issues) -> Option<Vec<(String, String)>> {
        let path = self.path_of(key);
        let Value::Mapping(map) = self.raw(key)? else {
            issues.push(&path, "expected a mapping of names to strings");
            return None;
        };
        let mut pairs = Vec::with_capacity(map.len());
        for (name, value) in map {
            let Some(name) = name.as_str() else {
                issues.push(
                    &path,
                    format!("expected string keys, found {}", describe(name)),
                );
                continue;
            };
            match value {
                Value::String(text) => pairs.push((name.to_string(), text.clone())),
                Value::Number(number) => pairs.push((name.to_string(), number.to_string())),
                Value::Bool(flag) => pairs.push((name.to_string(), flag.to_string())),
                other => issues.push(
                    &join(&path, name),
                    format!("expected a string, found {}", kind_of(other)),
                ),
            }
        }
        Some(pairs)
    }

    /// Reads a file path; a relative path is taken from the config file's folder.
    pub fn path(&mut self, key: &str, issues: &mut Issues) -> Option<PathBuf> {
        let text = self.string(key, issues)?;
        if text.trim().is_empty() {
            issues.push(&self.path_of(key), "empty path");
            return None;
        }
        Some(self.resolve(&text))
    }

    /// Resolves a path against the config file's folder.
    pub fn resolve(&self, text: &str) -> PathBuf {
        let path = PathBuf::from(text);
        if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        }
    }

    /// Returns the keys of this mapping in file order.
    pub fn keys(&self) -> Vec<(String, &'a Value)> {
        let Some(map) = self.map else {
            return Vec::new();
        };
        map.iter()
            .map(|(key, value)| (key.as_str().unwrap_or_default().to_string(), value))
            .collect()
    }

    /// Marks every key as known, for sections whose keys are names chosen by the user.
    pub fn accept_all_keys(&mut self) {
        for (key, _) in self.keys() {
            self.seen.insert(key);
        }
    }

    /// Records an issue for every key no accessor asked for.
    pub fn finish(self, issues: &mut Issues) {
        let Some(map) = self.map else { return };
        let known: Vec<&String> = self.seen.iter().collect();
        for key in map.keys() {
            let name = match key.as_str() {
                Some(name) => name.to_string(),
                None => describe(key),
            };
            if !self.seen.contains(&name) {
                let known: Vec<&str> = known.iter().map(|key| key.as_str()).collect();
                issues.push(
                    &join(&self.path, &name),
                    format!("unknown key; expected one of: {}", known.join(", ")),
                );
            }
        }
    }

    fn has_issue_at(&self, key: &str, issues: &Issues) -> bool {
        let path = self.path_of(key);
        issues.0.iter().any(|issue| issue.path == path)
    }
}

/// Names the YAML kind of a value.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Shows a scalar value, or the kind of a collection.
pub fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => kind_of(other).to_string(),
    }
}
