//! `runner.sleep(seconds)`: an asynchronous pause.

use std::time::Duration;

use mlua::{Lua, Table};

use super::error_at;

/// Registers `runner.sleep(seconds)`. The call suspends only the calling hook:
/// other hook calls on the same state run while it waits. The wait counts
/// against the call's time limit.
pub(crate) fn register_sleep(lua: &Lua, runner: &Table) -> mlua::Result<()> {
    let sleep = lua.create_async_function(|lua, seconds: f64| async move {
        let duration = Duration::try_from_secs_f64(seconds).map_err(|_| {
            error_at(
                &lua,
                format!("runner.sleep({seconds}): expected a finite number of seconds >= 0"),
            )
        })?;
        tokio::time::sleep(duration).await;
        Ok(())
    })?;
    runner.raw_set("sleep", sleep)
}
