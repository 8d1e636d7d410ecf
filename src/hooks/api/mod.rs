//! The `runner` global: the only way hook scripts reach the runner and the system.
//!
//! Each area is registered by its own function into the `runner` table:
//! `runner.sleep` ([`register_sleep`]), `runner.log` and `print`
//! ([`register_log`]), `runner.json` ([`register_json`]), `runner.yaml`
//! ([`register_yaml`]), `runner.env` ([`register_env`]), `runner.saas`
//! ([`register_saas`]), `runner.tcp` ([`register_tcp`]), `runner.secrets`
//! ([`register_secrets`]), `runner.exec` ([`register_exec`]), `runner.http`
//! ([`register_http`]), `runner.fs` ([`register_fs`]) and `runner.schedule`
//! ([`register_schedule`]).

mod env;
mod exec;
mod fs;
mod http;
mod json;
mod log;
mod saas;
mod schedule;
mod secrets;
mod sleep;
mod tcp;
mod yaml;

use std::sync::Arc;

use mlua::{Lua, Table};

pub(crate) use env::register_env;
pub(crate) use exec::register_exec;
pub(crate) use fs::register_fs;
pub(crate) use http::register_http;
pub(crate) use json::register_json;
pub(crate) use json::{json_to_lua, lua_to_json};
pub(crate) use log::register_log;
pub(crate) use saas::register_saas;
pub use schedule::ScheduledCheck;
pub(crate) use schedule::{FUNCTIONS_KEY, ScheduleRegistry, register_schedule};
pub(crate) use secrets::register_secrets;
pub(crate) use sleep::register_sleep;
pub(crate) use tcp::register_tcp;
pub(crate) use yaml::register_yaml;

/// Largest string `runner.json.decode` and `runner.yaml.decode` accept, in bytes.
/// YAML aliases can expand a document about a hundredfold in serde_yaml 0.9, so the
/// cap also bounds that expansion.
pub(crate) const MAX_DECODE_BYTES: usize = 1024 * 1024;

/// Creates the `runner` global with every API area.
pub(crate) fn register_all(
    lua: &Lua,
    limits: &super::HookLimits,
    schedules: Arc<ScheduleRegistry>,
) -> mlua::Result<()> {
    let runner = lua.create_table()?;
    register_sleep(lua, &runner)?;
    register_log(lua, &runner)?;
    register_json(lua, &runner)?;
    register_yaml(lua, &runner)?;
    register_env(lua, &runner, Arc::from(limits.env_allowlist.as_slice()))?;
    register_saas(lua, &runner, limits.events.clone())?;
    register_tcp(lua, &runner)?;
    register_secrets(lua, &runner, limits.secrets.clone())?;
    register_exec(lua, &runner, limits.redactor.clone())?;
    register_http(lua, &runner, limits.redactor.clone())?;
    register_fs(lua, &runner, limits.work_dir.clone())?;
    register_schedule(lua, &runner, schedules)?;
    lua.globals().raw_set("runner", runner)
}

/// Returns the file and line of the Lua code that called the running Rust
/// function, or `None` when the caller is not Lua code. Frames of mlua's own
/// Lua wrappers (chunks named `__mlua...`, which run async functions) and of C
/// functions are skipped.
pub(crate) fn caller_location(lua: &Lua) -> Option<(String, usize)> {
    const MAX_SKIPPED_FRAMES: usize = 4;
    for level in 1..=MAX_SKIPPED_FRAMES {
        let frame = lua.inspect_stack(level, |debug| {
            let source = debug.source();
            let file = source.short_src.map(|file| file.into_owned());
            (file, debug.current_line(), source.what)
        })?;
        match frame {
            (Some(file), Some(line), "Lua" | "main") if !file.starts_with("__mlua") => {
                return Some((file, line));
            }
            _ => continue,
        }
    }
    None
}

/// Creates a runtime error that starts with the caller's `file:line`, as errors
/// raised by Lua code do.
pub(crate) fn error_at(lua: &Lua, message: impl std::fmt::Display) -> mlua::Error {
    match caller_location(lua) {
        Some((file, line)) => mlua::Error::runtime(format!("{file}:{line}: {message}")),
        None => mlua::Error::runtime(message.to_string()),
    }
}

/// Creates a table under `runner.<name>` and returns it.
fn sub_table(lua: &Lua, runner: &Table, name: &str) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    runner.raw_set(name, &table)?;
    Ok(table)
}
