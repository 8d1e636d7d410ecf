//! The outbox: sequenced messages kept until the control plane acknowledges them.
//!
//! Every message that must not be lost (run outcomes, status, logs) gets the
//! next sequence number and is stored already redacted and encoded. The
//! session sends entries in order and replays the unacknowledged ones after a
//! reconnect; the control plane ignores sequence numbers it has seen.
//!
//! The outbox is bounded in bytes. When the control plane stays unreachable
//! long enough to fill it, the oldest log chunks and pre-check results are
//! dropped with a warning. Other messages, run outcomes and statuses included,
//! are kept.
//!
//! An outbox opened with [`Outbox::open`] also keeps its entries in a journal
//! file, so they survive a restart of the runner process.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::journal::Journal;
use crate::protocol::{Envelope, Message};
use crate::redact::Redactor;

/// An encoded message waiting for its acknowledgement.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub frame: String,
    /// Whether the entry should be sent without waiting to share a write.
    pub urgent: bool,
    /// Whether the entry is a log chunk, which may be dropped when full.
    pub(crate) droppable: bool,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    acked: u64,
    pending: VecDeque<Entry>,
    /// Total size of the pending frames.
    bytes: usize,
    journal: Option<Journal>,
    /// Set after a journal write failed, so the failure is logged once.
    journal_failed: bool,
}

/// Sequenced, redacted messages on their way to the control plane.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    added: Notify,
    redactor: Arc<Redactor>,
    max_bytes: usize,
}

/// Default bound of the pending frames, in bytes.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

impl Outbox {
    pub fn new(redactor: Arc<Redactor>) -> Self {
        Outbox::with_max_bytes(redactor, DEFAULT_MAX_BYTES)
    }

    /// Creates an in-memory outbox that drops the oldest log chunks beyond
    /// `max_bytes`.
    pub fn with_max_bytes(redactor: Arc<Redactor>, max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                next_seq: 1,
                ..State::default()
            }),
            added: Notify::new(),
            redactor,
            max_bytes,
        }
    }

    /// Opens an outbox backed by a journal file, loading the entries a
    /// previous runner process left unacknowledged.
    pub fn open(
        redactor: Arc<Redactor>,
        max_bytes: usize,
        journal: &Path,
    ) -> std::io::Result<Self> {
        let loaded = Journal::open(journal)?;
        let bytes = loaded.entries.iter().map(|entry| entry.frame.len()).sum();
        if !loaded.entries.is_empty() {
            tracing::info!(
                pending = loaded.entries.len(),
                next_seq = loaded.next_seq,
                "loaded unacknowledged messages from the outbox journal"
            );
        }
        Ok(Outbox {
            state: Mutex::new(State {
                next_seq: loaded.next_seq,
                acked: 0,
                pending: loaded.entries.into(),
                bytes,
                journal: Some(loaded.journal),
                journal_failed: false,
            }),
            added: Notify::new(),
            redactor,
            max_bytes,
        })
    }

    /// Appends a message and returns its sequence number.
    pub fn push(&self, message: &impl Message) -> u64 {
        let mut state = self.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        let frame = Envelope::new(message, Some(seq)).encode();
        let frame = self.redactor.redact(&frame).into_owned();
        state.bytes += frame.len();
        let entry = Entry {
            seq,
            frame,
            urgent: message.urgent(),
            droppable: matches!(message.kind(), "run.log" | "precheck.result"),
        };
        if let Some(journal) = state.journal.as_mut() {
            let result = journal.append(&entry);
            journal_result(&mut state, result);
        }
        state.pending.push_back(entry);
        if state.bytes > self.max_bytes {
            self.drop_oldest_logs(&mut state);
        }
        drop(state);
        self.added.notify_waiters();
        seq
    }

    /// Drops every entry up to and including `seq`.
    pub fn ack(&self, seq: u64) {
        let mut state = self.lock();
        state.acked = state.acked.max(seq);
        while state.pending.front().is_some_and(|entry| entry.seq <= seq) {
            if let Some(entry) = state.pending.pop_front() {
                state.bytes -= entry.frame.len();
            }
        }
        // Acknowledgements are not journaled one by one: after a restart the
        // control plane's `welcome` reports which entries it has, and it ignores
        // replayed ones. Compaction drops acknowledged entries from the file.
        if state
            .journal
            .as_ref()
            .is_some_and(|journal| journal.wants_compaction(state.bytes))
        {
            rewrite_journal(&mut state);
        }
    }

    /// Drops the oldest log chunks until the pending frames fit `max_bytes`.
    fn drop_oldest_logs(&self, state: &mut State) {
        let mut excess = state.bytes.saturating_sub(self.max_bytes);
        let mut dropped = 0usize;
        let mut freed = 0usize;
        state.pending.retain(|entry| {
            if excess == 0 || !entry.droppable {
                return true;
            }
            excess = excess.saturating_sub(entry.frame.len());
            freed += entry.frame.len();
            dropped += 1;
            false
        });
        state.bytes -= freed;
        if dropped > 0 {
            rewrite_journal(state);
            tracing::warn!(
                dropped,
                max_bytes = self.max_bytes,
                "outbox is full while the control plane does not acknowledge; dropped the oldest log chunks and pre-check results (run statuses are kept)"
            );
        }
    }

    /// Returns the entries after `seq`, in order.
    pub fn after(&self, seq: u64) -> Vec<Entry> {
        self.lock()
            .pending
            .iter()
            .filter(|entry| entry.seq > seq)
            .cloned()
            .collect()
    }

    /// Returns true when a final `run.status` or a `run.rejected` of `run_id`
    /// is waiting for its acknowledgement.
    pub fn has_final(&self, run_id: &str) -> bool {
        // Log chunks and pre-check results make up most of a full outbox and
        // are never final, and a frame without the id cannot be about the
        // run, so only the few frames left are decoded.
        let state = self.lock();
        let mut candidates = state
            .pending
            .iter()
            .filter(|entry| !entry.droppable && entry.frame.contains(run_id));
        candidates.any(|entry| {
            let Ok(envelope) = Envelope::decode(&entry.frame) else {
                return false;
            };
            if envelope.payload["runId"] != run_id {
                return false;
            }
            match envelope.kind.as_str() {
                "run.rejected" => true,
                "run.status" => !matches!(
                    envelope.payload["pipelineStatus"]["pipelineState"].as_str(),
                    Some("queued" | "running")
                ),
                _ => false,
            }
        })
    }

    /// Returns true when an entry after `seq` is urgent.
    pub fn has_urgent_after(&self, seq: u64) -> bool {
        self.lock()
            .pending
            .iter()
            .any(|entry| entry.seq > seq && entry.urgent)
    }

    /// Returns the number of unacknowledged entries.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Waits until an entry is added.
    pub async fn wait_added(&self) {
        self.added.notified().await;
    }

    /// Returns a future that completes at the next push; create it before
    /// checking for entries so no push is missed in between.
    pub fn added(&self) -> tokio::sync::futures::Notified<'_> {
        self.added.notified()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Rewrites the journal with the pending entries only.
