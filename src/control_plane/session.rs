//! Runner sessions on the WebSocket endpoint.
//!
//! A session starts when a runner with a valid token upgrades the connection
//! and sends `hello`, and the control plane replies `welcome`. After that, one task
//! per session reads the runner's frames, acknowledges sequenced messages,
//! forwards frames queued by the API, and closes the socket when the runner
//! misses its heartbeats, is replaced by a newer session or the server stops.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{
    CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade, close_code,
};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ControlPlaneEvent;
use super::api::{ApiError, unauthorized};
use super::auth;
use super::state::Shared;
use super::store::{Outgoing, SessionLink};
use crate::protocol::{Ack, Envelope, Hello, RunnerMessage, Welcome};
use futures_util::FutureExt;

/// Maximum length in bytes of a close reason, because RFC 6455 limits a close
/// frame's payload to 125 bytes including the 2-byte code.
const MAX_CLOSE_REASON: usize = 123;

/// Number of ignored frames per session that are each logged. After these, only
/// every hundredth is logged so a misbehaving runner cannot flood the log.
const LOGGED_IGNORED_FRAMES: u64 = 10;

/// Handles `GET /agent/v1/connect`: checks the runner token, then upgrades.
pub(super) async fn connect(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Err(problem) = auth::check_bearer(&headers, &shared.runner_tokens) {
        let rejected_total = shared.count_rejected_connection();
        tracing::warn!(%remote, reason = problem.describe(), rejected_total, "rejected runner connection");
        return unauthorized(
            "missing or invalid runner token; send Authorization: Bearer <token> with one of the \
             runner tokens this control plane is configured with",
        );
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let message = format!(
                "{} accepts only WebSocket upgrade requests: {}",
                crate::protocol::CONNECT_PATH,
                rejection.body_text()
            );
            return ApiError::new(rejection.status(), message).into_response();
        }
    };
    if shared.shutdown.is_cancelled() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control plane is shutting down; reconnect to its replacement".to_string(),
        )
        .into_response();
    }
    let tracker = shared.sessions.clone();
    upgrade.on_upgrade(move |socket| tracker.track_future(serve_session(shared, socket, remote)))
}

/// Cause of a session's end, for the disconnect log line.
#[derive(Debug)]
enum EndReason {
    ClosedByRunner,
    SocketError(String),
    Replaced,
    HeartbeatTimeout,
    Shutdown,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::ClosedByRunner => write!(f, "the runner closed the connection"),
            EndReason::SocketError(error) => write!(f, "socket error: {error}"),
            EndReason::Replaced => write!(f, "a newer session of the same agent id replaced it"),
            EndReason::HeartbeatTimeout => write!(f, "heartbeats stopped arriving"),
            EndReason::Shutdown => write!(f, "the control plane is shutting down"),
        }
    }
}

/// One runner session after `hello`.
struct Session {
    shared: Arc<Shared>,
    agent_id: String,
    instance_id: String,
    session_id: String,
    last_heartbeat: Instant,
    ignored_frames: u64,
    /// Time the session was registered.
    started: std::time::Instant,
    /// Whether unanswered run requests were sent again at the first heartbeat.
    resent_unanswered: bool,
}

async fn serve_session(shared: Arc<Shared>, mut socket: WebSocket, remote: SocketAddr) {
    let Some(hello) = receive_hello(&shared, &mut socket, remote).await else {
        return;
    };
    let (session_id, acked_seq, inbox) = register(&shared, &hello, remote);

    let welcome = Welcome {
        session_id: session_id.clone(),
        heartbeat_interval_ms: shared.heartbeat_interval.as_millis() as u64,
        acked_seq,
    };
    let mut session = Session {
        shared,
        agent_id: hello.agent_id,
        instance_id: hello.instance_id,
        session_id,
        last_heartbeat: Instant::now(),
        ignored_frames: 0,
        started: std::time::Instant::now(),
        resent_unanswered: false,
    };
    let end = match send_text(&mut socket, Envelope::new(&welcome, None).encode()).await {
        Ok(()) => session.run(&mut socket, inbox).await,
        Err(error) => EndReason::SocketError(error.to_string()),
    };
    session.finish(end);
}

