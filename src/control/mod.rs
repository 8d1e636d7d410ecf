//! The outbound session with the control plane.
//!
//! This is the only part that speaks the wire protocol. It dials out over
//! WebSocket (TLS unless the URL is a loopback `ws://`), authenticates with the
//! bearer token, sends `hello`, replays the outbox after `welcome`, sends
//! heartbeats, and hands decoded requests to the dispatcher as [`Inbound`]
//! events. A lost connection is retried with exponential backoff and full
//! jitter; the token is read again at every attempt.

mod journal;
pub mod outbox;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::config::ControlPlaneConfig;
use crate::protocol::{DecodeError, Envelope, Heartbeat, Hello, ServerMessage, Welcome};
use crate::redact::Redactor;
pub use outbox::Outbox;

/// Maximum wait for `welcome` after `hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);

/// Maximum time a non-urgent message (queued/running status, log chunk)
/// waits to share a write with later ones. A short run's messages then go
/// out in one write together with its final status.
const COALESCE_WINDOW: Duration = Duration::from_millis(20);

/// Shortest time between a heartbeat and one sent early because the active
/// runs or the draining flag changed.
const MIN_HEARTBEAT_GAP: Duration = Duration::from_millis(200);

/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A request from the control plane for the dispatcher.
#[derive(Debug)]
pub enum Inbound {
    Message(ServerMessage),
}

/// Produces the runner's current state for `hello` and heartbeats.
pub type StatusFn = Arc<dyn Fn() -> Heartbeat + Send + Sync>;

/// The runner state the session reports, and the signal that it changed.
pub struct StatusSource {
    pub snapshot: StatusFn,
    /// Notified when active runs or draining change.
    pub changed: Arc<tokio::sync::Notify>,
}

/// Static facts sent in `hello`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent_id: String,
    pub instance_id: String,
    pub pipeline_types: Vec<String>,
}

/// Reason one connection attempt or session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Token(#[from] crate::config::TokenError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("connect failed: {0}")]
    Connect(String),
    #[error(
        "the control plane rejected the bearer token (HTTP {0}); check control_plane.token_file or token_env and that this runner is registered"
    )]
    Unauthorized(u16),
    #[error("timed out")]
    Timeout,
    #[error("the control plane closed the session")]
    Closed,
    #[error("session failed: {0}")]
    Socket(String),
    #[error("expected welcome, received {0}")]
    NoWelcome(String),
}

/// The control session; `run` keeps it connected until shutdown.
pub struct Session {
    config: ControlPlaneConfig,
    identity: Identity,
    outbox: Arc<Outbox>,
    redactor: Arc<Redactor>,
    status: StatusFn,
    inbound: mpsc::Sender<Inbound>,
    max_message_bytes: usize,
    /// Notified when the state reported by `status` changes.
    status_changed: Arc<tokio::sync::Notify>,
}

impl Session {
    pub fn new(
        config: ControlPlaneConfig,
        identity: Identity,
        outbox: Arc<Outbox>,
        redactor: Arc<Redactor>,
        status: StatusSource,
        inbound: mpsc::Sender<Inbound>,
        max_message_bytes: usize,
    ) -> Self {
        Session {
            config,
            identity,
            outbox,
            redactor,
            status: status.snapshot,
            inbound,
            max_message_bytes,
            status_changed: status.changed,
        }
    }

