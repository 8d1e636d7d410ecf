//! In-memory records of runners, received sequence numbers, runs and log lines.
//!
//! The store is plain data behind the `std::sync::Mutex` in [`Shared`]. Its
//! methods are synchronous and do no I/O, so callers hold the lock only briefly.
//!
//! [`Shared`]: super::state::Shared

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::ControlPlaneEvent;
use crate::protocol::{
    Heartbeat, Hello, LogLine, PipelineState, RejectCode, RunLog, RunRejected, RunStatus,
    RunnerMessage,
};

/// Maximum number of log lines kept per run. Later lines are counted and dropped
/// so that one noisy run cannot exhaust the server's memory.
pub(super) const MAX_LOG_LINES_PER_RUN: usize = 100_000;

/// An instruction for a session task, sent from API handlers and other sessions.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// A text frame to send to the runner.
    Frame(String),
    /// Close the socket with this reason and end the session.
    Close(String),
}

/// The sending side of a live session, held by the store.
#[derive(Debug, Clone)]
pub(super) struct SessionLink {
    pub session_id: String,
    pub outbox: mpsc::UnboundedSender<Outgoing>,
}

/// Stored state of one runner, keyed by agent id.
#[derive(Debug)]
struct RunnerEntry {
    version: String,
    instance_id: String,
    capacity: usize,
    pipeline_types: Vec<String>,
    active_runs: Vec<String>,
    draining: bool,
    connected_at: i64,
    last_heartbeat: i64,
    last_heartbeat_instant: Instant,
    session: Option<SessionLink>,
    /// Latest events, hook reloads and failures, oldest first.
    events: std::collections::VecDeque<serde_json::Value>,
    /// Hook generation from the last heartbeat.
    hooks: Option<crate::protocol::HooksGeneration>,
    /// Pre-check summary from the last heartbeat.
    prechecks: Option<crate::protocol::PrechecksSummary>,
    /// Latest `precheck.result` messages per check name, oldest first.
    precheck_results: BTreeMap<String, VecDeque<crate::protocol::PrecheckResult>>,
}

/// Pre-check results kept per check of a runner.
const PRECHECK_RESULTS_KEPT: usize = 20;

/// Events kept per runner.
const EVENTS_KEPT: usize = 50;

/// Runner liveness as shown by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) enum RunnerStatus {
    Connected,
    Disconnected,
}

/// A runner as listed by `GET /v1/runners`, with times in epoch milliseconds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunnerView {
    pub agent_id: String,
    pub status: RunnerStatus,
    pub version: String,
    pub instance_id: String,
    pub capacity: usize,
    pub pipeline_types: Vec<String>,
    pub active_runs: Vec<String>,
    pub draining: bool,
    pub connected_at: i64,
    pub last_heartbeat: i64,
    /// Latest events (`event`, `hooks.reloaded`, `hooks.failed`), oldest first.
    pub events: Vec<serde_json::Value>,
    /// Hook generation serving, from the last heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<crate::protocol::HooksGeneration>,
    /// True while the last heartbeat reported a failing pre-check.
    pub degraded: bool,
    /// Failing pre-checks from the last heartbeat.
    pub failing_prechecks: Vec<crate::protocol::FailingPrecheck>,
    /// Latest pre-check results per check name, oldest first.
    pub prechecks: BTreeMap<String, Vec<crate::protocol::PrecheckResult>>,
}

/// Outcome of a run request: sent, or accepted or rejected by the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum RunOutcome {
    Submitted,
    Accepted,
    Rejected,
}

/// The runner's reason for rejecting a run.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Rejection {
    pub code: RejectCode,
    pub reason: String,
}

/// Fields of a newly submitted run.
#[derive(Debug, Clone)]
pub(super) struct NewRun {
    pub run_id: String,
    pub agent_id: String,
    pub pipeline_fqn: String,
    pub pipeline_type: String,
    pub sent_at: Instant,
    /// The `run.request` frame, sent again on each reconnect of the runner
    /// until the runner accepts or rejects the run.
    pub frame: String,
}