fn rewrite_journal(state: &mut State) {
    let entries: Vec<Entry> = state.pending.iter().cloned().collect();
    let next_seq = state.next_seq;
    if let Some(journal) = state.journal.as_mut() {
        let result = journal.rewrite(&entries, next_seq);
        journal_result(state, result);
    }
}

/// Logs the first failed journal write; the outbox keeps working in memory.
fn journal_result(state: &mut State, result: std::io::Result<()>) {
    if let Err(error) = result
        && !state.journal_failed
    {
        state.journal_failed = true;
        tracing::error!(%error, "cannot write the outbox journal; unacknowledged messages will not survive a restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RunAccepted;

    #[test]
    fn ack_drops_and_after_replays_in_order() {
        let outbox = Outbox::new(Arc::new(Redactor::default()));
        for id in ["a", "b", "c"] {
            outbox.push(&RunAccepted { run_id: id.into() });
        }
        outbox.ack(1);
        let seqs: Vec<u64> = outbox.after(0).iter().map(|entry| entry.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!(outbox.after(2).len(), 1);
    }

    #[test]
    fn has_final_matches_final_messages() {
        use crate::protocol::{PipelineState, PipelineStatus, RunRejected, RunStatus};
        let status = |run_id: &str, state: PipelineState| RunStatus {
            run_id: run_id.into(),
            pipeline_fqn: "svc.pipe".into(),
            pipeline_status: PipelineStatus {
                run_id: run_id.into(),
                pipeline_state: state,
                start_date: None,
                timestamp: 0,
                end_date: None,
            },
            reason: None,
            exit_code: None,
        };
        let outbox = Outbox::new(Arc::new(Redactor::default()));
        outbox.push(&status("run-1", PipelineState::Running));
        outbox.push(&status("run-10", PipelineState::Success));
        outbox.push(&RunRejected {
            run_id: "run-2".into(),
            code: crate::protocol::RejectCode::AtCapacity,
            reason: "full".into(),
        });
        assert!(!outbox.has_final("run-1"), "running is not final");
        assert!(outbox.has_final("run-10"));
        assert!(outbox.has_final("run-2"));
        outbox.push(&status("run-1", PipelineState::Failed));
        assert!(outbox.has_final("run-1"));
        outbox.ack(4);
        assert!(!outbox.has_final("run-1"), "acknowledged messages are gone");
    }

    #[test]
    fn full_outbox_drops_oldest_logs_not_statuses() {
        use crate::protocol::{LogLine, LogStream, RunLog};
        let outbox = Outbox::with_max_bytes(Arc::new(Redactor::default()), 4096);
        outbox.push(&RunAccepted {
            run_id: "keep".into(),
        });
        for n in 0..40 {
            outbox.push(&RunLog {
                run_id: "r".into(),
                lines: vec![LogLine {
                    n,
                    stream: LogStream::Stdout,
                    ts: 0,
                    text: "x".repeat(200),
                    truncated: false,
                }],
            });
        }
        let entries = outbox.after(0);
        assert_eq!(entries[0].seq, 1, "the acceptance stays first");
        let total: usize = entries.iter().map(|entry| entry.frame.len()).sum();
        assert!(total <= 4096, "pending bytes {total}");
        assert_eq!(
            entries.last().map(|entry| entry.seq),
            Some(41),
            "the newest log stays"
        );
    }

    #[test]
    fn entries_are_redacted() {
        let redactor = Arc::new(Redactor::default());
        redactor.register("Mysql-Pa55!word");
        let outbox = Outbox::new(redactor);
        outbox.push(&RunAccepted {
            run_id: "x Mysql-Pa55!word".into(),
        });
        assert!(!outbox.after(0)[0].frame.contains("Mysql-Pa55!word"));
    }
}