/// Makes a new session the runner's current one and closes the session it
/// replaces. Returns the session id, the `ackedSeq` for `welcome` and the
/// receiver of frames queued for this session.
fn register(
    shared: &Shared,
    hello: &Hello,
    remote: SocketAddr,
) -> (String, u64, mpsc::UnboundedReceiver<Outgoing>) {
    let session_id = uuid::Uuid::new_v4().to_string();
    let (outbox, inbox) = mpsc::unbounded_channel();
    let link = SessionLink {
        session_id: session_id.clone(),
        outbox,
    };
    let registration = shared.store().register_session(hello, link);
    if let Some(previous) = registration.replaced {
        tracing::info!(
            agent_id = %hello.agent_id,
            previous_session_id = %previous.session_id,
            "closing the previous session of this runner"
        );
        let reason = "replaced by a newer session of the same agent id".to_string();
        let _ = previous.outbox.send(Outgoing::Close(reason));
    }

    tracing::info!(
        agent_id = %hello.agent_id,
        instance_id = %hello.instance_id,
        version = %hello.version,
        %session_id,
        %remote,
        acked_seq = registration.acked_seq,
        "runner connected"
    );
    shared.emit(ControlPlaneEvent::RunnerConnected {
        agent_id: hello.agent_id.clone(),
        instance_id: hello.instance_id.clone(),
        session_id: session_id.clone(),
    });
    (session_id, registration.acked_seq, inbox)
}

/// Waits for the first frame, which must be a valid `hello`, and closes the
/// socket and returns `None` otherwise.
async fn receive_hello(
    shared: &Shared,
    socket: &mut WebSocket,
    remote: SocketAddr,
) -> Option<Hello> {
    let limit = shared.stale_after();
    let deadline = Instant::now() + limit;
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout_at(deadline, socket.recv()) => frame,
            () = shared.shutdown.cancelled() => {
                close_socket(socket, close_code::AWAY, "the control plane is shutting down").await;
                return None;
            }
        };
        let problem = match frame {
            Ok(Some(Ok(WsMessage::Text(text)))) => match parse_hello(text.as_str()) {
                Ok(hello) => return Some(hello),
                Err(problem) => problem,
            },
            Ok(Some(Ok(WsMessage::Binary(_)))) => {
                "the first frame must be a hello text frame".to_string()
            }
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            Ok(Some(Ok(WsMessage::Close(_))) | None) => return None,
            Ok(Some(Err(error))) => {
                tracing::debug!(%remote, %error, "runner connection failed before hello");
                return None;
            }
            Err(_elapsed) => format!("no hello arrived within {} ms", limit.as_millis()),
        };
        tracing::warn!(%remote, %problem, "rejected runner session");
        close_socket(socket, close_code::POLICY, &problem).await;
        return None;
    }
}

fn parse_hello(text: &str) -> Result<Hello, String> {
    let envelope =
        Envelope::decode(text).map_err(|error| format!("invalid first frame: {error}"))?;
    if envelope.kind != "hello" {
        return Err(format!(
            "the first message must be hello, not {:?}",
            envelope.kind
        ));
    }
    let hello = match RunnerMessage::from_envelope(&envelope) {
        Ok(RunnerMessage::Hello(hello)) => hello,
        Ok(_) => return Err("the first message must be hello".to_string()),
        Err(error) => return Err(error.to_string()),
    };
    if hello.agent_id.trim().is_empty() {
        return Err("hello.agentId is empty; configure the runner's agent id".to_string());
    }
    if hello.instance_id.trim().is_empty() {
        return Err("hello.instanceId is empty".to_string());
    }
    Ok(hello)
}