/// Everything stored about one run.
#[derive(Debug)]
struct RunRecord {
    agent_id: String,
    pipeline_fqn: String,
    /// `None` for runs first reported by a runner rather than submitted here.
    pipeline_type: Option<String>,
    submitted_at: Option<i64>,
    sent_at: Option<Instant>,
    /// The `run.request` frame of a run submitted here.
    request_frame: Option<String>,
    outcome: RunOutcome,
    rejection: Option<Rejection>,
    statuses: Vec<RunStatus>,
    final_status: Option<RunStatus>,
    logs: BTreeMap<u64, LogLine>,
    dropped_log_lines: u64,
    finished: watch::Sender<bool>,
}

/// A run as returned by `GET /v1/runs/{runId}` and the wait endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunDocument {
    pub run_id: String,
    pub agent_id: String,
    pub pipeline_fqn: String,
    pub pipeline_type: Option<String>,
    pub submitted_at: Option<i64>,
    pub outcome: RunOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    pub statuses: Vec<RunStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_state: Option<PipelineState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// True once the run has a final status or was rejected.
    #[serde(rename = "final")]
    pub is_final: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_log_lines: u64,
}

/// A run as listed by `GET /v1/runs`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunSummary {
    pub run_id: String,
    pub agent_id: String,
    pub pipeline_fqn: String,
    pub pipeline_type: Option<String>,
    pub submitted_at: Option<i64>,
    pub outcome: RunOutcome,
    /// State of the latest `run.status`, if any arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<PipelineState>,
    #[serde(rename = "final")]
    pub is_final: bool,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl RunRecord {
    fn is_final(&self) -> bool {
        self.outcome == RunOutcome::Rejected || self.final_status.is_some()
    }

    fn document(&self, run_id: &str) -> RunDocument {
        let final_status = self.final_status.as_ref();
        RunDocument {
            run_id: run_id.to_string(),
            agent_id: self.agent_id.clone(),
            pipeline_fqn: self.pipeline_fqn.clone(),
            pipeline_type: self.pipeline_type.clone(),
            submitted_at: self.submitted_at,
            outcome: self.outcome,
            rejection: self.rejection.clone(),
            statuses: self.statuses.clone(),
            final_state: final_status.map(|s| s.pipeline_status.pipeline_state),
            reason: final_status.and_then(|s| s.reason.clone()),
            exit_code: final_status.and_then(|s| s.exit_code),
            is_final: self.is_final(),
            dropped_log_lines: self.dropped_log_lines,
        }
    }

    fn summary(&self, run_id: &str) -> RunSummary {
        RunSummary {
            run_id: run_id.to_string(),
            agent_id: self.agent_id.clone(),
            pipeline_fqn: self.pipeline_fqn.clone(),
            pipeline_type: self.pipeline_type.clone(),
            submitted_at: self.submitted_at,
            outcome: self.outcome,
            state: self
                .statuses
                .last()
                .map(|s| s.pipeline_status.pipeline_state),
            is_final: self.is_final(),
        }
    }
}

/// Result of registering a session after `hello`.
#[derive(Debug)]
pub(super) struct Registration {
    /// Highest `seq` already received from this agent id and instance id.
    pub acked_seq: u64,
    /// The session this one replaces, which the caller must close.
    pub replaced: Option<SessionLink>,
}

/// Runners, sequence numbers and runs of one control plane.
#[derive(Debug, Default)]
pub(super) struct Store {
    runners: BTreeMap<String, RunnerEntry>,
    highest_seq: HashMap<(String, String), u64>,
    runs: HashMap<String, RunRecord>,
    /// Run ids in the order the runs were first recorded.
    run_order: Vec<String>,
}

