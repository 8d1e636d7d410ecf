//! The secret access audit log: one JSON line per resolution attempt.
//!
//! Each line records who asked (run, service, pipeline), what for (reference,
//! store, store-side name, version), the outcome, the time it took and whether
//! the cache served it. Lines never contain a value or anything derived from
//! one. The file rotates by size, keeping a configured number of old files
//! (`audit.jsonl.1` is the newest of them). When a line cannot be written the
//! resolution fails, so no value is handed out without its record.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::policy::Scope;
use super::{SecretError, SecretRef};

/// Maximum time a line waits for its flush with [`Fsync::Interval`].
pub const FSYNC_INTERVAL: Duration = Duration::from_secs(1);

/// When the log is flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every line, before the value is handed out.
    Always,
    /// At most [`FSYNC_INTERVAL`] after a line is written, by a background
    /// thread, so resolutions do not wait for the disk.
    Interval,
    /// Left to the operating system: a crash of the machine may lose the
    /// last lines, a crash of the runner does not.
    Never,
}

/// Audit log settings, from `secrets.audit` in runner.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub path: PathBuf,
    /// Size at which the file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: u32,
    pub fsync: Fsync,
}

/// Result of one resolution attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Resolved,
    Denied,
    NotFound,
    AccessDenied,
    Error,
}

impl Outcome {
    /// Classifies a failed resolution.
    pub fn of_error(error: &SecretError) -> Outcome {
        match error {
            SecretError::Denied { .. } => Outcome::Denied,
            SecretError::NotFound { .. } => Outcome::NotFound,
            SecretError::AccessDenied { .. } => Outcome::AccessDenied,
            _ => Outcome::Error,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Resolved => "resolved",
            Outcome::Denied => "denied",
            Outcome::NotFound => "not_found",
            Outcome::AccessDenied => "access_denied",
            Outcome::Error => "error",
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// RFC 3339 time in UTC with milliseconds.
    pub time: String,
    pub run_id: Option<String>,
    pub service: Option<String>,
    pub pipeline_fqn: Option<String>,
    /// The reference as written, `secret:<path>[#<version>]`.
    pub reference: String,
    /// The store's name; absent when the policy denied the reference first.
    pub provider: Option<String>,
    /// The store-side name the reference mapped to.
    pub name: Option<String>,
    pub version: Option<String>,
    pub outcome: Outcome,
    pub duration_ms: f64,
    pub cached: bool,
    /// Why a resolution failed: the error message, which names references and
    /// store-side names only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AuditEntry {
    /// Starts an entry for `reference` resolved in `scope`.
    pub fn new(reference: &SecretRef, scope: &Scope) -> Self {
        AuditEntry {
            time: String::new(),
            run_id: scope.run_id.clone(),
            service: scope.service.clone(),
            pipeline_fqn: scope.pipeline_fqn.clone(),
            reference: reference.to_string(),
            provider: None,
            name: None,
            version: reference.version().map(str::to_string),
            outcome: Outcome::Error,
            duration_ms: 0.0,
            cached: false,
            error: None,
        }
    }

    /// Formats the entry as one readable line for `hybrid-runner audit tail`.
    pub fn readable(&self) -> String {
        let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
        let mut line = format!(
            "{} {:<13} {} provider={} name={} version={} run={} service={} pipeline={} {:.1} ms",
            self.time,
            self.outcome.as_str(),
            self.reference,
            or_dash(&self.provider),
            self.name
                .as_ref()
                .map_or_else(|| "-".to_string(), |name| format!("{name:?}")),
            or_dash(&self.version),
            or_dash(&self.run_id),
            or_dash(&self.service),
            or_dash(&self.pipeline_fqn),
            self.duration_ms,
        );
        if self.cached {
            line.push_str(" cached");
        }
        if let Some(error) = &self.error {
            line.push_str(&format!(": {error}"));
        }
        line
    }
}

/// The open audit log, shared by every resolution.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Mutex<Writer>>,
    fsync: Fsync,
}

#[derive(Debug)]
struct Writer {
    settings: AuditSettings,
    file: Option<File>,
    size: u64,
    /// Lines written since the last flush, with [`Fsync::Interval`].
    unsynced: bool,
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log file, creating its folder with
    /// mode 0700 when it is missing.
    pub fn open(settings: AuditSettings) -> io::Result<AuditLog> {
        if let Some(parent) = settings.path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let file = open_append(&settings.path)?;
        let size = file.metadata()?.len();
        let log = AuditLog {
            fsync: settings.fsync,
            inner: Arc::new(Mutex::new(Writer {
                settings,
                file: Some(file),
                size,
                unsynced: false,
            })),
        };
        if log.fsync == Fsync::Interval {
            let writer = Arc::downgrade(&log.inner);
            std::thread::Builder::new()
                .name("audit-fsync".into())
                .spawn(move || flush_periodically(writer))?;
        }
        Ok(log)
    }