impl Session {
    /// Serves the session until the socket closes or the session must end.
    async fn run(
        &mut self,
        socket: &mut WebSocket,
        mut inbox: mpsc::UnboundedReceiver<Outgoing>,
    ) -> EndReason {
        let shared = self.shared.clone();
        loop {
            let deadline = self.last_heartbeat + shared.stale_after();
            tokio::select! {
                frame = socket.recv() => {
                    if let Some(end) = self.handle_frame(socket, frame).await {
                        return end;
                    }
                }
                outgoing = inbox.recv() => match outgoing {
                    Some(Outgoing::Frame(text)) => {
                        if let Err(error) = send_text(socket, text).await {
                            return EndReason::SocketError(error.to_string());
                        }
                    }
                    Some(Outgoing::Close(reason)) => {
                        close_socket(socket, close_code::POLICY, &reason).await;
                        return EndReason::Replaced;
                    }
                    // The store dropped this session's link, so nothing can reach it.
                    None => return EndReason::Replaced,
                },
                () = tokio::time::sleep_until(deadline) => {
                    let reason = format!(
                        "no heartbeat within {} ms",
                        shared.stale_after().as_millis()
                    );
                    tracing::warn!(agent_id = %self.agent_id, session_id = %self.session_id, %reason, "closing runner session");
                    close_socket(socket, close_code::POLICY, &reason).await;
                    return EndReason::HeartbeatTimeout;
                }
                () = shared.shutdown.cancelled() => {
                    close_socket(socket, close_code::AWAY, "the control plane is shutting down").await;
                    return EndReason::Shutdown;
                }
            }
        }
    }

    /// Handles one item read from the socket and returns a reason when the session ends.
    async fn handle_frame(
        &mut self,
        socket: &mut WebSocket,
        frame: Option<Result<WsMessage, axum::Error>>,
    ) -> Option<EndReason> {
        match frame {
            Some(Ok(WsMessage::Text(text))) => {
                // A frame without `seq` needs no ack and keeps the session open.
                let mut acked = self.handle_text(text.as_str());
                // Frames that arrived together get one cumulative ack.
                while let Some(next) = socket.recv().now_or_never() {
                    match next {
                        Some(Ok(WsMessage::Text(text))) => {
                            if let Some(seq) = self.handle_text(text.as_str()) {
                                acked = Some(acked.map_or(seq, |previous| previous.max(seq)));
                            }
                        }
                        other => {
                            if let Some(end) = self.ack(socket, acked).await {
                                return Some(end);
                            }
                            return Box::pin(self.handle_frame(socket, other)).await;
                        }
                    }
                }
                self.ack(socket, acked).await
            }
            Some(Ok(WsMessage::Binary(_))) => {
                self.note_ignored("binary frame", "the protocol uses text frames only");
                None
            }
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => None,
            Some(Ok(WsMessage::Close(_))) | None => Some(EndReason::ClosedByRunner),
            Some(Err(error)) => Some(EndReason::SocketError(error.to_string())),
        }
    }

    /// Sends a cumulative ack up to `seq`, when there is one.
    async fn ack(&self, socket: &mut WebSocket, seq: Option<u64>) -> Option<EndReason> {
        let seq = seq?;
        let frame = Envelope::new(&Ack { seq }, None).encode();
        send_text(socket, frame)
            .await
            .err()
            .map(|error| EndReason::SocketError(error.to_string()))
    }

