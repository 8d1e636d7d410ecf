//! Error types of the hook engine and the conversion of Lua errors into them.

use std::path::PathBuf;
use std::time::Duration;

use humantime::format_duration;

use super::HookPoint;

/// Failure to load the hook scripts. The previous generation, if any, keeps
/// serving.
#[derive(Debug, thiserror::Error)]
pub enum HookLoadError {
    /// The hooks directory could not be listed.
    #[error("failed to read hooks directory {}: {source}", .dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A script file could not be read.
    #[error("failed to read hook script {}: {source}", .path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A script file name is not valid UTF-8, so it cannot name a chunk or module.
    #[error("hook script name {} is not valid UTF-8; rename the file", .path.display())]
    InvalidFileName { path: PathBuf },
    /// A script file is larger than [`super::MAX_SCRIPT_BYTES`].
    #[error("hook script {} is {size} bytes, more than the maximum of {max} bytes", .path.display())]
    FileTooLarge {
        path: PathBuf,
        size: u64,
        max: usize,
    },
    /// A script does not compile. The message starts with `file:line:`.
    #[error("syntax error: {message}")]
    Syntax { file: String, message: String },
    /// The top-level code of a script raised an error.
    #[error("loading {file} failed: {message}")]
    TopLevel { file: String, message: String },
    /// The top-level code of a script ran longer than the time limit.
    #[error("loading {file} exceeded its time limit of {}", format_duration(*.limit))]
    TimedOut { file: String, limit: Duration },
    /// The top-level code of a script ran out of Lua memory.
    #[error("loading {file} exceeded the Lua memory limit of {limit_bytes} bytes")]
    MemoryLimit { file: String, limit_bytes: usize },
    /// A pre-check of runner.yaml names a hook function the scripts do not define.
    #[error(
        "pre-check {check}: the hook scripts define no function {function} (found {found}); define a global function {function} or change the check's hook"
    )]
    MissingCheckFunction {
        check: String,
        function: String,
        found: &'static str,
    },
    /// The Lua state or the runner API could not be set up.
    #[error("failed to set up the Lua state: {message}")]
    Setup { message: String },
}

/// Failure of one hook call. The engine stays usable for the next call.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The call ran longer than [`super::HookLimits::time_limit`].
    #[error("{hook} exceeded its time limit of {}", format_duration(*.limit))]
    TimedOut { hook: HookPoint, limit: Duration },
    /// The Lua state reached [`super::HookLimits::memory_limit_bytes`].
    #[error("{hook} exceeded the Lua memory limit of {limit_bytes} bytes")]
    MemoryLimit { hook: HookPoint, limit_bytes: usize },
    /// The hook raised an error. The message starts with `file:line:` when Lua
    /// reports the position.
    #[error("{hook} failed: {message}")]
    Runtime { hook: HookPoint, message: String },
    /// The global with the hook's name is not a function.
    #[error("global {hook} is a {type_name}, expected a function")]
    NotAFunction {
        hook: HookPoint,
        type_name: &'static str,
    },
    /// The input JSON could not be converted to a Lua value.
    #[error("{hook}: input could not be converted to a Lua value: {message}")]
    InvalidInput { hook: HookPoint, message: String },
    /// The returned value cannot be represented as JSON (a function, a userdata,
    /// a table with cycles or mixed keys).
    #[error("{hook} returned a value that cannot be converted to JSON: {message}")]
    InvalidReturn { hook: HookPoint, message: String },
    /// The Lua state rejected an internal operation, such as creating a thread.
    #[error("{hook}: Lua state error: {message}")]
    Internal { hook: HookPoint, message: String },
}

/// Failure of one pre-check call. The engine stays usable for the next call.
#[derive(Debug, thiserror::Error)]
pub enum CheckCallError {
    /// The function is not defined in the generation serving.
    #[error("function {function} is not defined in hook generation {generation}")]
    NotDefined { function: String, generation: u64 },
    /// The call ran longer than the check's timeout.
    #[error("timed out after {}", format_duration(*.limit))]
    TimedOut { limit: Duration },
    /// The Lua state reached its memory limit.
    #[error("exceeded the Lua memory limit of {limit_bytes} bytes")]
    MemoryLimit { limit_bytes: usize },
    /// The function raised an error.
    #[error("{message}")]
    Runtime { message: String },
    /// The returned values cannot be represented as JSON.
    #[error("returned a value that cannot be converted to JSON: {message}")]
    InvalidReturn { message: String },
    /// The Lua state rejected an internal operation.
    #[error("Lua state error: {message}")]
    Internal { message: String },
}

/// Failure to start the file watcher.
#[derive(Debug, thiserror::Error)]
pub enum HookWatchError {
    #[error("failed to watch hooks directory {}: {source}", .dir.display())]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Returns the message of the innermost Lua error, without the stack traceback.
pub(crate) fn lua_message(err: &mlua::Error) -> String {
    match err {
        mlua::Error::CallbackError { cause, .. } => lua_message(cause),
        mlua::Error::WithContext { context, cause } => {
            format!("{context}: {}", lua_message(cause))
        }
        mlua::Error::BadArgument { to, pos, cause, .. } => {
            let function = to.as_deref().unwrap_or("?");
            format!(
                "bad argument #{pos} to '{function}': {}",
                lua_message(cause)
            )
        }
        mlua::Error::RuntimeError(message) | mlua::Error::MemoryError(message) => {
            strip_traceback(message)
        }
        mlua::Error::SyntaxError { message, .. } => strip_traceback(message),
        other => strip_traceback(&other.to_string()),
    }
}

/// Reports whether the error, or any error it wraps, is a Lua memory error.
pub(crate) fn is_memory_error(err: &mlua::Error) -> bool {
    match err {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. }
        | mlua::Error::WithContext { cause, .. }
        | mlua::Error::BadArgument { cause, .. } => is_memory_error(cause),
        _ => false,
    }
}

/// Reports whether the error is a compile error rather than a runtime error.
pub(crate) fn is_syntax_error(err: &mlua::Error) -> bool {
    matches!(err, mlua::Error::SyntaxError { .. })
}

fn strip_traceback(message: &str) -> String {
    let end = message.find("\nstack traceback:").unwrap_or(message.len());
    message[..end].to_string()
}
