//! hybrid-runner: an agent that runs OpenMetadata ingestion workflows inside the
//! customer's cloud and resolves their secrets locally.
//!
//! The runner dials out to a SaaS control plane over a WebSocket, receives run
//! requests, resolves the `secret:` references in each workflow config from the
//! customer's secrets store, runs the workflow as a local process and streams
//! redacted logs and status back.
//!
//! Parts, each in its own module:
//!
//! - [`config`]: `runner.yaml` loading, `${VAR}` expansion and validation.
//! - [`protocol`]: the wire envelope and message types shared with the control plane.
//! - [`control`]: the outbound session: connect, hello, heartbeat, reconnect, outbox.
//! - [`dispatch`]: run lifecycle: accept or reject, capacity, cancel, timeout.
//! - [`secrets`]: references, access policy, providers, resolution.
//! - [`workflow`]: OpenMetadata workflow config parsing and validation.
//! - [`exec`]: runs one workflow as a local process.
//! - [`openmetadata`]: sets the runner's OpenMetadata server and bot token in workflow configs.
//! - [`hooks`]: the Lua hook engine: sandboxed states, the runner API, hot reload.
//! - [`prechecks`]: scheduled checks of the runner's surroundings that can gate runs.
//! - [`redact`]: the streaming redactor that every outgoing byte passes through.
//! - [`signing`]: Ed25519 signatures of run requests (detached JWS).
//! - [`control_plane`]: the reference control plane for development and tests.
//! - [`quickstart`]: the one-command demo.
#![forbid(unsafe_code)]

pub mod agent;
pub mod backoff;
pub mod commands;
pub mod config;
pub mod control;
pub mod control_plane;
pub mod demo;
pub mod dispatch;
pub mod exec;
pub mod hooks;
pub mod logging;
pub mod openmetadata;
pub mod prechecks;
pub mod protocol;
pub mod quickstart;
pub mod redact;
pub mod secrets;
pub mod signing;
pub mod tls;
pub mod workflow;

/// The runner's version, sent in `hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Returns the current wall-clock time in milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
