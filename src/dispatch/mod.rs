//! Run lifecycle: accept or reject, capacity, cancel, timeout, final status.
//!
//! The dispatcher owns the table of active runs. A run request is checked
//! (draining, duplicate id, capacity, pipeline type, config, secrets) before
//! anything starts. A rejected request ends with `run.rejected`, and an
//! accepted one with exactly one final `run.status`. Everything it reports
//! goes through the outbox, which redacts it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::control::{Inbound, Outbox};
use crate::exec::{self, ExecSpec, Outcome};
use crate::protocol::{
    Heartbeat, LogLine, LogStream, PipelineState, PipelineStatus, RejectCode, RunAccepted,
    RunCancel, RunLog, RunRejected, RunRequest, RunStatus, ServerMessage,
};
use crate::redact::{RedactedLine, Redactor};
use crate::secrets::policy::run_service;
use crate::secrets::{Resolver, Scope};
use crate::workflow::{Workflow, WorkflowError};

mod hooks;
pub mod registry;
pub use hooks::reload_and_report;
use registry::{Registry, RunRecord};

/// Maximum number of lines in one `run.log` chunk.
const LOG_CHUNK_LINES: usize = 200;

/// Output lines quoted in the reason of a failed run, each cut to 300 characters.
const FAILURE_TAIL_LINES: usize = 5;

/// Maximum time a log line waits before its chunk is sent.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Maximum run timeout a request may set.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// State of one active run.
struct ActiveRun {
    /// The request, to tell a control plane's resend from a reused run id.
    request: RunRequest,
    cancel: CancellationToken,
    cancel_reason: Mutex<Option<String>>,
}

/// Owns the active runs and turns requests into executions.
pub struct Dispatcher {
    config: Arc<Config>,
    resolver: Arc<Resolver>,
    redactor: Arc<Redactor>,
    outbox: Arc<Outbox>,
    runs: Mutex<HashMap<String, Arc<ActiveRun>>>,
    draining: AtomicBool,
    tracker: TaskTracker,
    status_changed: Arc<tokio::sync::Notify>,
    registry: Registry,
    hooks: Option<Arc<crate::hooks::HookSet>>,
    prechecks: Option<Arc<crate::prechecks::Prechecks>>,
}

/// A rejection before the run was accepted.
struct Rejection {
    code: RejectCode,
    reason: String,
}

impl Rejection {
    fn new(code: RejectCode, reason: impl Into<String>) -> Self {
        Rejection {
            code,
            reason: reason.into(),
        }
    }
}

/// A run that passed every check and is ready to execute.
struct PreparedRun {
    request: RunRequest,
    config: serde_json::Value,
    command: crate::config::CommandTemplate,
    timeout: Duration,
    /// Extra environment variables from the pre_run hook.
    hook_env: BTreeMap<String, String>,
    /// The identity the run's secrets were read with, also for `post_run`.
    scope: Scope,
    active: Arc<ActiveRun>,
}

/// Result of the checks of a request.
struct Checked {
    config: serde_json::Value,
    command: crate::config::CommandTemplate,
    timeout: Duration,
    hook_env: BTreeMap<String, String>,
    scope: Scope,
}