    /// Appends one entry, stamped with the current time. With `fsync: always`
    /// the write and flush run on the blocking thread pool, so a slow disk
    /// does not hold up other runs.
    pub async fn append(&self, mut entry: AuditEntry) -> io::Result<()> {
        entry.time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        match self.fsync {
            Fsync::Never | Fsync::Interval => self.write(&line),
            Fsync::Always => {
                let log = self.clone();
                tokio::task::spawn_blocking(move || log.write(&line))
                    .await
                    .map_err(io::Error::other)?
            }
        }
    }

    fn write(&self, line: &[u8]) -> io::Result<()> {
        let mut writer = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let line_len = line.len() as u64;
        if writer.size > 0 && writer.size + line_len > writer.settings.max_bytes {
            writer.rotate()?;
        }
        let fsync = self.fsync;
        let file = match &mut writer.file {
            Some(file) => file,
            None => {
                let file = open_append(&writer.settings.path)?;
                writer.file.insert(file)
            }
        };
        file.write_all(line)?;
        if fsync == Fsync::Always {
            file.sync_data()?;
        }
        writer.size += line_len;
        writer.unsynced = fsync == Fsync::Interval;
        Ok(())
    }
}

/// Flushes the log every [`FSYNC_INTERVAL`] while lines are waiting, until
/// the log is dropped.
fn flush_periodically(writer: std::sync::Weak<Mutex<Writer>>) {
    loop {
        std::thread::sleep(FSYNC_INTERVAL);
        let Some(writer) = writer.upgrade() else {
            return;
        };
        let mut writer = writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !writer.unsynced {
            continue;
        }
        if let Some(file) = &writer.file
            && let Err(error) = file.sync_data()
        {
            tracing::warn!(%error, path = %writer.settings.path.display(), "cannot flush the secret audit log to disk; retrying in a second");
            continue;
        }
        writer.unsynced = false;
    }
}

impl Writer {
    /// Shifts `audit.jsonl.N` to `.N+1`, dropping the oldest beyond `keep`,
    /// and starts a new file. The old file is flushed first.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(file) = self.file.take()
            && self.settings.fsync != Fsync::Never
        {
            file.sync_data()?;
        }
        self.unsynced = false;
        let path = &self.settings.path;
        let keep = self.settings.keep;
        if keep == 0 {
            std::fs::remove_file(path)?;
        } else {
            remove_if_exists(&rotated(path, keep))?;
            for index in (1..keep).rev() {
                let from = rotated(path, index);
                if from.exists() {
                    std::fs::rename(&from, rotated(path, index + 1))?;
                }
            }
            std::fs::rename(path, rotated(path, 1))?;
        }
        self.file = Some(open_append(path)?);
        self.size = 0;
        Ok(())
    }
}

