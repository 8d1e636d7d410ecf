//! Runs one workflow as a local process.
//!
//! The resolved config is written to `workflow.json` (mode 0600) in a private
//! per-run directory (mode 0700) that is removed when the run ends, whatever
//! the outcome. The command comes from runner.yaml. The child gets a
//! controlled environment and its own process group, so a cancel or timeout
//! reaches its grandchildren too: SIGTERM to the group, the grace period,
//! then SIGKILL. Output is split into lines and redacted before it leaves.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::CommandTemplate;
use crate::protocol::LogStream;
use crate::redact::{RedactedLine, Redactor};

/// Name of the resolved config file inside the run directory.
pub const CONFIG_FILE_NAME: &str = "workflow.json";

/// How long output readers may take to finish after the process group is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything needed to run one workflow.
pub struct ExecSpec {
    pub run_id: String,
    pub command: CommandTemplate,
    /// The config with secrets resolved; written only to the private file.
    pub config: serde_json::Value,
    /// The complete environment of the child.
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub cancel_grace: Duration,
    pub max_line_bytes: usize,
}

/// Final outcome of a run's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited by itself with this code.
    Exited(i32),
    /// The process was ended by a signal it did not get from the runner.
    Signaled(i32),
    /// The run passed its timeout and was stopped.
    TimedOut(Duration),
    /// The run was cancelled and stopped.
    Cancelled,
    /// The process could not be started.
    SpawnFailed(String),
}

/// Result of one execution.
#[derive(Debug)]
pub struct ExecResult {
    pub outcome: Outcome,
    pub started_at: Option<i64>,
    pub duration: Duration,
}

/// Errors preparing the run directory.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot create run directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write workflow config in {path}: {source}")]
    Config {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Removes the run directory when dropped, so it goes on every path out.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        // Two syscalls when the child left nothing else behind; the full
        // recursive removal costs about ten times more.
        let _ = std::fs::remove_file(self.0.join(CONFIG_FILE_NAME));
        if std::fs::remove_dir(&self.0).is_ok() {
            return;
        }
        if let Err(error) = std::fs::remove_dir_all(&self.0)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), %error, "cannot remove run directory");
        }
    }
}

/// Runs a workflow to completion, sending redacted output lines to `lines`.
/// `on_start` is called with the process id once the process runs.
pub async fn run(
    spec: ExecSpec,
    work_dir: &Path,
    redactor: Arc<Redactor>,
    cancel: CancellationToken,
    lines: mpsc::Sender<(LogStream, RedactedLine)>,
    on_start: impl FnOnce(u32),
) -> Result<ExecResult, PrepareError> {
    let run_dir = prepare(work_dir, &spec)?;
    let config_path = run_dir.0.join(CONFIG_FILE_NAME);
    let began = Instant::now();

    let mut child = match spawn(&spec, &config_path, &run_dir.0) {
        Ok(child) => child,
        Err(error) => {
            return Ok(ExecResult {
                outcome: Outcome::SpawnFailed(format!(
                    "cannot start {:?}: {error}",
                    spec.command.program
                )),
                started_at: None,
                duration: began.elapsed(),
            });
        }
    };
    let started_at = crate::now_millis();
    let pid = child.id().unwrap_or_default();
    on_start(pid);

    let readers = [
        child
            .stdout
            .take()
            .map(|out| forward(out, LogStream::Stdout, &redactor, &spec, lines.clone())),
        child
            .stderr
            .take()
            .map(|err| forward(err, LogStream::Stderr, &redactor, &spec, lines.clone())),
    ];

    let outcome = supervise(&mut child, pid, &spec, cancel, &lines).await;
    drop(lines);

    // Grandchildren may outlive the child and hold the output pipes open.
    signal_group(pid, Signal::SIGKILL);
    for reader in readers.into_iter().flatten() {
        if tokio::time::timeout(DRAIN_TIMEOUT, reader).await.is_err() {
            tracing::warn!(run_id = %spec.run_id, "output reader did not finish after the process group ended");
        }
    }
    drop(run_dir);

    Ok(ExecResult {
        outcome,
        started_at: Some(started_at),
        duration: began.elapsed(),
    })
}