    /// Applies one text frame and returns the `seq` to acknowledge, if any.
    ///
    /// A sequenced frame is acknowledged even when its type is unknown or its
    /// payload is invalid, because the runner would otherwise resend a message
    /// this control plane can never read.
    fn handle_text(&mut self, text: &str) -> Option<u64> {
        let received_at = std::time::Instant::now();
        let envelope = match Envelope::decode(text) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.note_ignored("undecodable frame", &error.to_string());
                return None;
            }
        };
        let message = RunnerMessage::from_envelope(&envelope);
        match (message, envelope.seq) {
            (Ok(RunnerMessage::Heartbeat(beat)), _) => {
                self.last_heartbeat = Instant::now();
                let mut store = self.shared.store();
                store.record_heartbeat(&self.agent_id, &self.session_id, &beat);
                if !self.resent_unanswered {
                    self.resent_unanswered = true;
                    let count = store.resend_unanswered(&self.agent_id, self.started);
                    if count > 0 {
                        tracing::info!(agent_id = %self.agent_id, runs = count, "resent the run requests the runner has not responded to");
                    }
                }
                None
            }
            (Ok(RunnerMessage::Hello(_)), _) => {
                self.note_ignored("hello", "hello is only valid as the first message");
                None
            }
            (message, Some(seq)) => {
                self.apply_sequenced(seq, message, &envelope.kind, received_at);
                Some(seq)
            }
            (Ok(message), None) => {
                let event = self
                    .shared
                    .store()
                    .apply(&self.agent_id, message, received_at);
                self.emit(event);
                None
            }
            (Err(error), None) => {
                self.note_ignored(&envelope.kind, &error.to_string());
                None
            }
        }
    }

    /// Applies a sequenced message unless its `seq` was already received.
    fn apply_sequenced(
        &mut self,
        seq: u64,
        message: Result<RunnerMessage, crate::protocol::DecodeError>,
        kind: &str,
        received_at: std::time::Instant,
    ) {
        let event = {
            let mut store = self.shared.store();
            if !store.record_seq(&self.agent_id, &self.instance_id, seq) {
                tracing::debug!(agent_id = %self.agent_id, seq, kind, "ignored duplicate sequenced message");
                return;
            }
            match message {
                Ok(message) => store.apply(&self.agent_id, message, received_at),
                Err(error) => {
                    drop(store);
                    let problem = format!(
                        "{error}; acknowledged as seq {seq} so the runner stops resending it"
                    );
                    self.note_ignored(kind, &problem);
                    return;
                }
            }
        };
        self.emit(event);
    }

    fn emit(&self, event: Option<ControlPlaneEvent>) {
        if let Some(event) = event {
            if let ControlPlaneEvent::RunFinal {
                run_id,
                state: Some(_),
                ..
            } = &event
            {
                self.record_pipeline_status(run_id);
            }
            self.shared.emit(event);
        }
    }

    /// Copies a run's final status into the OpenMetadata pipeline statuses.
    fn record_pipeline_status(&self, run_id: &str) {
        let document = self.shared.store().run_document(run_id);
        let Some(document) = document else {
            return;
        };
        if let Some(last) = document.statuses.last() {
            self.shared
                .openmetadata
                .record_runner_final(&document.pipeline_fqn, &last.pipeline_status);
        }
    }

    /// Logs an ignored frame, rate-limited per session.
    fn note_ignored(&mut self, frame_kind: &str, problem: &str) {
        self.ignored_frames += 1;
        let count = self.ignored_frames;
        if count <= LOGGED_IGNORED_FRAMES || count.is_multiple_of(100) {
            tracing::warn!(
                agent_id = %self.agent_id,
                session_id = %self.session_id,
                ignored_total = count,
                "ignored {frame_kind} from runner: {problem}"
            );
        }
    }

    /// Detaches the session from the store and reports the disconnect.
    fn finish(self, end: EndReason) {
        let was_current = self
            .shared
            .store()
            .end_session(&self.agent_id, &self.session_id);
        if !was_current {
            tracing::info!(agent_id = %self.agent_id, session_id = %self.session_id, reason = %end, "runner session ended");
            return;
        }
        tracing::info!(agent_id = %self.agent_id, session_id = %self.session_id, reason = %end, "runner disconnected");
        self.shared.emit(ControlPlaneEvent::RunnerDisconnected {
            agent_id: self.agent_id,
            session_id: self.session_id,
        });
    }
}

async fn send_text(socket: &mut WebSocket, text: String) -> Result<(), axum::Error> {
    socket.send(WsMessage::Text(text.into())).await
}

/// Sends a close frame. Errors are ignored because the socket is dropped next.
async fn close_socket(socket: &mut WebSocket, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].to_string().into(),
    };
    let _ = socket.send(WsMessage::Close(Some(frame))).await;
}
