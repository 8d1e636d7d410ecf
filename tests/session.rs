//! The runner's session with the control plane: connecting over plain
//! WebSocket and TLS, authentication, and reconnecting after the control
//! plane restarts.

mod common;

use common::{RunnerConfig, TestEnv, assert_no_secret, free_port, states, submission, wait_until};

const QUICK_WORKFLOW: &str = "
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

#[tokio::test]
async fn runner_connects_over_ws() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("plain-runner")
            .capacity(3)
            .pipeline("metadata", "exit 0"),
    );

    let view = control_plane.wait_connected(&runner).await;

    assert_eq!(view["status"], "Connected", "runner entry: {view}");
    assert_eq!(
        view["version"],
        hybrid_runner::VERSION,
        "runner entry: {view}"
    );
    assert_eq!(view["capacity"], 3, "runner entry: {view}");
    assert_eq!(view["draining"], false, "runner entry: {view}");
    let types = view["pipelineTypes"].as_array().expect("pipelineTypes");
    assert!(
        types.iter().any(|kind| kind == "metadata"),
        "pipelineTypes: {types:?}"
    );
    let log = runner.log();
    assert!(
        log.contains("connected to control plane"),
        "runner log: {log}"
    );
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn runner_connects_over_tls() {
    let env = TestEnv::new();
    let control_plane = env.control_plane_tls().await;
    assert!(
        control_plane.ws_url().starts_with("wss://"),
        "URL: {}",
        control_plane.ws_url()
    );
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("tls-runner").pipeline("metadata", "echo over tls"),
    );

    control_plane.wait_connected(&runner).await;
    let run_id = control_plane
        .submit(&submission("tls-runner", QUICK_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let stdout = control_plane.log_texts(&run_id, "stdout").await;
    assert_eq!(stdout, vec!["over tls"], "stdout lines");
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn wrong_token_is_not_connected() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let wrong_token = "not-the-runner-token-9f8e7d";
    let token_file = env.path("wrong.token");
    std::fs::write(&token_file, format!("{wrong_token}\n")).expect("write token");
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("intruder").token_file(&token_file),
    );

    // The runner logs `attempt=2` once its second connection attempt failed.
    runner.wait_log("attempt=2 ").await;

    let log = runner.log();
    assert!(log.contains("401"), "runner log: {log}");
    assert!(
        log.contains("rejected the bearer token") && log.contains("control_plane.token_file"),
        "runner log: {log}"
    );
    assert!(
        log.contains("connection to the control plane failed; retrying"),
        "runner log: {log}"
    );
    let view = control_plane.runner_view("intruder").await;
    assert!(view.is_none(), "runner entry: {view:?}");
    let control_plane_log = control_plane.log();
    assert!(
        control_plane_log.contains("rejected runner connection"),
        "control plane log: {control_plane_log}"
    );
    env.assert_no_leaks(&control_plane, &[&runner], &[wrong_token])
        .await;
}

#[tokio::test]
async fn reconnect_after_control_plane_restart() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut first = env.control_plane_on(addr).await;
    // The workflow waits for a file the test creates while the control plane
    // is down, so its last lines and final status are produced in the outage.
    let script = r#"
echo "waiting for go"
i=0
while [ ! -e "$OUT/go-$HYBRID_RUNNER_RUN_ID" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
echo "finished after the outage"
touch "$OUT/done-$HYBRID_RUNNER_RUN_ID"
"#;
    let runner = env.start_runner(
        &first,
        RunnerConfig::new("reconnecting-runner")
            .pipeline("metadata", script)
            .env("OUT", &out),
    );
    first.wait_connected(&runner).await;
    let in_flight = first
        .submit(&submission("reconnecting-runner", QUICK_WORKFLOW))
        .await;
    first.wait_state(&in_flight, "running").await;

    first.kill().await;
    std::fs::write(out.join(format!("go-{in_flight}")), "").expect("write go file");
    wait_until(
        "the in-flight workflow to finish",
        common::RUN_DEADLINE,
        async || out.join(format!("done-{in_flight}")).exists().then_some(()),
    )
    .await;
    let second = env.control_plane_on(addr).await;
    second.wait_connected(&runner).await;

    // The second control plane learns of the in-flight run from the runner's
    // replayed outbox.
    let replayed = wait_until(
        "the in-flight run to be reported to the new control plane",
        common::RUN_DEADLINE,
        async || {
            second
                .run(&in_flight)
                .await
                .filter(|run| run["final"] == true)
        },
    )
    .await;
    assert_eq!(
        replayed["finalState"], "success",
        "replayed run: {replayed}"
    );
    let final_states: Vec<String> = states(&replayed)
        .into_iter()
        .filter(|state| !matches!(state.as_str(), "queued" | "running"))
        .collect();
    assert_eq!(final_states, vec!["success"], "replayed run: {replayed}");
    let stdout = second.log_texts(&in_flight, "stdout").await;
    assert!(
        stdout
            .iter()
            .any(|line| line == "finished after the outage"),
        "stdout lines at the new control plane: {stdout:?}"
    );

    // This run's id is chosen so that its go file can exist before it starts.
    std::fs::write(out.join("go-after-restart"), "").expect("write go file");
    let mut body = submission("reconnecting-runner", QUICK_WORKFLOW);
    body["runId"] = "after-restart".into();
    let run_id = second.submit(&body).await;
    let document = second.wait_final(&run_id).await;
    assert_eq!(document["finalState"], "success", "run: {document}");
    assert_eq!(
        states(&document),
        vec!["queued", "running", "success"],
        "run: {document}"
    );

    let log = runner.log();
    assert!(
        log.contains("control plane session lost; reconnecting"),
        "runner log: {log}"
    );
    assert!(log.contains("attempt=1 "), "runner log: {log}");
    assert!(log.contains("delay_ms="), "runner log: {log}");
    let mut outputs = second.outputs().await;
    outputs.extend(first.file_outputs());
    outputs.extend(runner.outputs());
    assert_no_secret(&[&env.token], &outputs);
}

#[tokio::test]
async fn rotated_token_is_read_again() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let token_file = env.path("rotating.token");
    std::fs::write(&token_file, "expired-token-1a2b3c\n").expect("write token");
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("rotating-runner").token_file(&token_file),
    );
    runner.wait_log("attempt=2 ").await;
    assert!(control_plane.runner_view("rotating-runner").await.is_none());

    // The same process connects once the file contains the current token.
    std::fs::write(&token_file, format!("{}\n", env.token)).expect("rotate token");
    control_plane.wait_connected(&runner).await;

    env.assert_no_leaks(&control_plane, &[&runner], &["expired-token-1a2b3c"])
        .await;
}
