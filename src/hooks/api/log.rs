//! `runner.log` and `print`: hook output to the runner's `tracing` log.

use mlua::{Lua, Table, Value, Variadic};

use super::caller_location;
use crate::hooks::budget;

/// Maximum length of a message logged from a hook, in bytes. Longer messages are cut at a
/// character boundary and marked, so one runaway `print` cannot flood the log.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy)]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Registers `runner.log.debug/info/warn/error(message)` and replaces `print`,
/// which logs its arguments, separated by tabs, at info level. Each event
/// carries the hook (or the file being loaded) and the caller's file and line.
pub(crate) fn register_log(lua: &Lua, runner: &Table) -> mlua::Result<()> {
    let log = lua.create_table()?;
    let levels = [
        ("debug", Level::Debug),
        ("info", Level::Info),
        ("warn", Level::Warn),
        ("error", Level::Error),
    ];
    for (name, level) in levels {
        let function = lua.create_function(move |lua, message: Value| {
            emit(lua, level, &message.to_string()?);
            Ok(())
        })?;
        log.raw_set(name, function)?;
    }
    runner.raw_set("log", log)?;

    let print = lua.create_function(|lua, values: Variadic<Value>| {
        let parts = values
            .iter()
            .map(|value| value.to_string())
            .collect::<mlua::Result<Vec<_>>>()?;
        emit(lua, Level::Info, &parts.join("\t"));
        Ok(())
    })?;
    lua.globals().raw_set("print", print)
}

fn emit(lua: &Lua, level: Level, message: &str) {
    let hook = budget::active_label().unwrap_or_default();
    let (file, line) = caller_location(lua).unwrap_or_default();
    let message = truncate(message);
    match level {
        Level::Debug => tracing::debug!(hook = %hook, file = %file, line, "{message}"),
        Level::Info => tracing::info!(hook = %hook, file = %file, line, "{message}"),
        Level::Warn => tracing::warn!(hook = %hook, file = %file, line, "{message}"),
        Level::Error => tracing::error!(hook = %hook, file = %file, line, "{message}"),
    }
}

fn truncate(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_MESSAGE_BYTES {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}... [{} more bytes]",
        &message[..end],
        message.len() - end
    ))
}
