//! Local emulator processes (moto, drongo) for the cloud provider tests.
//!
//! Each test starts its own server on a free 127.0.0.1 port and the server is
//! killed when the handle drops. A missing emulator fails the test with the
//! install command; it never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Time allowed for an emulator to respond to its first request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// An emulator to start.
pub struct Emulator {
    /// Executable name, looked up in the crate's `.venv/bin` and on `PATH`.
    pub program: &'static str,
    /// Environment variable that names the executable explicitly.
    pub env_var: &'static str,
    /// Command that installs the emulator, shown when it is missing.
    pub install: &'static str,
    /// Arguments before the host and port.
    pub args: &'static [&'static str],
    /// Flags that take the host and the port.
    pub host_flag: &'static str,
    pub port_flag: &'static str,
    /// Path requested to check that the server is up.
    pub ready_path: &'static str,
}

/// A running emulator, killed on drop.
pub struct TestServer {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl TestServer {
    /// Starts the emulator and waits until it responds to HTTP requests.
    pub async fn start(emulator: &Emulator) -> TestServer {
        let program = find_program(emulator);
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("create emulator log file");
        let stderr = log.reopen().expect("open emulator log file");
        let stdout = log.reopen().expect("open emulator log file");
        let child = Command::new(&program)
            .args(emulator.args)
            .args([emulator.host_flag, "127.0.0.1"])
            .args([emulator.port_flag, &port.to_string()])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        let mut server = TestServer { child, port, log };
        server.wait_ready(emulator).await;
        server
    }

    /// Returns the base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&mut self, emulator: &Emulator) {
        let client = reqwest::Client::new();
        let url = format!("{}{}", self.url(), emulator.ready_path);
        let started = Instant::now();
        loop {
            if client.get(&url).send().await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                panic!(
                    "{} exited with {status} before responding:\n{log}",
                    emulator.program
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "{} did not respond to {url} within {START_TIMEOUT:?}",
                    emulator.program
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
            "{program} not found: this test needs it. Install it with \
             `python3 -m venv .venv && .venv/bin/pip install {install}` in {dir}, \
             put it on PATH, or set {env_var} to its path",
            program = emulator.program,
            install = emulator.install,
            dir = env!("CARGO_MANIFEST_DIR"),
            env_var = emulator.env_var,
        )
    })
}

/// Returns a port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("read the bound port").port()
}
