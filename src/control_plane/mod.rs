//! Reference control plane: a small server that speaks the runner protocol.
//!
//! It is meant for development, demos and tests. Production runners connect to
//! the SaaS control plane instead. This module owns:
//!
//! - the WebSocket endpoint [`protocol::CONNECT_PATH`] that runners dial, with
//!   bearer-token authentication, `hello`/`welcome`, heartbeat tracking and
//!   cumulative `ack`s of sequenced messages (`session.rs`).
//! - an in-memory record of runners, runs, statuses and log lines (`store.rs`),
//!   which is lost when the process stops.
//! - a JSON HTTP API under `/v1/` to list runners, submit, inspect, wait for and
//!   cancel runs, drain runners and send custom messages (`api.rs`).
//! - the subset of the OpenMetadata REST API under `/api/v1/` that the
//!   `metadata` CLI calls for a database metadata ingestion and a test
//!   connection, with an in-memory store of what it sends (`openmetadata/`).
//! - a Rust API ([`start`], [`ControlPlaneHandle`]) for in-process use, for
//!   example by benchmarks that measure request-to-final latency.
//!
//! The HTTP API is open to anyone who can reach the listen address unless
//! [`ControlPlaneOptions::api_token`] is set, which is acceptable for a
//! development tool on a local address only. Runner tokens are not bound to
//! agent ids, so any configured runner token may connect as any agent id.
//!
//! [`protocol::CONNECT_PATH`]: crate::protocol::CONNECT_PATH

mod api;
mod auth;
mod openmetadata;
mod session;
mod state;
mod store;
mod submission;
mod tls;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::protocol::{CONNECT_PATH, PipelineState};

pub use submission::RunSubmission;

use state::Shared;

/// Heartbeat interval announced in `welcome` when the caller has no preference.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// Number of heartbeat intervals without a heartbeat after which a runner
/// counts as disconnected and its session is closed.
pub const HEARTBEAT_TIMEOUT_INTERVALS: u32 = 3;

/// Time that [`ControlPlaneHandle::shutdown`] gives open HTTP connections and
/// runner sessions to finish before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// PEM files for serving HTTPS and WSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Settings of one control plane server.
#[derive(Clone)]
pub struct ControlPlaneOptions {
    /// Address to listen on. Port 0 picks a free port, which
    /// [`ControlPlaneHandle::local_addr`] returns.
    pub listen: SocketAddr,
    /// Bearer tokens that runners may present on [`CONNECT_PATH`].
    pub runner_tokens: Vec<String>,
    /// Bearer token required on every `/v1/` request. `None` leaves the API open.
    pub api_token: Option<String>,
    /// Certificate and key for HTTPS/WSS. `None` serves plain HTTP/WS.
    pub tls: Option<TlsFiles>,
    /// Heartbeat interval announced to runners in `welcome`.
    pub heartbeat_interval: Duration,
    /// Key that signs every `run.request`. `None` sends requests unsigned.
    pub signer: Option<Arc<crate::signing::RequestSigner>>,
}

impl ControlPlaneOptions {
    /// Creates options for plain HTTP with an open API and the default heartbeat interval.
    pub fn new(listen: SocketAddr, runner_tokens: Vec<String>) -> Self {
        ControlPlaneOptions {
            listen,
            runner_tokens,
            api_token: None,
            tls: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            signer: None,
        }
    }
}

/// Prints the settings with tokens replaced by their count, so options can be logged.
impl fmt::Debug for ControlPlaneOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlaneOptions")
            .field("listen", &self.listen)
            .field(
                "runner_tokens",
                &format!("<{} tokens>", self.runner_tokens.len()),
            )
            .field("api_token", &self.api_token.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("signer", &self.signer)
            .finish()
    }
}

