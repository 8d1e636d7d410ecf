//! `runner.env.get(name)`: environment variables on an allow-list.

use std::sync::Arc;

use mlua::{Lua, Table};

use super::{error_at, sub_table};

/// Registers `runner.env.get(name)`. It returns the value, or `nil` when the
/// variable is unset, and raises an error for names not on the allow-list, so a
/// hook cannot read credentials from the runner's environment by accident.
pub(crate) fn register_env(
    lua: &Lua,
    runner: &Table,
    allowlist: Arc<[String]>,
) -> mlua::Result<()> {
    let env = sub_table(lua, runner, "env")?;
    let get = lua.create_function(move |lua, name: String| {
        if !allowlist.contains(&name) {
            return Err(error_at(
                lua,
                format!(
                    "runner.env.get(\"{name}\"): {name} is not on the hooks environment \
                     allow-list; add it there to read it"
                ),
            ));
        }
        match std::env::var(&name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(error_at(
                lua,
                format!("runner.env.get(\"{name}\"): the value is not valid UTF-8"),
            )),
        }
    })?;
    env.raw_set("get", get)
}
