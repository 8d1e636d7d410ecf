//! `runner.yaml`: YAML encoding and decoding.

use mlua::{Lua, LuaSerdeExt, Table, Value};

use super::json::{json_to_lua_options, lua_to_json_options};
use super::{MAX_DECODE_BYTES, error_at, sub_table};

/// Registers `runner.yaml.encode(value) -> string` and
/// `runner.yaml.decode(string) -> value`. Decoding goes through
/// `serde_yaml::Value`, so mappings with non-string keys keep their keys.
pub(crate) fn register_yaml(lua: &Lua, runner: &Table) -> mlua::Result<()> {
    let yaml = sub_table(lua, runner, "yaml")?;

    let encode = lua.create_function(|lua, value: Value| {
        if value.is_table() {
            crate::hooks::lazy::materialize_all(lua)?;
        }
        let value: serde_yaml::Value = lua
            .from_value_with(value, lua_to_json_options())
            .map_err(|err| error_at(lua, format!("runner.yaml.encode: {err}")))?;
        serde_yaml::to_string(&value)
            .map_err(|err| error_at(lua, format!("runner.yaml.encode: {err}")))
    })?;
    yaml.raw_set("encode", encode)?;

    let decode = lua.create_function(|lua, text: mlua::LuaString| {
        let bytes = text.as_bytes();
        if bytes.len() > MAX_DECODE_BYTES {
            return Err(error_at(
                lua,
                format!(
                    "runner.yaml.decode: input is {} bytes, more than the maximum of {MAX_DECODE_BYTES}",
                    bytes.len()
                ),
            ));
        }
        // serde_yaml 0.9 rejects nesting deeper than 128 levels and alias
        // expansion beyond 100 times the document's event count.
        let value: serde_yaml::Value = serde_yaml::from_slice(&bytes)
            .map_err(|err| error_at(lua, format!("runner.yaml.decode: invalid YAML: {err}")))?;
        lua.to_value_with(&value, json_to_lua_options())
    })?;
    yaml.raw_set("decode", decode)
}
