//! Run lifecycle through the real binary: a successful run and what its
//! workflow process receives, cancel, timeout, capacity and requests the
//! runner or the control plane must reject.

mod common;

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{
    PLAIN_WORKFLOW, RunnerConfig, TestEnv, process_gone, read_case, rejection_reason, states,
    submission, wait_until,
};

const MYSQL_PASSWORD: &str = "Mysql-Pa55!word";
const BOT_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.bot-jwt-for-tests.c2lnbmF0dXJl";
const AWS_SECRET: &str = "aws-secret-from-the-runner-env-4Kx9";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// Returns a field of every status of a run document.
fn status_field(document: &Value, field: &str) -> Vec<Value> {
    document["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .map(|status| status["pipelineStatus"][field].clone())
        .collect()
}

/// Returns the number of final states among a run's statuses.
fn final_count(document: &Value) -> usize {
    states(document)
        .iter()
        .filter(|state| !matches!(state.as_str(), "queued" | "running"))
        .count()
}

/// Asserts that `value` is an integer in the range of epoch milliseconds
/// between 2020 and 2286.
fn assert_epoch_ms(value: &Value, what: &str) {
    let millis = value
        .as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {value}"));
    assert!(
        millis > 1_577_836_800_000,
        "{what} is not epoch ms: {millis}"
    );
    assert!(
        millis < 10_000_000_000_000,
        "{what} is not epoch ms: {millis}"
    );
}

#[tokio::test]
async fn mysql_run_resolves_password() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let script = r#"
cp "$HYBRID_RUNNER_CONFIG" "$OUT/config.json"
stat -c %a "$HYBRID_RUNNER_CONFIG" > "$OUT/config-mode"
stat -c %a "$HYBRID_RUNNER_RUN_DIR" > "$OUT/run-dir-mode"
printf '%s' "$HYBRID_RUNNER_RUN_DIR" > "$OUT/run-dir"
printf '%s' "$1" > "$OUT/argument"
pwd > "$OUT/cwd"
env > "$OUT/env"
echo "ingesting local_mysql"
echo "warning on stderr" >&2
"#;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("mysql-runner")
            .pipeline("metadata", script)
            .env("OUT", &out)
            .secret("/collate/hybrid-ingestion/mysql/password", MYSQL_PASSWORD)
            .secret("/collate/hybrid-ingestion/bot/jwt", BOT_JWT)
            .process_env("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
    );
    control_plane.wait_connected(&runner).await;

    let workflow = read_case("workflows/mysql-metadata.yaml");
    let mut body = submission("mysql-runner", &workflow);
    body["pipelineFqn"] = "local_mysql.mysql_metadata_ingestion".into();
    let run_id = control_plane.submit(&body).await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    assert_eq!(document["exitCode"], 0, "run: {document}");
    assert_eq!(document["outcome"], "accepted", "run: {document}");

    let config: Value = serde_json::from_str(&read(&out.join("config.json"))).expect("config JSON");
    assert_eq!(
        config["source"]["serviceConnection"]["config"]["authType"]["password"], MYSQL_PASSWORD,
        "resolved password"
    );
    assert_eq!(
        config["workflowConfig"]["openMetadataServerConfig"]["securityConfig"]["jwtToken"], BOT_JWT,
        "resolved bot token"
    );
    assert_eq!(
        config["source"]["serviceConnection"]["config"]["hostPort"], "mysql.internal:3306",
        "non-secret field"
    );
    assert_eq!(
        read(&out.join("config-mode")).trim(),
        "600",
        "config file mode"
    );
    assert_eq!(
        read(&out.join("run-dir-mode")).trim(),
        "700",
        "run directory mode"
    );

    let run_dir = read(&out.join("run-dir"));
    assert_eq!(
        Path::new(&run_dir),
        runner.work_dir.join(&run_id),
        "run directory"
    );
    assert!(
        !Path::new(&run_dir).exists(),
        "run directory {run_dir} still exists"
    );
    assert_eq!(read(&out.join("cwd")).trim(), run_dir, "working directory");
    assert_eq!(
        read(&out.join("argument")),
        format!("{run_dir}/workflow.json"),
        "{{config}} argument"
    );

    let child_env = read(&out.join("env"));
    assert!(
        child_env.contains(&format!("HYBRID_RUNNER_RUN_ID={run_id}\n")),
        "child environment: {child_env}"
    );
    assert!(
        child_env.contains(&format!("OUT={}\n", out.display())),
        "child environment: {child_env}"
    );
    assert!(
        !child_env.contains("AWS_SECRET_ACCESS_KEY"),
        "child environment: {child_env}"
    );

    assert_eq!(
        states(&document),
        vec!["queued", "running", "success"],
        "status timeline: {document}"
    );
    assert_eq!(final_count(&document), 1, "final statuses: {document}");
    let start_dates = status_field(&document, "startDate");
    let timestamps = status_field(&document, "timestamp");
    let end_dates = status_field(&document, "endDate");
    for (index, value) in start_dates.iter().enumerate() {
        assert_epoch_ms(value, &format!("startDate of status {index}"));
        assert_eq!(
            value, &start_dates[0],
            "startDate of status {index}: {document}"
        );
    }
    for (index, value) in timestamps.iter().enumerate() {
        assert_epoch_ms(value, &format!("timestamp of status {index}"));
        assert!(
            value.as_i64() >= start_dates[0].as_i64(),
            "timestamp of status {index} is before startDate: {document}"
        );
    }
    assert!(end_dates[0].is_null(), "endDate of queued: {document}");
    assert!(end_dates[1].is_null(), "endDate of running: {document}");
    assert_epoch_ms(&end_dates[2], "endDate of success");
    assert_eq!(
        end_dates[2], timestamps[2],
        "endDate of success: {document}"
    );
    for status in document["statuses"].as_array().unwrap() {
        assert_eq!(status["runId"], run_id.as_str(), "status: {status}");
        assert_eq!(
            status["pipelineStatus"]["runId"],
            run_id.as_str(),
            "status: {status}"
        );
        assert_eq!(
            status["pipelineFqn"], "local_mysql.mysql_metadata_ingestion",
            "status: {status}"
        );
    }

    let lines = control_plane.logs(&run_id).await;
    let numbers: Vec<u64> = lines
        .iter()
        .map(|line| line["n"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=lines.len() as u64).collect();
    assert_eq!(numbers, expected, "log line numbers");
    let stdout = control_plane.log_texts(&run_id, "stdout").await;
    assert_eq!(stdout, vec!["ingesting local_mysql"], "stdout lines");
    let stderr = control_plane.log_texts(&run_id, "stderr").await;
    assert_eq!(stderr, vec!["warning on stderr"], "stderr lines");
    let runner_lines = control_plane.log_texts(&run_id, "runner").await;
    assert_eq!(
        runner_lines.last().map(String::as_str),
        Some("run ended: success"),
        "runner lines: {runner_lines:?}"
    );

    env.assert_no_leaks(
        &control_plane,
        &[&runner],
        &[MYSQL_PASSWORD, BOT_JWT, AWS_SECRET],
    )
    .await;
}

#[tokio::test]
async fn cancel_kills_grandchild_ignoring_term() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    // Both the workflow process and its grandchild ignore SIGTERM, so only
    // SIGKILL to the process group after the grace period stops them.
    let script = r#"
trap '' TERM
(trap '' TERM; exec sleep 300) &
echo $! > "$OUT/grandchild.tmp" && mv "$OUT/grandchild.tmp" "$OUT/grandchild.pid"
echo $$ > "$OUT/child.pid"
printf '%s' "$HYBRID_RUNNER_RUN_DIR" > "$OUT/run-dir"
echo "started a grandchild"
wait
"#;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("cancel-runner")
            .pipeline("metadata", script)
            .env("OUT", &out),
    );
    control_plane.wait_connected(&runner).await;
    let run_id = control_plane
        .submit(&submission("cancel-runner", PLAIN_WORKFLOW))
        .await;
    control_plane.wait_state(&run_id, "running").await;
    let grandchild: u32 = wait_until(
        "the grandchild pid file",
        common::RUN_DEADLINE,
        async || {
            std::fs::read_to_string(out.join("grandchild.pid"))
                .ok()
                .and_then(|text| text.trim().parse().ok())
        },
    )
    .await;
    let child: u32 = read(&out.join("child.pid"))
        .trim()
        .parse()
        .expect("child pid");
    assert!(
        !process_gone(grandchild),
        "grandchild {grandchild} is not running"
    );

    control_plane.cancel(&run_id, "cancelled by the test").await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "stopped", "run: {document}");
    assert_eq!(
        document["reason"], "cancelled by the test",
        "run: {document}"
    );
    assert_eq!(final_count(&document), 1, "final statuses: {document}");
    let notes = control_plane.log_texts(&run_id, "runner").await;
    assert!(
        notes
            .iter()
            .any(|line| line == "run cancelled: sent SIGTERM to the process group"),
        "runner lines: {notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|line| line.ends_with("after SIGTERM: sent SIGKILL to the process group")),
        "runner lines: {notes:?}"
    );
    // SIGKILL is delivered asynchronously, so the test waits for it to land.
    wait_until(
        &format!("grandchild {grandchild} to be gone"),
        common::RUN_DEADLINE,
        async || process_gone(grandchild).then_some(()),
    )
    .await;
    assert!(
        process_gone(child),
        "workflow process {child} is still running"
    );
    let run_dir = read(&out.join("run-dir"));
    assert!(
        !Path::new(&run_dir).exists(),
        "run directory {run_dir} still exists"
    );
    let log = runner.log();
    assert!(log.contains("SIGKILL"), "runner log: {log}");
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn timeout_fails_the_run() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("timeout-runner").pipeline("metadata", "echo sleeping; sleep 30"),
    );
    control_plane.wait_connected(&runner).await;

    let mut body = submission("timeout-runner", PLAIN_WORKFLOW);
    body["timeoutSeconds"] = json!(1);
    let run_id = control_plane.submit(&body).await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "failed", "run: {document}");
    let reason = document["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("timed out"), "reason: {reason:?}");
    assert_eq!(final_count(&document), 1, "final statuses: {document}");
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn capacity_rejects_second_run() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("busy-runner")
            .capacity(1)
            .pipeline("metadata", "echo working; sleep 30")
            .pipeline("lineage", "echo quick"),
    );
    control_plane.wait_connected(&runner).await;
    let long_run = control_plane
        .submit(&submission("busy-runner", PLAIN_WORKFLOW))
        .await;
    control_plane.wait_state(&long_run, "running").await;

    let mut quick = submission("busy-runner", PLAIN_WORKFLOW);
    quick["pipelineType"] = "lineage".into();
    let second = control_plane.submit(&quick).await;
    let rejected = control_plane.wait_final(&second).await;

    let reason = rejection_reason(&rejected, "atCapacity");
    assert!(reason.contains("capacity (1 runs)"), "reason: {reason:?}");
    assert!(
        rejected["statuses"].as_array().unwrap().is_empty(),
        "rejected run has statuses: {rejected}"
    );

    control_plane.cancel(&long_run, "make room").await;
    let stopped = control_plane.wait_final(&long_run).await;
    assert_eq!(stopped["finalState"], "stopped", "run: {stopped}");
    // The slot is free once the final status is out, so runs submitted right
    // after each other's final status all run.
    for _ in 0..3 {
        let run_id = control_plane.submit(&quick).await;
        let document = control_plane.wait_final(&run_id).await;
        assert_eq!(document["finalState"], "success", "run: {document}");
    }
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn command_in_request_is_rejected() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("strict-runner")
            .pipeline("metadata", r#"touch "$OUT/ran""#)
            .env("OUT", &out),
    );
    control_plane.wait_connected(&runner).await;

    let mut body = submission("strict-runner", PLAIN_WORKFLOW);
    body["command"] = json!(["/bin/sh", "-c", "touch \"$OUT/injected\""]);
    let (status, answer) = control_plane.post("/v1/runs", &body).await;

    assert_eq!(status, StatusCode::BAD_REQUEST, "answer: {answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("\"command\""), "error: {error:?}");
    let (_, runs) = control_plane.get("/v1/runs").await;
    assert_eq!(runs, json!([]), "recorded runs");
    assert!(!out.join("injected").exists(), "the injected command ran");
    assert!(!out.join("ran").exists(), "the workflow ran");
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn unknown_pipeline_type_is_rejected() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("typed-runner")
            .pipeline("metadata", r#"touch "$OUT/ran""#)
            .env("OUT", &out),
    );
    control_plane.wait_connected(&runner).await;

    let mut body = submission("typed-runner", PLAIN_WORKFLOW);
    body["pipelineType"] = "dataQualityX".into();
    let run_id = control_plane.submit(&body).await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "unknownPipelineType");
    assert!(reason.contains("\"dataQualityX\""), "reason: {reason:?}");
    assert!(reason.contains("metadata"), "reason: {reason:?}");
    assert!(!out.join("ran").exists(), "a workflow process ran");
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn sigterm_drains_active_runs() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let script = r#"
i=0
while [ ! -e "$OUT/go" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
echo "finished while draining"
"#;
    let mut runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("draining-runner")
            .pipeline("metadata", script)
            .env("OUT", &out),
    );
    control_plane.wait_connected(&runner).await;
    let active = control_plane
        .submit(&submission("draining-runner", PLAIN_WORKFLOW))
        .await;
    control_plane.wait_state(&active, "running").await;
    // The runner reports a new active run before its next regular heartbeat
    // (10 s by default); the deadline is well below that.
    wait_until(
        "the runner view to list the active run",
        std::time::Duration::from_secs(5),
        async || {
            let view = control_plane.runner_view("draining-runner").await?;
            let listed = view["activeRuns"]
                .as_array()?
                .iter()
                .any(|id| *id == active.as_str());
            listed.then_some(())
        },
    )
    .await;

    runner.signal(common::Signal::SIGTERM);
    runner.wait_log("shutdown requested").await;
    wait_until(
        "the runner view to show draining",
        std::time::Duration::from_secs(5),
        async || {
            let view = control_plane.runner_view("draining-runner").await?;
            (view["draining"] == true).then_some(())
        },
    )
    .await;
    let late = control_plane
        .submit(&submission("draining-runner", PLAIN_WORKFLOW))
        .await;
    let rejected = control_plane.wait_final(&late).await;
    let reason = rejection_reason(&rejected, "draining");
    assert!(reason.contains("draining"), "reason: {reason:?}");

    std::fs::write(out.join("go"), "").expect("write go file");
    let code = runner.wait_exit().await;

    assert_eq!(code, Some(0), "runner exit code; log: {}", runner.log());
    let document = control_plane.wait_final(&active).await;
    assert_eq!(document["finalState"], "success", "run: {document}");
    let stdout = control_plane.log_texts(&active, "stdout").await;
    assert_eq!(stdout, vec!["finished while draining"], "stdout lines");
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn many_lines_arrive_in_order() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    // 5000 lines fill many 200-line chunks; every tenth line goes to stderr.
    let script = r#"