impl Store {
    /// Records a runner's `hello` and makes `link` its current session.
    pub(super) fn register_session(&mut self, hello: &Hello, link: SessionLink) -> Registration {
        let now = crate::now_millis();
        // Events and pre-check results survive a reconnect of the same runner.
        let (events, precheck_results) = self
            .runners
            .get(&hello.agent_id)
            .map(|entry| (entry.events.clone(), entry.precheck_results.clone()))
            .unwrap_or_default();
        let entry = RunnerEntry {
            events,
            hooks: None,
            prechecks: None,
            precheck_results,
            version: hello.version.clone(),
            instance_id: hello.instance_id.clone(),
            capacity: hello.capacity,
            pipeline_types: hello.pipeline_types.clone(),
            active_runs: hello.active_runs.clone(),
            draining: false,
            connected_at: now,
            last_heartbeat: now,
            last_heartbeat_instant: Instant::now(),
            session: Some(link),
        };
        let previous = self.runners.insert(hello.agent_id.clone(), entry);
        let key = (hello.agent_id.clone(), hello.instance_id.clone());
        Registration {
            acked_seq: self.highest_seq.get(&key).copied().unwrap_or(0),
            replaced: previous.and_then(|entry| entry.session),
        }
    }

    /// Queues again, on the runner's current session, the request frames of
    /// its runs that were sent before `session_started` and have neither been
    /// accepted nor rejected. Returns how many were queued.
    ///
    /// Called at the first heartbeat of a session, which the runner sends
    /// after replaying its outbox: a run still unanswered then was lost with
    /// a connection or a runner crash before the runner recorded it. A runner
    /// that is still checking such a run ignores the identical request.
    pub(super) fn resend_unanswered(&mut self, agent_id: &str, session_started: Instant) -> usize {
        let Some(session) = self
            .runners
            .get(agent_id)
            .and_then(|entry| entry.session.as_ref())
        else {
            return 0;
        };
        let mut sent = 0;
        for run_id in &self.run_order {
            let Some(record) = self.runs.get(run_id) else {
                continue;
            };
            let unanswered = record.agent_id == agent_id
                && record.outcome == RunOutcome::Submitted
                && record.sent_at.is_some_and(|at| at < session_started);
            if let (true, Some(frame)) = (unanswered, &record.request_frame)
                && session.outbox.send(Outgoing::Frame(frame.clone())).is_ok()
            {
                sent += 1;
            }
        }
        sent
    }

    /// Records a heartbeat if `session_id` is still the runner's current session.
    pub(super) fn record_heartbeat(&mut self, agent_id: &str, session_id: &str, beat: &Heartbeat) {
        let Some(entry) = self.current_entry_mut(agent_id, session_id) else {
            return;
        };
        entry.capacity = beat.capacity;
        entry.active_runs = beat.active_runs.clone();
        entry.draining = beat.draining;
        entry.hooks = beat.hooks.clone();
        let was_degraded = entry
            .prechecks
            .as_ref()
            .is_some_and(|summary| summary.degraded);
        let degraded = beat
            .prechecks
            .as_ref()
            .is_some_and(|summary| summary.degraded);
        if degraded != was_degraded {
            let failing: Vec<&str> = beat
                .prechecks
                .iter()
                .flat_map(|summary| summary.failing.iter().map(|check| check.name.as_str()))
                .collect();
            if degraded {
                tracing::warn!(
                    agent_id,
                    ?failing,
                    "runner is degraded: pre-checks are failing"
                );
            } else {
                tracing::info!(agent_id, "runner recovered: no pre-check is failing");
            }
        }
        entry.prechecks = beat.prechecks.clone();
        entry.last_heartbeat = crate::now_millis();
        entry.last_heartbeat_instant = Instant::now();
    }

    /// Detaches a session and returns true when it was the runner's current one.
    pub(super) fn end_session(&mut self, agent_id: &str, session_id: &str) -> bool {
        match self.current_entry_mut(agent_id, session_id) {
            Some(entry) => {
                entry.session = None;
                true
            }
            None => false,
        }
    }

    fn current_entry_mut(&mut self, agent_id: &str, session_id: &str) -> Option<&mut RunnerEntry> {
        self.runners.get_mut(agent_id).filter(|entry| {
            entry
                .session
                .as_ref()
                .is_some_and(|s| s.session_id == session_id)
        })
    }

