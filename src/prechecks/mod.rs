//! Scheduled pre-checks: hook functions that test the runner's surroundings
//! (a database port, a secret, free disk space) on a schedule.
//!
//! Checks come from runner.yaml (`prechecks:`, which call a global hook
//! function by name) or from hook scripts (`runner.schedule`). This module owns
//! their schedules, their recent results and the gate they put on runs:
//!
//! - **Scheduling.** Each check has its own task. A tick while the previous call
//!   still runs is skipped and counted. After a pause or a clock jump, the
//!   missed ticks run once, not once per missed slot, because the next tick is
//!   always computed from the time the task wakes.
//! - **Results.** Each result is logged, kept (the last [`HISTORY_LEN`] per
//!   check), and handed to the result sink, which the agent points at the
//!   outbox as a `precheck.result` message.
//! - **Gating.** While a gating check's last result is a failure,
//!   [`Prechecks::gate`] returns a reason for the runs it gates.
//! - **Reloads.** Checks registered by a hook generation run while that
//!   generation serves. After a reload, [`Prechecks::sync_hooks`] stops them and
//!   starts the checks of the new generation. runner.yaml checks keep running
//!   and look up their function in the generation serving at each call.

pub mod schedule;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;

use crate::hooks::{CheckFunction, HookSet};
use crate::protocol::{FailingPrecheck, PrecheckResult, PrechecksSummary};
pub use schedule::{Schedule, ScheduleError, parse_zone};

/// Results kept per check.
pub const HISTORY_LEN: usize = 20;

/// Time limit of one call when the check sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum time a scheduler task sleeps before it reads the clock again, so a jump
/// of the system clock delays a tick by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Maximum length of a check's message, in characters; longer ones are cut.
const MAX_MESSAGE_CHARS: usize = 1000;

/// The runs a gating check applies to. An empty list matches every value; a run
/// is gated when it matches both lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gates {
    /// Pipeline types (`metadata`, `profiler`, ...).
    pub pipeline_types: Vec<String>,
    /// Service names: the first part of a pipeline FQN (`mysql_prod` in
    /// `mysql_prod.ingest_metadata`).
    pub services: Vec<String>,
}

impl Gates {
    /// Reports whether a run of `pipeline_type` and `pipeline_fqn` is gated.
    pub fn applies(&self, pipeline_type: &str, pipeline_fqn: &str) -> bool {
        let service = pipeline_fqn.split('.').next().unwrap_or_default();
        let type_matches = self.pipeline_types.is_empty()
            || self.pipeline_types.iter().any(|name| name == pipeline_type);
        let service_matches =
            self.services.is_empty() || self.services.iter().any(|name| name == service);
        type_matches && service_matches
    }
}

/// Origin of a check: runner.yaml or a hook script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// runner.yaml; calls the named global function of the generation serving.
    Yaml { function: String },
    /// `runner.schedule` in the scripts of this hook generation.
    Lua { generation: u64 },
}

impl Source {
    /// Returns `yaml` or `lua`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Yaml { .. } => "yaml",
            Source::Lua { .. } => "lua",
        }
    }
}

/// One scheduled check.
#[derive(Debug, Clone)]
pub struct PrecheckSpec {
    pub name: String,
    pub schedule: Schedule,
    /// Time limit of one call.
    pub timeout: Duration,
    /// Whether a failure rejects new runs that [`PrecheckSpec::gates`] matches.
    pub gate: bool,
    pub gates: Gates,
    pub source: Source,
}

impl PrecheckSpec {
    /// Builds the spec of a check that a hook generation registered.
    pub fn from_lua(check: crate::hooks::ScheduledCheck, generation: u64) -> Self {
        PrecheckSpec {
            name: check.name,
            schedule: check.schedule,
            timeout: check.timeout.unwrap_or(DEFAULT_TIMEOUT),
            gate: check.gate,
            gates: check.gates,
            source: Source::Lua { generation },
        }
    }
}

/// Checks that a check name is usable in logs, URLs and the CLI.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid pre-check name {name:?}; use 1 to 100 letters, digits, '_', '.' or '-'"
        ))
    }
}

/// Source of the current time in UTC. Tests replace it to simulate pauses
/// and clock jumps.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Receives every result, for example to send it to the control plane.
pub type ResultSink = Arc<dyn Fn(&PrecheckResult) + Send + Sync>;

