//! State shared by the HTTP handlers, the runner sessions and the handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::store::{NewRun, Outgoing, Store};
use super::{
    ControlPlaneError, ControlPlaneEvent, ControlPlaneOptions, HEARTBEAT_TIMEOUT_INTERVALS,
    RunSubmission,
};
use crate::protocol::{CustomMessage, Envelope, Message, RunCancel, RunnerDrain};

/// Number of events a slow [`ControlPlaneHandle::events`] subscriber may fall
/// behind before it misses some.
///
/// [`ControlPlaneHandle::events`]: super::ControlPlaneHandle::events
const EVENT_BUFFER: usize = 1024;

/// Everything the server's tasks share.
pub(super) struct Shared {
    store: Mutex<Store>,
    pub runner_tokens: Vec<String>,
    pub api_token: Option<String>,
    pub heartbeat_interval: Duration,
    /// Key that signs every `run.request`, when configured.
    signer: Option<std::sync::Arc<crate::signing::RequestSigner>>,
    events: broadcast::Sender<ControlPlaneEvent>,
    /// Token cancelled at shutdown, which ends sessions and waiting requests.
    pub shutdown: CancellationToken,
    /// Runner session tasks, which outlive the HTTP connection they upgraded.
    pub sessions: TaskTracker,
    /// Rejected runner connection attempts since start, for log lines.
    pub rejected_connections: AtomicU64,
    /// Entities and pipeline statuses sent to the OpenMetadata API subset.
    pub openmetadata: super::openmetadata::OpenMetadataState,
}

impl Shared {
    pub(super) fn new(options: &ControlPlaneOptions) -> Self {
        Shared {
            store: Mutex::new(Store::default()),
            runner_tokens: options.runner_tokens.clone(),
            api_token: options.api_token.clone(),
            heartbeat_interval: options.heartbeat_interval,
            signer: options.signer.clone(),
            events: broadcast::channel(EVENT_BUFFER).0,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            rejected_connections: AtomicU64::new(0),
            openmetadata: Default::default(),
        }
    }