    /// Lists runners by agent id. A runner is connected while it has a session
    /// and its last heartbeat is younger than `stale_after`.
    pub(super) fn runner_views(&self, stale_after: Duration) -> Vec<RunnerView> {
        self.runners
            .iter()
            .map(|(agent_id, entry)| RunnerView {
                agent_id: agent_id.clone(),
                status: if is_live(entry, stale_after) {
                    RunnerStatus::Connected
                } else {
                    RunnerStatus::Disconnected
                },
                version: entry.version.clone(),
                instance_id: entry.instance_id.clone(),
                capacity: entry.capacity,
                pipeline_types: entry.pipeline_types.clone(),
                active_runs: entry.active_runs.clone(),
                draining: entry.draining,
                connected_at: entry.connected_at,
                last_heartbeat: entry.last_heartbeat,
                events: entry.events.iter().cloned().collect(),
                hooks: entry.hooks.clone(),
                degraded: entry
                    .prechecks
                    .as_ref()
                    .is_some_and(|summary| summary.degraded),
                failing_prechecks: entry
                    .prechecks
                    .as_ref()
                    .map(|summary| summary.failing.clone())
                    .unwrap_or_default(),
                prechecks: entry
                    .precheck_results
                    .iter()
                    .map(|(name, results)| (name.clone(), results.iter().cloned().collect()))
                    .collect(),
            })
            .collect()
    }

    /// Returns the session of a connected runner, or `None` when the runner is
    /// unknown, has no session or missed its heartbeats.
    pub(super) fn live_session(
        &self,
        agent_id: &str,
        stale_after: Duration,
    ) -> Option<&SessionLink> {
        self.runners
            .get(agent_id)
            .filter(|entry| is_live(entry, stale_after))
            .and_then(|entry| entry.session.as_ref())
    }

    /// Returns true if a run with this id is recorded.
    pub(super) fn contains_run(&self, run_id: &str) -> bool {
        self.runs.contains_key(run_id)
    }

    /// Records a run submitted by this control plane. The caller checks that
    /// the id is new.
    pub(super) fn insert_run(&mut self, run: NewRun) {
        let record = RunRecord {
            agent_id: run.agent_id,
            pipeline_fqn: run.pipeline_fqn,
            pipeline_type: Some(run.pipeline_type),
            submitted_at: Some(crate::now_millis()),
            sent_at: Some(run.sent_at),
            request_frame: Some(run.frame),
            outcome: RunOutcome::Submitted,
            rejection: None,
            statuses: Vec::new(),
            final_status: None,
            logs: BTreeMap::new(),
            dropped_log_lines: 0,
            finished: watch::channel(false).0,
        };
        self.run_order.push(run.run_id.clone());
        self.runs.insert(run.run_id, record);
    }

    /// Removes a run whose request could not be sent.
    pub(super) fn remove_run(&mut self, run_id: &str) {
        self.runs.remove(run_id);
        self.run_order.retain(|id| id != run_id);
    }

    /// Records `seq` from one runner instance and returns false for a duplicate,
    /// meaning a `seq` at or below the highest one already received.
    pub(super) fn record_seq(&mut self, agent_id: &str, instance_id: &str, seq: u64) -> bool {
        let highest = self
            .highest_seq
            .entry((agent_id.to_string(), instance_id.to_string()))
            .or_insert(0);
        if seq <= *highest {
            return false;
        }
        *highest = seq;
        true
    }

    /// Applies a run message from `agent_id` and returns the event it caused, if any.
    ///
    /// `hello` and `heartbeat` are session messages and are ignored here.
    pub(super) fn apply(
        &mut self,
        agent_id: &str,
        message: RunnerMessage,
        received_at: Instant,
    ) -> Option<ControlPlaneEvent> {
        match message {
            RunnerMessage::RunAccepted(accepted) => {
                let record = self.record_for(agent_id, &accepted.run_id, None)?;
                if record.outcome == RunOutcome::Submitted {
                    record.outcome = RunOutcome::Accepted;
                }
                None
            }
            RunnerMessage::RunRejected(rejected) => {
                self.apply_rejected(agent_id, rejected, received_at)
            }
            RunnerMessage::RunStatus(status) => self.apply_status(agent_id, status, received_at),
            RunnerMessage::RunLog(log) => {
                self.apply_log(agent_id, log);
                None
            }
            RunnerMessage::Event(event) => {
                self.record_event(agent_id, "event", serde_json::to_value(event).ok());
                None
            }
            RunnerMessage::HooksReloaded(reloaded) => {
                self.record_event(
                    agent_id,
                    "hooks.reloaded",
                    serde_json::to_value(reloaded).ok(),
                );
                None
            }
            RunnerMessage::HooksFailed(failed) => {
                self.record_event(agent_id, "hooks.failed", serde_json::to_value(failed).ok());
                None
            }
            RunnerMessage::PrecheckResult(result) => {
                self.record_precheck(agent_id, result);
                None
            }
            RunnerMessage::Hello(_) | RunnerMessage::Heartbeat(_) => None,
        }
    }