/// Counters and history of one check.
#[derive(Debug, Clone)]
pub struct CheckStatus {
    pub spec: PrecheckSpec,
    /// Most recent results, oldest first.
    pub history: Vec<PrecheckResult>,
    /// Calls that finished.
    pub runs: u64,
    /// Ticks skipped because the previous call still ran.
    pub skipped: u64,
    /// Next planned tick, once the scheduler has planned one.
    pub next_run: Option<DateTime<Utc>>,
    /// Start of the current series of failures, in epoch milliseconds.
    pub failing_since: Option<i64>,
}

struct CheckState {
    status: CheckStatus,
    running: bool,
    stop: CancellationToken,
}

/// The pre-checks of one runner.
pub struct Prechecks {
    zone: Tz,
    hooks: Option<Arc<HookSet>>,
    sink: ResultSink,
    clock: Clock,
    checks: Mutex<BTreeMap<String, CheckState>>,
    /// Notified when the set of failing checks changes.
    changed: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
}

impl Prechecks {
    /// Creates the service with the checks of runner.yaml. Nothing runs until
    /// [`Prechecks::start`].
    pub fn new(
        yaml_checks: Vec<PrecheckSpec>,
        zone: Tz,
        hooks: Option<Arc<HookSet>>,
        sink: ResultSink,
    ) -> Self {
        let prechecks = Prechecks {
            zone,
            hooks,
            sink,
            clock: Arc::new(Utc::now),
            checks: Mutex::new(BTreeMap::new()),
            changed: Arc::new(tokio::sync::Notify::new()),
            stop: CancellationToken::new(),
        };
        {
            let mut checks = prechecks.lock();
            for spec in yaml_checks {
                checks.insert(spec.name.clone(), prechecks.new_state(spec));
            }
        }
        prechecks
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Notifies `changed` whenever the set of failing checks changes.
    pub fn with_changed(mut self, changed: Arc<tokio::sync::Notify>) -> Self {
        self.changed = changed;
        self
    }

    /// Returns the time zone of cron schedules.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    fn new_state(&self, spec: PrecheckSpec) -> CheckState {
        CheckState {
            status: CheckStatus {
                spec,
                history: Vec::new(),
                runs: 0,
                skipped: 0,
                next_run: None,
                failing_since: None,
            },
            running: false,
            stop: self.stop.child_token(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CheckState>> {
        self.checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds the checks of the hook generation serving and starts every
    /// scheduler task. Then follows reloads until [`Prechecks::stop`].
    pub fn start(self: &Arc<Self>) {
        self.sync_hooks();
        let names: Vec<String> = self.lock().keys().cloned().collect();
        for name in names {
            self.spawn_scheduler(&name);
        }
        if let Some(hooks) = &self.hooks {
            let mut generations = hooks.subscribe();
            let prechecks = Arc::clone(self);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        changed = generations.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            for name in prechecks.sync_hooks() {
                                prechecks.spawn_scheduler(&name);
                            }
                        }
                        () = prechecks.stop.cancelled() => return,
                    }
                }
            });
        }
    }

    /// Stops every scheduler task. Calls in flight finish on their own.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Replaces the checks of older hook generations with those of the
    /// generation serving and returns the names of the added checks. A check
    /// that keeps its name keeps its history.
    pub fn sync_hooks(&self) -> Vec<String> {
        let Some(hooks) = &self.hooks else {
            return Vec::new();
        };
        let engine = hooks.current();
        let generation = engine.generation();
        let registered = engine.scheduled_checks();
        let mut checks = self.lock();

        let stale: Vec<String> = checks
            .iter()
            .filter(|(_, state)| {
                matches!(state.status.spec.source, Source::Lua { generation: owner } if owner != generation)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut previous_statuses = BTreeMap::new();
        for name in stale {
            if let Some(state) = checks.remove(&name) {
                state.stop.cancel();
                tracing::info!(check = %name, "pre-check of an older hook generation stopped");
                previous_statuses.insert(name, state.status);
            }
        }

        let mut added = Vec::new();
        for check in registered {
            if checks.contains_key(&check.name) {
                continue;
            }
            let name = check.name.clone();
            let mut state = self.new_state(PrecheckSpec::from_lua(check, generation));
            if let Some(previous) = previous_statuses.remove(&name) {
                state.status.history = previous.history;
                state.status.runs = previous.runs;
                state.status.skipped = previous.skipped;
                state.status.failing_since = previous.failing_since;
            }
            tracing::info!(check = %name, generation, schedule = %state.status.spec.schedule, "pre-check registered by the hooks");
            checks.insert(name.clone(), state);
            added.push(name);
        }
        if !previous_statuses.is_empty() {
            self.changed.notify_one();
        }
        added
    }

    /// Returns the status of every check, ordered by name.
    pub fn list(&self) -> Vec<CheckStatus> {
        self.lock()
            .values()
            .map(|state| state.status.clone())
            .collect()
    }

    /// Returns the first planned tick of `spec` after now.
    pub fn next_run(&self, spec: &PrecheckSpec) -> Option<DateTime<Utc>> {
        spec.schedule.next_after((self.clock)(), self.zone)
    }

    /// Returns the failing checks for heartbeats, or `None` without checks.
    pub fn summary(&self) -> Option<PrechecksSummary> {
        let checks = self.lock();
        if checks.is_empty() {
            return None;
        }
        let failing: Vec<FailingPrecheck> = checks
            .values()
            .filter_map(|state| {
                let since = state.status.failing_since?;
                let last = state.status.history.last()?;
                Some(FailingPrecheck {
                    name: last.name.clone(),
                    message: last.message.clone(),
                    since,
                    gate: state.status.spec.gate,
                })
            })
            .collect();
        Some(PrechecksSummary {
            degraded: !failing.is_empty(),
            failing,
        })
    }

    /// Returns the reason to reject a run, when a gating check that applies to
    /// it is failing.
    pub fn gate(&self, pipeline_type: &str, pipeline_fqn: &str) -> Option<String> {
        let checks = self.lock();
        let reasons: Vec<String> = checks
            .values()
            .filter(|state| {
                state.status.spec.gate
                    && state.status.failing_since.is_some()
                    && state.status.spec.gates.applies(pipeline_type, pipeline_fqn)
            })
            .filter_map(|state| {
                let last = state.status.history.last()?;
                Some(format!(
                    "pre-check {} is failing: {}",
                    last.name, last.message
                ))
            })
            .collect();
        if reasons.is_empty() {
            None
        } else {
            Some(reasons.join("; "))
        }
    }

    /// Runs check `name` once now, records the result and returns it. Returns
    /// `None` when no check has that name or its hook generation was replaced.
    pub async fn run_now(&self, name: &str) -> Option<PrecheckResult> {
        let spec = self.lock().get(name)?.status.spec.clone();
        let result = self.execute(&spec).await?;
        self.record(&spec, result.clone());
        Some(result)
    }

    fn spawn_scheduler(self: &Arc<Self>, name: &str) {
        let Some((spec, stop)) = self
            .lock()
            .get(name)
            .map(|state| (state.status.spec.clone(), state.stop.clone()))
        else {
            return;
        };
        let prechecks = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                () = prechecks.schedule_loop(&spec) => {}
                () = stop.cancelled() => {}
            }
        });
    }

    /// Waits for each tick of `spec` and starts a call, or counts the tick as
    /// skipped while the previous call runs.
    async fn schedule_loop(self: &Arc<Self>, spec: &PrecheckSpec) {
        let mut now = (self.clock)();
        let Some(mut next) = spec.schedule.next_after(now, self.zone) else {
            tracing::warn!(check = %spec.name, schedule = %spec.schedule, "pre-check schedule never fires");
            return;
        };
        loop {
            self.set_next_run(&spec.name, next);
            // Sleep in bounded steps and read the clock after each one, so a
            // clock jump or a suspended machine delays a tick by at most MAX_SLEEP.
            loop {
                let previous = now;
                now = (self.clock)();
                if now >= next {
                    break;
                }
                if now < previous && spec.schedule.interval().is_some() {
                    // The clock went back: intervals count from the new time.
                    next = spec.schedule.next_after(now, self.zone).unwrap_or(next);
                }
                let remaining = (next - now).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep(remaining.min(MAX_SLEEP)).await;
            }
            self.tick(spec);
            // From the time of waking: missed slots collapse into this one tick.
            let Some(following) = spec.schedule.next_after(now.max(next), self.zone) else {
                return;
            };
            next = following;
        }
    }

    fn set_next_run(&self, name: &str, next: DateTime<Utc>) {
        if let Some(state) = self.lock().get_mut(name) {
            state.status.next_run = Some(next);
        }
    }

    /// Starts one call of `spec`, unless the previous one still runs.
    fn tick(self: &Arc<Self>, spec: &PrecheckSpec) {
        {
            let mut checks = self.lock();
            let Some(state) = checks.get_mut(&spec.name) else {
                return;
            };
            if state.running {
                state.status.skipped += 1;
                tracing::warn!(
                    check = %spec.name,
                    skipped = state.status.skipped,
                    "pre-check still running at its next tick; tick skipped"
                );
                return;
            }
            state.running = true;
        }
        let prechecks = Arc::clone(self);
        let spec = spec.clone();
        tokio::spawn(async move {
            let result = prechecks.execute(&spec).await;
            if let Some(state) = prechecks.lock().get_mut(&spec.name) {
                state.running = false;
            }
            if let Some(result) = result {
                prechecks.record(&spec, result);
            }
        });
    }

    /// Calls the check's function and turns what it returns into a result.
    /// Returns `None` for a check of a hook generation that no longer serves,
    /// which [`Prechecks::sync_hooks`] is about to remove.
    async fn execute(&self, spec: &PrecheckSpec) -> Option<PrecheckResult> {
        let time = (self.clock)().timestamp_millis();
        let started = Instant::now();
        let (ok, message) = match &self.hooks {
            None => (
                false,
                "no hooks are configured; add a hooks section to runner.yaml".to_string(),
            ),
            Some(hooks) => {
                let engine = hooks.current();
                let function = match &spec.source {
                    Source::Yaml { function } => CheckFunction::Global(function.clone()),
                    Source::Lua { generation } if *generation == engine.generation() => {
                        CheckFunction::Registered
                    }
                    Source::Lua { .. } => return None,
                };
                // The hook budget enforces the timeout; this bound covers a
                // call stuck outside Lua.
                let call = engine.call_check(&spec.name, &function, spec.timeout);
                match tokio::time::timeout(spec.timeout + Duration::from_secs(1), call).await {
                    Ok(Ok(returned)) => interpret(&returned),
                    Ok(Err(error)) => (false, error.to_string()),
                    Err(_) => (
                        false,
                        format!(
                            "timed out after {}",
                            humantime::format_duration(spec.timeout)
                        ),
                    ),
                }
            }
        };
        Some(PrecheckResult {
            name: spec.name.clone(),
            ok,
            message: truncate(&message),
            duration_ms: started.elapsed().as_millis() as u64,
            time,
            gate: spec.gate,
        })
    }

    /// Logs and keeps a result and hands it to the sink.
    fn record(&self, spec: &PrecheckSpec, result: PrecheckResult) {
        if result.ok {
            tracing::info!(check = %result.name, duration_ms = result.duration_ms, message = %result.message, "pre-check passed");
        } else {
            tracing::warn!(check = %result.name, duration_ms = result.duration_ms, gate = spec.gate, message = %result.message, "pre-check failed");
        }
        let changed = {
            let mut checks = self.lock();
            let Some(state) = checks.get_mut(&spec.name) else {
                return;
            };
            let status = &mut state.status;
            let was_failing = status.failing_since.is_some();
            status.runs += 1;
            if result.ok {
                status.failing_since = None;
            } else if status.failing_since.is_none() {
                status.failing_since = Some(result.time);
            }
            if status.history.len() == HISTORY_LEN {
                status.history.remove(0);
            }
            status.history.push(result.clone());
            // The message of a failing check is part of the summary too.
            was_failing || !result.ok
        };
        if changed {
            self.changed.notify_one();
        }
        (self.sink)(&result);
    }
}

/// Reads the values a check function returned: `true`/`false`, optionally
/// followed by a message, or a table `{ ok = bool, message = string }`.
fn interpret(returned: &serde_json::Value) -> (bool, String) {
    let values = returned.as_array().map(Vec::as_slice).unwrap_or_default();
    let first = values.first().unwrap_or(&serde_json::Value::Null);
    let second = values.get(1).and_then(|value| value.as_str());
    match first {
        serde_json::Value::Bool(ok) => (*ok, second.unwrap_or(if *ok { "ok" } else { "failed" }).to_string()),
        serde_json::Value::Object(fields) => match fields.get("ok") {
            Some(serde_json::Value::Bool(ok)) => {
                let message = fields
                    .get("message")
                    .and_then(|message| message.as_str())
                    .unwrap_or(if *ok { "ok" } else { "failed" });
                (*ok, message.to_string())
            }
            _ => (
                false,
                "the check returned a table without a boolean ok field; return { ok = true|false, message = \"...\" }".to_string(),
            ),
        },
        other => (
            false,
            format!(
                "the check returned {}; return true, false or {{ ok = ..., message = ... }}",
                describe_json(other)
            ),
        ),
    }
}

fn describe_json(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a table",
    }
}

fn truncate(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests;