impl Dispatcher {
    pub fn new(
        config: Arc<Config>,
        resolver: Arc<Resolver>,
        redactor: Arc<Redactor>,
        outbox: Arc<Outbox>,
        registry: Registry,
    ) -> Self {
        Dispatcher {
            config,
            resolver,
            redactor,
            outbox,
            registry,
            hooks: None,
            prechecks: None,
            runs: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            status_changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Reports and cleans up the runs a previous runner process left active:
    /// kills their process groups, removes their run directories, and sends
    /// a `failed` status for each unless its final status is already in the
    /// outbox. Stale run directories are removed too.
    pub fn recover(&self, leftovers: Vec<RunRecord>) {
        for record in leftovers {
            registry::kill_leftover_group(&record);
            if !self.outbox.has_final(&record.run_id) {
                tracing::warn!(run_id = %record.run_id, "reporting a run left active by a previous runner process as failed");
                let now = crate::now_millis();
                self.outbox.push(&RunStatus {
                    run_id: record.run_id.clone(),
                    pipeline_fqn: record.pipeline_fqn.clone(),
                    pipeline_status: PipelineStatus {
                        run_id: record.run_id.clone(),
                        pipeline_state: PipelineState::Failed,
                        start_date: Some(record.accepted_at).filter(|at| *at > 0).or(Some(now)),
                        timestamp: now,
                        end_date: Some(now),
                    },
                    reason: Some("the runner restarted while this run was active; its processes were stopped".into()),
                    exit_code: None,
                });
            }
            self.registry.remove(&record.run_id);
        }
        remove_stale_run_dirs(&self.config.work_dir);
    }

    /// Calls the customer's Lua hooks at the hook points of every run.
    pub fn with_hooks(mut self, hooks: Arc<crate::hooks::HookSet>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Rejects the runs that a failing gating pre-check applies to, and
    /// reports the pre-checks in heartbeats.
    pub fn with_prechecks(mut self, prechecks: Arc<crate::prechecks::Prechecks>) -> Self {
        self.prechecks = Some(prechecks);
        self
    }

    /// Returns the notification fired when active runs or draining change.
    pub fn status_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.status_changed)
    }

    /// Returns the state reported in `hello` and heartbeats.
    pub fn status(&self) -> Heartbeat {
        let mut active_runs: Vec<String> = self.lock_runs().keys().cloned().collect();
        active_runs.sort();
        let hooks = self.hooks.as_ref().map(|hooks| {
            let current = hooks.current();
            crate::protocol::HooksGeneration {
                generation: current.generation(),
                content_hash: current.content_hash(),
            }
        });
        Heartbeat {
            capacity: self.config.runs.capacity,
            active_runs,
            draining: self.draining.load(Ordering::SeqCst),
            hooks,
            prechecks: self
                .prechecks
                .as_ref()
                .and_then(|prechecks| prechecks.summary()),
        }
    }

    /// Returns the number of active runs.
    pub fn active(&self) -> usize {
        self.lock_runs().len()
    }

    /// Handles requests from the session until the channel closes.
    pub async fn serve(self: Arc<Self>, mut inbound: mpsc::Receiver<Inbound>) {
        while let Some(Inbound::Message(message)) = inbound.recv().await {
            self.handle(message);
        }
    }

    /// Handles one message from the control plane.
    pub fn handle(self: &Arc<Self>, message: ServerMessage) {
        match message {
            ServerMessage::RunRequest(request) => {
                let dispatcher = Arc::clone(self);
                let span = tracing::info_span!("run", run_id = %request.run_id, pipeline = %request.pipeline_fqn);
                self.tracker
                    .spawn(dispatcher.start(request).instrument(span));
            }
            ServerMessage::RunCancel(cancel) => self.cancel(cancel),
            ServerMessage::RunnerDrain(_) => {
                tracing::info!("drain requested by the control plane; new runs will be rejected");
                self.draining.store(true, Ordering::SeqCst);
                self.status_changed.notify_one();
            }
            ServerMessage::RunnerReload(_) => {
                let dispatcher = Arc::clone(self);
                self.tracker.spawn(async move {
                    match &dispatcher.hooks {
                        Some(hooks) => {
                            tracing::info!("reload requested by the control plane");
                            reload_and_report(hooks, &dispatcher.outbox).await;
                        }
                        None => tracing::info!("reload requested, but no hooks are configured"),
                    }
                });
            }
            ServerMessage::Message(message) => {
                let dispatcher = Arc::clone(self);
                self.tracker
                    .spawn(async move { dispatcher.on_message(message).await });
            }
            ServerMessage::Welcome(_) | ServerMessage::Ack(_) => {}
        }
    }

    /// Stops taking new runs.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.status_changed.notify_one();
    }