i=1
while [ $i -le 5000 ]; do
  if [ $((i % 10)) -eq 0 ]; then echo "line $i" >&2; else echo "line $i"; fi
  i=$((i+1))
done
"#;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("chatty-runner").pipeline("metadata", script),
    );
    control_plane.wait_connected(&runner).await;

    let run_id = control_plane
        .submit(&submission("chatty-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let lines = control_plane.logs(&run_id).await;
    let numbers: Vec<u64> = lines
        .iter()
        .map(|line| line["n"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=lines.len() as u64).collect();
    assert_eq!(numbers, expected, "log line numbers");
    let stdout = control_plane.log_texts(&run_id, "stdout").await;
    let expected_stdout: Vec<String> = (1..=5000)
        .filter(|i| i % 10 != 0)
        .map(|i| format!("line {i}"))
        .collect();
    assert_eq!(stdout, expected_stdout, "stdout lines");
    let stderr = control_plane.log_texts(&run_id, "stderr").await;
    let expected_stderr: Vec<String> = (1..=500).map(|i| format!("line {}", i * 10)).collect();
    assert_eq!(stderr, expected_stderr, "stderr lines");
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn env_provider_resolves_password() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let other_secret = "Other-Service-Pa55";
    let script = r#"
cp "$HYBRID_RUNNER_CONFIG" "$OUT/config.json"
env > "$OUT/env"
"#;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("env-runner")
            .env_provider()
            .pipeline("metadata", script)
            .env("OUT", &out)
            .process_env(
                "HYBRID_RUNNER_SECRET_COLLATE_HYBRID_INGESTION_MYSQL_PASSWORD",
                MYSQL_PASSWORD,
            )
            .process_env(
                "HYBRID_RUNNER_SECRET_COLLATE_HYBRID_INGESTION_BOT_JWT",
                BOT_JWT,
            )
            .process_env(
                "HYBRID_RUNNER_SECRET_COLLATE_HYBRID_INGESTION_OTHER_PASSWORD",
                other_secret,
            ),
    );
    control_plane.wait_connected(&runner).await;

    let workflow = read_case("workflows/mysql-metadata.yaml");
    let run_id = control_plane
        .submit(&submission("env-runner", &workflow))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let config: Value = serde_json::from_str(&read(&out.join("config.json"))).expect("config JSON");
    assert_eq!(
        config["source"]["serviceConnection"]["config"]["authType"]["password"], MYSQL_PASSWORD,
        "resolved password"
    );
    // The workflow gets only the values its config references, never the
    // provider's variables, which may hold other services' secrets.
    let child_env = read(&out.join("env"));
    assert!(
        !child_env.contains("HYBRID_RUNNER_SECRET_"),
        "child environment: {child_env}"
    );
    assert!(
        !child_env.contains(other_secret),
        "child environment: {child_env}"
    );
    env.assert_no_leaks(
        &control_plane,
        &[&runner],
        &[MYSQL_PASSWORD, BOT_JWT, other_secret],
    )
    .await;
}

#[tokio::test]
async fn restart_reports_orphaned_run_failed() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let script = r#"
(exec sleep 300) &
echo $! > "$OUT/grandchild.tmp" && mv "$OUT/grandchild.tmp" "$OUT/grandchild.pid"
printf '%s' "$HYBRID_RUNNER_RUN_DIR" > "$OUT/run-dir"
echo "working"
wait
"#;
    let config = RunnerConfig::new("crashing-runner")
        .pipeline("metadata", script)
        .env("OUT", &out);
    let runner = env.start_runner(&control_plane, config.clone());
    control_plane.wait_connected(&runner).await;
    let run_id = control_plane
        .submit(&submission("crashing-runner", PLAIN_WORKFLOW))
        .await;
    control_plane.wait_state(&run_id, "running").await;
    let grandchild: u32 = wait_until(
        "the grandchild pid file",
        common::RUN_DEADLINE,
        async || {
            std::fs::read_to_string(out.join("grandchild.pid"))
                .ok()
                .and_then(|text| text.trim().parse().ok())
        },
    )
    .await;
    let run_dir = std::fs::read_to_string(out.join("run-dir")).expect("run dir file");

    // SIGKILL gives the runner no chance to clean up: its workflow keeps
    // running in its own process group.
    runner.signal(common::Signal::SIGKILL);
    let mut runner = runner;
    runner.wait_exit().await;
    assert!(
        !process_gone(grandchild),
        "the grandchild outlives the runner"
    );

    let restarted = env.start_runner(&control_plane, config);
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "failed", "run: {document}");
    let reason = document["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the runner restarted"),
        "reason: {reason:?}"
    );
    assert_eq!(final_count(&document), 1, "final statuses: {document}");
    wait_until(
        &format!("grandchild {grandchild} to be gone"),
        common::RUN_DEADLINE,
        async || process_gone(grandchild).then_some(()),
    )
    .await;
    assert!(
        !Path::new(&run_dir).exists(),
        "run directory {run_dir} still exists"
    );
    env.assert_no_leaks(&control_plane, &[&restarted], &[])
        .await;
}

