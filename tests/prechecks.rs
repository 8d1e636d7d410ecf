//! Scheduled pre-checks through the real runner and CLI. The tests cover
//! real-time scheduling, skipped overlaps, gating of runs and results at the
//! reference control plane. They also cover reloads of Lua-registered checks,
//! the example checks in `scripts/examples`, load errors for invalid
//! schedules, and the quickstart's passing and failing checks.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use common::{
    BIN, PLAIN_WORKFLOW, RunnerConfig, TestEnv, rejection_reason, submission, wait_until,
};

/// URL written into runner.yaml for CLI commands that never connect.
const UNUSED_URL: &str = "ws://127.0.0.1:9/agent/v1/connect";

/// Copies example `name` from `scripts/examples` into a new hooks folder,
/// replacing each `(from, to)` pair of constants, and returns the folder.
fn hooks_with_example(env: &TestEnv, name: &str, replacements: &[(&str, &str)]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/examples")
        .join(name);
    let mut text = std::fs::read_to_string(&source)
        .unwrap_or_else(|error| panic!("read example {name}: {error}"));
    for (from, to) in replacements {
        assert!(text.contains(from), "example {name} has no {from:?}");
        text = text.replace(from, to);
    }
    let hooks = env.folder("hooks");
    std::fs::write(hooks.join(name), text).expect("write example");
    hooks
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write hook script");
}

/// Returns the results of check `name` kept by the control plane.
async fn results(control_plane: &common::ControlPlane, agent_id: &str, name: &str) -> Vec<Value> {
    control_plane
        .runner_view(agent_id)
        .await
        .and_then(|view| view["prechecks"][name].as_array().cloned())
        .unwrap_or_default()
}

