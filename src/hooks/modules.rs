//! `require` and the top-level loading of hook scripts.
//!
//! Every file of the [`ScriptSet`] is a module named after its file without
//! `.lua`. A module that ran without error does not run again in that state:
//! loading a file that an earlier file already required skips it, and `require`
//! returns the stored result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, Table, Value};

use super::api::error_at;
use super::scripts::{ScriptFile, ScriptSet};

/// Registry key of the table of module results.
const LOADED_KEY: &str = "hybrid_runner.loaded_modules";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModuleStatus {
    Loading,
    Loaded,
}

/// Modules of one state: which ran, in which order, and which `require` loaded.
#[derive(Debug, Default)]
pub(crate) struct ModuleRegistry {
    status: Mutex<HashMap<String, ModuleStatus>>,
    required: Mutex<Vec<String>>,
}

impl ModuleRegistry {
    fn status(&self, module: &str) -> Option<ModuleStatus> {
        self.lock_status().get(module).copied()
    }

    fn set_status(&self, module: &str, status: Option<ModuleStatus>) {
        let mut map = self.lock_status();
        match status {
            Some(status) => map.insert(module.to_string(), status),
            None => map.remove(module),
        };
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, HashMap<String, ModuleStatus>> {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record_required(&self, module: &str) {
        let mut required = self
            .required
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !required.iter().any(|name| name == module) {
            required.push(module.to_string());
        }
    }

    /// Returns the modules loaded through `require`, in first-use order.
    pub(crate) fn required(&self) -> Vec<String> {
        self.required
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Installs the global `require` that loads modules from `scripts` only.
pub(crate) fn register_require(
    lua: &Lua,
    scripts: Arc<ScriptSet>,
    registry: Arc<ModuleRegistry>,
) -> mlua::Result<()> {
    lua.set_named_registry_value(LOADED_KEY, lua.create_table()?)?;
    let require = lua.create_function(move |lua, module: String| {
        if !is_valid_module_name(&module) {
            return Err(error_at(
                lua,
                format!(
                    "require(\"{module}\"): invalid module name; use the name of a .lua file \
                     in the hooks directory without the extension"
                ),
            ));
        }
        let Some(file) = scripts.module(&module) else {
            return Err(error_at(
                lua,
                format!(
                    "require(\"{module}\"): module not found: no file {module}.lua in hooks directory {}",
                    scripts.dir.display()
                ),
            ));
        };
        registry.record_required(&module);
        run_module(lua, &scripts, &registry, file)
    })?;
    lua.globals().raw_set("require", require)
}

/// Runs a file's top-level code unless it already ran, and returns its result.
/// A file returning nothing stores `true`, as the standard `require` does.
pub(crate) fn run_module(
    lua: &Lua,
    scripts: &ScriptSet,
    registry: &ModuleRegistry,
    file: &ScriptFile,
) -> mlua::Result<Value> {
    let module = file.module_name();
    let loaded: Table = lua.named_registry_value(LOADED_KEY)?;
    match registry.status(module) {
        Some(ModuleStatus::Loaded) => return loaded.raw_get(module),
        Some(ModuleStatus::Loading) => {
            return Err(error_at(
                lua,
                format!("require(\"{module}\"): circular require; {module}.lua is still loading"),
            ));
        }
        None => {}
    }

    let chunk = compile(lua, scripts, file)?;
    registry.set_status(module, Some(ModuleStatus::Loading));
    let result = match chunk.call::<Value>(module) {
        Ok(result) => result,
        Err(err) => {
            registry.set_status(module, None);
            return Err(err);
        }
    };
    let stored = match result {
        Value::Nil => Value::Boolean(true),
        other => other,
    };
    loaded.raw_set(module, stored.clone())?;
    registry.set_status(module, Some(ModuleStatus::Loaded));
    Ok(stored)
}

/// Compiles a script as text. Binary chunks are rejected, because Lua does not
/// verify bytecode and malformed bytecode can corrupt the state.
pub(crate) fn compile(lua: &Lua, scripts: &ScriptSet, file: &ScriptFile) -> mlua::Result<Function> {
    lua.load(file.source.as_slice())
        .set_name(format!("@{}", scripts.display_name(file)))
        .set_mode(ChunkMode::Text)
        .into_function()
}

/// Accepts plain names only (`[A-Za-z0-9_-]+`), so a module name can never hold a
/// path separator, `..` or an absolute path.
fn is_valid_module_name(module: &str) -> bool {
    !module.is_empty()
        && module
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}
