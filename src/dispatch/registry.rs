//! The registry of active runs in the state directory, used to clean up
//! after a runner process that died with runs in flight.
//!
//! A run is recorded when it is accepted and again when its process starts
//! (with the process id and start time), and marked done after its final
//! status is in the outbox. At startup every registered run belongs to
//! a dead runner: its process group is killed, its run directory removed,
//! and it is reported `failed` unless its final status is already waiting in
//! the outbox.
//!
//! The ids of the last [`ENDED_KEPT`] ended runs stay in the file, so a
//! request that names a run which already ended, such as a recorded request
//! sent again, does not start it twice, across restarts too.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Record of one active run in the registry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline_fqn: String,
    pub accepted_at: i64,
    /// Process id of the workflow process, which leads its process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Start time of that process in clock ticks since boot, from
    /// `/proc/PID/stat`, so a reused process id is not mistaken for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
}

/// The append-only file of run records.
///
/// Each line is a record of an accepted or started run, or `{"done": id}`.
/// One `write` per change keeps the cost off the run's critical path; the
/// file is compacted to the active runs and the kept ended ids when it grows.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    state: Mutex<RegistryState>,
}

#[derive(Debug)]
struct RegistryState {
    file: Option<std::fs::File>,
    active: BTreeMap<String, RunRecord>,
    ended: EndedRuns,
    written: u64,
}

/// The ids of the most recently ended runs, oldest first.
#[derive(Debug, Default)]
struct EndedRuns {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl EndedRuns {
    fn insert(&mut self, run_id: &str) {
        if !self.ids.insert(run_id.to_string()) {
            return;
        }
        self.order.push_back(run_id.to_string());
        if self.order.len() > ENDED_KEPT
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Done { done: String },
    Run(RunRecord),
}

/// The registry file is compacted when it grows past this size.
const COMPACT_BYTES: u64 = 1 << 20;

/// Ended run ids kept. At most 128 bytes each, they keep the compacted
/// file under the compaction size.
pub const ENDED_KEPT: usize = 4096;

impl Registry {
    /// Opens the registry in the state directory and returns it with the
    /// runs a previous runner process left active.
    pub fn open(state_dir: &Path) -> std::io::Result<(Registry, Vec<RunRecord>)> {
        let path = state_dir.join("active-runs.jsonl");
        let mut leftovers = BTreeMap::new();
        let mut ended = EndedRuns::default();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                match serde_json::from_str::<Line>(line) {
                    Ok(Line::Run(record)) => {
                        leftovers.insert(record.run_id.clone(), record);
                    }
                    Ok(Line::Done { done }) => {
                        leftovers.remove(&done);
                        ended.insert(&done);
                    }
                    // A line torn by a killed process is the last one.
                    Err(_) => {}
                }
            }
        }
        let registry = Registry {
            path,
            state: Mutex::new(RegistryState {
                file: None,
                active: BTreeMap::new(),
                ended,
                written: 0,
            }),
        };
        registry.rewrite(&mut registry.lock())?;
        Ok((registry, leftovers.into_values().collect()))
    }

    /// Records an accepted or started run. Failures are logged, not
    /// returned: a run must not fail because its record could not be kept.
    pub fn save(&self, record: &RunRecord) {
        let mut state = self.lock();
        state.active.insert(record.run_id.clone(), record.clone());
        self.append(&mut state, &Line::Run(record.clone()));
    }

    /// Records that a run ended and its final status is in the outbox.
    pub fn remove(&self, run_id: &str) {
        let mut state = self.lock();
        state.active.remove(run_id);
        state.ended.insert(run_id);
        self.append(
            &mut state,
            &Line::Done {
                done: run_id.to_string(),
            },
        );
        if state.written > COMPACT_BYTES
            && let Err(error) = self.rewrite(&mut state)
        {
            tracing::warn!(%error, path = %self.path.display(), "cannot compact the run registry");
        }
    }

    /// Returns true when run `run_id` ended on this runner, in this process
    /// or in one of the last [`ENDED_KEPT`] runs before it.
    pub fn has_ended(&self, run_id: &str) -> bool {
        self.lock().ended.ids.contains(run_id)
    }