    /// Cancels every active run with `reason`.
    pub fn cancel_all(&self, reason: &str) {
        for (run_id, run) in self.lock_runs().iter() {
            tracing::info!(run_id = %run_id, reason, "cancelling run");
            run.cancel_reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(reason.to_string());
            run.cancel.cancel();
        }
    }

    /// Waits until every run task has finished.
    pub async fn wait_idle(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }

    fn cancel(&self, cancel: RunCancel) {
        let runs = self.lock_runs();
        let Some(run) = runs.get(&cancel.run_id) else {
            tracing::warn!(run_id = %cancel.run_id, "cancel requested for a run that is not active");
            return;
        };
        let reason = cancel
            .reason
            .unwrap_or_else(|| "cancelled by the control plane".to_string());
        tracing::info!(run_id = %cancel.run_id, reason = %self.redactor.redact(&reason), "cancel requested");
        run.cancel_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        run.cancel.cancel();
    }

    async fn start(self: Arc<Self>, request: RunRequest) {
        let run_id = request.run_id.clone();
        if self.is_resend(&request) {
            tracing::info!("ignoring a repeated request for a run that is already active");
            return;
        }
        let prepared = match self.prepare(request).await {
            Ok(prepared) => prepared,
            Err(rejection) => {
                let reason = self.redactor.redact(&rejection.reason).into_owned();
                tracing::warn!(code = %rejection.code, reason = %reason, "run rejected");
                self.outbox.push(&RunRejected {
                    run_id,
                    code: rejection.code,
                    reason,
                });
                return;
            }
        };
        self.execute(prepared).await;
    }

    /// Checks a request and resolves its secrets. The run takes a capacity
    /// slot at the first check.
    async fn prepare(&self, request: RunRequest) -> Result<PreparedRun, Rejection> {
        check_run_id(&request.run_id)?;
        if self.draining.load(Ordering::SeqCst) {
            return Err(Rejection::new(
                RejectCode::Draining,
                "the runner is draining and takes no new runs",
            ));
        }
        if let Some(reason) = self
            .prechecks
            .as_ref()
            .and_then(|prechecks| prechecks.gate(&request.pipeline_type, &request.pipeline_fqn))
        {
            return Err(Rejection::new(RejectCode::PrecheckFailed, reason));
        }
        let active = self.reserve(&request)?;
        let result = self.check_and_resolve(&request).await;
        match result {
            Ok(checked) => Ok(PreparedRun {
                request,
                config: checked.config,
                command: checked.command,
                timeout: checked.timeout,
                hook_env: checked.hook_env,
                scope: checked.scope,
                active,
            }),
            Err(rejection) => {
                self.lock_runs().remove(&request.run_id);
                self.status_changed.notify_one();
                Err(rejection)
            }
        }
    }

    /// Returns the identity a run's references are checked and audited
    /// with. When an allowed prefix depends on the run, `source.serviceName`
    /// and the first part of the pipeline FQN must name the same service.
    fn scope(&self, request: &RunRequest, workflow: &Workflow) -> Result<Scope, Rejection> {
        self.try_scope(request, workflow).map_err(|reason| {
            tracing::warn!(run_id = %request.run_id, %reason, "run rejected: its service is ambiguous");
            Rejection::new(RejectCode::InvalidConfig, reason)
        })
    }

    /// Returns the scope of [`Self::scope`], or why the run's service is
    /// ambiguous.
    fn try_scope(&self, request: &RunRequest, workflow: &Workflow) -> Result<Scope, String> {
        let service_name = service_name(workflow);
        let service = match run_service(service_name, Some(&request.pipeline_fqn)) {
            Ok(service) => service,
            Err(reason) if self.resolver.policy().uses_placeholders() => return Err(reason),
            // Without scoped prefixes the service only labels audit lines.
            Err(_) => service_name.map(str::to_string),
        };
        Ok(request_scope(request, service))
    }