    /// Keeps one pre-check result of a runner and logs a failure.
    fn record_precheck(&mut self, agent_id: &str, result: crate::protocol::PrecheckResult) {
        let Some(entry) = self.runners.get_mut(agent_id) else {
            return;
        };
        if !result.ok {
            tracing::warn!(agent_id, check = %result.name, gate = result.gate, message = %result.message, "pre-check failed on runner");
        }
        let results = entry
            .precheck_results
            .entry(result.name.clone())
            .or_default();
        if results.len() == PRECHECK_RESULTS_KEPT {
            results.pop_front();
        }
        results.push_back(result);
    }

    /// Keeps one event of a runner, dropping the oldest beyond [`EVENTS_KEPT`].
    fn record_event(&mut self, agent_id: &str, kind: &str, payload: Option<serde_json::Value>) {
        let Some(entry) = self.runners.get_mut(agent_id) else {
            return;
        };
        if entry.events.len() == EVENTS_KEPT {
            entry.events.pop_front();
        }
        entry.events.push_back(serde_json::json!({
            "type": kind,
            "ts": crate::now_millis(),
            "payload": payload,
        }));
    }

    fn apply_rejected(
        &mut self,
        agent_id: &str,
        rejected: RunRejected,
        received_at: Instant,
    ) -> Option<ControlPlaneEvent> {
        let record = self.record_for(agent_id, &rejected.run_id, None)?;
        if record.outcome == RunOutcome::Accepted {
            // A runner rejects a second request with the id of a run it is
            // running (duplicateRun); that rejection does not end the first run.
            tracing::warn!(
                agent_id,
                run_id = %rejected.run_id,
                code = %rejected.code,
                reason = %rejected.reason,
                "ignored run.rejected for a run the runner already accepted"
            );
            return None;
        }
        if record.is_final() {
            tracing::warn!(
                agent_id,
                run_id = %rejected.run_id,
                "ignored run.rejected for a run that is already final"
            );
            return None;
        }
        tracing::info!(
            agent_id,
            run_id = %rejected.run_id,
            code = %rejected.code,
            reason = %rejected.reason,
            "runner rejected run"
        );
        record.outcome = RunOutcome::Rejected;
        record.rejection = Some(Rejection {
            code: rejected.code,
            reason: rejected.reason,
        });
        record.finished.send_replace(true);
        Some(ControlPlaneEvent::RunFinal {
            run_id: rejected.run_id,
            agent_id: agent_id.to_string(),
            state: None,
            rejected: true,
            at: received_at,
            submitted_at: record.sent_at,
        })
    }

    fn apply_status(
        &mut self,
        agent_id: &str,
        status: RunStatus,
        received_at: Instant,
    ) -> Option<ControlPlaneEvent> {
        let run_id = status.run_id.clone();
        let record = self.record_for(agent_id, &run_id, Some(&status.pipeline_fqn))?;
        let state = status.pipeline_status.pipeline_state;
        if record.outcome == RunOutcome::Submitted {
            record.outcome = RunOutcome::Accepted;
        }
        record.statuses.push(status.clone());
        if !state.is_final() {
            return None;
        }
        if record.is_final() {
            tracing::warn!(agent_id, %run_id, %state, "run reported a second final status; kept the first");
            return None;
        }
        tracing::info!(agent_id, %run_id, %state, exit_code = status.exit_code.map_or_else(|| "none".to_string(), |code| code.to_string()), "run finished");
        record.final_status = Some(status);
        record.finished.send_replace(true);
        Some(ControlPlaneEvent::RunFinal {
            run_id,
            agent_id: agent_id.to_string(),
            state: Some(state),
            rejected: false,
            at: received_at,
            submitted_at: record.sent_at,
        })
    }