    /// Locks the store. A panic in another holder cannot leave the store
    /// half-updated in a way that matters more than losing the server, so a
    /// poisoned lock is used as is.
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the time without a heartbeat after which a runner counts as disconnected.
    pub(super) fn stale_after(&self) -> Duration {
        self.heartbeat_interval * HEARTBEAT_TIMEOUT_INTERVALS
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<ControlPlaneEvent> {
        self.events.subscribe()
    }

    /// Publishes an event. Having no subscriber is normal, so send errors are ignored.
    pub(super) fn emit(&self, event: ControlPlaneEvent) {
        let _ = self.events.send(event);
    }

    /// Counts a rejected runner connection and returns the new total.
    pub(super) fn count_rejected_connection(&self) -> u64 {
        self.rejected_connections.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Validates a submission, records the run and queues its `run.request` on
    /// the runner's live session.
    pub(super) fn submit(&self, submission: RunSubmission) -> Result<String, ControlPlaneError> {
        submission.validate()?;
        let run_id = submission
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut envelope = Envelope::new(&submission.to_request(&run_id), None);
        if let Some(signer) = &self.signer {
            envelope.signature = Some(signer.sign(&envelope.payload));
        }
        let frame = envelope.encode();
        let agent_id = submission.agent_id.clone();
        let sent_at = self.queue_request(
            &agent_id,
            &run_id,
            &submission.pipeline_fqn,
            &submission.pipeline_type,
            frame,
        )?;
        tracing::info!(
            %run_id,
            %agent_id,
            pipeline_fqn = %submission.pipeline_fqn,
            pipeline_type = %submission.pipeline_type,
            "run submitted"
        );
        self.emit(ControlPlaneEvent::RunSubmitted {
            run_id: run_id.clone(),
            agent_id,
            at: sent_at,
        });
        Ok(run_id)
    }

    /// Sends `frame` unchanged to a runner, for testing how runners handle
    /// frames the API would not build. With `run_id`, the run is recorded
    /// first so that the runner's reply to it is kept.
    pub(super) fn send_raw_frame(
        &self,
        agent_id: &str,
        run_id: Option<&str>,
        frame: String,
    ) -> Result<(), ControlPlaneError> {
        match run_id {
            Some(run_id) => self
                .queue_request(agent_id, run_id, "", "", frame)
                .map(|_| ()),
            None => {
                let store = self.store();
                let sent = store
                    .live_session(agent_id, self.stale_after())
                    .is_some_and(|session| session.outbox.send(Outgoing::Frame(frame)).is_ok());
                sent.then_some(())
                    .ok_or(ControlPlaneError::RunnerNotConnected {
                        agent_id: agent_id.to_string(),
                    })
            }
        }
    }

    /// Records a run and queues its request frame on the runner's live session.
    fn queue_request(
        &self,
        agent_id: &str,
        run_id: &str,
        pipeline_fqn: &str,
        pipeline_type: &str,
        frame: String,
    ) -> Result<Instant, ControlPlaneError> {
        let run_id = run_id.to_string();
        let agent_id = agent_id.to_string();
        let sent_at = {
            let mut store = self.store();
            if store.contains_run(&run_id) {
                return Err(ControlPlaneError::DuplicateRun { run_id });
            }
            let outbox = store
                .live_session(&agent_id, self.stale_after())
                .map(|session| session.outbox.clone())
                .ok_or_else(|| ControlPlaneError::RunnerNotConnected {
                    agent_id: agent_id.clone(),
                })?;
            // The run is recorded before the request is queued, so a reply that
            // arrives at once finds it.
            let sent_at = Instant::now();
            store.insert_run(NewRun {
                run_id: run_id.clone(),
                agent_id: agent_id.clone(),
                pipeline_fqn: pipeline_fqn.to_string(),
                pipeline_type: pipeline_type.to_string(),
                sent_at,
                frame: frame.clone(),
            });
            if outbox.send(Outgoing::Frame(frame)).is_err() {
                store.remove_run(&run_id);
                return Err(ControlPlaneError::RunnerNotConnected { agent_id });
            }
            sent_at
        };
        Ok(sent_at)
    }

    /// Queues a `run.cancel` for a run that is not final yet.
    pub(super) fn cancel_run(
        &self,
        run_id: &str,
        reason: Option<String>,
    ) -> Result<(), ControlPlaneError> {
        let owner = self.store().run_owner(run_id);
        let Some((agent_id, is_final)) = owner else {
            return Err(ControlPlaneError::RunNotFound {
                run_id: run_id.to_string(),
            });
        };
        if is_final {
            return Err(ControlPlaneError::RunFinished {
                run_id: run_id.to_string(),
            });
        }
        let message = RunCancel {
            run_id: run_id.to_string(),
            reason,
        };
        self.send_to_runner(&agent_id, &message)?;
        tracing::info!(run_id, %agent_id, "run cancel sent");
        Ok(())
    }

    /// Queues a `runner.drain` for a connected runner.
    pub(super) fn drain_runner(
        &self,
        agent_id: &str,
        reason: Option<String>,
    ) -> Result<(), ControlPlaneError> {
        self.send_to_runner(agent_id, &RunnerDrain { reason })?;
        tracing::info!(agent_id, "runner drain sent");
        Ok(())
    }

    /// Queues a `runner.reload` for a connected runner's hooks.
    pub(super) fn reload_runner(&self, agent_id: &str) -> Result<(), ControlPlaneError> {
        self.send_to_runner(agent_id, &crate::protocol::RunnerReload {})?;
        tracing::info!(agent_id, "runner hooks reload sent");
        Ok(())
    }

    /// Queues a custom `message` for a connected runner's hooks.
    pub(super) fn send_message(
        &self,
        agent_id: &str,
        name: String,
        body: Value,
    ) -> Result<(), ControlPlaneError> {
        let message = CustomMessage { name, body };
        self.send_to_runner(agent_id, &message)?;
        tracing::info!(agent_id, name = %message.name, "custom message sent");
        Ok(())
    }

    fn send_to_runner(
        &self,
        agent_id: &str,
        message: &impl Message,
    ) -> Result<(), ControlPlaneError> {
        let frame = Envelope::new(message, None).encode();
        let store = self.store();
        let sent = store
            .live_session(agent_id, self.stale_after())
            .is_some_and(|session| session.outbox.send(Outgoing::Frame(frame)).is_ok());
        if sent {
            Ok(())
        } else {
            Err(ControlPlaneError::RunnerNotConnected {
                agent_id: agent_id.to_string(),
            })
        }
    }

    /// Signals every session and waiting request to end. Each session task
    /// closes its socket when it detects the cancellation.
    pub(super) fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.sessions.close();
    }

    /// Waits up to `limit` for the session tasks to end.
    pub(super) async fn wait_for_sessions(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open_sessions = self.sessions.len(),
                "runner sessions did not end within the shutdown grace period"
            );
        }
    }
}
