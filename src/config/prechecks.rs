//! The `prechecks` list and `prechecks_timezone` of runner.yaml.

use std::time::Duration;

use serde_yaml::Value;

use super::reader::{Issues, Section, kind_of};
use crate::prechecks::{DEFAULT_TIMEOUT, Gates, PrecheckSpec, Schedule, Source};

/// Scheduled pre-checks declared in runner.yaml.
#[derive(Debug, Clone)]
pub struct PrechecksConfig {
    /// Time zone of cron schedules, UTC unless `prechecks_timezone` is set.
    pub zone: chrono_tz::Tz,
    pub checks: Vec<PrecheckSpec>,
}

impl PrechecksConfig {
    /// Returns the checks and the hook functions they call.
    pub fn declared_checks(&self) -> Vec<crate::hooks::DeclaredCheck> {
        self.checks
            .iter()
            .filter_map(|check| match &check.source {
                Source::Yaml { function } => Some(crate::hooks::DeclaredCheck {
                    name: check.name.clone(),
                    function: function.clone(),
                }),
                Source::Lua { .. } => None,
            })
            .collect()
    }
}

/// Reads `prechecks` and `prechecks_timezone` from the top-level section.
pub(super) fn read_prechecks(root: &mut Section, issues: &mut Issues) -> PrechecksConfig {
    let zone = match root.string("prechecks_timezone", issues) {
        Some(name) => match crate::prechecks::parse_zone(&name) {
            Ok(zone) => zone,
            Err(message) => {
                issues.push(&root.path_of("prechecks_timezone"), message);
                chrono_tz::Tz::UTC
            }
        },
        None => chrono_tz::Tz::UTC,
    };
    let path = root.path_of("prechecks");
    let mut checks: Vec<PrecheckSpec> = Vec::new();
    match root.raw("prechecks") {
        None => {}
        Some(Value::Sequence(items)) => {
            // Names of every entry so far, valid or not, so a duplicate of an
            // invalid entry is reported too.
            let mut names: Vec<&str> = Vec::new();
            for (index, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{index}]");
                if let Some(name) = item.get("name").and_then(Value::as_str) {
                    if names.contains(&name) {
                        issues.push(
                            &format!("{item_path}.name"),
                            format!("duplicate pre-check name {name:?}; names must be unique"),
                        );
                    }
                    names.push(name);
                }
                let section = Section::new(Some(item), &item_path, root.base_dir(), issues);
                if let Some(check) = read_check(section, issues) {
                    checks.push(check);
                }
            }
        }
        Some(other) => issues.push(
            &path,
            format!("expected a list of pre-checks, found {}", kind_of(other)),
        ),
    }
    PrechecksConfig { zone, checks }
}

fn read_check(mut section: Section, issues: &mut Issues) -> Option<PrecheckSpec> {
    let name = section.required_string("name", issues);
    if let Some(name) = &name
        && let Err(message) = crate::prechecks::check_name(name)
    {
        issues.push(&section.path_of("name"), message);
    }
    let expression = section.required_string("schedule", issues);
    let schedule = expression
        .as_deref()
        .and_then(|text| match Schedule::parse(text) {
            Ok(schedule) => Some(schedule),
            Err(error) => {
                let owner = name.as_deref().unwrap_or("(unnamed)");
                issues.push(
                    &section.path_of("schedule"),
                    format!("pre-check {owner}: {error}"),
                );
                None
            }
        });
    let function = section.required_string("hook", issues);
    if let Some(function) = &function
        && !is_lua_name(function)
    {
        issues.push(
            &section.path_of("hook"),
            format!("{function:?} is not a Lua function name; name a global function of the hook scripts"),
        );
    }
    let timeout = section
        .duration("timeout", issues)
        .unwrap_or(DEFAULT_TIMEOUT);
    if timeout < Duration::from_millis(1) {
        issues.push(
            &section.path_of("timeout"),
            "the timeout must be more than 0",
        );
    }
    let gate = section.bool("gate", issues).unwrap_or(false);
    let mut gates_section = section.section("gates", issues);
    let gates = Gates {
        pipeline_types: gates_section
            .string_list("pipeline_types", issues)
            .unwrap_or_default(),
        services: gates_section
            .string_list("services", issues)
            .unwrap_or_default(),
    };
    gates_section.finish(issues);
    section.finish(issues);
    Some(PrecheckSpec {
        name: name?,
        schedule: schedule?,
        timeout,
        gate,
        gates,
        source: Source::Yaml {
            function: function?,
        },
    })
}

fn is_lua_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
