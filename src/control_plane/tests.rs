//! End-to-end tests: each starts a server on 127.0.0.1 port 0 and drives it
//! with a real WebSocket client and `reqwest`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::*;
use crate::protocol::{
    CONNECT_PATH, Envelope, Heartbeat, Hello, LogLine, LogStream, Message, PipelineState,
    PipelineStatus, RejectCode, RunAccepted, RunLog, RunRejected, RunStatus, ServerMessage,
    Welcome,
};

const RUNNER_TOKEN: &str = "runner-token-for-tests";
const API_TOKEN: &str = "api-token-for-tests";
const FRAME_WAIT: Duration = Duration::from_secs(5);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Sends the server's log lines to the test output, shown when a test fails.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("cp_scratch=debug")
        .with_test_writer()
        .try_init();
}

fn test_options() -> ControlPlaneOptions {
    init_tracing();
    let mut options = ControlPlaneOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        vec!["another-token".to_string(), RUNNER_TOKEN.to_string()],
    );
    options.heartbeat_interval = Duration::from_secs(5);
    options
}

async fn start_default() -> ControlPlaneHandle {
    start(test_options()).await.unwrap()
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

async fn connect_with(addr: SocketAddr, token: Option<&str>) -> Result<Socket, tungstenite::Error> {
    let mut request = format!("ws://{addr}{CONNECT_PATH}")
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert("authorization", value);
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

fn hello(agent_id: &str, instance_id: &str) -> Hello {
    Hello {
        agent_id: agent_id.to_string(),
        version: "1.2.3".to_string(),
        instance_id: instance_id.to_string(),
        capacity: 4,
        pipeline_types: vec!["metadata".to_string()],
        active_runs: vec![],
    }
}

fn status(run_id: &str, state: PipelineState) -> RunStatus {
    RunStatus {
        run_id: run_id.to_string(),
        pipeline_fqn: "mysql.ingest".to_string(),
        pipeline_status: PipelineStatus {
            run_id: run_id.to_string(),
            pipeline_state: state,
            start_date: Some(1_000),
            timestamp: 2_000,
            end_date: state.is_final().then_some(3_000),
        },
        reason: None,
        exit_code: state.is_final().then_some(0),
    }
}

fn log_line(n: u64, text: &str) -> LogLine {
    LogLine {
        n,
        stream: LogStream::Stdout,
        ts: 1_000 + n as i64,
        text: text.to_string(),
        truncated: false,
    }
}

fn submission_body(agent_id: &str) -> Value {
    json!({
        "agentId": agent_id,
        "pipelineFqn": "mysql.ingest",
        "pipelineType": "metadata",
        "config": {"source": {"type": "mysql", "password": "secret:/collate/hybrid-ingestion/db"}},
        "timeoutSeconds": 120,
        "secretFields": ["source.extra"],
    })
}

/// A runner side of one WebSocket session, driven by the test.
struct TestRunner {
    socket: Socket,
}

impl TestRunner {
    /// Connects with the valid token, sends `hello` and returns the `welcome`.
    async fn join(addr: SocketAddr, agent_id: &str, instance_id: &str) -> (TestRunner, Welcome) {
        let socket = connect_with(addr, Some(RUNNER_TOKEN)).await.unwrap();
        let mut runner = TestRunner { socket };
        runner.send(&hello(agent_id, instance_id), None).await;
        match runner.next_message().await {
            ServerMessage::Welcome(welcome) => (runner, welcome),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, message: &impl Message, seq: Option<u64>) {
        self.send_text(Envelope::new(message, seq).encode()).await;
    }

    async fn send_text(&mut self, text: String) {
        self.socket
            .send(WsMessage::Text(text.into()))
            .await
            .unwrap();
    }

    async fn heartbeat(&mut self, capacity: usize, draining: bool) {
        let beat = Heartbeat {
            capacity,
            active_runs: vec![],
            draining,
            hooks: None,
            prechecks: None,
        };
        self.send(&beat, None).await;
    }

    /// Returns the next text frame as an envelope.
    async fn next_envelope(&mut self) -> Envelope {
        loop {
            let frame = tokio::time::timeout(FRAME_WAIT, self.socket.next())
                .await
                .expect("no frame from the control plane within 5 s")
                .expect("socket ended")
                .expect("socket error");
            match frame {
                WsMessage::Text(text) => return Envelope::decode(text.as_str()).unwrap(),
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    async fn next_message(&mut self) -> ServerMessage {
        let envelope = self.next_envelope().await;
        assert_eq!(envelope.seq, None, "server messages carry no seq");
        ServerMessage::from_envelope(&envelope).unwrap()
    }

    async fn expect_ack(&mut self, seq: u64) {
        match self.next_message().await {
            ServerMessage::Ack(ack) => assert_eq!(ack.seq, seq),
            other => panic!("expected ack {seq}, got {other:?}"),
        }
    }

    /// Waits for the server to close the socket and returns its close frame.
    async fn expect_closed(&mut self) -> Option<CloseFrame> {
        loop {
            let frame = tokio::time::timeout(FRAME_WAIT, self.socket.next())
                .await
                .expect("socket still open after 5 s");
            match frame {
                Some(Ok(WsMessage::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

async fn get_json(addr: SocketAddr, path: &str) -> (StatusCode, Value) {
    let response = reqwest::get(url(addr, path)).await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(url(addr, path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn runner_view(addr: SocketAddr, agent_id: &str) -> Value {
    let (status, runners) = get_json(addr, "/v1/runners").await;
    assert_eq!(status, StatusCode::OK);
    runners
        .as_array()
        .unwrap()
        .iter()
        .find(|runner| runner["agentId"] == agent_id)
        .cloned()
        .unwrap_or_else(|| panic!("runner {agent_id} not listed in {runners}"))
}

/// Submits a run over HTTP and returns its id and the request the runner received.
async fn submit_over_http(addr: SocketAddr, runner: &mut TestRunner, agent_id: &str) -> String {
    let (status, body) = post_json(addr, "/v1/runs", &submission_body(agent_id)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run_id = body["runId"].as_str().unwrap().to_string();
    match runner.next_message().await {
        ServerMessage::RunRequest(request) => assert_eq!(request.run_id, run_id),
        other => panic!("expected run.request, got {other:?}"),
    }
    run_id
}

#[tokio::test]
async fn connect_without_token_is_401() {
    let server = start_default().await;
    let error = connect_with(server.local_addr(), None).await.unwrap_err();
    let tungstenite::Error::Http(response) = error else {
        panic!("expected an HTTP error, got {error:?}");
    };
    assert_eq!(response.status(), 401);
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("runner token"),
        "{body}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn connect_with_wrong_token_is_401() {
    let server = start_default().await;
    let error = connect_with(server.local_addr(), Some("not-a-token"))
        .await
        .unwrap_err();
    let tungstenite::Error::Http(response) = error else {
        panic!("expected an HTTP error, got {error:?}");
    };
    assert_eq!(response.status(), 401);
    let (_, runners) = get_json(server.local_addr(), "/v1/runners").await;
    assert_eq!(runners, json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn hello_gets_welcome() {
    let server = start_default().await;
    let mut events = server.events();
    let (_runner, welcome) = TestRunner::join(server.local_addr(), "agent-1", "instance-1").await;
    assert!(!welcome.session_id.is_empty());
    assert_eq!(welcome.heartbeat_interval_ms, 5_000);
    assert_eq!(welcome.acked_seq, 0);

    let event = events.recv().await.unwrap();
    assert_eq!(
        event,
        ControlPlaneEvent::RunnerConnected {
            agent_id: "agent-1".to_string(),
            instance_id: "instance-1".to_string(),
            session_id: welcome.session_id.clone(),
        }
    );
    let view = runner_view(server.local_addr(), "agent-1").await;
    assert_eq!(view["status"], "Connected");
    assert_eq!(view["version"], "1.2.3");
    assert_eq!(view["instanceId"], "instance-1");
    assert_eq!(view["capacity"], 4);
    server.shutdown().await;
}

#[tokio::test]
async fn first_frame_must_be_hello() {
    let server = start_default().await;
    let socket = connect_with(server.local_addr(), Some(RUNNER_TOKEN))
        .await
        .unwrap();
    let mut runner = TestRunner { socket };
    runner.heartbeat(1, false).await;
    let frame = runner.expect_closed().await.expect("close frame");
    assert!(frame.reason.as_str().contains("must be hello"), "{frame:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn heartbeat_keeps_runner_connected() {
    let mut options = test_options();
    options.heartbeat_interval = Duration::from_millis(100);
    let server = start(options).await.unwrap();
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;

    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        runner.heartbeat(7, true).await;
    }
    let view = runner_view(addr, "agent-1").await;
    assert_eq!(view["status"], "Connected");
    assert_eq!(view["capacity"], 7);
    assert_eq!(view["draining"], true);
    assert!(view["lastHeartbeat"].as_i64().unwrap() >= view["connectedAt"].as_i64().unwrap());

    // Without heartbeats the runner goes stale after three intervals and the
    // server closes the session.
    let frame = runner.expect_closed().await.expect("close frame");
    assert!(frame.reason.as_str().contains("no heartbeat"), "{frame:?}");
    let view = runner_view(addr, "agent-1").await;
    assert_eq!(view["status"], "Disconnected");
    server.shutdown().await;
}

#[tokio::test]
async fn closed_socket_is_disconnected() {
    let server = start_default().await;
    let addr = server.local_addr();
    let mut events = server.events();
    let (mut runner, welcome) = TestRunner::join(addr, "agent-1", "instance-1").await;
    runner.socket.close(None).await.unwrap();
    loop {
        let event = events.recv().await.unwrap();
        if let ControlPlaneEvent::RunnerDisconnected {
            agent_id,
            session_id,
        } = event
        {
            assert_eq!(agent_id, "agent-1");
            assert_eq!(session_id, welcome.session_id);
            break;
        }
    }
    assert_eq!(runner_view(addr, "agent-1").await["status"], "Disconnected");
    server.shutdown().await;
}

#[tokio::test]
async fn submit_reaches_runner_as_run_request() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;

    let (status, body) = post_json(addr, "/v1/runs", &submission_body("agent-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run_id = body["runId"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&run_id).is_ok(), "{run_id}");

    let ServerMessage::RunRequest(request) = runner.next_message().await else {
        panic!("expected run.request");
    };
    assert_eq!(request.run_id, run_id);
    assert_eq!(request.pipeline_fqn, "mysql.ingest");
    assert_eq!(request.pipeline_type, "metadata");
    assert_eq!(request.config, submission_body("agent-1")["config"]);
    assert_eq!(request.timeout_seconds, Some(120));
    assert_eq!(request.secret_fields, vec!["source.extra".to_string()]);

    let (status, document) = get_json(addr, &format!("/v1/runs/{run_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["outcome"], "submitted");
    assert_eq!(document["final"], false);
    assert_eq!(document["agentId"], "agent-1");
    assert!(document["submittedAt"].as_i64().unwrap() > 0);
    server.shutdown().await;
}

#[tokio::test]
async fn string_config_and_run_id_pass_through() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    let mut body = submission_body("agent-1");
    body["config"] = json!("source:\n  type: mysql\n");
    body["runId"] = json!("my-run.1");

    let (status, reply) = post_json(addr, "/v1/runs", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply["runId"], "my-run.1");
    let ServerMessage::RunRequest(request) = runner.next_message().await else {
        panic!("expected run.request");
    };
    assert_eq!(request.run_id, "my-run.1");
    assert_eq!(request.config, json!("source:\n  type: mysql\n"));

    let (status, reply) = post_json(addr, "/v1/runs", &body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        reply["error"].as_str().unwrap().contains("my-run.1"),
        "{reply}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn statuses_and_logs_in_order() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    let run_id = submit_over_http(addr, &mut runner, "agent-1").await;

    let accepted = RunAccepted {
        run_id: run_id.clone(),
    };
    runner.send(&accepted, Some(1)).await;
    runner.expect_ack(1).await;
    runner
        .send(&status(&run_id, PipelineState::Queued), Some(2))
        .await;
    runner.expect_ack(2).await;
    runner
        .send(&status(&run_id, PipelineState::Running), Some(3))
        .await;
    runner.expect_ack(3).await;
    let later_lines = RunLog {
        run_id: run_id.clone(),
        lines: vec![log_line(3, "third"), log_line(4, "fourth")],
    };
    runner.send(&later_lines, Some(4)).await;
    runner.expect_ack(4).await;
    let earlier_lines = RunLog {
        run_id: run_id.clone(),
        lines: vec![log_line(1, "first"), log_line(2, "second")],
    };
    runner.send(&earlier_lines, Some(5)).await;
    runner.expect_ack(5).await;
    let mut finished = status(&run_id, PipelineState::PartialSuccess);
    finished.reason = Some("2 tables skipped".to_string());
    finished.exit_code = Some(3);
    runner.send(&finished, Some(6)).await;
    runner.expect_ack(6).await;

    let (status_code, document) = get_json(addr, &format!("/v1/runs/{run_id}")).await;
    assert_eq!(status_code, StatusCode::OK);
    assert_eq!(document["outcome"], "accepted");
    assert_eq!(document["final"], true);
    assert_eq!(document["finalState"], "partialSuccess");
    assert_eq!(document["reason"], "2 tables skipped");
    assert_eq!(document["exitCode"], 3);
    let states: Vec<&str> = document["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pipelineStatus"]["pipelineState"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "running", "partialSuccess"]);

    let (_, logs) = get_json(addr, &format!("/v1/runs/{run_id}/logs")).await;
    let texts: Vec<&str> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second", "third", "fourth"]);
    assert_eq!(logs["runId"], run_id.as_str());

    let (_, logs) = get_json(addr, &format!("/v1/runs/{run_id}/logs?after=2")).await;
    let numbers: Vec<u64> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 4]);

    let (_, runs) = get_json(addr, "/v1/runs").await;
    assert_eq!(runs[0]["runId"], run_id.as_str());
    assert_eq!(runs[0]["state"], "partialSuccess");
    assert_eq!(runs[0]["final"], true);
    server.shutdown().await;
}

#[tokio::test]
async fn duplicate_seq_ignored_but_acked() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    let run_id = submit_over_http(addr, &mut runner, "agent-1").await;

    runner
        .send(&status(&run_id, PipelineState::Running), Some(1))
        .await;
    runner.expect_ack(1).await;
    runner
        .send(&status(&run_id, PipelineState::Success), Some(1))
        .await;
    runner.expect_ack(1).await;

    let (_, document) = get_json(addr, &format!("/v1/runs/{run_id}")).await;
    assert_eq!(document["statuses"].as_array().unwrap().len(), 1);
    assert_eq!(document["final"], false);
    assert!(document.get("finalState").is_none(), "{document}");
    server.shutdown().await;
}

#[tokio::test]
async fn reconnect_reports_acked_seq() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut first, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    let run_id = submit_over_http(addr, &mut first, "agent-1").await;
    for seq in 1..=3 {
        let log = RunLog {
            run_id: run_id.clone(),
            lines: vec![log_line(seq, "line")],
        };
        first.send(&log, Some(seq)).await;
        first.expect_ack(seq).await;
    }

    // The same agent id connecting again replaces and closes the first session.
    let (_second, welcome) = TestRunner::join(addr, "agent-1", "instance-1").await;
    assert_eq!(welcome.acked_seq, 3);
    let frame = first.expect_closed().await.expect("close frame");
    assert!(frame.reason.as_str().contains("replaced"), "{frame:?}");
    assert_eq!(runner_view(addr, "agent-1").await["status"], "Connected");

    // A new runner process has a new outbox, so its sequence starts over.
    let (_third, welcome) = TestRunner::join(addr, "agent-1", "instance-2").await;
    assert_eq!(welcome.acked_seq, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn wait_returns_when_final() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    let run_id = submit_over_http(addr, &mut runner, "agent-1").await;

    let (status_code, document) =
        get_json(addr, &format!("/v1/runs/{run_id}/wait?timeoutMs=50")).await;
    assert_eq!(status_code, StatusCode::OK);
    assert_eq!(document["final"], false);

    let wait_path = format!("/v1/runs/{run_id}/wait?timeoutMs=20000");
    let waiter = tokio::spawn(async move { get_json(addr, &wait_path).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "wait returned before the run was final"
    );
    runner
        .send(&status(&run_id, PipelineState::Running), Some(1))
        .await;
    runner.expect_ack(1).await;
    runner
        .send(&status(&run_id, PipelineState::Success), Some(2))
        .await;
    runner.expect_ack(2).await;

    let (status_code, document) = tokio::time::timeout(FRAME_WAIT, waiter)
        .await
        .expect("wait did not return after the final status")
        .unwrap();
    assert_eq!(status_code, StatusCode::OK);
    assert_eq!(document["final"], true);
    assert_eq!(document["finalState"], "success");
    server.shutdown().await;
}

#[tokio::test]
async fn rejected_run_is_final() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    let mut events = server.events();
    let run_id = submit_over_http(addr, &mut runner, "agent-1").await;

    let rejected = RunRejected {
        run_id: run_id.clone(),
        code: RejectCode::AtCapacity,
        reason: "4 runs already running".to_string(),
    };
    runner.send(&rejected, Some(1)).await;
    runner.expect_ack(1).await;

    let (_, document) = get_json(addr, &format!("/v1/runs/{run_id}/wait?timeoutMs=5000")).await;
    assert_eq!(document["final"], true);
    assert_eq!(document["outcome"], "rejected");
    assert_eq!(document["rejection"]["code"], "atCapacity");
    assert_eq!(document["rejection"]["reason"], "4 runs already running");

    loop {
        if let ControlPlaneEvent::RunFinal {
            run_id: id,
            state,
            rejected,
            ..
        } = events.recv().await.unwrap()
        {
            assert_eq!(id, run_id);
            assert_eq!(state, None);
            assert!(rejected);
            break;
        }
    }
    let (status_code, reply) =
        post_json(addr, &format!("/v1/runs/{run_id}/cancel"), &json!({})).await;
    assert_eq!(status_code, StatusCode::CONFLICT);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("already finished"),
        "{reply}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn submit_to_absent_runner_is_409() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (status_code, reply) = post_json(addr, "/v1/runs", &submission_body("nobody")).await;
    assert_eq!(status_code, StatusCode::CONFLICT);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("\"nobody\" is not connected"),
        "{reply}"
    );

    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    runner.socket.close(None).await.unwrap();
    // The store marks the runner disconnected once the session task reads the close frame.
    let mut status_code = StatusCode::ACCEPTED;
    for _ in 0..50 {
        (status_code, _) = post_json(addr, "/v1/runs", &submission_body("agent-1")).await;
        if status_code == StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status_code, StatusCode::CONFLICT);
    let (status_code, _) = post_json(addr, "/v1/runners/agent-1/drain", &json!({})).await;
    assert_eq!(status_code, StatusCode::CONFLICT);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_submissions_are_400() {
    let server = start_default().await;
    let addr = server.local_addr();
    let mut missing_agent = submission_body("agent-1");
    missing_agent.as_object_mut().unwrap().remove("agentId");
    let mut number_fqn = submission_body("agent-1");
    number_fqn["pipelineFqn"] = json!(5);
    let mut unknown_field = submission_body("agent-1");
    unknown_field["command"] = json!(["sh"]);
    let cases = [
        (missing_agent, "agentId is missing"),
        (number_fqn, "pipelineFqn must be a string"),
        (unknown_field, "unknown field \"command\""),
        (json!([]), "must be a JSON object"),
    ];
    for (body, expected) in cases {
        let (status_code, reply) = post_json(addr, "/v1/runs", &body).await;
        assert_eq!(status_code, StatusCode::BAD_REQUEST, "{body}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains(expected), "{body}: {error}");
    }

    let response = reqwest::Client::new()
        .post(url(addr, "/v1/runs"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let reply: Value = response.json().await.unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("not valid JSON"),
        "{reply}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_run_is_404() {
    let server = start_default().await;
    let addr = server.local_addr();
    for path in [
        "/v1/runs/missing",
        "/v1/runs/missing/logs",
        "/v1/runs/missing/wait?timeoutMs=10",
    ] {
        let (status_code, reply) = get_json(addr, path).await;
        assert_eq!(status_code, StatusCode::NOT_FOUND, "{path}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("\"missing\" not found"),
            "{reply}"
        );
    }
    let (status_code, _) = post_json(addr, "/v1/runs/missing/cancel", &json!({})).await;
    assert_eq!(status_code, StatusCode::NOT_FOUND);
    let (status_code, reply) = get_json(addr, "/v1/nothing-here").await;
    assert_eq!(status_code, StatusCode::NOT_FOUND);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("/v1/nothing-here"),
        "{reply}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    let run_id = submit_over_http(addr, &mut runner, "agent-1").await;
    let cases = [
        (
            format!("/v1/runs/{run_id}/logs?after=-1"),
            "after=\"-1\" is invalid",
        ),
        (
            format!("/v1/runs/{run_id}/wait?timeoutMs=soon"),
            "timeoutMs=\"soon\" is invalid",
        ),
        (
            format!("/v1/runs/{run_id}/wait?timeoutMs=9999999"),
            "too large",
        ),
    ];
    for (path, expected) in cases {
        let (status_code, reply) = get_json(addr, &path).await;
        assert_eq!(status_code, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            reply["error"].as_str().unwrap().contains(expected),
            "{path}: {reply}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn cancel_drain_and_message_reach_runner() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    let run_id = submit_over_http(addr, &mut runner, "agent-1").await;

    let cancel_path = format!("/v1/runs/{run_id}/cancel");
    let (status_code, _) =
        post_json(addr, &cancel_path, &json!({"reason": "operator request"})).await;
    assert_eq!(status_code, StatusCode::ACCEPTED);
    let ServerMessage::RunCancel(cancel) = runner.next_message().await else {
        panic!("expected run.cancel");
    };
    assert_eq!(cancel.run_id, run_id);
    assert_eq!(cancel.reason.as_deref(), Some("operator request"));

    let response = reqwest::Client::new()
        .post(url(addr, "/v1/runners/agent-1/drain"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let ServerMessage::RunnerDrain(drain) = runner.next_message().await else {
        panic!("expected runner.drain");
    };
    assert_eq!(drain.reason, None);

    let body = json!({"name": "refresh", "body": {"table": "orders"}});
    let (status_code, _) = post_json(addr, "/v1/runners/agent-1/messages", &body).await;
    assert_eq!(status_code, StatusCode::ACCEPTED);
    let ServerMessage::Message(message) = runner.next_message().await else {
        panic!("expected message");
    };
    assert_eq!(message.name, "refresh");
    assert_eq!(message.body, json!({"table": "orders"}));

    let (status_code, reply) =
        post_json(addr, "/v1/runners/agent-1/messages", &json!({"body": 1})).await;
    assert_eq!(status_code, StatusCode::BAD_REQUEST);
    assert!(
        reply["error"].as_str().unwrap().contains("name is missing"),
        "{reply}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_frames_keep_session() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;

    runner.send_text("this is not json".to_string()).await;
    runner
        .send_text(
            r#"{"v":1,"type":"hooks.reloaded","id":"x","ts":0,"seq":1,"payload":{}}"#.to_string(),
        )
        .await;
    runner.expect_ack(1).await;
    runner
        .send_text(
            r#"{"v":1,"type":"run.status","id":"y","ts":0,"seq":2,"payload":{"runId":5}}"#
                .to_string(),
        )
        .await;
    runner.expect_ack(2).await;
    runner
        .send_text(r#"{"v":9,"type":"heartbeat","id":"z","ts":0}"#.to_string())
        .await;

    let run_id = submit_over_http(addr, &mut runner, "agent-1").await;
    assert!(!run_id.is_empty());
    assert_eq!(runner_view(addr, "agent-1").await["status"], "Connected");
    server.shutdown().await;
}

#[tokio::test]
async fn in_process_submit_reports_latency() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    let mut events = server.events();

    let config = json!({"source": {"type": "mysql"}});
    let run_id = server
        .submit(RunSubmission::new(
            "agent-1",
            "mysql.ingest",
            "metadata",
            config,
        ))
        .await
        .unwrap();
    let ServerMessage::RunRequest(request) = runner.next_message().await else {
        panic!("expected run.request");
    };
    assert_eq!(request.run_id, run_id);
    runner
        .send(&status(&run_id, PipelineState::Failed), Some(1))
        .await;
    runner.expect_ack(1).await;

    let submitted_at = match events.recv().await.unwrap() {
        ControlPlaneEvent::RunSubmitted { run_id: id, at, .. } => {
            assert_eq!(id, run_id);
            at
        }
        other => panic!("expected RunSubmitted, got {other:?}"),
    };
    match events.recv().await.unwrap() {
        ControlPlaneEvent::RunFinal {
            run_id: id,
            agent_id,
            state,
            rejected,
            at,
            submitted_at: final_submitted_at,
        } => {
            assert_eq!(id, run_id);
            assert_eq!(agent_id, "agent-1");
            assert_eq!(state, Some(PipelineState::Failed));
            assert!(!rejected);
            assert_eq!(final_submitted_at, Some(submitted_at));
            assert!(at >= submitted_at);
        }
        other => panic!("expected RunFinal, got {other:?}"),
    }

    let mut invalid = RunSubmission::new("agent-1", "", "metadata", json!({}));
    invalid.run_id = Some("x".to_string());
    let error = server.submit(invalid).await.unwrap_err();
    assert!(
        error.to_string().contains("pipelineFqn is empty"),
        "{error}"
    );
    let absent = RunSubmission::new("nobody", "a.b", "metadata", json!({}));
    let error = server.submit(absent).await.unwrap_err();
    assert!(
        matches!(error, ControlPlaneError::RunnerNotConnected { .. }),
        "{error}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn run_of_unknown_origin_is_recorded() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    runner
        .send(&status("earlier-run", PipelineState::Success), Some(1))
        .await;
    runner.expect_ack(1).await;

    let (status_code, document) = get_json(addr, "/v1/runs/earlier-run").await;
    assert_eq!(status_code, StatusCode::OK);
    assert_eq!(document["agentId"], "agent-1");
    assert_eq!(document["pipelineFqn"], "mysql.ingest");
    assert_eq!(document["pipelineType"], Value::Null);
    assert_eq!(document["finalState"], "success");

    // Another runner cannot change a run that belongs to agent-1.
    let (mut other, _) = TestRunner::join(addr, "agent-2", "instance-9").await;
    runner
        .send(&status("earlier-run", PipelineState::Failed), Some(2))
        .await;
    runner.expect_ack(2).await;
    other
        .send(&status("earlier-run", PipelineState::Running), Some(1))
        .await;
    other.expect_ack(1).await;
    let (_, document) = get_json(addr, "/v1/runs/earlier-run").await;
    assert_eq!(document["statuses"].as_array().unwrap().len(), 2);
    assert_eq!(document["finalState"], "success");
    server.shutdown().await;
}

#[tokio::test]
async fn api_token_is_required_when_set() {
    let mut options = test_options();
    options.api_token = Some(API_TOKEN.to_string());
    let server = start(options).await.unwrap();
    let addr = server.local_addr();
    let client = reqwest::Client::new();

    let response = client.get(url(addr, "/v1/runners")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let reply: Value = response.json().await.unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("API token"),
        "{reply}"
    );

    let response = client
        .get(url(addr, "/v1/runners"))
        .bearer_auth(RUNNER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let response = client
        .get(url(addr, "/v1/runners"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The runner endpoint checks runner tokens, not the API token.
    assert!(connect_with(addr, Some(API_TOKEN)).await.is_err());
    let (_runner, welcome) = TestRunner::join(addr, "agent-1", "instance-1").await;
    assert_eq!(welcome.acked_seq, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sessions() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;
    server.shutdown().await;
    let frame = runner.expect_closed().await.expect("close frame");
    assert!(frame.reason.as_str().contains("shutting down"), "{frame:?}");
    assert!(reqwest::get(url(addr, "/v1/runners")).await.is_err());
}

#[tokio::test]
async fn start_rejects_bad_options() {
    let server = start_default().await;
    let mut same_address = test_options();
    same_address.listen = server.local_addr();
    let error = start(same_address).await.err().expect("bind must fail");
    assert!(matches!(error, ControlPlaneError::Bind { .. }));
    assert!(
        error.to_string().contains(&server.local_addr().to_string()),
        "{error}"
    );

    let mut no_tokens = test_options();
    no_tokens.runner_tokens.clear();
    let error = start(no_tokens).await.err().expect("no tokens must fail");
    assert!(error.to_string().contains("runner_tokens"), "{error}");

    let mut empty_token = test_options();
    empty_token.runner_tokens.push(String::new());
    let error = start(empty_token)
        .await
        .err()
        .expect("empty token must fail");
    assert!(
        error.to_string().contains("token number 3 is empty"),
        "{error}"
    );

    let mut missing_tls = test_options();
    missing_tls.tls = Some(TlsFiles {
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
    });
    let error = start(missing_tls)
        .await
        .err()
        .expect("missing TLS files must fail");
    assert!(
        error.to_string().contains("/nonexistent/cert.pem"),
        "{error}"
    );
    server.shutdown().await;
}

#[test]
fn options_debug_hides_tokens() {
    let mut options = test_options();
    options.api_token = Some(API_TOKEN.to_string());
    let printed = format!("{options:?}");
    assert!(!printed.contains(RUNNER_TOKEN), "{printed}");
    assert!(!printed.contains(API_TOKEN), "{printed}");
}

#[tokio::test]
async fn tls_serves_wss_and_https() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let cert_path = directory.path().join("cert.pem");
    let key_path = directory.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let mut options = test_options();
    options.tls = Some(TlsFiles {
        cert: cert_path,
        key: key_path,
    });
    let server = start(options).await.unwrap();
    let port = server.local_addr().port();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut request = format!("wss://localhost:{port}{CONNECT_PATH}")
        .into_client_request()
        .unwrap();
    let value = format!("Bearer {RUNNER_TOKEN}").parse().unwrap();
    request.headers_mut().insert("authorization", value);
    let stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let connector = tokio_tungstenite::Connector::Rustls(Arc::new(client_config));
    let (socket, _) =
        tokio_tungstenite::client_async_tls_with_config(request, stream, None, Some(connector))
            .await
            .unwrap();
    let mut runner = TestRunner { socket };
    runner.send(&hello("agent-tls", "instance-1"), None).await;
    assert!(matches!(
        runner.next_message().await,
        ServerMessage::Welcome(_)
    ));

    let certificate = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([certificate])
        .resolve("localhost", server.local_addr())
        .build()
        .unwrap();
    let response = client
        .get(format!("https://localhost:{port}/v1/runners"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let runners: Value = response.json().await.unwrap();
    assert_eq!(runners[0]["agentId"], "agent-tls");
    server.shutdown().await;
}

#[tokio::test]
async fn prechecks_are_stored_per_runner() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (mut runner, _) = TestRunner::join(addr, "agent-1", "instance-1").await;

    for seq in 1..=25u64 {
        let result = crate::protocol::PrecheckResult {
            name: "database".into(),
            ok: seq < 24,
            message: format!("call {seq}"),
            duration_ms: 3,
            time: seq as i64,
            gate: true,
        };
        runner.send(&result, Some(seq)).await;
        runner.expect_ack(seq).await;
    }
    let beat = Heartbeat {
        capacity: 1,
        active_runs: vec![],
        draining: false,
        hooks: None,
        prechecks: Some(crate::protocol::PrechecksSummary {
            degraded: true,
            failing: vec![crate::protocol::FailingPrecheck {
                name: "database".into(),
                message: "call 25".into(),
                since: 24,
                gate: true,
            }],
        }),
    };
    runner.send(&beat, None).await;

    let view = wait_for_view(addr, "agent-1", |view| view["degraded"] == true).await;
    assert_eq!(view["failingPrechecks"][0]["name"], "database", "{view}");
    assert_eq!(view["failingPrechecks"][0]["since"], 24, "{view}");
    let history = view["prechecks"]["database"].as_array().unwrap();
    assert_eq!(history.len(), 20, "{view}");
    assert_eq!(history[0]["message"], "call 6", "{view}");
    assert_eq!(history[19]["message"], "call 25", "{view}");
    assert_eq!(history[19]["ok"], false, "{view}");

    // A heartbeat without failing checks clears the degraded flag.
    runner.heartbeat(1, false).await;
    let view = wait_for_view(addr, "agent-1", |view| view["degraded"] == false).await;
    assert_eq!(view["failingPrechecks"], json!([]), "{view}");
    server.shutdown().await;
}

/// Polls `GET /v1/runners` until the runner's entry satisfies `ready`.
async fn wait_for_view(addr: SocketAddr, agent_id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + FRAME_WAIT;
    loop {
        let view = runner_view(addr, agent_id).await;
        if ready(&view) || tokio::time::Instant::now() >= deadline {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
