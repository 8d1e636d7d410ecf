//! Shutdown through the real binary: the drain timeout, the second signal,
//! post_run hooks during shutdown, cleanup of processes and run directories,
//! and the outbox flush with and without a reachable control plane.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use common::{
    ControlPlane, PLAIN_WORKFLOW, RunnerConfig, Signal, TestEnv, process_gone, states, submission,
    wait_until,
};

/// A workflow that ignores SIGTERM, leaves a grandchild that ignores it too,
/// records the grandchild's pid and its run directory, and waits.
const STUBBORN: &str = r#"
trap '' TERM
(exec sleep 300) &
echo $! > "$OUT/$RUN.tmp" && mv "$OUT/$RUN.tmp" "$OUT/$RUN.pid"
printf '%s' "$HYBRID_RUNNER_RUN_DIR" > "$OUT/$RUN.dir"
echo "working"
wait
"#;

/// A post_run hook that reports each finished run as an event.
const POST_RUN: &str = r#"
function post_run(run, result)
  runner.saas.send("run.finished", { run = run.runId, state = result.state })
end
"#;

/// Writes the post_run hook and returns its folder.
fn hooks_folder(env: &TestEnv) -> PathBuf {
    let hooks = env.folder("hooks");
    std::fs::write(hooks.join("post.lua"), POST_RUN).expect("write hook");
    hooks
}

/// Submits a run with id `run_id` whose `$RUN` is its id.
async fn submit(control_plane: &ControlPlane, agent_id: &str, run_id: &str) {
    let mut body = submission(agent_id, PLAIN_WORKFLOW);
    body["runId"] = json!(run_id);
    control_plane.submit(&body).await;
}

/// Waits for the grandchild pid and run directory a STUBBORN run records.
async fn grandchild_and_dir(out: &Path, run_id: &str) -> (u32, PathBuf) {
    let pid = wait_until(
        &format!("the grandchild pid of {run_id}"),
        common::RUN_DEADLINE,
        async || {
            std::fs::read_to_string(out.join(format!("{run_id}.pid")))
                .ok()
                .and_then(|text| text.trim().parse().ok())
        },
    )
    .await;
    let dir = std::fs::read_to_string(out.join(format!("{run_id}.dir"))).expect("run dir file");
    (pid, PathBuf::from(dir))
}

/// Returns the `run.finished` events the post_run hook sent.
async fn post_run_events(control_plane: &ControlPlane, agent_id: &str) -> Vec<Value> {
    let view = control_plane
        .runner_view(agent_id)
        .await
        .unwrap_or_default();
    view["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|event| event["payload"]["kind"] == "run.finished")
                .map(|event| event["payload"]["payload"].clone())
                .collect()
        })
        .unwrap_or_default()
}

fn assert_cleaned_up(grandchild: u32, run_dir: &Path) {
    assert!(
        process_gone(grandchild),
        "grandchild {grandchild} is still running"
    );
    assert!(
        !run_dir.exists(),
        "run directory {} still exists",
        run_dir.display()
    );
}

#[tokio::test]
async fn drain_timeout_cancels_runs() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let hooks = hooks_folder(&env);
    let control_plane = env.control_plane().await;
    let mut runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("drain-runner")
            .pipeline("metadata", &STUBBORN.replace("$RUN", "drained"))
            .env("OUT", &out)
            .hooks(&hooks)
            .runs_key("drain_timeout", json!("1s")),
    );
    control_plane.wait_connected(&runner).await;
    submit(&control_plane, "drain-runner", "drained").await;
    let (grandchild, run_dir) = grandchild_and_dir(&out, "drained").await;

    runner.signal(Signal::SIGTERM);
    let code = runner.wait_exit().await;

    assert_eq!(code, Some(0), "exit code; log: {}", runner.log());
    let log = runner.log();
    assert!(log.contains("drain timeout passed"), "runner log: {log}");
    assert!(!log.contains("flush timeout passed"), "runner log: {log}");
    let document = control_plane.wait_final("drained").await;
    assert_eq!(document["finalState"], "stopped", "run: {document}");
    let reason = document["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("shutting down"), "reason: {reason:?}");
    let events = post_run_events(&control_plane, "drain-runner").await;
    assert_eq!(
        events,
        vec![json!({"run": "drained", "state": "stopped"})],
        "post_run events"
    );
    assert_cleaned_up(grandchild, &run_dir);
}

