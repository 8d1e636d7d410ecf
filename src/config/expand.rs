//! `${VAR}` expansion in string values of runner.yaml.
//!
//! Expansion runs on parsed string values, never on the raw text, so a
//! variable's content cannot change the structure of the file. `${VAR:-text}`
//! gives a default, and `$${` writes a literal `${`.

use serde_yaml::Value;

use super::reader::{Issues, join};

/// Expands every string value in place; unset variables are reported with their path.
pub fn expand_env(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Issues,
) {
    match value {
        Value::String(text) if text.contains('$') => {
            if let Some(expanded) = expand_text(text, path, env, issues) {
                *text = expanded;
            }
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                expand_env(item, &format!("{path}[{index}]"), env, issues);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key.as_str().unwrap_or("?").to_string();
                expand_env(item, &join(path, &key), env, issues);
            }
        }
        _ => {}
    }
}

fn expand_text(
    text: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Issues,
) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with("$${") {
            out.push_str("${");
            rest = &rest[3..];
            continue;
        }
        if !rest.starts_with("${") {
            out.push('$');
            rest = &rest[1..];
            continue;
        }
        let Some(end) = rest.find('}') else {
            issues.push(path, "unclosed ${ in value; write $${ for a literal ${");
            return None;
        };
        let inner = &rest[2..end];
        rest = &rest[end + 1..];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            issues.push(path, format!("invalid variable name {name:?} in ${{...}}"));
            return None;
        }
        match (env(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                issues.push(
                    path,
                    format!("environment variable {name} is not set; set it or write ${{{name}:-default}}"),
                );
                return None;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}
