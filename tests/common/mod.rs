//! Test harness: starts the real `hybrid-runner` binary as a reference control
//! plane and as runners on 127.0.0.1, drives runs through the control plane's
//! HTTP API and collects every output a secret value could leak into.
//!
//! Child processes are stopped when their handle is dropped, also when a test
//! panics. Every wait has a deadline so a broken build fails instead of hanging;
//! the deadlines are generous because the tests share a small, busy machine.
#![allow(dead_code)]

pub mod emulators;
pub mod key_vault;
pub mod kube_api;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_hybrid-runner");

/// Maximum wait for a process to start or a runner to connect.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// Maximum wait for a run to reach its final state.
pub const RUN_DEADLINE: Duration = Duration::from_secs(90);

/// Interval between polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Minimum length in bytes of a line of a multi-line secret that must not leak;
/// the runner's default `secrets.min_redact_length`.
pub const MIN_SECRET_LINE: usize = 6;

/// The text that replaces a masked value.
pub const MASK: &str = "******";

/// Returns the argument list that runs `script` with `/bin/sh -c`; the
/// resolved config path is `$1` in the script.
pub fn sh(script: &str) -> Vec<String> {
    ["/bin/sh", "-c", script, "sh", "{config}"]
        .iter()
        .map(|arg| arg.to_string())
        .collect()
}

/// Reads a file under `tests/fixtures/cases/`.
pub fn read_case(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cases")
        .join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read case {}: {error}", path.display()))
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Polls `check` until it returns `Some`, panicking with `what` after `deadline`.
pub async fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Returns true when process `pid` is gone. A zombie counts as gone, because
/// it no longer runs and only waits for its new parent to reap it.
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state letter follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// One captured output: a label for messages and its text.
#[derive(Debug, Clone)]
pub struct Output {
    pub label: String,
    pub text: String,
}

impl Output {
    pub fn new(label: impl Into<String>, text: impl Into<String>) -> Self {
        Output {
            label: label.into(),
            text: text.into(),
        }
    }

    /// Returns the JSON text of `value` and, separately, its string values
    /// with JSON escapes decoded, so a secret is found in either form.
    pub fn json(label: &str, value: &Value) -> Vec<Output> {
        let mut strings = Vec::new();
        collect_strings(value, &mut strings);
        vec![
            Output::new(format!("{label} (JSON)"), value.to_string()),
            Output::new(format!("{label} (strings)"), strings.join("\n")),
        ]
    }
}

fn collect_strings(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(text) => into.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, into)),
        Value::Object(map) => {
            for (key, item) in map {
                into.push(key.clone());
                collect_strings(item, into);
            }
        }
        _ => {}
    }
}

/// Asserts that no needle occurs in any output.
pub fn assert_absent(needles: &[String], outputs: &[Output]) {
    assert!(!outputs.is_empty(), "no outputs were captured");
    for needle in needles {
        assert!(!needle.is_empty(), "empty needle");
        for output in outputs {
            if let Some(at) = output.text.find(needle.as_str()) {
                let start = output.text.floor_char_boundary(at.saturating_sub(80));
                let end = output
                    .text
                    .ceil_char_boundary((at + needle.len() + 80).min(output.text.len()));
                panic!(
                    "{needle:?} appears in {}: ...{}...",
                    output.label,
                    &output.text[start..end]
                );
            }
        }
    }
}

/// Asserts that no secret value leaked: neither the value, nor its JSON-escaped
/// form, nor any line of a multi-line value that is at least
/// [`MIN_SECRET_LINE`] bytes long.
pub fn assert_no_secret(secrets: &[&str], outputs: &[Output]) {
    let mut needles = Vec::new();
    for secret in secrets {
        needles.push(secret.to_string());
        let json = serde_json::to_string(secret).expect("encode JSON string");
        needles.push(json[1..json.len() - 1].to_string());
        if secret.contains('\n') {
            for line in secret.lines() {
                let line = line.trim_end_matches('\r');
                if line.len() >= MIN_SECRET_LINE {
                    needles.push(line.to_string());
                }
            }
        }
    }
    needles.sort();
    needles.dedup();
    assert_absent(&needles, outputs);
}

