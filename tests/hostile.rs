//! Hostile run requests sent to the real runner as raw frames: each is
//! rejected with its reason and no workflow process or run directory is
//! made. References outside the allowed prefixes and references in
//! non-secret fields are covered in `tests/cases.rs`.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use common::{
    ControlPlane, PLAIN_WORKFLOW, Runner, RunnerConfig, TestEnv, rejection_reason, submission,
    wait_until,
};

/// Starts a runner whose workflow appends a line to `$OUT/starts`.
async fn start(env: &TestEnv, control_plane: &ControlPlane, agent_id: &str) -> (Runner, PathBuf) {
    let out = env.folder("out");
    let runner = env.start_runner(
        control_plane,
        RunnerConfig::new(agent_id)
            .pipeline("metadata", r#"echo started >> "$OUT/starts""#)
            .env("OUT", &out),
    );
    control_plane.wait_connected(&runner).await;
    (runner, out)
}

/// Returns the text of a `run.request` frame with `payload`.
fn request_frame(payload: &Value) -> String {
    json!({"v": 1, "type": "run.request", "id": uuid::Uuid::new_v4().to_string(),
           "ts": 0, "payload": payload})
    .to_string()
}

fn request_payload(run_id: &str, config: Value) -> Value {
    json!({"runId": run_id, "pipelineFqn": "svc.pipe", "pipelineType": "metadata",
           "config": config})
}

/// Sends `frame` as run `run_id` and returns the reason of its rejection with `code`.
async fn rejected(
    control_plane: &ControlPlane,
    agent_id: &str,
    run_id: &str,
    frame: &str,
    code: &str,
) -> String {
    control_plane
        .send_frame(agent_id, frame, Some(run_id))
        .await;
    let document = control_plane.wait_final(run_id).await;
    rejection_reason(&document, code)
}

fn assert_nothing_started(out: &Path, runner: &Runner) {
    assert!(!out.join("starts").exists(), "a workflow process ran");
    let entries: Vec<_> = std::fs::read_dir(&runner.work_dir)
        .map(|dir| dir.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "run directories: {entries:?}");
}

#[tokio::test]
async fn command_override_is_rejected() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let (runner, out) = start(&env, &control_plane, "command-runner").await;

    for (run_id, field, value) in [
        (
            "with-command",
            "command",
            json!(["/bin/sh", "-c", "touch \"$OUT/starts\""]),
        ),
        ("with-args", "args", json!(["-c", "/etc/passwd"])),
        ("with-env", "env", json!({"LD_PRELOAD": "/tmp/x.so"})),
    ] {
        let mut payload = request_payload(run_id, json!(PLAIN_WORKFLOW));
        payload[field] = value;
        let reason = rejected(
            &control_plane,
            "command-runner",
            run_id,
            &request_frame(&payload),
            "invalidRequest",
        )
        .await;
        assert!(
            reason.contains(&format!("unknown field `{field}`")),
            "reason: {reason:?}"
        );
    }
    assert_nothing_started(&out, &runner);
}

#[tokio::test]
async fn huge_config_is_rejected() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let (runner, out) = start(&env, &control_plane, "huge-runner").await;

    // 100 MB of YAML comment after a valid workflow.
    let mut config = String::with_capacity(100 << 20);
    config.push_str(PLAIN_WORKFLOW);
    config.push('#');
    config.push_str(&"x".repeat((100 << 20) - config.len()));
    let frame = request_frame(&request_payload("huge-run", json!(config)));
    drop(config);
    let reason = rejected(
        &control_plane,
        "huge-runner",
        "huge-run",
        &frame,
        "invalidConfig",
    )
    .await;

    assert!(reason.contains("104857600 bytes"), "reason: {reason:?}");
    assert!(
        reason.contains("runs.max_config_bytes"),
        "reason: {reason:?}"
    );
    assert_nothing_started(&out, &runner);
}

#[tokio::test]
async fn deep_and_aliased_yaml_is_rejected() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let (runner, out) = start(&env, &control_plane, "yaml-runner").await;

    let nested = format!("source: {}x{}", "[".repeat(10_000), "]".repeat(10_000));
    let block_nested: String = (0..200)
        .map(|depth| format!("{}k{depth}:\n", "  ".repeat(depth)))
        .collect();
    // Nine levels of ten aliases each expand to 10^9 leaves.
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..10 {
        let previous = format!("*a{}", level - 1);
        let items = [previous.as_str(); 10].join(", ");
        bomb.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    bomb.push_str("source: *a9\n");

    let flow = rejected(
        &control_plane,
        "yaml-runner",
        "flow-nested",
        &request_frame(&request_payload("flow-nested", json!(nested))),
        "invalidConfig",
    )
    .await;
    assert!(flow.contains("workflow config"), "reason: {flow:?}");
    let block = rejected(
        &control_plane,
        "yaml-runner",
        "block-nested",
        &request_frame(&request_payload("block-nested", json!(block_nested))),
        "invalidConfig",
    )
    .await;
    assert!(block.contains("workflow config"), "reason: {block:?}");
    let aliases = rejected(
        &control_plane,
        "yaml-runner",
        "alias-bomb",
        &request_frame(&request_payload("alias-bomb", json!(bomb))),
        "invalidConfig",
    )
    .await;
    assert!(aliases.contains("workflow config"), "reason: {aliases:?}");
    assert_nothing_started(&out, &runner);
}