    /// Returns true when `request` equals the request of the active run with
    /// its id: the control plane sent it again because it missed the response.
    fn is_resend(&self, request: &RunRequest) -> bool {
        self.lock_runs()
            .get(&request.run_id)
            .is_some_and(|run| run.request == *request)
    }

    fn reserve(&self, request: &RunRequest) -> Result<Arc<ActiveRun>, Rejection> {
        let run_id = request.run_id.as_str();
        let mut runs = self.lock_runs();
        if runs.contains_key(run_id) {
            return Err(Rejection::new(
                RejectCode::DuplicateRun,
                format!("run {run_id} is already active on this runner"),
            ));
        }
        // A control plane sends a request again when it missed the response,
        // for example after this runner restarted. The final outcome still
        // waiting in the outbox is that response, so the run must not start
        // twice.
        if self.outbox.has_final(run_id) {
            return Err(Rejection::new(
                RejectCode::DuplicateRun,
                format!(
                    "run {run_id} already ended on this runner; its final status is being sent"
                ),
            ));
        }
        // A run id names one run. A request for a run that already ended,
        // such as a recorded signed request sent again, is not run twice.
        if self.registry.has_ended(run_id) {
            return Err(Rejection::new(
                RejectCode::DuplicateRun,
                format!(
                    "run {run_id} already ended on this runner; a run id can be used for one run only"
                ),
            ));
        }
        let capacity = self.config.runs.capacity;
        if runs.len() >= capacity {
            return Err(Rejection::new(
                RejectCode::AtCapacity,
                format!(
                    "the runner is at capacity ({capacity} runs); retry later or raise runs.capacity"
                ),
            ));
        }
        let active = Arc::new(ActiveRun {
            request: request.clone(),
            cancel: CancellationToken::new(),
            cancel_reason: Mutex::new(None),
        });
        runs.insert(run_id.to_string(), Arc::clone(&active));
        self.status_changed.notify_one();
        Ok(active)
    }

    async fn check_and_resolve(&self, request: &RunRequest) -> Result<Checked, Rejection> {
        let Some(command) = self.config.pipelines.get(&request.pipeline_type) else {
            let known: Vec<&str> = self.config.pipelines.keys().map(String::as_str).collect();
            return Err(Rejection::new(
                RejectCode::UnknownPipelineType,
                format!(
                    "unknown pipeline type {:?}; this runner has commands for: {}",
                    request.pipeline_type.chars().take(100).collect::<String>(),
                    known.join(", ")
                ),
            ));
        };
        let workflow = Workflow::from_request(&request.config, self.config.runs.max_config_bytes)
            .map_err(|error| {
            Rejection::new(
                RejectCode::InvalidConfig,
                format!("invalid workflow config: {error}"),
            )
        })?;
        // The hook reads secrets as the run would. When the two names of the
        // service disagree, the hook gets no service, and the run is rejected
        // below unless the config the hook returns makes them agree.
        let hook_scope = self
            .try_scope(request, &workflow)
            .unwrap_or_else(|_| request_scope(request, None));
        let (workflow, hook_env) =
            crate::hooks::for_run(hook_scope, self.pre_run(request, workflow)).await?;
        let plan = workflow
            .plan_secrets(&request.secret_fields)
            .map_err(|error| match error {
                WorkflowError::Fields(fields) => {
                    Rejection::new(RejectCode::SecretError, fields.to_string())
                }
                other => Rejection::new(RejectCode::InvalidConfig, other.to_string()),
            })?;
        for literal in &plan.literals {
            self.redactor.register(literal);
        }
        let scope = self.scope(request, &workflow)?;
        for field in &plan.references {
            self.resolver
                .authorize(&field.reference, &scope)
                .await
                .map_err(|error| {
                    Rejection::new(RejectCode::SecretError, format!("{}: {error}", field.path))
                })?;
        }
        // A map_secret hook called while resolving reads for this run too.
        let values = crate::hooks::for_run(
            scope.clone(),
            self.resolver.resolve_all(&plan.distinct(), &scope),
        )
        .await
        .map_err(|error| {
            let fields: Vec<&str> = plan
                .references
                .iter()
                .filter(|field| field.reference.to_string() == error.reference())
                .map(|field| field.path.as_str())
                .collect();
            Rejection::new(
                RejectCode::SecretError,
                format!("{}: {error}", fields.join(", ")),
            )
        })?;
        let mut resolved = workflow.resolved(&plan, &|reference| values.get(reference).cloned());
        self.point_at_openmetadata(request, &mut resolved)?;

        let timeout = match request.timeout_seconds {
            Some(0) | None => self.config.runs.default_timeout,
            Some(seconds) => Duration::from_secs(seconds).min(MAX_REQUEST_TIMEOUT),
        };
        Ok(Checked {
            config: resolved,
            command: command.clone(),
            timeout,
            hook_env,
            scope,
        })
    }