/// Returns the path of rotated file number `index`.
pub fn rotated(path: &Path, index: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Reads the last `count` entries, oldest first, from the current file and,
/// when it has fewer, from rotated files. Lines that do not parse are
/// returned as errors with their file and line number.
pub fn tail(path: &Path, count: usize, keep: u32) -> io::Result<Vec<Result<AuditEntry, String>>> {
    let mut entries: Vec<Result<AuditEntry, String>> = Vec::new();
    let files =
        std::iter::once(path.to_path_buf()).chain((1..=keep).map(|index| rotated(path, index)));
    for file in files {
        if entries.len() >= count {
            break;
        }
        let lines = match File::open(&file) {
            Ok(handle) => read_entries(&file, handle)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        // Older files go in front of the entries already read.
        let mut older = lines;
        older.append(&mut entries);
        entries = older;
    }
    let skip = entries.len().saturating_sub(count);
    Ok(entries.into_iter().skip(skip).collect())
}

fn read_entries(path: &Path, file: File) -> io::Result<Vec<Result<AuditEntry, String>>> {
    let mut entries = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        entries.push(serde_json::from_str(&line).map_err(|error| {
            format!(
                "{}:{}: not an audit entry: {error}",
                path.display(),
                index + 1
            )
        }));
    }
    Ok(entries)
}

/// Milliseconds of `duration`, rounded to microseconds.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, max_bytes: u64, keep: u32) -> AuditSettings {
        AuditSettings {
            path: dir.join("audit.jsonl"),
            max_bytes,
            keep,
            fsync: Fsync::Always,
        }
    }

    fn entry(index: usize) -> AuditEntry {
        let reference =
            SecretRef::parse(&format!("secret:/collate/db{index}/password")).expect("reference");
        let mut entry = AuditEntry::new(&reference, &Scope::default());
        entry.outcome = Outcome::Resolved;
        entry
    }

    #[tokio::test]
    async fn entries_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = AuditLog::open(settings(dir.path(), 1 << 20, 2)).expect("open");
        log.append(entry(1)).await.expect("append");
        log.append(entry(2)).await.expect("append");

        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first: AuditEntry = serde_json::from_str(lines[0]).expect("entry");
        assert_eq!(first.reference, "secret:/collate/db1/password");
        assert_eq!(first.time.len(), "2026-12-04T23:10:00.123Z".len());
        let mode = std::fs::metadata(dir.path().join("audit.jsonl"))
            .expect("metadata")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[tokio::test]
    async fn rotation_keeps_configured_file_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let line_len = serde_json::to_vec(&AuditEntry {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            ..entry(1)
        })
        .expect("json")
        .len() as u64
            + 1;
        // Two lines fit in a file; the third starts a new one.
        let log = AuditLog::open(settings(dir.path(), line_len * 2, 2)).expect("open");
        for index in 1..=7 {
            log.append(entry(index)).await.expect("append");
        }

        let path = dir.path().join("audit.jsonl");
        let references = |path: &Path| -> Vec<String> {
            std::fs::read_to_string(path)
                .expect("read")
                .lines()
                .map(|line| {
                    serde_json::from_str::<AuditEntry>(line)
                        .expect("entry")
                        .reference
                })
                .collect()
        };
        assert_eq!(references(&path), vec!["secret:/collate/db7/password"]);
        assert_eq!(
            references(&rotated(&path, 1)),
            vec![
                "secret:/collate/db5/password",
                "secret:/collate/db6/password"
            ]
        );
        assert_eq!(
            references(&rotated(&path, 2)),
            vec![
                "secret:/collate/db3/password",
                "secret:/collate/db4/password"
            ]
        );
        assert!(!rotated(&path, 3).exists());

        let last: Vec<String> = tail(&path, 4, 2)
            .expect("tail")
            .into_iter()
            .map(|entry| entry.expect("entry").reference)
            .collect();
        assert_eq!(
            last,
            vec![
                "secret:/collate/db4/password",
                "secret:/collate/db5/password",
                "secret:/collate/db6/password",
                "secret:/collate/db7/password",
            ]
        );
    }

    #[tokio::test]
    async fn interval_policy_flushes_in_background() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = AuditSettings {
            fsync: Fsync::Interval,
            ..settings(dir.path(), 1 << 20, 1)
        };
        let log = AuditLog::open(settings).expect("open");
        log.append(entry(1)).await.expect("append");
        let unsynced = || log.inner.lock().expect("writer").unsynced;
        assert!(unsynced());

        let deadline = std::time::Instant::now() + FSYNC_INTERVAL * 10;
        while unsynced() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !unsynced(),
            "the line was not flushed in {:?}",
            FSYNC_INTERVAL * 10
        );
    }

    #[test]
    fn readable_line_names_every_field() {
        let mut entry = entry(1);
        entry.time = "2026-12-04T23:10:00.123Z".into();
        entry.run_id = Some("r-1".into());
        entry.service = Some("pg_sales".into());
        entry.provider = Some("aws".into());
        entry.name = Some("collate/db1/password".into());
        entry.duration_ms = 12.25;
        entry.cached = true;
        assert_eq!(
            entry.readable(),
            "2026-12-04T23:10:00.123Z resolved      secret:/collate/db1/password provider=aws name=\"collate/db1/password\" version=- run=r-1 service=pg_sales pipeline=- 12.2 ms cached"
        );
    }
}
