//! Secrets store emulators run as local processes: moto for AWS Secrets
//! Manager and drongo for GCP Secret Manager.
//!
//! Each test starts its own emulator on a free 127.0.0.1 port, and the process
//! is killed when its handle drops, also when the test panics. A missing
//! emulator fails the test with the command that installs it; it never skips.
//!
//! The library's unit tests include this file too, so it uses nothing else
//! from `tests/common`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// Time an emulator gets to respond to its first request.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Name of the file in the scratch folder that receives stdout and stderr.
const LOG_FILE: &str = "emulator.log";

/// An emulator program and how to start it.
pub struct Emulator {
    /// Executable name, looked up in the crate's `.venv/bin` and on `PATH`.
    pub program: &'static str,
    /// Environment variable that names the executable explicitly.
    pub env_var: &'static str,
    /// pip requirement that installs the program, shown when it is missing.
    pub install: &'static str,
    /// Arguments before the host and port flags.
    pub args: &'static [&'static str],
    pub host_flag: &'static str,
    pub port_flag: &'static str,
    /// Path requested to check that the server is up.
    pub ready_path: &'static str,
}

/// moto's server, which emulates AWS Secrets Manager among other services.
pub const MOTO: Emulator = Emulator {
    program: "moto_server",
    env_var: "MOTO_SERVER",
    install: "'moto[server]'",
    args: &[],
    host_flag: "-H",
    port_flag: "-p",
    ready_path: "/moto-api/",
};

/// drongo, an emulator of GCP Secret Manager's REST API.
pub const DRONGO: Emulator = Emulator {
    program: "drongo",
    env_var: "DRONGO",
    install: "drongo",
    args: &["server"],
    host_flag: "--host",
    port_flag: "--port",
    ready_path: "/drongo/health",
};

/// A running emulator process, killed on drop.
pub struct EmulatorProcess {
    child: Child,
    pub port: u16,
    /// Scratch folder and working directory of the emulator, with its log.
    pub dir: TempDir,
}

impl EmulatorProcess {
    /// Starts `emulator` with the extra environment variables `env` and waits
    /// until it responds to HTTP requests. A start that fails because another
    /// process took the port first is retried on a new port.
    pub async fn start(emulator: &Emulator, env: &[(&str, &str)]) -> EmulatorProcess {
        let program = find_program(emulator);
        let end = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            let port = free_port();
            let dir = tempfile::tempdir().expect("create emulator folder");
            let log =
                std::fs::File::create(dir.path().join(LOG_FILE)).expect("create emulator log");
            let child = Command::new(&program)
                .args(emulator.args)
                .args([emulator.host_flag, "127.0.0.1"])
                .args([emulator.port_flag, &port.to_string()])
                .envs(env.iter().copied())
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone emulator log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
            let mut process = EmulatorProcess { child, port, dir };
            match process.wait_ready(emulator, end).await {
                Ok(()) => return process,
                Err(log) if log.to_lowercase().contains("address already in use") => {
                    eprintln!(
                        "{} lost port {port} to another process; retrying on another port",
                        emulator.program
                    );
                }
                Err(log) => panic!("{} exited before responding:\n{log}", emulator.program),
            }
        }
    }

    /// Returns the base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until the emulator responds to `ready_path`. Returns its log as the
    /// error when it exits first, and panics after `end`.
    async fn wait_ready(
        &mut self,
        emulator: &Emulator,
        end: tokio::time::Instant,
    ) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("build HTTP client");
        let url = format!("{}{}", self.url(), emulator.ready_path);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exit status {status}\n{}", self.log()));
            }
            // Checked after the exit status, so a response on the port comes
            // from this process and not from one that took the port first.
            if client.get(&url).send().await.is_ok() && matches!(self.child.try_wait(), Ok(None)) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= end {
                panic!(
                    "{} did not respond to {url} within {START_DEADLINE:?}; its log:\n{}",
                    emulator.program,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Returns the emulator's stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns a port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Finds the emulator: the environment variable, then `.venv/bin` in the
/// crate folder, then `PATH`. Panics with the install command when absent.
fn find_program(emulator: &Emulator) -> PathBuf {
    if let Some(path) = std::env::var_os(emulator.env_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{} is set to {}, which is not a file",
            emulator.env_var,
            path.display()
        );
        return path;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(emulator.program);
    if venv.is_file() {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(emulator.program))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "{program} not found, and this test needs it. Install it with \
             `python3 -m venv .venv && .venv/bin/pip install {install}` in {dir}, \
             put it on PATH, or set {env_var} to its path",
            program = emulator.program,
            install = emulator.install,
            dir = env!("CARGO_MANIFEST_DIR"),
            env_var = emulator.env_var,
        )
    })
}