    fn append(&self, state: &mut RegistryState, line: &Line) {
        let mut text = serde_json::to_string(line).unwrap_or_default();
        text.push('\n');
        let result = match state.file.as_mut() {
            Some(file) => file.write_all(text.as_bytes()),
            None => Err(std::io::Error::other("the registry file is not open")),
        };
        match result {
            Ok(()) => state.written += text.len() as u64,
            Err(error) => {
                tracing::warn!(%error, path = %self.path.display(), "cannot write the run registry; a crash would leave runs unreported")
            }
        }
    }

    /// Replaces the file with the kept ended ids and the active runs.
    fn rewrite(&self, state: &mut RegistryState) -> std::io::Result<()> {
        let mut text = String::new();
        for done in &state.ended.order {
            let line = Line::Done { done: done.clone() };
            text.push_str(&serde_json::to_string(&line).unwrap_or_default());
            text.push('\n');
        }
        for record in state.active.values() {
            text.push_str(&serde_json::to_string(&Line::Run(record.clone())).unwrap_or_default());
            text.push('\n');
        }
        let temporary = self.path.with_extension("tmp");
        write_private(&temporary, text.as_bytes())?;
        std::fs::rename(&temporary, &self.path)?;
        state.file = Some(
            std::fs::OpenOptions::new()
                .append(true)
                .mode(0o600)
                .open(&self.path)?,
        );
        state.written = text.len() as u64;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// Returns the start time of a process in clock ticks since boot.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) may contain spaces, so count
    // from the closing parenthesis.
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Kills the process group a previous runner left behind, when it is still
/// the same group.
///
/// A process group id stays reserved while any member lives, so when the
/// leader is gone but `killpg` finds the group, the members are the run's.
/// When a process with that id exists but started at another time, the id
/// was reused after the whole group ended, and nothing is killed.
pub fn kill_leftover_group(record: &RunRecord) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    let Some(pid) = record.pid.and_then(|pid| i32::try_from(pid).ok()) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    if let (Some(expected), Some(actual)) = (record.pid_start, process_start(pid as u32))
        && expected != actual
    {
        return;
    }
    match killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) => {
            tracing::warn!(run_id = %record.run_id, pid, "killed the process group of a run left by a previous runner process")
        }
        Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(run_id = %record.run_id, pid, %error, "cannot kill a leftover process group")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_returns_runs_left_active() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, leftovers) = Registry::open(dir.path()).unwrap();
        assert!(leftovers.is_empty());
        let record = |id: &str| RunRecord {
            run_id: id.into(),
            pipeline_fqn: "svc.pipe".into(),
            accepted_at: 5,
            pid: None,
            pid_start: None,
        };
        registry.save(&record("run-1"));
        registry.save(&record("run-2"));
        registry.save(&RunRecord {
            pid: Some(42),
            pid_start: Some(7),
            ..record("run-1")
        });
        registry.remove("run-2");
        drop(registry);

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("active-runs.jsonl"))
            .unwrap();
        file.write_all(b"{\"runId\":\"torn").unwrap();
        let (_registry, leftovers) = Registry::open(dir.path()).unwrap();
        assert_eq!(leftovers.len(), 1);
        assert_eq!(leftovers[0].run_id, "run-1");
        assert_eq!(leftovers[0].pid, Some(42));
    }

    #[test]
    fn ended_runs_are_remembered_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = Registry::open(dir.path()).unwrap();
        let total = ENDED_KEPT + 10;
        for n in 0..total {
            registry.remove(&format!("run-{n}"));
        }
        assert!(registry.has_ended("run-10"));
        assert!(!registry.has_ended("run-9"));
        drop(registry);

        // Opening compacts the file to the kept ids. A second open reads them
        // from the compacted file.
        for _ in 0..2 {
            let (registry, leftovers) = Registry::open(dir.path()).unwrap();
            assert!(leftovers.is_empty());
            assert!(registry.has_ended(&format!("run-{}", total - 1)));
            assert!(registry.has_ended("run-10"));
            assert!(!registry.has_ended("run-9"));
            assert!(!registry.has_ended("run-never"));
        }
        let text = std::fs::read_to_string(dir.path().join("active-runs.jsonl")).unwrap();
        assert_eq!(text.lines().count(), ENDED_KEPT);
    }

    #[test]
    fn own_start_time_is_readable() {
        let start = process_start(std::process::id());
        assert!(start.is_some());
    }
}