#[tokio::test]
async fn rotated_openmetadata_token_reaches_next_run() {
    const FIRST_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.first-bot-jwt.c2lnbmF0dXJl";
    const SECOND_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.second-bot-jwt.c2lnbmF0dXJl";
    let env = TestEnv::new();
    let out = env.folder("out");
    let token_file = env.path("bot.jwt");
    std::fs::write(&token_file, format!("{FIRST_JWT}\n")).expect("write token");
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("rotating-runner")
            .pipeline(
                "metadata",
                r#"cp "$HYBRID_RUNNER_CONFIG" "$OUT/$HYBRID_RUNNER_RUN_ID.json""#,
            )
            .env("OUT", &out)
            .section(
                "openmetadata",
                json!({
                    "host_port": "http://127.0.0.1:8585/api",
                    "jwt_token_file": token_file,
                }),
            ),
    );
    control_plane.wait_connected(&runner).await;

    let mut tokens = Vec::new();
    for next in [Some(SECOND_JWT), None] {
        let run_id = control_plane
            .submit(&submission("rotating-runner", PLAIN_WORKFLOW))
            .await;
        let document = control_plane.wait_final(&run_id).await;
        assert_eq!(document["finalState"], "success", "run: {document}");
        let config: Value =
            serde_json::from_str(&read(&out.join(format!("{run_id}.json")))).expect("config JSON");
        let server = &config["workflowConfig"]["openMetadataServerConfig"];
        assert_eq!(server["hostPort"], "http://127.0.0.1:8585/api");
        tokens.push(server["securityConfig"]["jwtToken"].clone());
        if let Some(next) = next {
            std::fs::write(&token_file, next).expect("rotate token");
        }
    }

    assert_eq!(tokens, vec![json!(FIRST_JWT), json!(SECOND_JWT)]);
    env.assert_no_leaks(&control_plane, &[&runner], &[FIRST_JWT, SECOND_JWT])
        .await;
}