    /// Sets the OpenMetadata server of runner.yaml and the bot token read
    /// now in the resolved config. The token is registered with the redactor
    /// before it is written anywhere.
    fn point_at_openmetadata(
        &self,
        request: &RunRequest,
        config: &mut serde_json::Value,
    ) -> Result<(), Rejection> {
        let Some(settings) = &self.config.openmetadata else {
            return Ok(());
        };
        let token = crate::openmetadata::read_token(settings, &self.config.control_plane.token)
            .map_err(|error| {
                tracing::warn!(%error, "cannot read the OpenMetadata bot token");
                Rejection::new(RejectCode::SecretError, error.to_string())
            })?;
        self.redactor.register(token.expose());
        crate::openmetadata::apply(
            config,
            &settings.host_port,
            &token,
            &request.run_id,
            &request.pipeline_fqn,
        );
        Ok(())
    }

    async fn execute(&self, prepared: PreparedRun) {
        let PreparedRun {
            request,
            config,
            command,
            timeout,
            hook_env,
            scope,
            active,
        } = prepared;
        let accepted_at = crate::now_millis();
        let mut record = RunRecord {
            run_id: request.run_id.clone(),
            pipeline_fqn: request.pipeline_fqn.clone(),
            accepted_at,
            pid: None,
            pid_start: None,
        };
        // The record goes first: a runner killed after it reports the run
        // failed at the next start, while one killed after `run.accepted`
        // but before the record would leave the run without a final status.
        self.registry.save(&record);
        self.outbox.push(&RunAccepted {
            run_id: request.run_id.clone(),
        });
        // Every status of the run carries the same startDate: the acceptance time.
        self.push_status(
            &request,
            PipelineState::Queued,
            Some(accepted_at),
            None,
            None,
        );
        tracing::info!(pipeline_type = %request.pipeline_type, "run accepted");

        let (lines_tx, lines_rx) = mpsc::channel(1024);
        let logger = tokio::spawn(forward_logs(
            Arc::clone(&self.outbox),
            request.run_id.clone(),
            lines_rx,
        ));
        let _ = lines_tx
            .send((
                LogStream::Runner,
                runner_line(format!(
                    "starting {} for pipeline type {}",
                    command.program, request.pipeline_type
                )),
            ))
            .await;

        let spec = ExecSpec {
            run_id: request.run_id.clone(),
            command,
            config,
            env: {
                let mut env = self.child_env();
                env.extend(hook_env);
                env
            },
            timeout,
            cancel_grace: self.config.runs.cancel_grace,
            max_line_bytes: self.config.runs.max_log_line_bytes,
        };
        let result = if active.cancel.is_cancelled() {
            None
        } else {
            let on_start = |pid: u32| {
                record.pid = Some(pid);
                record.pid_start = registry::process_start(pid);
                self.registry.save(&record);
                self.push_status(
                    &request,
                    PipelineState::Running,
                    Some(accepted_at),
                    None,
                    None,
                )
            };
            Some(
                exec::run(
                    spec,
                    &self.config.work_dir,
                    Arc::clone(&self.redactor),
                    active.cancel.clone(),
                    lines_tx.clone(),
                    on_start,
                )
                .await,
            )
        };

        let cancel_reason = active
            .cancel_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        drop(lines_tx);
        let (last_line, tail, mut chunk) = logger.await.unwrap_or_default();

        let (state, mut reason, exit_code) = final_state(result, cancel_reason);
        if state == PipelineState::Failed && !tail.is_empty() {
            // The lines are already redacted, and they usually contain the cause.
            let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
            reason = reason.map(|reason| format!("{reason}; last output: {}", tail.join(" | ")));
        }
        let state_name = serde_json::to_value(state)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        let summary = match &reason {
            Some(reason) => format!("run ended: {state_name} ({reason})"),
            None => format!("run ended: {state_name}"),
        };
        chunk.push(LogLine {
            n: last_line + 1,
            stream: LogStream::Runner,
            ts: crate::now_millis(),
            text: summary,
            truncated: false,
        });
        flush(&self.outbox, &request.run_id, &mut chunk);

        // The slot is free before the final status goes out, so the control
        // plane can submit the next run as soon as this one ends.
        self.lock_runs().remove(&request.run_id);
        self.status_changed.notify_one();
        tracing::info!(state = %state, reason = reason.as_deref().unwrap_or(""), "run finished");
        self.push_status(
            &request,
            state,
            Some(accepted_at),
            reason.clone(),
            exit_code,
        );
        self.registry.remove(&request.run_id);

        let result = hooks::RunResult {
            state,
            exit_code,
            reason: reason.as_deref(),
            duration_ms: (crate::now_millis() - accepted_at).max(0) as u64,
            last_lines: &tail,
        };
        crate::hooks::for_run(scope, self.post_run(&request, result)).await;
    }