#[tokio::test]
async fn invalid_utf8_is_rejected() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let (runner, out) = start(&env, &control_plane, "utf8-runner").await;

    // JSON text cannot hold invalid UTF-8 bytes; an unpaired surrogate escape
    // is how such bytes arrive in a JSON string.
    let frame = request_frame(&request_payload("utf8-run", json!("PLACEHOLDER")))
        .replace("PLACEHOLDER", "source: \\ud800 broken");
    let reason = rejected(
        &control_plane,
        "utf8-runner",
        "utf8-run",
        &frame,
        "invalidRequest",
    )
    .await;

    assert!(
        reason.contains("not a valid envelope"),
        "reason: {reason:?}"
    );
    assert!(reason.contains("escape"), "reason: {reason:?}");
    assert_nothing_started(&out, &runner);
}

#[tokio::test]
async fn unknown_message_type_is_ignored() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let (runner, out) = start(&env, &control_plane, "typed-runner").await;

    let frame = json!({"v": 1, "type": "run.execute", "id": "x", "ts": 0,
                       "payload": {"command": ["/bin/sh", "-c", "id"]}});
    control_plane
        .send_frame("typed-runner", &frame.to_string(), None)
        .await;
    runner
        .wait_log(r#"unknown message type "run.execute""#)
        .await;
    assert_nothing_started(&out, &runner);

    // The session stays up and serves the next request.
    let run_id = control_plane
        .submit(&submission("typed-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;
    assert_eq!(document["finalState"], "success", "run: {document}");
}

#[tokio::test]
async fn reused_active_run_id_is_rejected() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let script = r#"
echo started >> "$OUT/starts"
i=0
while [ ! -e "$OUT/go" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
"#;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("reuse-runner")
            .pipeline("metadata", script)
            .env("OUT", &out),
    );
    control_plane.wait_connected(&runner).await;
    let mut body = submission("reuse-runner", PLAIN_WORKFLOW);
    body["runId"] = json!("reused-id");
    control_plane.submit(&body).await;
    control_plane.wait_state("reused-id", "running").await;

    let frame = request_frame(&request_payload("reused-id", json!(PLAIN_WORKFLOW)));
    control_plane.send_frame("reuse-runner", &frame, None).await;
    wait_until(
        "the control plane to log the duplicateRun rejection",
        common::RUN_DEADLINE,
        async || control_plane.log().contains("duplicateRun").then_some(()),
    )
    .await;
    let log = control_plane.log();
    assert!(
        log.contains("run reused-id is already active"),
        "control plane log: {log}"
    );

    std::fs::write(out.join("go"), "").expect("write go file");
    let document = control_plane.wait_final("reused-id").await;
    assert_eq!(document["finalState"], "success", "run: {document}");
    let starts = std::fs::read_to_string(out.join("starts")).expect("starts file");
    assert_eq!(starts.lines().count(), 1, "workflow starts: {starts:?}");
}

#[tokio::test]
async fn ended_run_id_is_not_run_again() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let (runner, out) = start(&env, &control_plane, "ended-runner").await;
    let mut body = submission("ended-runner", PLAIN_WORKFLOW);
    body["runId"] = json!("ended-id");
    control_plane.submit(&body).await;
    let document = control_plane.wait_final("ended-id").await;
    assert_eq!(document["finalState"], "success", "run: {document}");

    // The same request, as a recording of it would be sent again: once to
    // this runner process and once to the next one.
    let reason = "run ended-id already ended on this runner; a run id can be used for one run only";
    let frame = request_frame(&request_payload("ended-id", json!(PLAIN_WORKFLOW)));
    let mut runner = runner;
    for restarts in 0..2 {
        if restarts > 0 {
            runner.signal(nix::sys::signal::Signal::SIGTERM);
            assert_eq!(runner.wait_exit().await, Some(0));
            runner = env.start_runner(
                &control_plane,
                RunnerConfig::new("ended-runner")
                    .pipeline("metadata", r#"echo started >> "$OUT/starts""#)
                    .env("OUT", &out),
            );
            control_plane.wait_connected(&runner).await;
        }
        control_plane.send_frame("ended-runner", &frame, None).await;
        wait_until(
            "the control plane to log the duplicateRun rejection",
            common::RUN_DEADLINE,
            async || (control_plane.log().matches(reason).count() > restarts).then_some(()),
        )
        .await;
    }
    let starts = std::fs::read_to_string(out.join("starts")).expect("starts file");
    assert_eq!(starts.lines().count(), 1, "workflow starts: {starts:?}");
}
