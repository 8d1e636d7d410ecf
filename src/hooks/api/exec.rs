//! `runner.exec{...}`: runs a program without a shell.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use mlua::{Lua, LuaSerdeExt, Table};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::{error_at, json_to_lua};
use crate::hooks::HookRedactor;

/// Default and maximum time limit of one command.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Output kept per stream; the rest is dropped.
const MAX_OUTPUT_BYTES: u64 = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecRequest {
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    timeout: Option<f64>,
}

/// Registers `runner.exec{cmd=..., args={...}, env={...}, cwd=..., timeout=...}`.
/// The program runs without a shell in its own process group, with only
/// `PATH` and the given variables. It returns `{code, stdout, stderr,
/// timedOut}` with secrets masked; on timeout the whole group is killed.
pub(crate) fn register_exec(
    lua: &Lua,
    runner: &Table,
    redactor: Option<HookRedactor>,
) -> mlua::Result<()> {
    let exec = lua.create_async_function(move |lua, request: mlua::Value| {
        let redactor = redactor.clone();
        async move {
            let request: ExecRequest = lua.from_value(request).map_err(|error| {
                error_at(&lua, format!("runner.exec: invalid request: {error}"))
            })?;
            let timeout = match request.timeout {
                Some(seconds) => Duration::try_from_secs_f64(seconds).map_err(|_| {
                    error_at(
                        &lua,
                        "runner.exec: timeout must be a number of seconds >= 0",
                    )
                })?,
                None => DEFAULT_TIMEOUT,
            }
            .min(MAX_TIMEOUT);
            let result = run(&request, timeout).await.map_err(|error| {
                error_at(
                    &lua,
                    format!("runner.exec: cannot run {:?}: {error}", request.cmd),
                )
            })?;
            let json = serde_json::json!({
                "code": result.code,
                "stdout": HookRedactor::mask(&redactor, &result.stdout),
                "stderr": HookRedactor::mask(&redactor, &result.stderr),
                "timedOut": result.timed_out,
            });
            json_to_lua(&lua, &json)
        }
    })?;
    runner.raw_set("exec", exec)
}

struct ExecResult {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

async fn run(request: &ExecRequest, timeout: Duration) -> std::io::Result<ExecResult> {
    let mut command = tokio::process::Command::new(&request.cmd);
    command
        .args(&request.args)
        .env_clear()
        .envs(std::env::var("PATH").map(|path| ("PATH".to_string(), path)))
        .envs(&request.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &request.cwd {
        command.current_dir(cwd);
    }

    let mut child = command.spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().map(read_capped);
    let stderr = child.stderr.take().map(read_capped);
    let (code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (status?.code(), false),
        Err(_) => (None, true),
    };
    // The group goes in both cases, so no grandchild outlives the call.
    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.wait().await;

    let stdout = match stdout {
        Some(task) => task.await.unwrap_or_default(),
        None => String::new(),
    };
    let stderr = match stderr {
        Some(task) => task.await.unwrap_or_default(),
        None => String::new(),
    };
    Ok(ExecResult {
        code,
        stdout,
        stderr,
        timed_out,
    })
}

fn read_capped(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        let mut limited = stream.take(MAX_OUTPUT_BYTES);
        let _ = limited.read_to_end(&mut bytes).await;
        // The rest is read and dropped, so a full pipe does not stall the program.
        let mut rest = limited.into_inner();
        let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