/// Asserts that no run of more than `max_run` consecutive bytes of `secret`
/// occurs in any output.
pub fn assert_no_fragment(secret: &str, max_run: usize, outputs: &[Output]) {
    let bytes = secret.as_bytes();
    let windows: Vec<String> = bytes
        .windows(max_run + 1)
        .map(|window| String::from_utf8_lossy(window).into_owned())
        .collect();
    assert_absent(&windows, outputs);
}

/// A scratch folder with the runner token shared by the control planes and
/// runners of one test.
pub struct TestEnv {
    pub dir: TempDir,
    pub token: String,
    started: AtomicUsize,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        let token = format!("runner-token-{}", uuid::Uuid::new_v4().simple());
        std::fs::write(dir.path().join("runner.token"), format!("{token}\n"))
            .expect("write token file");
        TestEnv {
            dir,
            token,
            started: AtomicUsize::new(0),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn token_file(&self) -> PathBuf {
        self.path("runner.token")
    }

    /// Creates a folder in the scratch folder and returns its path.
    pub fn folder(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir_all(&path).expect("create folder");
        path
    }

    fn next_name(&self, kind: &str) -> String {
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        format!("{kind}-{number}")
    }

    /// Starts a plain HTTP/WS control plane on a free port.
    pub async fn control_plane(&self) -> ControlPlane {
        self.start_control_plane("127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts an HTTPS/WSS control plane with a fresh self-signed certificate.
    pub async fn control_plane_tls(&self) -> ControlPlane {
        self.start_control_plane("127.0.0.1:0".parse().unwrap(), true)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts a plain control plane on `addr`, retrying while the port is
    /// still taken, for example by a socket of the previous server.
    pub async fn control_plane_on(&self, addr: SocketAddr) -> ControlPlane {
        let end = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            match self.start_control_plane(addr, false).await {
                Ok(control_plane) => return control_plane,
                Err(error) if tokio::time::Instant::now() < end => {
                    eprintln!("retrying control plane start on {addr}: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("{error}"),
            }
        }
    }

    /// Starts a plain control plane that passes `extra_args` to
    /// `hybrid-runner control-plane`, for example `--signing-key FILE`.
    pub async fn control_plane_with(&self, extra_args: &[String]) -> ControlPlane {
        self.start_control_plane_with("127.0.0.1:0".parse().unwrap(), false, extra_args)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    async fn start_control_plane(
        &self,
        listen: SocketAddr,
        tls: bool,
    ) -> Result<ControlPlane, String> {
        self.start_control_plane_with(listen, tls, &[]).await
    }

    async fn start_control_plane_with(
        &self,
        listen: SocketAddr,
        tls: bool,
        extra_args: &[String],
    ) -> Result<ControlPlane, String> {
        hybrid_runner::tls::install_crypto_provider();
        let name = self.next_name("control-plane");
        let stdout_path = self.path(&format!("{name}.stdout"));
        let stderr_path = self.path(&format!("{name}.stderr"));
        let mut command = Command::new(BIN);
        command
            .arg("control-plane")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--token-file")
            .arg(self.token_file())
            .args(extra_args);
        let mut ca_file = None;
        if tls {
            let certificate =
                hybrid_runner::tls::local_certificate().expect("generate certificate");
            let cert_path = self.path(&format!("{name}-cert.pem"));
            let key_path = self.path(&format!("{name}-key.pem"));
            std::fs::write(&cert_path, &certificate.cert_pem).expect("write certificate");
            std::fs::write(&key_path, &certificate.key_pem).expect("write key");
            command
                .arg("--tls-cert")
                .arg(&cert_path)
                .arg("--tls-key")
                .arg(&key_path);
            ca_file = Some(cert_path);
        }
        let mut child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(create_file(&stdout_path))
            .stderr(create_file(&stderr_path))
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start {BIN} control-plane: {error}"))?;

        let prefix = "control plane listening on ";
        let end = tokio::time::Instant::now() + START_DEADLINE;
        let addr: SocketAddr = loop {
            let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
            // The line is complete once its newline is written.
            if let Some((line, _)) = stdout.split_once('\n') {
                let text = line
                    .strip_prefix(prefix)
                    .ok_or_else(|| format!("unexpected first line of {name}: {line:?}"))?;
                break text
                    .trim()
                    .parse()
                    .map_err(|error| format!("invalid address in {line:?}: {error}"))?;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(format!(
                    "{name} exited with {status} before listening: {stderr}"
                ));
            }
            if tokio::time::Instant::now() >= end {
                return Err(format!(
                    "{name} did not print its address within {START_DEADLINE:?}"
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };

        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(path) = &ca_file {
            let pem = std::fs::read(path).expect("read certificate");
            let certificate = reqwest::Certificate::from_pem(&pem).expect("parse certificate");
            builder = builder.tls_certs_only([certificate]);
        }
        let client = builder.build().expect("build HTTP client");
        let scheme = if tls { "https" } else { "http" };
        Ok(ControlPlane {
            name,
            child,
            addr,
            base: format!("{scheme}://{addr}"),
            client,
            ca_file,
            stdout_path,
            stderr_path,
        })
    }

    /// Writes runner.yaml and secrets.yaml for `config` into a folder named
    /// after the agent id and returns the path of runner.yaml. `ca_file` is
    /// the certificate to trust for a `wss://` URL.
    pub fn write_runner_config(
        &self,
        url: &str,
        ca_file: Option<&Path>,
        config: &RunnerConfig,
    ) -> PathBuf {
        let folder = self.folder(&config.agent_id);
        let secrets_path = folder.join("secrets.yaml");
        let secrets_text = match &config.secrets_text {
            Some(text) => text.clone(),
            None => serde_yaml::to_string(&config.secrets).expect("encode secrets"),
        };
        std::fs::write(&secrets_path, secrets_text).expect("write secrets file");

        let mut control = json!({
            "url": url,
            "token_file": config.token_file.clone().unwrap_or_else(|| self.token_file()),
            "reconnect_initial_delay": "100ms",
            "reconnect_max_delay": "1s",
            "connect_timeout": "5s",
        });
        if let Some(ca_file) = ca_file {
            control["tls"] = json!({ "ca_file": ca_file });
        }
        if let Some(signing) = &config.signing {
            control["signing"] = signing.clone();
        }
        let mut runs = json!({ "cancel_grace": config.cancel_grace });
        if let Some(capacity) = config.capacity {
            runs["capacity"] = json!(capacity);
        }
        for (key, value) in &config.runs {
            runs[key] = value.clone();
        }
        let mut document = json!({
            "agent_id": config.agent_id,
            "control_plane": control,
            "runs": runs,
            "pipelines": config.pipelines,
            "exec": { "env": config.env },
            "secrets": { "provider": config.provider },
            // Relative paths are resolved from runner.yaml's folder; the
            // runner is started from another folder to prove it.
            "state_dir": "state",
            "log": { "level": "debug" },
            "hooks": config.hooks,
            "prechecks": config.prechecks,
        });
        for (name, value) in &config.sections {
            document[name] = value.clone();
        }
        let path = folder.join("runner.yaml");
        std::fs::write(
            &path,
            serde_yaml::to_string(&document).expect("encode runner.yaml"),
        )
        .expect("write runner.yaml");
        path
    }

    /// Writes the config and starts `hybrid-runner run` against `control_plane`.
    pub fn start_runner(&self, control_plane: &ControlPlane, config: RunnerConfig) -> Runner {
        self.start_runner_at(
            &control_plane.ws_url(),
            control_plane.ca_file.as_deref(),
            config,
        )
    }

    /// Writes the config and starts `hybrid-runner run` against the runner
    /// endpoint `url`, for example a relay in front of a control plane.
    pub fn start_runner_at(
        &self,
        url: &str,
        ca_file: Option<&Path>,
        config: RunnerConfig,
    ) -> Runner {
        let config_path = self.write_runner_config(url, ca_file, &config);
        let folder = config_path.parent().unwrap().to_path_buf();
        let parent = folder.parent().unwrap().to_path_buf();
        let relative_config = config_path.strip_prefix(&parent).unwrap().to_path_buf();
        let name = self.next_name(&format!("runner-{}", config.agent_id));
        let stdout_path = self.path(&format!("{name}.stdout"));
        let stderr_path = self.path(&format!("{name}.stderr"));
        let mut command = Command::new(BIN);
        command
            .arg("run")
            .arg("-c")
            .arg(&relative_config)
            .current_dir(&parent);
        self.set_process_env(&mut command, &config);
        let child = command
            .stdin(Stdio::null())
            .stdout(create_file(&stdout_path))
            .stderr(create_file(&stderr_path))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {BIN} run: {error}"));
        let pid = child.id().expect("runner pid");
        Runner {
            agent_id: config.agent_id,
            child,
            pid,
            work_dir: folder.join("state/runs"),
            stdout_path,
            stderr_path,
        }
    }

    /// Sets the environment of a `hybrid-runner` process started for
    /// `config`. By default the process inherits the test's environment
    /// without `RUST_LOG`. With [`RunnerConfig::clear_env`] it gets only
    /// `PATH` and `HOME`, which is the folder of the runner's runner.yaml.
    /// `config.process_env` is added in both cases.
    pub fn set_process_env(&self, command: &mut Command, config: &RunnerConfig) {
        if config.clear_env {
            command
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", self.folder(&config.agent_id));
        } else {
            command.env_remove("RUST_LOG");
        }
        command.envs(&config.process_env);
    }

    /// Collects every output of `control_plane` and `runners`, and asserts
    /// that none contains a secret value or the runner token.
    pub async fn assert_no_leaks(
        &self,
        control_plane: &ControlPlane,
        runners: &[&Runner],
        secrets: &[&str],
    ) {
        let mut outputs = control_plane.outputs().await;
        for runner in runners {
            outputs.extend(runner.outputs());
        }
        let mut all: Vec<&str> = secrets.to_vec();
        all.push(&self.token);
        assert_no_secret(&all, &outputs);
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv::new()
    }
}

fn create_file(path: &Path) -> std::fs::File {
    std::fs::File::create(path)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()))
}

/// A running reference control plane.
pub struct ControlPlane {
    pub name: String,
    child: Child,
    pub addr: SocketAddr,
    /// `http://ADDR` or `https://ADDR`.
    pub base: String,
    pub client: reqwest::Client,
    /// The self-signed certificate of a TLS control plane, which runners trust.
    pub ca_file: Option<PathBuf>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl ControlPlane {
    /// Returns the runner endpoint URL.
    pub fn ws_url(&self) -> String {
        let scheme = if self.ca_file.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/agent/v1/connect", self.addr)
    }

    /// Sends a GET request and returns the status and the JSON body.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path} failed: {error}"));
        let status = response.status();
        let body = response
            .json()
            .await
            .unwrap_or_else(|error| panic!("GET {path} returned no JSON: {error}"));
        (status, body)
    }

    /// Sends a POST request with a JSON body and returns the status and body.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST {path} failed: {error}"));
        let status = response.status();
        let body = response
            .json()
            .await
            .unwrap_or_else(|error| panic!("POST {path} returned no JSON: {error}"));
        (status, body)
    }

    /// Returns the entry of `agent_id` in `GET /v1/runners`.
    pub async fn runner_view(&self, agent_id: &str) -> Option<Value> {
        let (status, runners) = self.get("/v1/runners").await;
        assert_eq!(status, StatusCode::OK, "GET /v1/runners: {runners}");
        runners
            .as_array()
            .expect("runner list")
            .iter()
            .find(|runner| runner["agentId"] == agent_id)
            .cloned()
    }

    /// Waits until `runner` is listed as Connected and returns its entry. On
    /// timeout the panic message shows the runner's log.
    pub async fn wait_connected(&self, runner: &Runner) -> Value {
        let end = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            if let Some(view) = self.runner_view(&runner.agent_id).await
                && view["status"] == "Connected"
            {
                return view;
            }
            if tokio::time::Instant::now() >= end {
                panic!(
                    "runner {} is not Connected at {} after {START_DEADLINE:?}; its log:\n{}",
                    runner.agent_id,
                    self.name,
                    runner.log()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Submits a run and returns its id, asserting `202 Accepted`.
    pub async fn submit(&self, body: &Value) -> String {
        let (status, answer) = self.post("/v1/runs", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "POST /v1/runs: {answer}");
        answer["runId"]
            .as_str()
            .unwrap_or_else(|| panic!("no runId in {answer}"))
            .to_string()
    }

    /// Returns the run document, or `None` while the run is unknown.
    pub async fn run(&self, run_id: &str) -> Option<Value> {
        let (status, document) = self.get(&format!("/v1/runs/{run_id}")).await;
        match status {
            StatusCode::OK => Some(document),
            StatusCode::NOT_FOUND => None,
            other => panic!("GET /v1/runs/{run_id}: {other} {document}"),
        }
    }

    /// Waits until the run is final (a final status or a rejection) and
    /// returns its document.
    pub async fn wait_final(&self, run_id: &str) -> Value {
        wait_until(
            &format!("run {run_id} to be final at {}", self.name),
            RUN_DEADLINE,
            async || {
                let (status, document) = self
                    .get(&format!("/v1/runs/{run_id}/wait?timeoutMs=5000"))
                    .await;
                assert_eq!(status, StatusCode::OK, "wait for {run_id}: {document}");
                (document["final"] == true).then_some(document)
            },
        )
        .await
    }

    /// Waits until the run has reported `state` and returns its document.
    pub async fn wait_state(&self, run_id: &str, state: &str) -> Value {
        wait_until(
            &format!("run {run_id} to report {state}"),
            RUN_DEADLINE,
            async || {
                self.run(run_id)
                    .await
                    .filter(|document| states(document).iter().any(|s| s == state))
            },
        )
        .await
    }

    /// Returns the log lines of a run.
    pub async fn logs(&self, run_id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/runs/{run_id}/logs")).await;
        assert_eq!(status, StatusCode::OK, "GET logs of {run_id}: {body}");
        body["lines"].as_array().expect("log lines").clone()
    }

    /// Returns the texts of a run's log lines from `stream`.
    pub async fn log_texts(&self, run_id: &str, stream: &str) -> Vec<String> {
        self.logs(run_id)
            .await
            .iter()
            .filter(|line| line["stream"] == stream)
            .map(|line| line["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Sends `frame` to the runner `agent_id` unchanged. With `run_id`, the
    /// control plane records that run first so it keeps the runner's reply.
    pub async fn send_frame(&self, agent_id: &str, frame: &str, run_id: Option<&str>) {
        let path = format!("/v1/runners/{agent_id}/frames");
        let (status, answer) = self
            .post(&path, &json!({ "frame": frame, "runId": run_id }))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "POST {path}: {answer}");
    }

    /// Asks the runner to cancel a run, asserting `202 Accepted`.
    pub async fn cancel(&self, run_id: &str, reason: &str) {
        let (status, answer) = self
            .post(
                &format!("/v1/runs/{run_id}/cancel"),
                &json!({ "reason": reason }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "cancel {run_id}: {answer}");
    }

    /// Returns the process id of the control plane.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("control plane pid")
    }

    /// Returns the control plane's own log (its stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Kills the control plane with SIGKILL, as a crash would, and waits for it.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill control plane");
    }

    /// Returns the control plane's stdout and stderr.
    pub fn file_outputs(&self) -> Vec<Output> {
        vec![
            Output::new(
                format!("{} stdout", self.name),
                std::fs::read_to_string(&self.stdout_path).unwrap_or_default(),
            ),
            Output::new(format!("{} stderr", self.name), self.log()),
        ]
    }

    /// Returns the control plane's stdout and stderr, and every runner and
    /// run document and every log line it stores. It must be running.
    pub async fn outputs(&self) -> Vec<Output> {
        let mut outputs = self.file_outputs();
        let (_, runners) = self.get("/v1/runners").await;
        outputs.extend(Output::json("GET /v1/runners", &runners));
        let (_, runs) = self.get("/v1/runs").await;
        outputs.extend(Output::json("GET /v1/runs", &runs));
        for summary in runs.as_array().expect("run list") {
            let run_id = summary["runId"].as_str().expect("runId");
            let (_, document) = self.get(&format!("/v1/runs/{run_id}")).await;
            outputs.extend(Output::json(&format!("run {run_id}"), &document));
            let (_, logs) = self.get(&format!("/v1/runs/{run_id}/logs")).await;
            outputs.extend(Output::json(&format!("logs of {run_id}"), &logs));
        }
        outputs
    }
}

/// Returns the pipeline states of a run document in the order they arrived.
pub fn states(document: &Value) -> Vec<String> {
    document["statuses"]
        .as_array()
        .map(|statuses| {
            statuses
                .iter()
                .map(|status| {
                    status["pipelineStatus"]["pipelineState"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Settings of one test runner; written to runner.yaml by
/// [`TestEnv::write_runner_config`].
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub agent_id: String,
    pub pipelines: BTreeMap<String, Value>,
    /// `exec.env`: fixed variables of every workflow process.
    pub env: BTreeMap<String, String>,
    /// Entries of secrets.yaml, reference path to value.
    pub secrets: BTreeMap<String, Value>,
    /// Text of secrets.yaml written as is, in place of `secrets`.
    pub secrets_text: Option<String>,
    pub capacity: Option<u64>,
    pub cancel_grace: String,
    /// Variables set in the runner process's own environment.
    pub process_env: BTreeMap<String, String>,
    /// Token file in place of the test's shared runner token.
    pub token_file: Option<PathBuf>,
    /// `secrets.provider`; the file provider with secrets.yaml by default.
    pub provider: Value,
    /// Starts the runner with an empty environment plus `PATH`, `HOME` and
    /// `process_env`, so no credential, endpoint or profile of the test's own
    /// environment reaches a secrets provider.
    pub clear_env: bool,
    /// The `hooks` section of runner.yaml, when set.
    pub hooks: Option<Value>,
    /// `control_plane.signing` of runner.yaml, when set.
    pub signing: Option<Value>,
    /// More keys of the `runs` section, such as `drain_timeout`.
    pub runs: BTreeMap<String, Value>,
    /// Further top-level sections of runner.yaml, written as given.
    pub sections: BTreeMap<String, Value>,
    /// The `prechecks` list of runner.yaml, when set.
    pub prechecks: Option<Value>,
}

impl RunnerConfig {
    pub fn new(agent_id: &str) -> Self {
        RunnerConfig {
            agent_id: agent_id.to_string(),
            pipelines: BTreeMap::new(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            secrets_text: None,
            capacity: None,
            cancel_grace: "1s".to_string(),
            process_env: BTreeMap::new(),
            token_file: None,
            provider: json!({ "type": "file", "path": "secrets.yaml" }),
            clear_env: false,
            hooks: None,
            signing: None,
            runs: BTreeMap::new(),
            sections: BTreeMap::new(),
            prechecks: None,
        }
    }

    /// Sets the `prechecks` list of runner.yaml.
    pub fn prechecks(mut self, checks: Value) -> Self {
        self.prechecks = Some(checks);
        self
    }

    /// Loads Lua hooks from `dir`.
    pub fn hooks(mut self, dir: &Path) -> Self {
        self.hooks = Some(json!({ "dir": dir, "time_limit": "2s", "reload_debounce": "50ms" }));
        self
    }

    /// Runs pipeline type `kind` with `/bin/sh -c script`.
    pub fn pipeline(mut self, kind: &str, script: &str) -> Self {
        self.pipelines.insert(kind.to_string(), json!(sh(script)));
        self
    }

    pub fn env(mut self, name: &str, value: impl AsRef<Path>) -> Self {
        self.env
            .insert(name.to_string(), value.as_ref().display().to_string());
        self
    }

    pub fn secret(mut self, path: &str, value: &str) -> Self {
        self.secrets.insert(path.to_string(), json!(value));
        self
    }

    pub fn secret_value(mut self, path: &str, value: Value) -> Self {
        self.secrets.insert(path.to_string(), value);
        self
    }

    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Reads secrets from the runner's environment (`secrets.provider.type: env`).
    pub fn env_provider(mut self) -> Self {
        self.provider = json!({ "type": "env" });
        self
    }

    /// Sets the `secrets.provider` section as written.
    pub fn provider(mut self, provider: Value) -> Self {
        self.provider = provider;
        self
    }

    /// Starts the runner with only `PATH`, `HOME` and `process_env` set.
    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Sets the key `name` of the `runs` section.
    pub fn runs_key(mut self, name: &str, value: Value) -> Self {
        self.runs.insert(name.to_string(), value);
        self
    }

    /// Sets `control_plane.signing`, for example `{"public_key_file": PATH}`.
    pub fn signing(mut self, signing: Value) -> Self {
        self.signing = Some(signing);
        self
    }

    pub fn token_file(mut self, path: &Path) -> Self {
        self.token_file = Some(path.to_path_buf());
        self
    }

    /// Adds the top-level section `name` to runner.yaml, in place of the one
    /// the harness writes, if any.
    pub fn section(mut self, name: &str, value: Value) -> Self {
        self.sections.insert(name.to_string(), value);
        self
    }

    pub fn process_env(mut self, name: &str, value: &str) -> Self {
        self.process_env.insert(name.to_string(), value.to_string());
        self
    }
}

/// A running `hybrid-runner run` process.
pub struct Runner {
    pub agent_id: String,
    child: Child,
    pub pid: u32,
    /// Parent of the per-run directories.
    pub work_dir: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Runner {
    /// Returns the runner's own log (its stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Returns the runner's stdout, stderr and secret access audit log.
    pub fn outputs(&self) -> Vec<Output> {
        vec![
            Output::new(
                format!("runner {} stdout", self.agent_id),
                std::fs::read_to_string(&self.stdout_path).unwrap_or_default(),
            ),
            Output::new(format!("runner {} stderr", self.agent_id), self.log()),
            // The secret access audit log, in the state folder.
            Output::new(
                format!("runner {} audit.jsonl", self.agent_id),
                std::fs::read_to_string(self.work_dir.with_file_name("audit.jsonl"))
                    .unwrap_or_default(),
            ),
        ]
    }

    /// Returns the runner's peak resident set size (`VmHWM`) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/PID/status of the runner");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in the runner's status: {status}"))
    }

    /// Sends `signal` to the runner process.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid as i32), signal).expect("signal the runner");
    }

    /// Waits until the runner process exits and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(RUN_DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "runner {} did not exit within {RUN_DEADLINE:?}",
                    self.agent_id
                )
            })
            .expect("wait for the runner");
        status.code()
    }

    /// Waits until the runner's log contains `text`.
    pub async fn wait_log(&self, text: &str) {
        wait_until(
            &format!("runner log to contain {text:?}"),
            START_DEADLINE,
            async || self.log().contains(text).then_some(()),
        )
        .await
    }
}

impl Drop for Runner {
    /// Stops the runner the way an operator does: the first SIGTERM drains,
    /// the second cancels active runs so their process groups are stopped
    /// too. SIGKILL follows if it has not exited after ten seconds.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = Pid::from_raw(self.pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(100));
        let _ = kill(pid, Signal::SIGTERM);
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = self.child.start_kill();
    }
}

/// A MySQL metadata workflow without secret references, for runs whose
/// config does not matter.
pub const PLAIN_WORKFLOW: &str = "
source:
  type: mysql
  serviceName: local_mysql
  serviceConnection:
    config:
      type: Mysql
      username: openmetadata_user
      hostPort: mysql.internal:3306
  sourceConfig:
    config:
      type: DatabaseMetadata
sink:
  type: metadata-rest
  config: {}
";

/// Returns a run submission of pipeline type `metadata` for `agent_id`.
pub fn submission(agent_id: &str, config: &str) -> Value {
    json!({
        "agentId": agent_id,
        "pipelineFqn": "test_service.test_pipeline",
        "pipelineType": "metadata",
        "config": config,
    })
}

/// Asserts the run was rejected with `code` and returns the reason.
pub fn rejection_reason(document: &Value, code: &str) -> String {
    assert_eq!(document["outcome"], "rejected", "outcome of {document}");
    assert_eq!(
        document["rejection"]["code"], code,
        "rejection code of {document}"
    );
    document["rejection"]["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no rejection reason in {document}"))
        .to_string()
}
