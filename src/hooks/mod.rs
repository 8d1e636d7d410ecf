//! Lua hook engine: customer scripts that run at fixed points of a run.
//!
//! This module owns every Lua state in the runner. Other parts call a small typed
//! API ([`HookSet::fire`] or [`HookEngine::fire`]) with JSON values and never see
//! `mlua` types.
//!
//! What the engine owns:
//!
//! - **Loading.** Every `*.lua` file directly in the hooks directory runs once, in
//!   file-name order, in one Lua 5.4 state. A hook is a global function named after
//!   its [`HookPoint`]. Chunks are named `<dir name>/<file>`, so errors read
//!   `hooks/pre.lua:12: ...`. Binary chunks are rejected. `require("name")` loads
//!   `name.lua` from the same directory and nothing else.
//! - **Sandbox.** The state has the `table`, `string`, `math`, `utf8` and
//!   `coroutine` libraries, `os.time`, `os.clock`, `os.date` and `os.difftime`,
//!   and the base library without `dofile`, `loadfile` and `load`. There is no
//!   `io`, `package`, `debug` or `string.dump`. `collectgarbage` accepts only
//!   `"count"`, and `print` writes to the log.
//! - **Limits.** Each call has a time limit, checked every
//!   [`INSTRUCTIONS_PER_CHECK`] Lua instructions and at every await, and each state
//!   has a memory limit (see [`HookLimits`]). A call that fails, times out or runs
//!   out of memory fails alone, and the state keeps serving the next call.
//! - **Runner API.** The `runner` global: `runner.sleep`, `runner.log`,
//!   `runner.json`, `runner.yaml`, `runner.env`, `runner.fs`, `runner.schedule`
//!   and more (see the `api` submodule).
//! - **Generations.** [`HookSet`] serves the newest state that loaded without
//!   errors, swaps in a new one on [`HookSet::reload`], and lets calls in flight
//!   finish on the state they started on. [`watch`] turns file changes into reload
//!   requests.
//!
//! JSON values cross into Lua with `null` mapped to `nil`; `runner.json.null` is the
//! value that encodes back to JSON `null`.

mod api;
mod budget;
mod engine;
mod error;
mod lazy;
mod mapper;
mod modules;
mod sandbox;
mod scripts;
mod set;
mod watch;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use api::ScheduledCheck;
pub use budget::INSTRUCTIONS_PER_CHECK;
pub use engine::CheckFunction;
pub use engine::HookEngine;
pub use error::{CheckCallError, HookError, HookLoadError, HookWatchError};
pub use scripts::MAX_SCRIPT_BYTES;
pub use set::{HookSet, ReloadReport};
pub use watch::{ReloadRequest, WatchHandle, watch};

/// A point in the runner where a hook function can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// Runs before a workflow starts: global function `pre_run`.
    PreRun,
    /// Runs after a workflow ends: global function `post_run`.
    PostRun,
    /// Maps a secret reference to a provider name: global function `map_secret`.
    MapSecret,
    /// Handles a custom message from the control plane: global function `on_message`.
    OnMessage,
}

impl HookPoint {
    /// Every hook point, in a fixed order.
    pub const ALL: [HookPoint; 4] = [
        HookPoint::PreRun,
        HookPoint::PostRun,
        HookPoint::MapSecret,
        HookPoint::OnMessage,
    ];

    /// Returns the name of the global Lua function that implements this hook.
    pub fn function_name(self) -> &'static str {
        match self {
            HookPoint::PreRun => "pre_run",
            HookPoint::PostRun => "post_run",
            HookPoint::MapSecret => "map_secret",
            HookPoint::OnMessage => "on_message",
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.function_name())
    }
}

/// Result of a successful [`HookEngine::fire`].
#[derive(Debug, Clone, PartialEq)]
pub enum HookOutcome {
    /// The scripts define no function for this hook point.
    NotDefined,
    /// The first value the hook function returned, as JSON (`nil` is `null`).
    Returned(serde_json::Value),
}

