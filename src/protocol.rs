//! Wire protocol between the runner and the control plane.
//!
//! Every frame is one JSON text message, an [`Envelope`]: `{v, type, id, ts,
//! seq?, payload}`. Messages the runner must not lose (run outcomes, logs,
//! events) carry a `seq` from the runner's outbox and stay there until the
//! control plane acknowledges them with a cumulative `ack`. `docs/protocol.md`
//! documents every message type.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Protocol version carried in every envelope.
pub const PROTOCOL_VERSION: u32 = 1;

/// Path of the WebSocket endpoint that runners connect to.
pub const CONNECT_PATH: &str = "/agent/v1/connect";

/// The JSON frame that carries every message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub v: u32,
    /// Message type, for example `run.status`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unique id of this envelope.
    pub id: String,
    /// Send time in epoch milliseconds.
    pub ts: i64,
    /// Outbox sequence number of a message that must be acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The message body; its shape depends on `type`.
    #[serde(default)]
    pub payload: Value,
    /// Detached JWS over the canonical form of `payload`; see [`crate::signing`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Errors from decoding a frame.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not a valid envelope: {0}")]
    Envelope(serde_json::Error),
    #[error("unsupported protocol version {0}; this build speaks version {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("{0}")]
    Signature(crate::signing::SignatureError),
    #[error("invalid {kind} payload: {source}")]
    Payload {
        kind: String,
        source: serde_json::Error,
    },
}

impl Envelope {
    /// Builds an envelope around a typed message.
    pub fn new(message: &impl Message, seq: Option<u64>) -> Self {
        Envelope {
            v: PROTOCOL_VERSION,
            kind: message.kind().to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            ts: crate::now_millis(),
            seq,
            // The message types are plain structs of strings, numbers and JSON
            // values, which serde_json serialises without error.
            payload: serde_json::to_value(message).unwrap_or(Value::Null),
            signature: None,
        }
    }

    /// Parses a text frame into an envelope and checks its version.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let envelope: Envelope = serde_json::from_str(text).map_err(DecodeError::Envelope)?;
        if envelope.v != PROTOCOL_VERSION {
            return Err(DecodeError::Version(envelope.v));
        }
        Ok(envelope)
    }

    /// Serialises the envelope as one text frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn payload_as<T: for<'de> Deserialize<'de>>(&self) -> Result<T, DecodeError> {
        serde_json::from_value(self.payload.clone()).map_err(|source| DecodeError::Payload {
            kind: self.kind.clone(),
            source,
        })
    }
}

/// A typed message body with its wire type name.
pub trait Message: Serialize {
    fn kind(&self) -> &'static str;

    /// Returns true when the message should go out at once rather than wait
    /// briefly to share a write with the messages after it.
    fn urgent(&self) -> bool {
        true
    }
}

macro_rules! message {
    ($name:ident, $kind:literal) => {
        impl Message for $name {
            fn kind(&self) -> &'static str {
                $kind
            }
        }
    };
    ($name:ident, $kind:literal, urgent: |$message:ident| $urgent:expr) => {
        impl Message for $name {
            fn kind(&self) -> &'static str {
                $kind
            }

            fn urgent(&self) -> bool {
                let $message = self;
                $urgent
            }
        }
    };
}

/// First message of a session, sent by the runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub agent_id: String,
    pub version: String,
    /// Id of this runner process's outbox; sequence numbers are unique within it.
    pub instance_id: String,
    pub capacity: usize,
    pub pipeline_types: Vec<String>,
    pub active_runs: Vec<String>,
}
message!(Hello, "hello");

/// Control plane's reply to `hello`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    pub session_id: String,
    pub heartbeat_interval_ms: u64,
    /// Highest outbox sequence number already received from this `instanceId`.
    pub acked_seq: u64,
}
message!(Welcome, "welcome");

/// Periodic liveness report from the runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub capacity: usize,
    pub active_runs: Vec<String>,
    pub draining: bool,
    /// The hook generation serving, when hooks are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksGeneration>,
    /// State of the pre-checks, when any are scheduled. Control planes that
    /// predate pre-checks ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prechecks: Option<PrechecksSummary>,
}

