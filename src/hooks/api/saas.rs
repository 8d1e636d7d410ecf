//! `runner.saas.send(kind, payload)`: events for the control plane.

use mlua::{Lua, Table, Value};

use super::{error_at, lua_to_json, sub_table};
use crate::hooks::EventSink;

/// Maximum length of an event kind, in bytes.
const MAX_KIND_BYTES: usize = 128;

/// Registers `runner.saas.send(kind, payload)`. The payload is converted to
/// JSON and handed to the runner, which redacts it on its way out like every
/// other message.
pub(crate) fn register_saas(
    lua: &Lua,
    runner: &Table,
    sink: Option<EventSink>,
) -> mlua::Result<()> {
    let saas = sub_table(lua, runner, "saas")?;
    let send = lua.create_function(move |lua, (kind, payload): (String, Value)| {
        let Some(sink) = &sink else {
            return Err(error_at(lua, "runner.saas.send: no control plane is connected here"));
        };
        let valid = !kind.is_empty()
            && kind.len() <= MAX_KIND_BYTES
            && kind.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(error_at(
                lua,
                format!("runner.saas.send: invalid kind {kind:?}; use up to {MAX_KIND_BYTES} letters, digits, '.', '_' or '-'"),
            ));
        }
        let payload = lua_to_json(lua, payload).map_err(|error| error_at(lua, format!("runner.saas.send: {error}")))?;
        (sink.0)(kind, payload);
        Ok(())
    })?;
    saas.raw_set("send", send)
}
