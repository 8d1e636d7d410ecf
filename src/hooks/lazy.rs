//! Hook arguments whose nested tables are built on first access.
//!
//! A `pre_run` argument carries the whole workflow config. Building it as Lua
//! tables took about 0.25 µs per key in `benches/hooks.rs`, most of the cost of
//! a hook that never reads the config. So the argument table contains its
//! scalar fields from the start, and each object or array field becomes a
//! table when a script first reads it.
//!
//! The argument's metatable makes this invisible to scripts that read fields,
//! assign them, iterate with `pairs` or pass the table to a conversion back to
//! JSON (`runner.json.encode`, `runner.saas.send`, a hook's return value).
//! `rawget` and `next` see a field only after its first read.

use std::sync::{Mutex, MutexGuard};

use mlua::{AnyUserData, AppDataRef, Function, Lua, Table, UserData, Value};

use super::api::json_to_lua;

type Fields = serde_json::Map<String, serde_json::Value>;

/// Object and array fields of one argument table that scripts have not read yet.
struct Pending(Mutex<Fields>);

impl UserData for Pending {}

impl Pending {
    fn fields(&self) -> MutexGuard<'_, Fields> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Per-state tables, kept as app data of the state.
struct LazyTables {
    /// Metatable of every argument table with pending fields.
    metatable: Table,
    /// Argument table to its [`Pending`] userdata, with weak keys, so an
    /// argument that no script references any more is collected with its
    /// pending fields.
    pending: Table,
}

/// Installs the metatable and the weak table in `lua`.
pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    let pending = lua.create_table()?;
    let weak_keys = lua.create_table()?;
    weak_keys.raw_set("__mode", "k")?;
    pending.set_metatable(Some(weak_keys))?;

    let metatable = lua.create_table()?;
    metatable.raw_set(
        "__index",
        lua.create_function(|lua, (table, key): (Table, Value)| {
            let Value::String(name) = &key else {
                return Ok(Value::Nil);
            };
            let Some(field) = take(lua, &table, &name.to_str()?)? else {
                return Ok(Value::Nil);
            };
            let value = json_to_lua(lua, &field)?;
            table.raw_set(key, &value)?;
            Ok(value)
        })?,
    )?;
    // Assigning a field that is still pending replaces it, also with nil.
    metatable.raw_set(
        "__newindex",
        lua.create_function(|lua, (table, key, value): (Table, Value, Value)| {
            if let Value::String(name) = &key {
                take(lua, &table, &name.to_str()?)?;
            }
            table.raw_set(key, value)
        })?,
    )?;
    let next: Function = lua.globals().raw_get("next")?;
    metatable.raw_set(
        "__pairs",
        lua.create_function(move |lua, table: Table| {
            materialize(lua, &table)?;
            Ok((next.clone(), table, Value::Nil))
        })?,
    )?;
    metatable.raw_set("__metatable", "hook argument")?;

    lua.set_app_data(LazyTables { metatable, pending });
    Ok(())
}

/// Builds the argument table for `fields`: scalars now, objects and arrays on
/// first access.
pub(crate) fn argument(lua: &Lua, fields: Fields) -> mlua::Result<Table> {
    let tables = lazy_tables(lua)?;
    let table = lua.create_table_with_capacity(0, fields.len())?;
    let mut nested = serde_json::Map::new();
    for (key, value) in fields {
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                nested.insert(key, value);
            }
            scalar => table.raw_set(key, json_to_lua(lua, &scalar)?)?,
        }
    }
    if !nested.is_empty() {
        let pending = lua.create_userdata(Pending(Mutex::new(nested)))?;
        tables.pending.raw_set(&table, pending)?;
        table.set_metatable(Some(tables.metatable.clone()))?;
    }
    Ok(table)
}

/// Builds every pending field of every argument table in the state, so a
/// conversion of Lua values to JSON receives whole tables. Cheap when nothing
/// is pending.
pub(crate) fn materialize_all(lua: &Lua) -> mlua::Result<()> {
    let Some(tables) = lua.app_data_ref::<LazyTables>() else {
        return Ok(());
    };
    let mut arguments = Vec::new();
    for entry in tables.pending.pairs::<Table, AnyUserData>() {
        arguments.push(entry?.0);
    }
    drop(tables);
    for table in arguments {
        materialize(lua, &table)?;
    }
    Ok(())
}

/// Builds every pending field of one argument table.
fn materialize(lua: &Lua, table: &Table) -> mlua::Result<()> {
    let Some(pending) = pending_of(lua, table)? else {
        return Ok(());
    };
    let fields = std::mem::take(&mut *pending.borrow::<Pending>()?.fields());
    lazy_tables(lua)?.pending.raw_set(table, Value::Nil)?;
    for (key, field) in fields {
        table.raw_set(key, json_to_lua(lua, &field)?)?;
    }
    Ok(())
}

/// Removes and returns the pending field `key` of an argument table.
fn take(lua: &Lua, table: &Table, key: &str) -> mlua::Result<Option<serde_json::Value>> {
    match pending_of(lua, table)? {
        Some(pending) => Ok(pending.borrow::<Pending>()?.fields().remove(key)),
        None => Ok(None),
    }
}

fn pending_of(lua: &Lua, table: &Table) -> mlua::Result<Option<AnyUserData>> {
    lazy_tables(lua)?.pending.raw_get(table)
}

fn lazy_tables(lua: &Lua) -> mlua::Result<AppDataRef<'_, LazyTables>> {
    lua.app_data_ref::<LazyTables>()
        .ok_or_else(|| mlua::Error::runtime("hook arguments are not set up in this Lua state"))
}