/// Pre-checks whose last result is a failure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrechecksSummary {
    /// True while at least one check fails.
    pub degraded: bool,
    pub failing: Vec<FailingPrecheck>,
}

/// A pre-check whose last result is a failure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailingPrecheck {
    pub name: String,
    /// Message of the last result.
    pub message: String,
    /// Time of the first failure in the current series, in epoch milliseconds.
    pub since: i64,
    /// Whether the check rejects the runs it gates while it fails.
    pub gate: bool,
}

/// A generation of hook scripts and the hash of their content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HooksGeneration {
    pub generation: u64,
    pub content_hash: String,
}
message!(Heartbeat, "heartbeat");

/// A request to run one workflow.
///
/// Unknown fields are rejected, so a request cannot smuggle in a command,
/// arguments or environment: those come from the runner's own config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRequest {
    pub run_id: String,
    pub pipeline_fqn: String,
    pub pipeline_type: String,
    /// The OpenMetadata workflow config: a YAML or JSON string, or a JSON object.
    pub config: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Extra dotted config paths to treat as secret fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_fields: Vec<String>,
}
message!(RunRequest, "run.request");

/// The runner took the run; a `run.status` with `queued` follows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunAccepted {
    pub run_id: String,
}
message!(RunAccepted, "run.accepted", urgent: |_accepted| false);

/// Reason code of a run rejected before any process started.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RejectCode {
    AtCapacity,
    UnknownPipelineType,
    InvalidRequest,
    /// The request's signature is missing, malformed or does not match.
    InvalidSignature,
    InvalidConfig,
    SecretError,
    Draining,
    DuplicateRun,
    /// A pre_run hook rejected the run or failed.
    HookRejected,
    /// A gating pre-check is failing.
    PrecheckFailed,
}

impl RejectCode {
    /// Returns the name used on the wire, such as `secretError`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::AtCapacity => "atCapacity",
            RejectCode::UnknownPipelineType => "unknownPipelineType",
            RejectCode::InvalidRequest => "invalidRequest",
            RejectCode::InvalidSignature => "invalidSignature",
            RejectCode::InvalidConfig => "invalidConfig",
            RejectCode::SecretError => "secretError",
            RejectCode::Draining => "draining",
            RejectCode::DuplicateRun => "duplicateRun",
            RejectCode::HookRejected => "hookRejected",
            RejectCode::PrecheckFailed => "precheckFailed",
        }
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runner did not take the run; this is the run's final outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRejected {
    pub run_id: String,
    pub code: RejectCode,
    pub reason: String,
}
message!(RunRejected, "run.rejected");

/// OpenMetadata `pipelineState` values.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum PipelineState {
    Queued,
    Running,
    Success,
    Failed,
    PartialSuccess,
    Stopped,
}

impl std::fmt::Display for PipelineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PipelineState::Queued => "queued",
            PipelineState::Running => "running",
            PipelineState::Success => "success",
            PipelineState::Failed => "failed",
            PipelineState::PartialSuccess => "partialSuccess",
            PipelineState::Stopped => "stopped",
        })
    }
}

impl PipelineState {
    /// Returns true for the states that end a run.
    pub fn is_final(self) -> bool {
        !matches!(self, PipelineState::Queued | PipelineState::Running)
    }
}

/// OpenMetadata `pipelineStatus`; dates are epoch milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    pub run_id: String,
    pub pipeline_state: PipelineState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<i64>,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<i64>,
}

/// A state transition of an accepted run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    pub run_id: String,
    pub pipeline_fqn: String,
    pub pipeline_status: PipelineStatus,
    /// Reason of a failed or stopped run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}
message!(RunStatus, "run.status", urgent: |status| status.pipeline_status.pipeline_state.is_final());

/// Output stream a log line came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum LogStream {
    Stdout,
    Stderr,
    Runner,
}

/// One redacted line of a run's output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// Line number within the run, from 1, across both streams.
    pub n: u64,
    pub stream: LogStream,
    pub ts: i64,
    pub text: String,
    /// True when the line was longer than the configured cap and was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A chunk of consecutive log lines of one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunLog {
    pub run_id: String,
    pub lines: Vec<LogLine>,
}
message!(RunLog, "run.log", urgent: |_log| false);

/// A request to stop a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunCancel {
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
message!(RunCancel, "run.cancel");

