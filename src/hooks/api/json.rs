//! `runner.json`: JSON encoding and decoding, and the conversions the engine uses
//! for hook inputs and return values.

use mlua::serde::{DeserializeOptions, SerializeOptions};
use mlua::{Lua, LuaSerdeExt, Table, Value};

use super::{MAX_DECODE_BYTES, error_at, sub_table};

/// Options for JSON to Lua: `null` becomes `nil`, so `if input.field then`
/// works as Lua programmers expect. A `null` array element leaves a hole.
pub(crate) fn json_to_lua_options() -> SerializeOptions {
    SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
}

/// Options for Lua to JSON: functions, userdata and tables with cycles are errors.
pub(crate) fn lua_to_json_options() -> DeserializeOptions {
    DeserializeOptions::new()
}

/// Converts a JSON value to a Lua value.
pub(crate) fn json_to_lua(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    lua.to_value_with(value, json_to_lua_options())
}

/// Converts a Lua value to a JSON value.
pub(crate) fn lua_to_json(lua: &Lua, value: Value) -> mlua::Result<serde_json::Value> {
    if value.is_table() {
        crate::hooks::lazy::materialize_all(lua)?;
    }
    lua.from_value_with(value, lua_to_json_options())
}

/// Registers `runner.json.encode(value) -> string`, `runner.json.decode(string)
/// -> value` and `runner.json.null`, the value that encodes as `null`.
pub(crate) fn register_json(lua: &Lua, runner: &Table) -> mlua::Result<()> {
    let json = sub_table(lua, runner, "json")?;

    let encode = lua.create_function(|lua, value: Value| {
        let value = lua_to_json(lua, value)
            .map_err(|err| error_at(lua, format!("runner.json.encode: {err}")))?;
        serde_json::to_string(&value)
            .map_err(|err| error_at(lua, format!("runner.json.encode: {err}")))
    })?;
    json.raw_set("encode", encode)?;

    let decode = lua.create_function(|lua, text: mlua::LuaString| {
        let bytes = text.as_bytes();
        if bytes.len() > MAX_DECODE_BYTES {
            return Err(error_at(
                lua,
                format!(
                    "runner.json.decode: input is {} bytes, more than the maximum of {MAX_DECODE_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|err| error_at(lua, format!("runner.json.decode: invalid JSON: {err}")))?;
        json_to_lua(lua, &value)
    })?;
    json.raw_set("decode", decode)?;

    json.raw_set("null", lua.null())
}
