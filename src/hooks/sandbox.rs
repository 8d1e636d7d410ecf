//! Creates a sandboxed Lua 5.4 state.

use mlua::{Lua, LuaOptions, StdLib, Value};

use super::HookLimits;
use super::api::error_at;
use super::budget;

/// Base-library globals that reach the file system or load code from strings.
/// `require` is absent because the `package` library is not loaded; the engine
/// installs its own.
const REMOVED_GLOBALS: [&str; 3] = ["dofile", "loadfile", "load"];

/// `os` functions kept: they read clocks and format dates and change nothing.
const KEPT_OS_FUNCTIONS: [&str; 4] = ["time", "clock", "date", "difftime"];

/// Creates a state with the sandboxed standard library, the memory limit and the
/// instruction-count hook. The runner API and `require` are added by the caller.
pub(crate) fn new_state(limits: &HookLimits) -> mlua::Result<Lua> {
    let libs = StdLib::TABLE
        | StdLib::STRING
        | StdLib::MATH
        | StdLib::UTF8
        | StdLib::COROUTINE
        | StdLib::OS;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    lua.set_memory_limit(limits.memory_limit_bytes)?;

    let globals = lua.globals();
    for name in REMOVED_GLOBALS {
        globals.raw_set(name, Value::Nil)?;
    }
    let string: mlua::Table = globals.get("string")?;
    string.raw_set("dump", Value::Nil)?;

    restrict_os(&lua)?;
    restrict_collectgarbage(&lua)?;
    budget::install(&lua)?;
    Ok(lua)
}

/// Replaces `os` with a table of the clock and date functions only.
fn restrict_os(lua: &Lua) -> mlua::Result<()> {
    let globals = lua.globals();
    let full_os: mlua::Table = globals.get("os")?;
    let os = lua.create_table()?;
    for name in KEPT_OS_FUNCTIONS {
        os.raw_set(name, full_os.get::<mlua::Function>(name)?)?;
    }
    globals.raw_set("os", os)
}

/// Replaces `collectgarbage` with a version that accepts only `"count"`, so a
/// hook can read its memory use but cannot stop or tune the collector.
fn restrict_collectgarbage(lua: &Lua) -> mlua::Result<()> {
    let collectgarbage = lua.create_function(|lua, option: Option<String>| {
        let option = option.unwrap_or_else(|| "collect".to_string());
        if option != "count" {
            return Err(error_at(
                lua,
                format!("collectgarbage(\"{option}\") is not allowed in hooks; only \"count\" is"),
            ));
        }
        Ok(lua.used_memory() as f64 / 1024.0)
    })?;
    lua.globals().raw_set("collectgarbage", collectgarbage)
}