/// A request to stop taking runs and let the running ones finish.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerDrain {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
message!(RunnerDrain, "runner.drain");

/// A request to reload the hook scripts now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerReload {}
message!(RunnerReload, "runner.reload");

/// Cumulative acknowledgement: every `seq` up to and including this one arrived.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub seq: u64,
}
message!(Ack, "ack");

/// A custom message from the SaaS for customer hooks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomMessage {
    pub name: String,
    #[serde(default)]
    pub body: Value,
}
message!(CustomMessage, "message");

/// A custom event for the control plane, sent by a hook or by the runner
/// about a hook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
}
message!(Event, "event");

/// A new generation of hook scripts serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HooksReloaded {
    pub generation: u64,
    pub content_hash: String,
    pub files: Vec<String>,
}
message!(HooksReloaded, "hooks.reloaded");

/// A reload failed; the previous generation keeps serving.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HooksFailed {
    /// Generation that keeps serving.
    pub generation: u64,
    /// The error, with file and line.
    pub error: String,
}
message!(HooksFailed, "hooks.failed");

/// The result of one call of a pre-check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrecheckResult {
    pub name: String,
    pub ok: bool,
    pub message: String,
    pub duration_ms: u64,
    /// Start time of the call, in epoch milliseconds.
    pub time: i64,
    /// Whether the check gates runs.
    #[serde(default)]
    pub gate: bool,
}
message!(PrecheckResult, "precheck.result", urgent: |_result| false);

/// A message from the control plane, decoded by type.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Welcome(Welcome),
    RunRequest(RunRequest),
    RunCancel(RunCancel),
    RunnerDrain(RunnerDrain),
    RunnerReload(RunnerReload),
    Message(CustomMessage),
    Ack(Ack),
}

impl ServerMessage {
    /// Decodes the payload of an envelope sent by the control plane.
    pub fn from_envelope(envelope: &Envelope) -> Result<Self, DecodeError> {
        Ok(match envelope.kind.as_str() {
            "welcome" => ServerMessage::Welcome(envelope.payload_as()?),
            "run.request" => ServerMessage::RunRequest(envelope.payload_as()?),
            "run.cancel" => ServerMessage::RunCancel(envelope.payload_as()?),
            "runner.drain" => ServerMessage::RunnerDrain(envelope.payload_as()?),
            "runner.reload" => ServerMessage::RunnerReload(envelope.payload_as()?),
            "message" => ServerMessage::Message(envelope.payload_as()?),
            "ack" => ServerMessage::Ack(envelope.payload_as()?),
            other => return Err(DecodeError::UnknownType(other.to_string())),
        })
    }
}

/// A message from the runner, decoded by type.
#[derive(Debug, Clone, PartialEq)]
pub enum RunnerMessage {
    Hello(Hello),
    Heartbeat(Heartbeat),
    RunAccepted(RunAccepted),
    RunRejected(RunRejected),
    RunStatus(RunStatus),
    RunLog(RunLog),
    Event(Event),
    HooksReloaded(HooksReloaded),
    HooksFailed(HooksFailed),
    PrecheckResult(PrecheckResult),
}