    fn push_status(
        &self,
        request: &RunRequest,
        state: PipelineState,
        start_date: Option<i64>,
        reason: Option<String>,
        exit_code: Option<i32>,
    ) {
        let now = crate::now_millis();
        self.outbox.push(&RunStatus {
            run_id: request.run_id.clone(),
            pipeline_fqn: request.pipeline_fqn.clone(),
            pipeline_status: PipelineStatus {
                run_id: request.run_id.clone(),
                pipeline_state: state,
                start_date: start_date.or(Some(now)),
                timestamp: now,
                end_date: state.is_final().then_some(now),
            },
            reason,
            exit_code,
        });
    }

    /// Builds the child environment: allowed variables of the runner's own
    /// environment, then the fixed ones from runner.yaml.
    fn child_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for name in &self.config.exec.env_allow {
            if let Ok(value) = std::env::var(name) {
                env.insert(name.clone(), value);
            }
        }
        env.extend(self.config.exec.env.clone());
        env
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ActiveRun>>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Removes every run directory in `work_dir`; called at startup, when no
/// run of this process exists yet.
fn remove_stale_run_dirs(work_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "removed a run directory left by a previous runner process")
                }
                Err(error) => {
                    tracing::warn!(dir = %path.display(), %error, "cannot remove a stale run directory")
                }
            }
        }
    }
}