/// Limits and options for one Lua state and the calls into it.
#[derive(Debug, Clone, PartialEq)]
pub struct HookLimits {
    /// Wall-clock time one hook call may take, awaits included. The top-level
    /// code of each file gets the same limit while loading.
    pub time_limit: Duration,
    /// Bytes the whole Lua state may allocate. Calls in flight share it.
    pub memory_limit_bytes: usize,
    /// Environment variables `runner.env.get` may read. Every other name raises
    /// an error.
    pub env_allowlist: Vec<String>,
    /// Destination of `runner.saas.send` events. Without one, the call raises an error.
    pub events: Option<EventSink>,
    /// Lookup behind `runner.secrets.get`. Without one, the call raises an error.
    pub secrets: Option<SecretLookup>,
    /// Masks secrets in what `runner.exec` and `runner.http.request` return.
    pub redactor: Option<HookRedactor>,
    /// Pre-checks of runner.yaml that call a hook function. Loading fails when
    /// a function is missing, and scripts cannot register a check of the same name.
    pub declared_checks: Vec<DeclaredCheck>,
    /// The runner's work directory, published as `runner.fs.work_dir`.
    pub work_dir: Option<std::path::PathBuf>,
}

/// A pre-check of runner.yaml and the global function it calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredCheck {
    /// Name of the check.
    pub name: String,
    /// Name of the global Lua function.
    pub function: String,
}

/// The runner's redactor, as used by hook API functions.
#[derive(Clone, Debug)]
pub struct HookRedactor(pub std::sync::Arc<crate::redact::Redactor>);

impl PartialEq for HookRedactor {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl HookRedactor {
    /// Masks secrets in `text`, or returns it unchanged without a redactor.
    pub(crate) fn mask(redactor: &Option<HookRedactor>, text: &str) -> String {
        match redactor {
            Some(redactor) => redactor.0.redact(text).into_owned(),
            None => text.to_string(),
        }
    }
}

/// Resolves a `secret:` reference for `runner.secrets.get`, through the same
/// policy, providers and redactor as runs, for the run the calling hook
/// serves (an empty scope outside a run). Errors never contain a value.
#[derive(Clone)]
pub struct SecretLookup(pub std::sync::Arc<LookupFn>);

/// The function behind [`SecretLookup`]: a reference and the scope of the
/// calling hook in, the value or an error message out.
pub type LookupFn = dyn Fn(
        String,
        crate::secrets::Scope,
    ) -> futures_util::future::BoxFuture<'static, Result<String, String>>
    + Send
    + Sync;

tokio::task_local! {
    /// Scope of the run that hook calls in the current task serve.
    static RUN_SCOPE: crate::secrets::Scope;
}

/// Runs `call` with hook calls inside it serving the run of `scope`:
/// `runner.secrets.get` checks references against that run's allowed
/// prefixes and audits reads under its id and service.
pub async fn for_run<F: std::future::Future>(scope: crate::secrets::Scope, call: F) -> F::Output {
    RUN_SCOPE.scope(scope, call).await
}

/// Returns the scope set by [`for_run`], or an empty one outside a run.
pub(crate) fn run_scope() -> crate::secrets::Scope {
    RUN_SCOPE.try_with(Clone::clone).unwrap_or_default()
}

impl fmt::Debug for SecretLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretLookup")
    }
}

impl PartialEq for SecretLookup {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Receives the events hooks send with `runner.saas.send(kind, payload)`.
#[derive(Clone)]
pub struct EventSink(pub std::sync::Arc<dyn Fn(String, serde_json::Value) + Send + Sync>);

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}

impl PartialEq for EventSink {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl HookLimits {
    /// Default time limit of one call. Hooks prepare and check runs, so a few
    /// seconds is generous, and a stuck hook delays a run by at most this much.
    pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(5);
    /// Default memory limit of one state. Parsed workflow configs and log
    /// summaries are well under a megabyte, so 64 MiB leaves wide room while
    /// keeping two generations of a runaway script small next to the workflows.
    pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 64 * 1024 * 1024;
}

impl Default for HookLimits {
    fn default() -> Self {
        HookLimits {
            time_limit: Self::DEFAULT_TIME_LIMIT,
            memory_limit_bytes: Self::DEFAULT_MEMORY_LIMIT_BYTES,
            env_allowlist: Vec::new(),
            events: None,
            secrets: None,
            redactor: None,
            declared_checks: Vec::new(),
            work_dir: None,
        }
    }
}