/// Creates the private run directory and writes the config into it.
fn prepare(work_dir: &Path, spec: &ExecSpec) -> Result<RunDir, PrepareError> {
    let path = work_dir.join(&spec.run_id);
    let directory_error = |source| PrepareError::Directory {
        path: path.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(work_dir)
        .map_err(directory_error)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(directory_error)?;
    let run_dir = RunDir(path.clone());

    let config_path = path.join(CONFIG_FILE_NAME);
    let config_error = |source| PrepareError::Config {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&config_path)
        .map_err(config_error)?;
    let bytes = serde_json::to_vec(&spec.config).map_err(|error| config_error(error.into()))?;
    // No fsync: the child reads the file right away, and after a crash the
    // run is lost anyway.
    file.write_all(&bytes).map_err(config_error)?;
    Ok(run_dir)
}

fn spawn(spec: &ExecSpec, config_path: &Path, run_dir: &Path) -> std::io::Result<Child> {
    let (program, args) = spec.command.render(config_path, run_dir);
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(run_dir)
        .env("HYBRID_RUNNER_RUN_ID", &spec.run_id)
        .env("HYBRID_RUNNER_CONFIG", config_path)
        .env("HYBRID_RUNNER_RUN_DIR", run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    command.spawn()
}

/// Waits for the child, stopping it on cancel or timeout.
/// Waits for the child, stopping it on cancel or timeout. Each signal the
/// runner sends is noted in the run's log.
async fn supervise(
    child: &mut Child,
    pid: u32,
    spec: &ExecSpec,
    cancel: CancellationToken,
    lines: &mpsc::Sender<(LogStream, RedactedLine)>,
) -> Outcome {
    let stop_reason = tokio::select! {
        status = child.wait() => return exit_outcome(status),
        () = cancel.cancelled() => None,
        () = tokio::time::sleep(spec.timeout) => Some(spec.timeout),
    };
    tracing::info!(
        run_id = %spec.run_id,
        reason = if stop_reason.is_some() { "timeout" } else { "cancel" },
        grace_ms = spec.cancel_grace.as_millis() as u64,
        "stopping run: SIGTERM to its process group"
    );
    let why = if stop_reason.is_some() {
        "timed out"
    } else {
        "cancelled"
    };
    note(
        lines,
        format!("run {why}: sent SIGTERM to the process group"),
    )
    .await;
    signal_group(pid, Signal::SIGTERM);
    if tokio::time::timeout(spec.cancel_grace, child.wait())
        .await
        .is_err()
    {
        tracing::info!(run_id = %spec.run_id, "grace period over: SIGKILL to its process group");
        let grace = humantime::format_duration(spec.cancel_grace);
        note(
            lines,
            format!("still running {grace} after SIGTERM: sent SIGKILL to the process group"),
        )
        .await;
        signal_group(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    match stop_reason {
        Some(timeout) => Outcome::TimedOut(timeout),
        None => Outcome::Cancelled,
    }
}

async fn note(lines: &mpsc::Sender<(LogStream, RedactedLine)>, text: String) {
    let line = RedactedLine {
        text,
        truncated: false,
    };
    let _ = lines.send((LogStream::Runner, line)).await;
}

fn exit_outcome(status: std::io::Result<std::process::ExitStatus>) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(signal)) => Outcome::Signaled(signal),
            (None, None) => Outcome::Exited(-1),
        },
        Err(error) => Outcome::SpawnFailed(format!("waiting for the process failed: {error}")),
    }
}

/// Sends a signal to the process group led by `pid`; a group that is already
/// gone is not an error.
fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => tracing::warn!(pid, %signal, %error, "cannot signal process group"),
    }
}

/// Reads one output stream and sends its redacted lines.
fn forward(
    mut stream: impl AsyncRead + Unpin + Send + 'static,
    kind: LogStream,
    redactor: &Arc<Redactor>,
    spec: &ExecSpec,
    lines: mpsc::Sender<(LogStream, RedactedLine)>,
) -> tokio::task::JoinHandle<()> {
    let mut splitter = redactor.lines(spec.max_line_bytes);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            for line in splitter.push(&buffer[..read]) {
                if lines.send((kind, line)).await.is_err() {
                    return;
                }
            }
        }
        if let Some(line) = splitter.finish() {
            let _ = lines.send((kind, line)).await;
        }
    })
}
