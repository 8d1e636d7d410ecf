//! The registry of active runs in the state directory, used to clean up
//! after a runner process that died with runs in flight.
//!
//! A run is registered when it is accepted and again when its process
//! starts (with the process id and start time), and unregistered after its
//! final status is in the outbox. At startup every registered run belongs to
//! a dead runner: its process group is killed, its run directory removed,
//! and it is reported `failed` unless its final status is already waiting in
//! the outbox.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the registry keeps about one active run.
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

/// The folder of run records.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// Creates the registry folder (mode 0700) when it is missing.
    pub fn open(state_dir: &Path) -> std::io::Result<Registry> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state_dir.join("active-runs");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(Registry { dir })
    }

    /// Writes or replaces the record of a run. Failures are logged, not
    /// returned: a run must not fail because its record could not be kept.
    pub fn save(&self, record: &RunRecord) {
        let path = self.path(&record.run_id);
        let text = serde_json::to_vec(record).unwrap_or_default();
        if let Err(error) = std::fs::write(&path, text) {
            tracing::warn!(run_id = %record.run_id, %error, "cannot write the run record; a crash would leave this run unreported");
        }
    }

    /// Removes the record of a finished run.
    pub fn remove(&self, run_id: &str) {
        if let Err(error) = std::fs::remove_file(self.path(run_id))
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(run_id, %error, "cannot remove the run record");
        }
    }

    /// Returns the records left by a previous runner process. A record that
    /// cannot be read still yields its run id, taken from the file name.
    pub fn leftovers(&self) -> Vec<RunRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(run_id) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(".json"))
            else {
                continue;
            };
            let record = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<RunRecord>(&bytes).ok())
                .unwrap_or_else(|| RunRecord {
                    run_id: run_id.to_string(),
                    ..RunRecord::default()
                });
            records.push(record);
        }
        records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        records
    }

    fn path(&self, run_id: &str) -> PathBuf {
        self.dir.join(format!("{run_id}.json"))
    }
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
    fn records_round_trip_and_torn_ones_keep_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        registry.save(&RunRecord {
            run_id: "run-1".into(),
            pipeline_fqn: "svc.pipe".into(),
            accepted_at: 5,
            pid: Some(42),
            pid_start: Some(7),
        });
        std::fs::write(dir.path().join("active-runs/run-2.json"), b"{\"runId\":").unwrap();
        let leftovers = registry.leftovers();
        assert_eq!(leftovers.len(), 2);
        assert_eq!(leftovers[0].pid, Some(42));
        assert_eq!(leftovers[1].run_id, "run-2");
        registry.remove("run-1");
        assert_eq!(registry.leftovers().len(), 1);
    }

    #[test]
    fn own_start_time_is_readable() {
        let start = process_start(std::process::id());
        assert!(start.is_some());
    }
}