/// Errors of the control plane's Rust API, which HTTP handlers map to status codes.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The listen address could not be bound.
    #[error("failed to listen on {addr}: {source}; choose a free port or another address")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A [`ControlPlaneOptions`] field has an unusable value.
    #[error("invalid control plane option {option}: {problem}")]
    InvalidOption {
        option: &'static str,
        problem: String,
    },
    /// The TLS certificate or private key could not be read or used.
    #[error("failed to load the TLS {file_kind} from {}: {problem}", path.display())]
    Tls {
        /// `certificate` or `private key`.
        file_kind: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// A run submission has a missing or invalid field, named in the message.
    #[error("invalid run submission: {0}")]
    InvalidSubmission(String),
    /// The runner is unknown, has no open session or missed its heartbeats.
    #[error(
        "runner {agent_id:?} is not connected; start it, or wait until GET /v1/runners lists it as Connected"
    )]
    RunnerNotConnected { agent_id: String },
    /// A submission chose a run id that is already recorded.
    #[error("run {run_id:?} already exists; omit runId to get a new one, or choose another runId")]
    DuplicateRun { run_id: String },
    /// No run with this id is recorded.
    #[error("run {run_id:?} not found; list known runs with GET /v1/runs")]
    RunNotFound { run_id: String },
    /// A cancel request named a run that already has its final outcome.
    #[error("run {run_id:?} already finished; there is nothing to cancel")]
    RunFinished { run_id: String },
}

/// Something that happened on the control plane, for in-process observers.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlPlaneEvent {
    /// A runner completed `hello` and received `welcome`.
    RunnerConnected {
        agent_id: String,
        instance_id: String,
        session_id: String,
    },
    /// A runner's current session ended. A session that a newer one replaced does not produce this event.
    RunnerDisconnected {
        agent_id: String,
        session_id: String,
    },
    /// A `run.request` was handed to a runner's session.
    RunSubmitted {
        run_id: String,
        agent_id: String,
        /// When the request was queued for sending.
        at: Instant,
    },
    /// A run reached its final outcome: a final `run.status` or a `run.rejected`.
    RunFinal {
        run_id: String,
        agent_id: String,
        /// Final pipeline state, or `None` for a rejected run.
        state: Option<PipelineState>,
        rejected: bool,
        /// When the frame carrying the final outcome arrived.
        at: Instant,
        /// When this control plane sent the `run.request`. It is `None` for runs
        /// it did not submit, such as runs reported again after a restart.
        submitted_at: Option<Instant>,
    },
}

/// A running control plane server.
///
/// Dropping the handle stops the server without waiting, while
/// [`shutdown`](Self::shutdown) also waits for connections and sessions to close.
pub struct ControlPlaneHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    server: axum_server::Handle,
    serve_task: Option<JoinHandle<()>>,
}

impl ControlPlaneHandle {
    /// Returns the bound address, with the real port when the listen port was 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Subscribes to control plane events from now on.
    pub fn events(&self) -> broadcast::Receiver<ControlPlaneEvent> {
        self.shared.subscribe()
    }

    /// Sends a `run.request` to the runner's live session and returns the run id.
    ///
    /// This is the path `POST /v1/runs` takes. The send time is recorded and
    /// reported as `submitted_at` in [`ControlPlaneEvent::RunFinal`].
    pub async fn submit(&self, submission: RunSubmission) -> Result<String, ControlPlaneError> {
        self.shared.submit(submission)
    }

    /// Stops accepting connections, closes runner sessions and waits up to
    /// five seconds for them to end.
    pub async fn shutdown(mut self) {
        tracing::info!(addr = %self.local_addr, "control plane shutting down");
        self.shared.begin_shutdown();
        self.server.graceful_shutdown(Some(SHUTDOWN_GRACE));
        self.shared.wait_for_sessions(SHUTDOWN_GRACE).await;
        if let Some(task) = self.serve_task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "control plane server task ended abnormally");
        }
        tracing::info!(addr = %self.local_addr, "control plane stopped");
    }
}

impl Drop for ControlPlaneHandle {
    fn drop(&mut self) {
        if self.serve_task.is_some() {
            self.shared.begin_shutdown();
            self.server.shutdown();
        }
    }
}