/// Maps an execution result to the final state, reason and exit code.
fn final_state(
    result: Option<Result<exec::ExecResult, exec::PrepareError>>,
    cancel_reason: Option<String>,
) -> (PipelineState, Option<String>, Option<i32>) {
    let cancelled = || cancel_reason.clone().unwrap_or_else(|| "cancelled".into());
    match result {
        None => (PipelineState::Stopped, Some(cancelled()), None),
        Some(Err(error)) => (PipelineState::Failed, Some(error.to_string()), None),
        Some(Ok(result)) => match result.outcome {
            Outcome::Exited(0) => (PipelineState::Success, None, Some(0)),
            Outcome::Exited(code) => (
                PipelineState::Failed,
                Some(format!("the workflow process exited with code {code}")),
                Some(code),
            ),
            Outcome::Signaled(signal) => (
                PipelineState::Failed,
                Some(format!(
                    "the workflow process was killed by signal {signal}"
                )),
                None,
            ),
            Outcome::TimedOut(timeout) => (
                PipelineState::Failed,
                Some(format!(
                    "timed out after {}",
                    humantime::format_duration(timeout)
                )),
                None,
            ),
            Outcome::Cancelled => (PipelineState::Stopped, Some(cancelled()), None),
            Outcome::SpawnFailed(detail) => (PipelineState::Failed, Some(detail), None),
        },
    }
}

fn runner_line(text: String) -> RedactedLine {
    RedactedLine {
        text,
        truncated: false,
    }
}

/// Run ids name the private run directory, so they are restricted to a safe
/// set of characters.
fn check_run_id(run_id: &str) -> Result<(), Rejection> {
    let valid = !run_id.is_empty()
        && run_id.len() <= 128
        && !run_id.starts_with('.')
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if valid {
        Ok(())
    } else {
        Err(Rejection::new(
            RejectCode::InvalidRequest,
            "invalid runId: use 1 to 128 letters, digits, '-', '_', '.' or ':', not starting with '.'",
        ))
    }
}

/// Groups output lines into `run.log` chunks, numbered from 1 in arrival order.
/// Returns the number of the last line, the last few lines the workflow
/// process wrote, and the lines not sent yet, so the caller can add the
/// run's summary line to the same chunk.
async fn forward_logs(
    outbox: Arc<Outbox>,
    run_id: String,
    mut lines: mpsc::Receiver<(LogStream, RedactedLine)>,
) -> (u64, VecDeque<String>, Vec<LogLine>) {
    let mut number = 0u64;
    let mut tail = VecDeque::with_capacity(FAILURE_TAIL_LINES);
    let mut chunk: Vec<LogLine> = Vec::new();
    // A chunk is sent when full or when its first line is LOG_FLUSH_INTERVAL old.
    let mut deadline = tokio::time::Instant::now();
    loop {
        let next = if chunk.is_empty() {
            let next = lines.recv().await;
            deadline = tokio::time::Instant::now() + LOG_FLUSH_INTERVAL;
            next
        } else {
            match tokio::time::timeout_at(deadline, lines.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    flush(&outbox, &run_id, &mut chunk);
                    continue;
                }
            }
        };
        let Some((stream, line)) = next else { break };
        number += 1;
        if stream != LogStream::Runner && !line.text.trim().is_empty() {
            if tail.len() == FAILURE_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.text.chars().take(300).collect());
        }
        chunk.push(LogLine {
            n: number,
            stream,
            ts: crate::now_millis(),
            text: line.text,
            truncated: line.truncated,
        });
        if chunk.len() >= LOG_CHUNK_LINES {
            flush(&outbox, &run_id, &mut chunk);
        }
    }
    (number, tail, chunk)
}

fn flush(outbox: &Outbox, run_id: &str, chunk: &mut Vec<LogLine>) {
    if chunk.is_empty() {
        return;
    }
    outbox.push(&RunLog {
        run_id: run_id.to_string(),
        lines: std::mem::take(chunk),
    });
}

/// Returns `source.serviceName` of a workflow config.
fn service_name(workflow: &Workflow) -> Option<&str> {
    workflow
        .value()
        .pointer("/source/serviceName")
        .and_then(serde_json::Value::as_str)
}

/// Returns the identity of a run that ingests `service`.
fn request_scope(request: &RunRequest, service: Option<String>) -> Scope {
    Scope {
        run_id: Some(request.run_id.clone()),
        service,
        pipeline_fqn: Some(request.pipeline_fqn.clone()),
        pipeline_type: Some(request.pipeline_type.clone()),
    }
}