    /// Connects and reconnects until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        loop {
            let started = tokio::time::Instant::now();
            let mut established = false;
            let result = tokio::select! {
                result = self.connect_and_serve(&shutdown, &mut established) => result,
                () = shutdown.cancelled() => return,
            };
            if shutdown.is_cancelled() {
                return;
            }
            if started.elapsed() >= STABLE_SESSION {
                attempt = 0;
            }
            attempt = attempt.saturating_add(1);
            let delay = crate::backoff::full_jitter(
                attempt,
                self.config.reconnect_initial_delay,
                self.config.reconnect_max_delay,
            );
            let error = match result {
                Ok(()) => SessionError::Closed.to_string(),
                Err(error) => error.to_string(),
            };
            let error = self.redactor.redact(&error);
            if established {
                tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, %error, "control plane session lost; reconnecting");
            } else {
                tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, %error, "connection to the control plane failed; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn connect_and_serve(
        &self,
        shutdown: &CancellationToken,
        established: &mut bool,
    ) -> Result<(), SessionError> {
        let mut socket = self.connect().await?;
        let welcome = self.handshake(&mut socket).await?;
        *established = true;
        tracing::info!(
            agent_id = %self.identity.agent_id,
            session_id = %welcome.session_id,
            acked_seq = welcome.acked_seq,
            pending = self.outbox.pending(),
            "connected to control plane"
        );
        self.outbox.ack(welcome.acked_seq);
        let interval = Duration::from_millis(welcome.heartbeat_interval_ms.max(100)).min(
            self.config
                .heartbeat_interval
                .max(Duration::from_millis(100)),
        );
        self.serve(socket, welcome.acked_seq, interval, shutdown)
            .await
    }

    async fn connect(&self) -> Result<Socket, SessionError> {
        let token = self.config.token.read()?;
        let mut request = self
            .config
            .url
            .as_str()
            .into_client_request()
            .map_err(|error| SessionError::Connect(error.to_string()))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            SessionError::Connect("the token contains characters not allowed in a header".into())
        })?;
        request.headers_mut().insert("Authorization", bearer);

        let connector = if self.config.url.starts_with("wss://") {
            Some(Connector::Rustls(crate::tls::client_config(
                self.config.ca_file.as_deref(),
            )?))
        } else {
            Some(Connector::Plain)
        };
        let websocket_config = WebSocketConfig::default()
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes));
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(websocket_config),
            true,
            connector,
        );
        let (socket, _response) = tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .map_err(|_| SessionError::Timeout)?
            .map_err(connect_error)?;
        Ok(socket)
    }

    async fn handshake(&self, socket: &mut Socket) -> Result<Welcome, SessionError> {
        let status = (self.status)();
        let hello = Hello {
            agent_id: self.identity.agent_id.clone(),
            version: crate::VERSION.to_string(),
            instance_id: self.identity.instance_id.clone(),
            capacity: status.capacity,
            pipeline_types: self.identity.pipeline_types.clone(),
            active_runs: status.active_runs,
        };
        self.send(socket, &Envelope::new(&hello, None).encode())
            .await?;
        let frame = tokio::time::timeout(WELCOME_TIMEOUT, next_text(socket))
            .await
            .map_err(|_| SessionError::Timeout)??;
        let envelope =
            Envelope::decode(&frame).map_err(|error| SessionError::NoWelcome(error.to_string()))?;
        match ServerMessage::from_envelope(&envelope) {
            Ok(ServerMessage::Welcome(welcome)) => Ok(welcome),
            Ok(_) => Err(SessionError::NoWelcome(envelope.kind)),
            Err(error) => Err(SessionError::NoWelcome(error.to_string())),
        }
    }

    async fn serve(
        &self,
        mut socket: Socket,
        acked: u64,
        heartbeat_interval: Duration,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let mut sent_up_to = acked;
        // A change of active runs or draining is reported before the next
        // regular heartbeat, no sooner than MIN_HEARTBEAT_GAP after the last one.
        let mut status_dirty = false;
        let mut last_heartbeat = tokio::time::Instant::now();
        let mut heartbeat = tokio::time::interval(heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Registered before reading the outbox, so a push in between wakes us.
            let added = self.outbox.added();
            // Entries are queued with `feed` and written with one flush.
            let entries = self.outbox.after(sent_up_to);
            if let Some(last) = entries.last() {
                let last_seq = last.seq;
                for entry in entries {
                    let frame = self.redactor.redact(&entry.frame).into_owned();
                    socket
                        .feed(Frame::text(frame))
                        .await
                        .map_err(|error| SessionError::Socket(error.to_string()))?;
                }
                socket
                    .flush()
                    .await
                    .map_err(|error| SessionError::Socket(error.to_string()))?;
                sent_up_to = last_seq;
            }
            let early_heartbeat = last_heartbeat + MIN_HEARTBEAT_GAP;
            tokio::select! {
                frame = socket.next() => self.receive(frame).await?,
                () = added => self.coalesce(sent_up_to).await,
                () = self.status_changed.notified(), if !status_dirty => status_dirty = true,
                () = tokio::time::sleep_until(early_heartbeat), if status_dirty => {
                    self.send_heartbeat(&mut socket).await?;
                    (status_dirty, last_heartbeat) = (false, tokio::time::Instant::now());
                }
                _ = heartbeat.tick() => {
                    self.send_heartbeat(&mut socket).await?;
                    (status_dirty, last_heartbeat) = (false, tokio::time::Instant::now());
                }
                () = shutdown.cancelled() => {
                    let _ = socket.close(None).await;
                    return Ok(());
                }
            }
        }
    }

    async fn send_heartbeat(&self, socket: &mut Socket) -> Result<(), SessionError> {
        let frame = Envelope::new(&(self.status)(), None).encode();
        self.send(socket, &frame).await
    }

    /// Waits up to [`COALESCE_WINDOW`] for more entries, ending early when an
    /// urgent one is pending.
    async fn coalesce(&self, sent_up_to: u64) {
        let deadline = tokio::time::Instant::now() + COALESCE_WINDOW;
        loop {
            let added = self.outbox.added();
            if self.outbox.has_urgent_after(sent_up_to) {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                () = added => {}
            }
        }
    }

    async fn receive(
        &self,
        frame: Option<Result<Frame, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), SessionError> {
        let text = match frame {
            None | Some(Ok(Frame::Close(_))) => return Err(SessionError::Closed),
            Some(Err(error)) => return Err(SessionError::Socket(error.to_string())),
            Some(Ok(Frame::Text(text))) => text,
            Some(Ok(_)) => return Ok(()),
        };
        let message = Envelope::decode(&text).and_then(|envelope| {
            self.check_signature(&envelope)?;
            ServerMessage::from_envelope(&envelope)
        });
        match message {
            Ok(ServerMessage::Ack(ack)) => self.outbox.ack(ack.seq),
            Ok(ServerMessage::Welcome(_)) => tracing::warn!("ignoring a second welcome"),
            Ok(message) => {
                if self.inbound.send(Inbound::Message(message)).await.is_err() {
                    return Err(SessionError::Closed);
                }
            }
            Err(error) => {
                self.reject_frame(&text, &error);
            }
        }
        Ok(())
    }

    /// Checks the signature of a `run.request` when `control_plane.signing`
    /// is set. Other message types are not signed.
    fn check_signature(&self, envelope: &Envelope) -> Result<(), DecodeError> {
        let Some(verifier) = &self.config.signing else {
            return Ok(());
        };
        if envelope.kind != "run.request" {
            return Ok(());
        }
        verifier
            .verify(&envelope.payload, envelope.signature.as_deref())
            .map_err(DecodeError::Signature)
    }

    /// Logs a frame that could not be decoded. A run request that fails to
    /// decode also gets a `run.rejected` with the decode error.
    fn reject_frame(&self, text: &str, error: &DecodeError) {
        let code = match error {
            DecodeError::Signature(_) => crate::protocol::RejectCode::InvalidSignature,
            _ => crate::protocol::RejectCode::InvalidRequest,
        };
        let error = error.to_string();
        tracing::warn!(error = %self.redactor.redact(&error), "ignoring an invalid message from the control plane");
        // Only the type and run id are read, and serde_json skips the other
        // fields without checking their escapes, so a request whose config
        // contains an unpaired surrogate still gets its rejection.
        let Ok(head) = serde_json::from_str::<FrameHead>(text) else {
            return;
        };
        if head.kind != "run.request" {
            return;
        }
        let Some(run_id) = head.payload.and_then(|payload| payload.run_id) else {
            return;
        };
        self.outbox.push(&crate::protocol::RunRejected {
            run_id: run_id.chars().take(128).collect(),
            code,
            reason: format!("invalid run request: {error}"),
        });
    }

    async fn send(&self, socket: &mut Socket, frame: &str) -> Result<(), SessionError> {
        let frame = self.redactor.redact(frame);
        socket
            .send(Frame::text(frame.into_owned()))
            .await
            .map_err(|error| SessionError::Socket(error.to_string()))
    }
}

/// Fields of a frame needed to reject a run request that failed to decode.
#[derive(serde::Deserialize)]
struct FrameHead {
    #[serde(rename = "type")]
    kind: String,
    payload: Option<PayloadHead>,
}

#[derive(serde::Deserialize)]
struct PayloadHead {
    #[serde(rename = "runId")]
    run_id: Option<String>,
}

/// Names a rejected token plainly; other failures keep the library's message.
fn connect_error(error: tokio_tungstenite::tungstenite::Error) -> SessionError {
    use tokio_tungstenite::tungstenite::Error;
    match &error {
        Error::Http(response) if matches!(response.status().as_u16(), 401 | 403) => {
            SessionError::Unauthorized(response.status().as_u16())
        }
        _ => SessionError::Connect(error.to_string()),
    }
}

async fn next_text(socket: &mut Socket) -> Result<String, SessionError> {
    loop {
        match socket.next().await {
            None | Some(Ok(Frame::Close(_))) => return Err(SessionError::Closed),
            Some(Err(error)) => return Err(SessionError::Socket(error.to_string())),
            Some(Ok(Frame::Text(text))) => return Ok(text.to_string()),
            Some(Ok(_)) => {}
        }
    }
}