/// Runs `hybrid-runner` with `args` and returns its exit code, stdout and stderr.
fn cli(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run hybrid-runner");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_second_runs_about_once_a_second() {
    let env = TestEnv::new();
    let hooks = hooks_with_example(
        &env,
        "precheck_disk.lua",
        &[
            ("\"*/10 * * * *\"", "\"@every 1s\""),
            ("MIN_AVAILABLE_PERCENT = 10", "MIN_AVAILABLE_PERCENT = 0"),
        ],
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("ticking-runner")
            .pipeline("metadata", "true")
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;
    wait_until("a first result", Duration::from_secs(10), async || {
        let found = results(&control_plane, "ticking-runner", "work_dir_free_space").await;
        (!found.is_empty()).then_some(())
    })
    .await;

    let before = results(&control_plane, "ticking-runner", "work_dir_free_space")
        .await
        .len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = results(&control_plane, "ticking-runner", "work_dir_free_space").await;
    let count = after.len() - before;
    assert!(
        (3..=8).contains(&count),
        "{count} results in 5 s on @every 1s; log:\n{}",
        runner.log()
    );
    let last = after.last().unwrap();
    assert_eq!(last["ok"], true, "result: {last}");
    assert!(
        last["message"].as_str().unwrap().contains("available in"),
        "result: {last}"
    );
    let view = control_plane.runner_view("ticking-runner").await.unwrap();
    assert_eq!(view["degraded"], false, "view: {view}");
}

#[tokio::test]
async fn overlapping_tick_is_skipped() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    write(
        &hooks,
        "slow.lua",
        r#"runner.schedule("slow", "@every 1s", function()
             runner.sleep(2.5)
             return true, "slow but fine"
           end, { timeout = 10 })"#,
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("slow-runner")
            .pipeline("metadata", "true")
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    runner
        .wait_log("pre-check still running at its next tick; tick skipped")
        .await;
    let found = wait_until("a slow result", Duration::from_secs(10), async || {
        let found = results(&control_plane, "slow-runner", "slow").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(found[0]["message"], "slow but fine");
    assert!(
        found[0]["durationMs"].as_u64().unwrap() >= 2500,
        "{found:?}"
    );
}

#[tokio::test]
async fn failing_gate_rejects_then_recovers() {
    let env = TestEnv::new();
    let port = common::free_port();
    let hooks = hooks_with_example(
        &env,
        "precheck_database.lua",
        &[
            ("\"*/5 * * * *\"", "\"@every 1s\""),
            ("\"mysql.internal\"", "\"127.0.0.1\""),
            ("PORT = 3306", &format!("PORT = {port}")),
        ],
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("gated-runner")
            .pipeline("metadata", "true")
            .pipeline("profiler", "true")
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    // Nothing listens on the port: the runner reports itself degraded.
    let view = wait_until("a degraded runner", Duration::from_secs(15), async || {
        let view = control_plane.runner_view("gated-runner").await?;
        (view["degraded"] == true).then_some(view)
    })
    .await;
    assert_eq!(
        view["failingPrechecks"][0]["name"], "database_reachable",
        "view: {view}"
    );
    assert_eq!(view["failingPrechecks"][0]["gate"], true, "view: {view}");

    let run_id = control_plane
        .submit(&submission("gated-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;
    let reason = rejection_reason(&document, "precheckFailed");
    assert!(
        reason.starts_with("pre-check database_reachable is failing: "),
        "reason: {reason}"
    );
    assert!(
        reason.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "reason: {reason}"
    );

    // The check gates metadata runs only.
    let mut profiler = submission("gated-runner", PLAIN_WORKFLOW);
    profiler["pipelineType"] = "profiler".into();
    let profiler_id = control_plane.submit(&profiler).await;
    let document = control_plane.wait_final(&profiler_id).await;
    assert_eq!(document["finalState"], "success", "run: {document}");

    // The database comes up: the check recovers and runs go through again.
    let _listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the database port");
    wait_until("a recovered runner", Duration::from_secs(15), async || {
        let view = control_plane.runner_view("gated-runner").await?;
        (view["degraded"] == false).then_some(())
    })
    .await;
    let run_id = control_plane
        .submit(&submission("gated-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;
    assert_eq!(document["finalState"], "success", "run: {document}");
    let stored = results(&control_plane, "gated-runner", "database_reachable").await;
    assert!(
        stored.iter().any(|result| result["ok"] == false),
        "{stored:?}"
    );
    assert_eq!(stored.last().unwrap()["ok"], true, "{stored:?}");
}

#[tokio::test]
async fn reload_replaces_lua_schedules() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    write(
        &hooks,
        "checks.lua",
        r#"
        function yaml_check() return true, "generation 1" end
        runner.schedule("alpha", "@every 1s", function() return true end)
        "#,
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("reloading-runner")
            .pipeline("metadata", "true")
            .hooks(&hooks)
            .prechecks(json!([
                { "name": "yaml_check", "schedule": "@every 1s", "hook": "yaml_check" }
            ])),
    );
    control_plane.wait_connected(&runner).await;
    wait_until("alpha results", Duration::from_secs(10), async || {
        let found = results(&control_plane, "reloading-runner", "alpha").await;
        (!found.is_empty()).then_some(())
    })
    .await;

    write(
        &hooks,
        "checks.lua",
        r#"
        function yaml_check() return true, "generation 2" end
        runner.schedule("beta", "@every 1s", function() return true end)
        "#,
    );
    runner
        .wait_log("pre-check of an older hook generation stopped")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alpha_after_reload = results(&control_plane, "reloading-runner", "alpha")
        .await
        .len();
    let beta_before = results(&control_plane, "reloading-runner", "beta")
        .await
        .len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let alpha = results(&control_plane, "reloading-runner", "alpha").await;
    let beta = results(&control_plane, "reloading-runner", "beta").await;
    assert_eq!(alpha.len(), alpha_after_reload, "alpha stopped: {alpha:?}");
    let beta_count = beta.len() - beta_before;
    // One schedule at @every 1s, not two after the reload.
    assert!(
        (2..=6).contains(&beta_count),
        "{beta_count} beta results in 4 s; log:\n{}",
        runner.log()
    );
    // The runner.yaml check survived the reload and calls the new function.
    let yaml = results(&control_plane, "reloading-runner", "yaml_check").await;
    assert_eq!(yaml.last().unwrap()["message"], "generation 2", "{yaml:?}");
}

#[test]
fn invalid_expression_fails_loading() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    write(
        &hooks,
        "checks.lua",
        "function check_disk() return true end",
    );
    let config = env.write_runner_config(
        UNUSED_URL,
        None,
        &RunnerConfig::new("invalid-runner")
            .hooks(&hooks)
            .prechecks(json!([
                { "name": "nightly_disk", "schedule": "0 25 * * *", "hook": "check_disk" }
            ])),
    );
    let (code, _stdout, stderr) = cli(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 64, "stderr: {stderr}");
    assert!(
        stderr.contains(
            "prechecks[0].schedule: pre-check nightly_disk: invalid schedule \"0 25 * * *\""
        ),
        "stderr: {stderr}"
    );

    write(
        &hooks,
        "checks.lua",
        r#"runner.schedule("hourly_db", "0 0 * *", function() return true end)"#,
    );
    let (code, _stdout, stderr) = cli(&["hooks", "check", hooks.to_str().unwrap()]);
    assert_eq!(code, 64, "stderr: {stderr}");
    assert!(stderr.contains("checks.lua:1"), "stderr: {stderr}");
    assert!(stderr.contains("pre-check hourly_db"), "stderr: {stderr}");
    assert!(stderr.contains("\"0 0 * *\""), "stderr: {stderr}");
}

#[test]
fn missing_hook_function_names_check() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    write(&hooks, "checks.lua", "function other() return true end");
    let config = env.write_runner_config(
        UNUSED_URL,
        None,
        &RunnerConfig::new("missing-runner")
            .hooks(&hooks)
            .prechecks(json!([
                { "name": "database", "schedule": "@every 1m", "hook": "check_database" }
            ])),
    );
    let (code, _stdout, stderr) = cli(&["precheck", "list", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 64, "stderr: {stderr}");
    assert!(
        stderr.contains("pre-check database: the hook scripts define no function check_database"),
        "stderr: {stderr}"
    );
}

#[test]
fn precheck_list_shows_every_check() {
    let env = TestEnv::new();
    let hooks = hooks_with_example(&env, "precheck_database.lua", &[]);
    write(&hooks, "yaml.lua", "function check_disk() return true end");
    let config = env.write_runner_config(
        UNUSED_URL,
        None,
        &RunnerConfig::new("listing-runner")
            .hooks(&hooks)
            .prechecks(json!([
                { "name": "disk", "schedule": "@every 10m", "hook": "check_disk" }
            ])),
    );

    let (code, stdout, stderr) = cli(&["precheck", "list", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "stdout: {stdout}");
    assert!(lines[0].starts_with("NAME"), "stdout: {stdout}");

    // Cells start at the columns of the header names.
    let starts: Vec<usize> = ["NAME", "SCHEDULE", "NEXT RUN", "GATE", "SOURCE"]
        .iter()
        .map(|name| lines[0].find(name).expect("header column"))
        .collect();
    let cells = |line: &str| -> Vec<String> {
        (0..starts.len())
            .map(|index| {
                let end = starts.get(index + 1).copied().unwrap_or(line.len());
                line[starts[index]..end.min(line.len())].trim().to_string()
            })
            .collect()
    };

    let database = cells(lines[1]);
    assert_eq!(database[0], "database_reachable", "stdout: {stdout}");
    assert_eq!(database[1], "*/5 * * * *", "stdout: {stdout}");
    assert!(database[2].ends_with(":00 UTC"), "stdout: {stdout}");
    assert_eq!(database[3], "yes", "stdout: {stdout}");
    assert_eq!(database[4], "lua", "stdout: {stdout}");

    let disk = cells(lines[2]);
    assert_eq!(disk[0], "disk", "stdout: {stdout}");
    assert_eq!(disk[1], "@every 10m", "stdout: {stdout}");
    assert!(disk[2].ends_with(" UTC"), "stdout: {stdout}");
    assert_eq!(disk[3], "no", "stdout: {stdout}");
    assert_eq!(disk[4], "yaml", "stdout: {stdout}");
}

#[test]
fn precheck_run_secret_example() {
    const REFERENCE: &str = "/collate/hybrid-ingestion/mysql/password";
    const VALUE: &str = "precheck-secret-value-3141";
    let env = TestEnv::new();
    let hooks = hooks_with_example(&env, "precheck_secret.lua", &[]);
    let readable = env.write_runner_config(
        UNUSED_URL,
        None,
        &RunnerConfig::new("secret-runner")
            .hooks(&hooks)
            .secret(REFERENCE, VALUE),
    );
    let (code, stdout, stderr) = cli(&[
        "precheck",
        "run",
        "database_password_readable",
        "-c",
        readable.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout: {stdout} stderr: {stderr}");
    assert!(
        stdout.contains("pre-check database_password_readable passed"),
        "stdout: {stdout}"
    );
    assert!(!stdout.contains(VALUE), "stdout: {stdout}");
    assert!(!stderr.contains(VALUE), "stderr: {stderr}");

    let missing = env.write_runner_config(
        UNUSED_URL,
        None,
        &RunnerConfig::new("secretless-runner").hooks(&hooks),
    );
    let (code, stdout, stderr) = cli(&[
        "precheck",
        "run",
        "database_password_readable",
        "-c",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "stdout: {stdout} stderr: {stderr}");
    assert!(
        stdout.contains("pre-check database_password_readable failed"),
        "stdout: {stdout}"
    );
    assert!(stdout.contains(REFERENCE), "stdout: {stdout}");

    let (code, _stdout, stderr) =
        cli(&["precheck", "run", "nope", "-c", missing.to_str().unwrap()]);
    assert_eq!(code, 64, "stderr: {stderr}");
    assert!(
        stderr.contains(
            "no pre-check is named \"nope\"; the pre-checks are: database_password_readable"
        ),
        "stderr: {stderr}"
    );
}

#[test]
fn precheck_run_disk_example() {
    let env = TestEnv::new();
    let hooks = hooks_with_example(
        &env,
        "precheck_disk.lua",
        &[("MIN_AVAILABLE_PERCENT = 10", "MIN_AVAILABLE_PERCENT = 101")],
    );
    let config = env.write_runner_config(
        UNUSED_URL,
        None,
        &RunnerConfig::new("disk-runner").hooks(&hooks),
    );
    let (code, stdout, stderr) = cli(&[
        "precheck",
        "run",
        "work_dir_free_space",
        "-c",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.contains("minimum 101%"), "stdout: {stdout}");
    let work_dir = config.parent().unwrap().join("state/runs");
    assert!(
        stdout.contains(&work_dir.display().to_string()),
        "stdout: {stdout}"
    );
}

#[test]
fn quickstart_shows_passing_and_failing_checks() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let (code, stdout, stderr) = cli(&["quickstart", "--examples", examples.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("demo_database_reachable: passed"),
        "stdout: {stdout}"
    );
    assert!(
        stdout.contains("warehouse_password_readable: failed"),
        "stdout: {stdout}"
    );
    assert!(
        stdout.contains("runner status: degraded; failing: warehouse_password_readable"),
        "stdout: {stdout}"
    );
}
