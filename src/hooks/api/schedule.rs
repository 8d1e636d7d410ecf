//! `runner.schedule(name, spec, fn, opts)`: pre-checks registered by hook scripts.
//!
//! Scripts call it from their top-level code. Each check belongs to the
//! generation that registered it: the function is stored in that generation's
//! Lua state, and a reload starts over with the checks the new scripts register.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlua::{Function, Lua, Table, Value};

use super::error_at;
use crate::prechecks::{Gates, Schedule};

/// Name of the Lua registry table that maps check names to their functions.
pub(crate) const FUNCTIONS_KEY: &str = "hybrid_runner.schedule";

/// A pre-check registered with `runner.schedule`.
#[derive(Debug, Clone)]
pub struct ScheduledCheck {
    /// Unique name of the check.
    pub name: String,
    pub schedule: Schedule,
    /// Time limit of one call; `None` uses the pre-check default.
    pub timeout: Option<Duration>,
    /// Whether a failure of this check rejects new runs.
    pub gate: bool,
    /// The runs a gating check applies to.
    pub gates: Gates,
}

/// The checks one generation registered, and whether it is still loading.
#[derive(Debug, Default)]
pub(crate) struct ScheduleRegistry {
    state: Mutex<RegistryState>,
}

#[derive(Debug, Default)]
struct RegistryState {
    loading: bool,
    checks: Vec<ScheduledCheck>,
    /// Names declared in runner.yaml, which scripts cannot take.
    reserved: Vec<String>,
}

impl ScheduleRegistry {
    pub(crate) fn new(reserved: Vec<String>) -> Self {
        ScheduleRegistry {
            state: Mutex::new(RegistryState {
                loading: true,
                checks: Vec::new(),
                reserved,
            }),
        }
    }

    /// Ends registration: `runner.schedule` raises an error from now on.
    pub(crate) fn finish_loading(&self) {
        self.lock().loading = false;
    }

    pub(crate) fn checks(&self) -> Vec<ScheduledCheck> {
        self.lock().checks.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Registers `runner.schedule`.
pub(crate) fn register_schedule(
    lua: &Lua,
    runner: &Table,
    registry: Arc<ScheduleRegistry>,
) -> mlua::Result<()> {
    lua.set_named_registry_value(FUNCTIONS_KEY, lua.create_table()?)?;
    let schedule = lua.create_function(
        move |lua, (name, spec, function, options): (String, String, Function, Option<Table>)| {
            let fail = |message: String| error_at(lua, format!("runner.schedule: {message}"));
            crate::prechecks::check_name(&name).map_err(&fail)?;
            let schedule = Schedule::parse(&spec)
                .map_err(|error| fail(format!("pre-check {name}: {error}")))?;
            let mut check = ScheduledCheck {
                name: name.clone(),
                schedule,
                timeout: None,
                gate: false,
                gates: Gates::default(),
            };
            if let Some(options) = options {
                read_options(&options, &mut check).map_err(|message| fail(format!("pre-check {name}: {message}")))?;
            }

            let mut state = registry.lock();
            if !state.loading {
                return Err(fail(
                    "checks can be registered only by the top-level code of a script".into(),
                ));
            }
            if state.reserved.contains(&name) {
                return Err(fail(format!(
                    "a pre-check named {name} is already declared in runner.yaml; choose another name"
                )));
            }
            if state.checks.iter().any(|existing| existing.name == name) {
                return Err(fail(format!("a pre-check named {name} is already registered")));
            }
            let functions: Table = lua.named_registry_value(FUNCTIONS_KEY)?;
            functions.raw_set(name.as_str(), function)?;
            state.checks.push(check);
            Ok(())
        },
    )?;
    runner.raw_set("schedule", schedule)
}

/// Reads the `opts` table: `timeout` (seconds or a duration string), `gate` and
/// `gates = { pipeline_types = {...}, services = {...} }`.
fn read_options(options: &Table, check: &mut ScheduledCheck) -> Result<(), String> {
    for pair in options.pairs::<String, Value>() {
        let (key, value) = pair.map_err(|_| "option names must be strings".to_string())?;
        match (key.as_str(), value) {
            ("timeout", Value::Integer(seconds)) if seconds > 0 => {
                check.timeout = Some(Duration::from_secs(seconds as u64));
            }
            ("timeout", Value::Number(seconds)) if seconds > 0.0 => {
                check.timeout = Duration::try_from_secs_f64(seconds).ok();
            }
            ("timeout", Value::String(text)) => {
                let text = text.to_string_lossy();
                let timeout = humantime::parse_duration(text.trim()).map_err(|_| {
                    format!("timeout {text:?} is not a duration; write 30 or \"30s\"")
                })?;
                check.timeout = Some(timeout);
            }
            ("timeout", _) => {
                return Err(
                    "timeout must be a number of seconds > 0 or a string like \"30s\"".into(),
                );
            }
            ("gate", Value::Boolean(gate)) => check.gate = gate,
            ("gate", _) => return Err("gate must be true or false".into()),
            ("gates", Value::Table(gates)) => {
                check.gates.pipeline_types = string_list(&gates, "pipeline_types")?;
                check.gates.services = string_list(&gates, "services")?;
            }
            ("gates", _) => {
                return Err("gates must be a table with pipeline_types and services".into());
            }
            (other, _) => {
                return Err(format!(
                    "unknown option {other:?}; the options are timeout, gate and gates"
                ));
            }
        }
    }
    Ok(())
}

fn string_list(table: &Table, key: &str) -> Result<Vec<String>, String> {
    match table.raw_get::<Value>(key) {
        Ok(Value::Nil) => Ok(Vec::new()),
        Ok(Value::Table(list)) => list
            .sequence_values::<String>()
            .collect::<mlua::Result<Vec<_>>>()
            .map_err(|_| format!("gates.{key} must be a list of strings")),
        _ => Err(format!("gates.{key} must be a list of strings")),
    }
}
