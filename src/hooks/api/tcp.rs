//! `runner.tcp.check(host, port, timeout)`: a reachability check.

use std::time::{Duration, Instant};

use mlua::{Lua, Table};

use super::{error_at, sub_table};

/// Maximum timeout of a check.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Registers `runner.tcp.check(host, port, timeout_seconds)`. It returns
/// `true, elapsed_ms` when a TCP connection opens, or `false, message` when
/// it fails or times out. Only the handshake happens; nothing is sent.
pub(crate) fn register_tcp(lua: &Lua, runner: &Table) -> mlua::Result<()> {
    let tcp = sub_table(lua, runner, "tcp")?;
    let check = lua.create_async_function(
        |lua, (host, port, timeout): (String, u16, Option<f64>)| async move {
            let timeout = Duration::try_from_secs_f64(timeout.unwrap_or(5.0))
                .map_err(|_| {
                    error_at(
                        &lua,
                        "runner.tcp.check: the timeout must be a number of seconds >= 0",
                    )
                })?
                .min(MAX_TIMEOUT);
            if host.is_empty() || port == 0 {
                return Err(error_at(
                    &lua,
                    "runner.tcp.check: expected a host and a port from 1 to 65535",
                ));
            }
            let started = Instant::now();
            let connect = tokio::net::TcpStream::connect((host.as_str(), port));
            let result = match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(_stream)) => (true, started.elapsed().as_millis().to_string()),
                Ok(Err(error)) => (false, format!("cannot connect to {host}:{port}: {error}")),
                Err(_) => (
                    false,
                    format!(
                        "connecting to {host}:{port} timed out after {}",
                        humantime::format_duration(timeout)
                    ),
                ),
            };
            Ok(result)
        },
    )?;
    tcp.raw_set("check", check)
}