impl RunnerMessage {
    /// Decodes the payload of an envelope sent by a runner.
    pub fn from_envelope(envelope: &Envelope) -> Result<Self, DecodeError> {
        Ok(match envelope.kind.as_str() {
            "hello" => RunnerMessage::Hello(envelope.payload_as()?),
            "heartbeat" => RunnerMessage::Heartbeat(envelope.payload_as()?),
            "run.accepted" => RunnerMessage::RunAccepted(envelope.payload_as()?),
            "run.rejected" => RunnerMessage::RunRejected(envelope.payload_as()?),
            "run.status" => RunnerMessage::RunStatus(envelope.payload_as()?),
            "run.log" => RunnerMessage::RunLog(envelope.payload_as()?),
            "event" => RunnerMessage::Event(envelope.payload_as()?),
            "hooks.reloaded" => RunnerMessage::HooksReloaded(envelope.payload_as()?),
            "hooks.failed" => RunnerMessage::HooksFailed(envelope.payload_as()?),
            "precheck.result" => RunnerMessage::PrecheckResult(envelope.payload_as()?),
            other => return Err(DecodeError::UnknownType(other.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_match_the_wire() {
        let codes = [
            RejectCode::AtCapacity,
            RejectCode::UnknownPipelineType,
            RejectCode::InvalidRequest,
            RejectCode::InvalidSignature,
            RejectCode::InvalidConfig,
            RejectCode::SecretError,
            RejectCode::Draining,
            RejectCode::DuplicateRun,
            RejectCode::HookRejected,
            RejectCode::PrecheckFailed,
        ];
        for code in codes {
            assert_eq!(serde_json::to_value(code).unwrap(), code.to_string());
        }
        let states = [
            PipelineState::Queued,
            PipelineState::Running,
            PipelineState::Success,
            PipelineState::Failed,
            PipelineState::PartialSuccess,
            PipelineState::Stopped,
        ];
        for state in states {
            assert_eq!(serde_json::to_value(state).unwrap(), state.to_string());
        }
    }

    #[test]
    fn run_request_round_trip() {
        let request = RunRequest {
            run_id: "r1".into(),
            pipeline_fqn: "svc.pipe".into(),
            pipeline_type: "metadata".into(),
            config: Value::String("source: {}".into()),
            timeout_seconds: Some(5),
            secret_fields: vec![],
        };
        let text = Envelope::new(&request, None).encode();
        let envelope = Envelope::decode(&text).unwrap();
        assert_eq!(envelope.kind, "run.request");
        assert_eq!(
            ServerMessage::from_envelope(&envelope).unwrap(),
            ServerMessage::RunRequest(request)
        );
    }

    #[test]
    fn run_request_with_command_is_rejected() {
        let text = r#"{"v":1,"type":"run.request","id":"x","ts":0,"payload":
            {"runId":"r","pipelineFqn":"a.b","pipelineType":"metadata","config":{},
             "command":["sh","-c","id"]}}"#;
        let envelope = Envelope::decode(text).unwrap();
        let error = ServerMessage::from_envelope(&envelope).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `command`"),
            "{error}"
        );
    }

    #[test]
    fn unknown_type_is_named() {
        let envelope = Envelope::decode(r#"{"v":1,"type":"run.explode","id":"x","ts":0}"#).unwrap();
        let error = ServerMessage::from_envelope(&envelope).unwrap_err();
        assert_eq!(error.to_string(), "unknown message type \"run.explode\"");
    }

    #[test]
    fn other_version_is_rejected() {
        let error = Envelope::decode(r#"{"v":2,"type":"ack","id":"x","ts":0}"#).unwrap_err();
        assert!(matches!(error, DecodeError::Version(2)));
    }

    #[test]
    fn precheck_result_round_trip() {
        let result = PrecheckResult {
            name: "database".into(),
            ok: false,
            message: "connection refused".into(),
            duration_ms: 12,
            time: 1_700_000_000_000,
            gate: true,
        };
        let text = Envelope::new(&result, Some(7)).encode();
        let envelope = Envelope::decode(&text).unwrap();
        assert_eq!(envelope.kind, "precheck.result");
        assert_eq!(envelope.payload["durationMs"], 12);
        assert_eq!(
            RunnerMessage::from_envelope(&envelope).unwrap(),
            RunnerMessage::PrecheckResult(result)
        );
    }

    #[test]
    fn heartbeat_without_prechecks_decodes() {
        let envelope = Envelope::decode(
            r#"{"v":1,"type":"heartbeat","id":"x","ts":0,
                "payload":{"capacity":2,"activeRuns":[],"draining":false}}"#,
        )
        .unwrap();
        let RunnerMessage::Heartbeat(beat) = RunnerMessage::from_envelope(&envelope).unwrap()
        else {
            panic!("expected a heartbeat");
        };
        assert_eq!(beat.prechecks, None);
        let encoded = serde_json::to_value(&beat).unwrap();
        assert!(encoded.get("prechecks").is_none(), "{encoded}");
    }

    #[test]
    fn pipeline_state_wire_names() {
        let json = serde_json::to_string(&PipelineState::PartialSuccess).unwrap();
        assert_eq!(json, "\"partialSuccess\"");
        assert!(PipelineState::Stopped.is_final());
        assert!(!PipelineState::Running.is_final());
    }
}
