//! One generation of hook scripts: a loaded Lua state and the calls into it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Value};

use super::api::{self, json_to_lua, lua_to_json};
use super::budget::{self, CallBudget, Interrupted};
use super::error::{is_memory_error, is_syntax_error, lua_message};
use super::lazy;
use super::modules::{self, ModuleRegistry};
use super::sandbox;
use super::scripts::{ScriptFile, ScriptSet};
use super::{CheckCallError, HookError, HookLimits, HookLoadError, HookOutcome, HookPoint};

/// A loaded set of hook scripts in one sandboxed Lua state.
///
/// Calls may run concurrently: they share the state and take turns at every
/// await and every time slice, so a hook waiting in `runner.sleep` does not hold
/// up other calls.
pub struct HookEngine {
    lua: Lua,
    scripts: Arc<ScriptSet>,
    modules: Arc<ModuleRegistry>,
    limits: HookLimits,
    generation: u64,
    /// Pre-checks the scripts registered with `runner.schedule`.
    schedules: Arc<api::ScheduleRegistry>,
}

/// The Lua function a pre-check calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFunction {
    /// A global function, named by a check in runner.yaml.
    Global(String),
    /// The function registered with `runner.schedule` under the check's name.
    Registered,
}

impl fmt::Debug for HookEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookEngine")
            .field("dir", &self.scripts.dir)
            .field("generation", &self.generation)
            .field("content_hash", &self.scripts.content_hash)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl HookEngine {
    /// Loads every `*.lua` file directly in `dir` as generation 1.
    ///
    /// Each file's top-level code runs under the time limit. Running it blocks
    /// the calling thread, so async callers should use `spawn_blocking` or
    /// [`super::HookSet::reload`].
    pub fn load(dir: &Path, limits: HookLimits) -> Result<HookEngine, HookLoadError> {
        Self::load_generation(ScriptSet::read(dir)?, limits, 1)
    }

    /// Builds a state from a snapshot of the scripts and runs every file.
    pub(crate) fn load_generation(
        scripts: ScriptSet,
        limits: HookLimits,
        generation: u64,
    ) -> Result<HookEngine, HookLoadError> {
        let scripts = Arc::new(scripts);
        let modules = Arc::new(ModuleRegistry::default());
        let reserved = limits
            .declared_checks
            .iter()
            .map(|check| check.name.clone())
            .collect();
        let schedules = Arc::new(api::ScheduleRegistry::new(reserved));
        let lua = build_state(&limits, &scripts, &modules, &schedules).map_err(|err| {
            HookLoadError::Setup {
                message: lua_message(&err),
            }
        })?;
        let engine = HookEngine {
            lua,
            scripts,
            modules,
            limits,
            generation,
            schedules,
        };
        for file in &engine.scripts.files {
            engine.run_top_level(file)?;
        }
        engine.schedules.finish_loading();
        engine.check_declared_functions()?;
        Ok(engine)
    }

    /// Fails when a pre-check of runner.yaml names a function the scripts do
    /// not define.
    fn check_declared_functions(&self) -> Result<(), HookLoadError> {
        let globals = self.lua.globals();
        for check in &self.limits.declared_checks {
            let found = match globals.get::<Value>(check.function.as_str()) {
                Ok(Value::Function(_)) => continue,
                Ok(other) => other.type_name(),
                Err(_) => "an unreadable value",
            };
            return Err(HookLoadError::MissingCheckFunction {
                check: check.name.clone(),
                function: check.function.clone(),
                found,
            });
        }
        Ok(())
    }

    /// Returns the pre-checks the scripts registered with `runner.schedule`.
    pub fn scheduled_checks(&self) -> Vec<api::ScheduledCheck> {
        self.schedules.checks()
    }

    /// Calls the function of pre-check `name` with a table `{ name = name }`
    /// under the time limit `timeout`, and returns its first two return values
    /// as a JSON array.
    pub async fn call_check(
        &self,
        name: &str,
        function: &CheckFunction,
        timeout: Duration,
    ) -> Result<serde_json::Value, CheckCallError> {
        let internal = |err: mlua::Error| CheckCallError::Internal {
            message: lua_message(&err),
        };
        let (label, found) = match function {
            CheckFunction::Global(global) => (
                global.clone(),
                self.lua.globals().get::<Value>(global.as_str()),
            ),
            CheckFunction::Registered => {
                let functions: mlua::Table = self
                    .lua
                    .named_registry_value(api::FUNCTIONS_KEY)
                    .map_err(internal)?;
                (
                    format!("runner.schedule {name}"),
                    functions.raw_get::<Value>(name),
                )
            }
        };
        let Ok(Value::Function(callee)) = found else {
            return Err(CheckCallError::NotDefined {
                function: label,
                generation: self.generation,
            });
        };
        let argument = self.lua.create_table().map_err(internal)?;
        argument.raw_set("name", name).map_err(internal)?;

        let thread = self.lua.create_thread(callee).map_err(internal)?;
        let thread_address = thread.to_pointer() as usize;
        let call = thread
            .into_async::<mlua::MultiValue>(argument)
            .map_err(internal)?;
        let budget = Arc::new(CallBudget::new(label, timeout, Some(thread_address)));
        let returned = budget::run_async(budget, call)
            .await
            .map_err(|interrupted| match interrupted {
                Interrupted::TimedOut => CheckCallError::TimedOut { limit: timeout },
                Interrupted::Failed(err) if is_memory_error(&err) => CheckCallError::MemoryLimit {
                    limit_bytes: self.limits.memory_limit_bytes,
                },
                Interrupted::Failed(err) => CheckCallError::Runtime {
                    message: lua_message(&err),
                },
            })?;

        let mut values = Vec::with_capacity(2);
        for value in returned.into_iter().take(2) {
            let json =
                lua_to_json(&self.lua, value).map_err(|err| CheckCallError::InvalidReturn {
                    message: lua_message(&err),
                })?;
            values.push(json);
        }
        Ok(serde_json::Value::Array(values))
    }

    /// Runs one file's top-level code, unless an earlier file required it.
    fn run_top_level(&self, file: &ScriptFile) -> Result<(), HookLoadError> {
        let name = self.scripts.display_name(file);
        let budget = Arc::new(CallBudget::new(&name, self.limits.time_limit, None));
        let result = budget::run_sync(&budget, || {
            modules::run_module(&self.lua, &self.scripts, &self.modules, file)
        });
        match result {
            Ok(_) => Ok(()),
            Err(Interrupted::TimedOut) => Err(HookLoadError::TimedOut {
                file: name,
                limit: self.limits.time_limit,
            }),
            Err(Interrupted::Failed(err)) if is_memory_error(&err) => {
                Err(HookLoadError::MemoryLimit {
                    file: name,
                    limit_bytes: self.limits.memory_limit_bytes,
                })
            }
            Err(Interrupted::Failed(err)) if is_syntax_error(&err) => Err(HookLoadError::Syntax {
                file: name,
                message: lua_message(&err),
            }),
            Err(Interrupted::Failed(err)) => Err(HookLoadError::TopLevel {
                file: name,
                message: lua_message(&err),
            }),
        }
    }

    /// Calls the hook function for `hook` with `input` and returns its first
    /// return value as JSON, or [`HookOutcome::NotDefined`] when the scripts
    /// define no such function.
    pub async fn fire(
        &self,
        hook: HookPoint,
        input: serde_json::Value,
    ) -> Result<HookOutcome, HookError> {
        let internal = |err: mlua::Error| HookError::Internal {
            hook,
            message: lua_message(&err),
        };
        let function = match self.lua.globals().get::<Value>(hook.function_name()) {
            Ok(Value::Nil) => return Ok(HookOutcome::NotDefined),
            Ok(Value::Function(function)) => function,
            Ok(other) => {
                return Err(HookError::NotAFunction {
                    hook,
                    type_name: other.type_name(),
                });
            }
            Err(err) => return Err(internal(err)),
        };
        let invalid_input = |err: mlua::Error| HookError::InvalidInput {
            hook,
            message: lua_message(&err),
        };
        // post_run(run, result): the result is also passed as the second argument.
        let result = match (hook, input.get("result")) {
            (HookPoint::PostRun, Some(result)) => {
                Some(json_to_lua(&self.lua, result).map_err(invalid_input)?)
            }
            _ => None,
        };
        let argument = match input {
            serde_json::Value::Object(fields) => {
                Value::Table(lazy::argument(&self.lua, fields).map_err(invalid_input)?)
            }
            other => json_to_lua(&self.lua, &other).map_err(invalid_input)?,
        };
        let args = mlua::MultiValue::from_iter(std::iter::once(argument).chain(result));

        let thread = self.lua.create_thread(function).map_err(internal)?;
        let thread_address = thread.to_pointer() as usize;
        let call = thread.into_async::<Value>(args).map_err(internal)?;
        let budget = Arc::new(CallBudget::new(
            hook.function_name(),
            self.limits.time_limit,
            Some(thread_address),
        ));
        let returned = budget::run_async(budget, call)
            .await
            .map_err(|interrupted| self.call_error(hook, interrupted))?;

        let json = lua_to_json(&self.lua, returned).map_err(|err| HookError::InvalidReturn {
            hook,
            message: lua_message(&err),
        })?;
        Ok(HookOutcome::Returned(json))
    }

    fn call_error(&self, hook: HookPoint, interrupted: Interrupted) -> HookError {
        match interrupted {
            Interrupted::TimedOut => HookError::TimedOut {
                hook,
                limit: self.limits.time_limit,
            },
            Interrupted::Failed(err) if is_memory_error(&err) => HookError::MemoryLimit {
                hook,
                limit_bytes: self.limits.memory_limit_bytes,
            },
            Interrupted::Failed(err) => HookError::Runtime {
                hook,
                message: lua_message(&err),
            },
        }
    }

    /// Returns the hook points whose function the scripts define.
    pub fn defined_hooks(&self) -> Vec<HookPoint> {
        let globals = self.lua.globals();
        HookPoint::ALL
            .into_iter()
            .filter(|hook| {
                matches!(
                    globals.get::<Value>(hook.function_name()),
                    Ok(Value::Function(_))
                )
            })
            .collect()
    }

    /// Returns the generation number: 1 for the first load, one more for each
    /// successful reload of a [`super::HookSet`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Returns the SHA-256 hex digest of the sorted script names and contents.
    pub fn content_hash(&self) -> String {
        self.scripts.content_hash.clone()
    }

    /// Returns the hooks directory.
    pub fn dir(&self) -> &Path {
        &self.scripts.dir
    }

    /// Returns the paths of every script loaded into this state. `require` finds
    /// modules only among these files, so watching these paths covers every
    /// file the hooks depend on.
    pub fn files(&self) -> Vec<PathBuf> {
        self.scripts
            .files
            .iter()
            .map(|file| file.path.clone())
            .collect()
    }

    /// Returns the modules loaded through `require`, in first-use order.
    pub fn required_modules(&self) -> Vec<String> {
        self.modules.required()
    }

    /// Returns the bytes the Lua state uses.
    pub fn used_memory(&self) -> usize {
        self.lua.used_memory()
    }
}

/// Creates the sandboxed state with `require` and the runner API.
fn build_state(
    limits: &HookLimits,
    scripts: &Arc<ScriptSet>,
    modules: &Arc<ModuleRegistry>,
    schedules: &Arc<api::ScheduleRegistry>,
) -> mlua::Result<Lua> {
    let lua = sandbox::new_state(limits)?;
    lazy::install(&lua)?;
    modules::register_require(&lua, Arc::clone(scripts), Arc::clone(modules))?;
    api::register_all(&lua, limits, Arc::clone(schedules))?;
    Ok(lua)
}