    fn apply_log(&mut self, agent_id: &str, log: RunLog) {
        let Some(record) = self.record_for(agent_id, &log.run_id, None) else {
            return;
        };
        let dropped_before = record.dropped_log_lines;
        for line in log.lines {
            if record.logs.len() >= MAX_LOG_LINES_PER_RUN && !record.logs.contains_key(&line.n) {
                record.dropped_log_lines += 1;
                continue;
            }
            record.logs.entry(line.n).or_insert(line);
        }
        if dropped_before == 0 && record.dropped_log_lines > 0 {
            tracing::warn!(
                agent_id,
                run_id = %log.run_id,
                max_lines = MAX_LOG_LINES_PER_RUN,
                "run exceeded the stored log line limit; later lines are dropped"
            );
        }
    }

    /// Finds the record of `run_id` for a message from `agent_id`.
    ///
    /// A run this control plane never submitted, for example one reported again
    /// after a restart, is recorded on first sight. A run that belongs to
    /// another agent is left unchanged and `None` is returned.
    fn record_for(
        &mut self,
        agent_id: &str,
        run_id: &str,
        pipeline_fqn: Option<&str>,
    ) -> Option<&mut RunRecord> {
        if !self.runs.contains_key(run_id) {
            tracing::info!(
                agent_id,
                run_id,
                "recording run that this control plane did not submit"
            );
            self.run_order.push(run_id.to_string());
            self.runs
                .insert(run_id.to_string(), reported_run(agent_id, pipeline_fqn));
        }
        let record = self.runs.get_mut(run_id)?;
        if record.agent_id != agent_id {
            tracing::warn!(
                agent_id,
                run_id,
                owner = %record.agent_id,
                "ignored message about a run that belongs to another runner"
            );
            return None;
        }
        if record.pipeline_fqn.is_empty()
            && let Some(fqn) = pipeline_fqn
        {
            record.pipeline_fqn = fqn.to_string();
        }
        Some(record)
    }

    /// Returns the document of one run.
    pub(super) fn run_document(&self, run_id: &str) -> Option<RunDocument> {
        self.runs.get(run_id).map(|record| record.document(run_id))
    }

    /// Returns summaries of all runs in the order they were first recorded.
    pub(super) fn run_summaries(&self) -> Vec<RunSummary> {
        self.run_order
            .iter()
            .filter_map(|run_id| self.runs.get(run_id).map(|record| record.summary(run_id)))
            .collect()
    }

    /// Returns the log lines of a run with `n > after`, ordered by `n`.
    pub(super) fn log_lines(&self, run_id: &str, after: u64) -> Option<Vec<LogLine>> {
        let record = self.runs.get(run_id)?;
        let lines = record
            .logs
            .range(after.saturating_add(1)..)
            .map(|(_, line)| line.clone())
            .collect();
        Some(lines)
    }

    /// Returns a receiver that turns true when the run becomes final.
    pub(super) fn final_signal(&self, run_id: &str) -> Option<watch::Receiver<bool>> {
        self.runs
            .get(run_id)
            .map(|record| record.finished.subscribe())
    }

    /// Returns the agent id of a run and whether the run is final.
    pub(super) fn run_owner(&self, run_id: &str) -> Option<(String, bool)> {
        self.runs
            .get(run_id)
            .map(|record| (record.agent_id.clone(), record.is_final()))
    }
}

fn is_live(entry: &RunnerEntry, stale_after: Duration) -> bool {
    entry.session.is_some() && entry.last_heartbeat_instant.elapsed() < stale_after
}

fn reported_run(agent_id: &str, pipeline_fqn: Option<&str>) -> RunRecord {
    RunRecord {
        agent_id: agent_id.to_string(),
        pipeline_fqn: pipeline_fqn.unwrap_or_default().to_string(),
        pipeline_type: None,
        submitted_at: None,
        sent_at: None,
        request_frame: None,
        outcome: RunOutcome::Accepted,
        rejection: None,
        statuses: Vec::new(),
        final_status: None,
        logs: BTreeMap::new(),
        dropped_log_lines: 0,
        finished: watch::channel(false).0,
    }
}