/// Binds the listen address and serves the WebSocket endpoint and the HTTP API
/// on a background task.
///
/// Fails when an option is invalid, the address cannot be bound or the TLS
/// files cannot be loaded. The error names the value and what to change.
pub async fn start(options: ControlPlaneOptions) -> Result<ControlPlaneHandle, ControlPlaneError> {
    validate_options(&options)?;
    let tls_config = match &options.tls {
        Some(files) => Some(tls::load_config(files).await?),
        None => None,
    };

    let listener = bind_listener(options.listen)?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ControlPlaneError::Bind {
            addr: options.listen,
            source,
        })?;

    let shared = Arc::new(Shared::new(&options));
    let app = build_router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum_server::Handle::new();
    let serve_handle = server.clone();
    let serve_task = tokio::spawn(async move {
        let result = match tls_config {
            // TCP_NODELAY: small frames such as a final status go out at once
            // instead of waiting for the peer's delayed ACK (about 40 ms).
            Some(config) => {
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                    .acceptor(axum_server::accept::NoDelayAcceptor::new());
                axum_server::from_tcp(listener)
                    .acceptor(acceptor)
                    .handle(serve_handle)
                    .serve(app)
                    .await
            }
            None => {
                axum_server::from_tcp(listener)
                    .acceptor(axum_server::accept::NoDelayAcceptor::new())
                    .handle(serve_handle)
                    .serve(app)
                    .await
            }
        };
        if let Err(error) = result {
            tracing::error!(addr = %local_addr, %error, "control plane server failed");
        }
    });

    log_started(&options, local_addr);
    Ok(ControlPlaneHandle {
        shared,
        local_addr,
        server,
        serve_task: Some(serve_task),
    })
}

fn build_router(shared: Arc<Shared>) -> Router {
    let agent = Router::new()
        .route(CONNECT_PATH, get(session::connect))
        .with_state(shared.clone());
    let openmetadata = openmetadata::router(shared.clone());
    api::router(shared).merge(agent).merge(openmetadata)
}

fn bind_listener(addr: SocketAddr) -> Result<std::net::TcpListener, ControlPlaneError> {
    let bind_error = |source| ControlPlaneError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok(listener)
}

fn validate_options(options: &ControlPlaneOptions) -> Result<(), ControlPlaneError> {
    if options.runner_tokens.is_empty() {
        return Err(ControlPlaneError::InvalidOption {
            option: "runner_tokens",
            problem: "no token is configured, so no runner could connect; add at least one token"
                .to_string(),
        });
    }
    if let Some(index) = options
        .runner_tokens
        .iter()
        .position(|t| t.trim().is_empty())
    {
        return Err(ControlPlaneError::InvalidOption {
            option: "runner_tokens",
            problem: format!(
                "token number {} is empty; remove it or set a value",
                index + 1
            ),
        });
    }
    if options
        .api_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err(ControlPlaneError::InvalidOption {
            option: "api_token",
            problem: "the token is empty; set a value, or leave it unset to keep the API open"
                .to_string(),
        });
    }
    if options.heartbeat_interval.is_zero() {
        return Err(ControlPlaneError::InvalidOption {
            option: "heartbeat_interval",
            problem: "the interval is zero; use a positive duration such as 15 seconds".to_string(),
        });
    }
    Ok(())
}

fn log_started(options: &ControlPlaneOptions, local_addr: SocketAddr) {
    tracing::info!(
        addr = %local_addr,
        tls = options.tls.is_some(),
        runner_tokens = options.runner_tokens.len(),
        heartbeat_interval_ms = options.heartbeat_interval.as_millis() as u64,
        "control plane listening"
    );
    if options.api_token.is_none() {
        tracing::warn!(
            addr = %local_addr,
            "the /v1/ HTTP API has no token and is open to every client that reaches this address; \
             set an API token unless this is a local development setup"
        );
    }
}