#[tokio::test]
async fn second_signal_cancels_now() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let hooks = hooks_folder(&env);
    let control_plane = env.control_plane().await;
    // Each run names its files after its run directory.
    let script = STUBBORN.replace("$RUN", "$RUN_NAME");
    let mut runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("stop-runner")
            .pipeline(
                "metadata",
                &format!("RUN_NAME=$(basename \"$HYBRID_RUNNER_RUN_DIR\")\n{script}"),
            )
            .env("OUT", &out)
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;
    submit(&control_plane, "stop-runner", "first").await;
    submit(&control_plane, "stop-runner", "second").await;
    control_plane.wait_state("first", "running").await;
    control_plane.wait_state("second", "running").await;
    let mut started = Vec::new();
    for dir in std::fs::read_dir(&runner.work_dir)
        .expect("run dirs")
        .flatten()
    {
        let name = dir.file_name().to_string_lossy().into_owned();
        started.push(grandchild_and_dir(&out, &name).await);
    }
    assert_eq!(started.len(), 2, "run directories");

    runner.signal(Signal::SIGTERM);
    runner.wait_log("shutdown requested").await;
    runner.signal(Signal::SIGTERM);
    let code = runner.wait_exit().await;

    assert_eq!(code, Some(0), "exit code; log: {}", runner.log());
    // The flush finished before exit, so every final status is already here.
    assert!(
        !runner.log().contains("flush timeout passed"),
        "runner log: {}",
        runner.log()
    );
    for run_id in ["first", "second"] {
        let document = control_plane.run(run_id).await.expect("run document");
        assert_eq!(document["final"], true, "run: {document}");
        assert_eq!(document["finalState"], "stopped", "run: {document}");
        assert_eq!(
            states(&document).iter().filter(|s| *s == "stopped").count(),
            1,
            "run: {document}"
        );
        let reason = document["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("the runner was stopped"),
            "reason: {reason:?}"
        );
    }
    let mut events = post_run_events(&control_plane, "stop-runner").await;
    events.sort_by_key(|event| event["run"].to_string());
    assert_eq!(
        events,
        vec![
            json!({"run": "first", "state": "stopped"}),
            json!({"run": "second", "state": "stopped"})
        ],
        "post_run events"
    );
    for (grandchild, run_dir) in started {
        assert_cleaned_up(grandchild, &run_dir);
    }
}

#[tokio::test]
async fn unsent_outbox_survives_exit() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let mut control_plane = env.control_plane().await;
    let addr = control_plane.addr;
    let config = RunnerConfig::new("flush-runner")
        .pipeline(
            "metadata",
            r#"while [ ! -e "$OUT/go" ]; do sleep 0.05; done; echo "done after the outage""#,
        )
        .env("OUT", &out)
        .runs_key("flush_timeout", json!("1s"));
    let mut runner = env.start_runner(&control_plane, config.clone());
    control_plane.wait_connected(&runner).await;
    submit(&control_plane, "flush-runner", "late").await;
    control_plane.wait_state("late", "running").await;

    // The run ends while the control plane is gone, so its final status
    // cannot be acknowledged before the runner exits.
    control_plane.kill().await;
    runner.signal(Signal::SIGTERM);
    runner.wait_log("shutdown requested").await;
    std::fs::write(out.join("go"), "").expect("write go file");
    let code = runner.wait_exit().await;

    assert_eq!(code, Some(0), "exit code; log: {}", runner.log());
    assert!(
        runner.log().contains("flush timeout passed"),
        "runner log: {}",
        runner.log()
    );
    // The next runner process sends what the first one could not.
    let control_plane = env.control_plane_on(addr).await;
    let _restarted = env.start_runner(&control_plane, config);
    // The new control plane learns of the run from the replayed messages.
    let document = wait_until(
        "the replayed final status",
        common::RUN_DEADLINE,
        async || {
            control_plane
                .run("late")
                .await
                .filter(|document| document["final"] == true)
        },
    )
    .await;
    assert_eq!(document["finalState"], "success", "run: {document}");
    let stdout = control_plane.log_texts("late", "stdout").await;
    assert_eq!(stdout, vec!["done after the outage"], "stdout lines");
}

#[tokio::test]
async fn drain_message_rejects_new_runs() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("saas-drained")
            .pipeline("metadata", r#"touch "$OUT/ran""#)
            .env("OUT", &out),
    );
    control_plane.wait_connected(&runner).await;

    let (status, answer) = control_plane
        .post(
            "/v1/runners/saas-drained/drain",
            &json!({ "reason": "maintenance" }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "drain: {answer}");
    wait_until(
        "the runner view to show draining",
        common::RUN_DEADLINE,
        async || {
            let view = control_plane.runner_view("saas-drained").await?;
            (view["draining"] == true).then_some(())
        },
    )
    .await;
    submit(&control_plane, "saas-drained", "after-drain").await;
    let document = control_plane.wait_final("after-drain").await;

    let reason = common::rejection_reason(&document, "draining");
    assert!(reason.contains("draining"), "reason: {reason:?}");
    assert!(!out.join("ran").exists(), "a workflow process ran");
}
