//! Lua hooks through the real runner. pre_run changes a run or rejects it,
//! map_secret chooses store names and on_message receives custom messages.
//! Edited scripts are picked up without a restart, and a broken edit keeps the
//! last good scripts serving.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::{PLAIN_WORKFLOW, RunnerConfig, TestEnv, rejection_reason, submission, wait_until};

/// Copies the resolved config and one hook-set variable into `$OUT`, named
/// after the run id. (runner.yaml expands `${...}`, so the script avoids it.)
const SCRIPT: &str = r#"
cp "$HYBRID_RUNNER_CONFIG" "$OUT/$HYBRID_RUNNER_RUN_ID.json"
printf '%s' "$HOOK_GREETING" > "$OUT/$HYBRID_RUNNER_RUN_ID.env"
"#;

fn pre_run_script(greeting: &str) -> String {
    format!(
        r#"
function pre_run(run)
  if run.pipelineFqn == "blocked.pipeline" then
    return {{ reject = "maintenance window until 06:00" }}
  end
  local config = run.config
  config.source.sourceConfig.config.schemaFilterPattern = {{ includes = {{ "^sales$" }} }}
  return {{ config = config, env = {{ HOOK_GREETING = "{greeting}" }} }}
end
"#
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write hook script");
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read copied config");
    serde_json::from_str(&text).expect("copied config is JSON")
}

#[tokio::test]
async fn pre_run_changes_config_and_env() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let hooks = env.folder("hooks");
    write(&hooks, "pre.lua", &pre_run_script("hello from lua"));
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("hooked-runner")
            .pipeline("metadata", SCRIPT)
            .env("OUT", &out)
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let run_id = control_plane
        .submit(&submission("hooked-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let config = read_json(&out.join(format!("{run_id}.json")));
    assert_eq!(
        config["source"]["sourceConfig"]["config"]["schemaFilterPattern"]["includes"][0], "^sales$",
        "config: {config}"
    );
    let greeting = std::fs::read_to_string(out.join(format!("{run_id}.env"))).expect("env file");
    assert_eq!(greeting, "hello from lua");
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn pre_run_rejection_reaches_control_plane() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let hooks = env.folder("hooks");
    write(&hooks, "pre.lua", &pre_run_script("unused"));
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("gatekeeper-runner")
            .pipeline("metadata", SCRIPT)
            .env("OUT", &out)
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let mut body = submission("gatekeeper-runner", PLAIN_WORKFLOW);
    body["pipelineFqn"] = "blocked.pipeline".into();
    let run_id = control_plane.submit(&body).await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "hookRejected");
    assert!(
        reason.contains("maintenance window until 06:00"),
        "reason: {reason:?}"
    );
    let started = std::fs::read_dir(&out).expect("out folder").count();
    assert_eq!(started, 0, "no workflow process may start");
}

#[tokio::test]
async fn failing_hook_rejects_with_file_and_line() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    write(
        &hooks,
        "pre.lua",
        "function pre_run(run)\n  error(\"inventory service unreachable\")\nend\n",
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("erroring-runner")
            .pipeline("metadata", "true")
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let run_id = control_plane
        .submit(&submission("erroring-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "hookRejected");
    assert!(reason.contains("pre.lua:2"), "reason: {reason:?}");
    assert!(
        reason.contains("inventory service unreachable"),
        "reason: {reason:?}"
    );
}

#[tokio::test]
async fn hooks_reload_after_broken_edit() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let hooks = env.folder("hooks");
    write(&hooks, "pre.lua", &pre_run_script("first"));
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("reloading-runner")
            .pipeline("metadata", SCRIPT)
            .env("OUT", &out)
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    // A broken edit is reported and the first scripts keep serving.
    write(
        &hooks,
        "pre.lua",
        "function pre_run(run)\n  return {\nend\n",
    );
    runner.wait_log("hooks reload failed").await;
    let run_id = control_plane
        .submit(&submission("reloading-runner", PLAIN_WORKFLOW))
        .await;
    control_plane.wait_final(&run_id).await;
    let greeting = std::fs::read_to_string(out.join(format!("{run_id}.env"))).expect("env file");
    assert_eq!(greeting, "first", "the last good generation serves");
    assert!(runner.log().contains("pre.lua:3"), "log: {}", runner.log());
    let failed = wait_until(
        "a hooks.failed event",
        Duration::from_secs(10),
        async || {
            let view = control_plane.runner_view("reloading-runner").await?;
            view["events"]
                .as_array()?
                .iter()
                .find(|event| event["type"] == "hooks.failed")
                .cloned()
        },
    )
    .await;
    assert_eq!(failed["payload"]["generation"], 1, "event: {failed}");

    // A fixed edit is picked up without a restart.
    write(&hooks, "pre.lua", &pre_run_script("second"));
    wait_until(
        "a run to see the edited hook",
        Duration::from_secs(20),
        async || {
            let run_id = control_plane
                .submit(&submission("reloading-runner", PLAIN_WORKFLOW))
                .await;
            control_plane.wait_final(&run_id).await;
            let greeting = std::fs::read_to_string(out.join(format!("{run_id}.env"))).ok()?;
            (greeting == "second").then_some(())
        },
    )
    .await;
    let view = control_plane
        .runner_view("reloading-runner")
        .await
        .expect("runner view");
    let reloaded = view["events"].as_array().and_then(|events| {
        events
            .iter()
            .find(|event| event["type"] == "hooks.reloaded")
    });
    assert!(reloaded.is_some(), "events: {}", view["events"]);

    // The control plane can ask for a reload too.
    let (status, body) = control_plane
        .post(
            "/v1/runners/reloading-runner/reload",
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status.as_u16(), 202, "answer: {body}");
    runner
        .wait_log("reload requested by the control plane")
        .await;
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

const MAPPED_WORKFLOW: &str = "
source:
  type: mysql
  serviceName: local_mysql
  serviceConnection:
    config:
      type: Mysql
      username: openmetadata_user
      authType:
        password: secret:/collate/hybrid-ingestion/mysql/password
      hostPort: mysql.internal:3306
  sourceConfig:
    config:
      type: DatabaseMetadata
sink:
  type: metadata-rest
  config: {}
";

const MAP_SECRET: &str = r#"
function map_secret(ref)
  if ref.path == "/collate/hybrid-ingestion/mysql/password" then
    return "/vault/team-a/mysql-password"
  end
  return nil
end
"#;

#[tokio::test]
async fn map_secret_chooses_store_name() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let hooks = env.folder("hooks");
    write(&hooks, "map.lua", MAP_SECRET);
    let control_plane = env.control_plane().await;
    let config = RunnerConfig::new("mapping-runner")
        .pipeline("metadata", SCRIPT)
        .env("OUT", &out)
        .secret("/vault/team-a/mysql-password", "Mapped-Pa55word")
        .hooks(&hooks);
    let runner = env.start_runner(&control_plane, config.clone());
    control_plane.wait_connected(&runner).await;

    let run_id = control_plane
        .submit(&submission("mapping-runner", MAPPED_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let resolved = read_json(&out.join(format!("{run_id}.json")));
    assert_eq!(
        resolved["source"]["serviceConnection"]["config"]["authType"]["password"],
        "Mapped-Pa55word"
    );

    let runner_yaml = env.folder("mapping-runner").join("runner.yaml");
    let lookup = std::process::Command::new(common::BIN)
        .args([
            "secrets",
            "get",
            "secret:/collate/hybrid-ingestion/mysql/password",
            "-c",
        ])
        .arg(&runner_yaml)
        .output()
        .expect("run secrets get");
    let stdout = String::from_utf8_lossy(&lookup.stdout);
    assert!(lookup.status.success(), "secrets get failed: {stdout}");
    assert!(
        stdout.contains("name:      /vault/team-a/mysql-password"),
        "stdout: {stdout}"
    );
    assert!(!stdout.contains("Mapped-Pa55word"), "stdout: {stdout}");
    env.assert_no_leaks(&control_plane, &[&runner], &["Mapped-Pa55word"])
        .await;
}

#[tokio::test]
async fn on_message_receives_custom_message() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    write(
        &hooks,
        "messages.lua",
        "function on_message(msg)\n  runner.log.info(\"got \" .. msg.name .. \" for \" .. msg.body.team)\nend\n",
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("listening-runner")
            .pipeline("metadata", "true")
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let (status, body) = control_plane
        .post(
            "/v1/runners/listening-runner/messages",
            &serde_json::json!({ "name": "rotate-keys", "body": { "team": "finance" } }),
        )
        .await;

    assert_eq!(status.as_u16(), 202, "answer: {body}");
    runner.wait_log("got rotate-keys for finance").await;
}

#[test]
fn hooks_check_and_test_commands() {
    let env = TestEnv::new();
    let hooks = env.folder("cli-hooks");
    write(&hooks, "pre.lua", &pre_run_script("from the cli"));
    write(
        &hooks,
        "checks.lua",
        r#"
runner.schedule("disk", "@every 30s", function() return true end)
runner.schedule("db", "*/5 * * * *", function() return true end, { gate = true })
"#,
    );
    let input = env.path("input.json");
    std::fs::write(
        &input,
        serde_json::json!({
            "runId": "r1",
            "pipelineFqn": "svc.pipe",
            "pipelineType": "metadata",
            "config": { "source": { "sourceConfig": { "config": { "type": "DatabaseMetadata" } } } },
        })
        .to_string(),
    )
    .expect("write input");

    let checked = std::process::Command::new(common::BIN)
        .args(["hooks", "check"])
        .arg(&hooks)
        .output()
        .expect("run hooks check");
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "stdout: {stdout}");
    assert!(
        stdout.contains("hooks defined: pre_run"),
        "stdout: {stdout}"
    );
    assert!(
        stdout.contains("scheduled checks: disk (@every 30s), db (*/5 * * * *, gate)"),
        "stdout: {stdout}"
    );

    let tested = std::process::Command::new(common::BIN)
        .args(["hooks", "test", "pre_run", "--input"])
        .arg(&input)
        .arg("--dir")
        .arg(&hooks)
        .output()
        .expect("run hooks test");
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert_eq!(tested.status.code(), Some(0), "stdout: {stdout}");
    let returned: Value = serde_json::from_str(&stdout).expect("hooks test prints JSON");
    assert_eq!(returned["env"]["HOOK_GREETING"], "from the cli");

    write(
        &hooks,
        "pre.lua",
        "function pre_run(run)\n  return {\nend\n",
    );
    let broken = std::process::Command::new(common::BIN)
        .args(["hooks", "check"])
        .arg(&hooks)
        .output()
        .expect("run hooks check");
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert_eq!(broken.status.code(), Some(64), "stderr: {stderr}");
    assert!(stderr.contains("pre.lua:3"), "stderr: {stderr}");
}

const TRICKY: &str = "Tr1cky/Pa55+word=\"x\"";

#[tokio::test]
async fn post_run_event_is_redacted() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    // The hook contains the secret itself, and the runner must still mask it.
    write(
        &hooks,
        "post.lua",
        r#"
function post_run(run, result)
  runner.saas.send("run.finished", { run = run.runId, state = result.state, note = "pw=Tr1cky/Pa55+word=\"x\"" })
end
"#,
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("eventful-runner")
            .pipeline("metadata", "true")
            .secret("/collate/hybrid-ingestion/mysql/password", TRICKY)
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let run_id = control_plane
        .submit(&submission("eventful-runner", MAPPED_WORKFLOW))
        .await;
    control_plane.wait_final(&run_id).await;
    let event = wait_until("the post_run event", Duration::from_secs(10), async || {
        let view = control_plane.runner_view("eventful-runner").await?;
        view["events"]
            .as_array()?
            .iter()
            .find(|event| event["type"] == "event")
            .cloned()
    })
    .await;

    assert_eq!(event["payload"]["kind"], "run.finished", "event: {event}");
    assert_eq!(
        event["payload"]["payload"]["run"],
        run_id.as_str(),
        "event: {event}"
    );
    assert_eq!(
        event["payload"]["payload"]["note"], "pw=******",
        "event: {event}"
    );
    env.assert_no_leaks(&control_plane, &[&runner], &[TRICKY])
        .await;
}

#[tokio::test]
async fn secrets_get_follows_policy_and_redaction() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    write(
        &hooks,
        "pre.lua",
        r#"
function pre_run(run)
  local token = runner.secrets.get("secret:/collate/hybrid-ingestion/api/token")
  local ok, denied = pcall(runner.secrets.get, "secret:/prod/payments/db-password")
  runner.saas.send("token.checked", { token = token, length = #token, denied = not ok, message = tostring(denied) })
  return nil
end
"#,
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("secretive-runner")
            .pipeline("metadata", "true")
            .secret("/collate/hybrid-ingestion/api/token", "hook-api-token-5Gq8")
            .secret("/prod/payments/db-password", "do-not-read-me")
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let run_id = control_plane
        .submit(&submission("secretive-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;
    assert_eq!(document["finalState"], "success", "run: {document}");
    let event = wait_until("the token event", Duration::from_secs(10), async || {
        let view = control_plane.runner_view("secretive-runner").await?;
        view["events"]
            .as_array()?
            .iter()
            .find(|event| event["payload"]["kind"] == "token.checked")
            .cloned()
    })
    .await;

    let payload = &event["payload"]["payload"];
    assert_eq!(payload["token"], "******", "event: {event}");
    assert_eq!(payload["length"], 19, "event: {event}");
    assert_eq!(payload["denied"], true, "event: {event}");
    let message = payload["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("outside the allowed prefixes"),
        "message: {message}"
    );
    env.assert_no_leaks(
        &control_plane,
        &[&runner],
        &["hook-api-token-5Gq8", "do-not-read-me"],
    )
    .await;
}

#[tokio::test]
async fn exec_runs_without_shell_and_masks_output() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    write(
        &hooks,
        "pre.lua",
        r#"
function pre_run(run)
  local token = runner.secrets.get("secret:/collate/hybrid-ingestion/api/token")
  local result = runner.exec{
    cmd = "/bin/sh",
    args = { "-c", "echo \"token=$TOKEN\"; echo warned >&2; exit 3" },
    env = { TOKEN = token },
    timeout = 10,
  }
  local slow = runner.exec{ cmd = "/bin/sleep", args = { "30" }, timeout = 0.2 }
  runner.saas.send("exec.checked", {
    code = result.code, stdout = result.stdout, stderr = result.stderr,
    slowTimedOut = slow.timedOut,
  })
  return nil
end
"#,
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("exec-runner")
            .pipeline("metadata", "true")
            .secret("/collate/hybrid-ingestion/api/token", "exec-api-token-7Hk2")
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let run_id = control_plane
        .submit(&submission("exec-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;
    assert_eq!(document["finalState"], "success", "run: {document}");
    let event = wait_until("the exec event", Duration::from_secs(10), async || {
        let view = control_plane.runner_view("exec-runner").await?;
        view["events"]
            .as_array()?
            .iter()
            .find(|event| event["payload"]["kind"] == "exec.checked")
            .cloned()
    })
    .await;

    let payload = &event["payload"]["payload"];
    assert_eq!(payload["code"], 3, "event: {event}");
    assert_eq!(payload["stdout"], "token=******\n", "event: {event}");
    assert_eq!(payload["stderr"], "warned\n", "event: {event}");
    assert_eq!(payload["slowTimedOut"], true, "event: {event}");
    env.assert_no_leaks(&control_plane, &[&runner], &["exec-api-token-7Hk2"])
        .await;
}

#[tokio::test]
async fn http_request_reaches_local_server() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    write(
        &hooks,
        "pre.lua",
        r#"
function pre_run(run)
  local url = run.config.workflowConfig.openMetadataServerConfig.hostPort .. "/v1/runners"
  local response = runner.http.request{ method = "GET", url = url, timeout = 5 }
  local runners = runner.json.decode(response.body)
  runner.saas.send("http.checked", { status = response.status, runners = #runners })
  return nil
end
"#,
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("http-runner")
            .pipeline("metadata", "true")
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;
    let workflow = format!(
        "{PLAIN_WORKFLOW}workflowConfig:\n  openMetadataServerConfig:\n    hostPort: {}\n",
        control_plane.base
    );

    let run_id = control_plane
        .submit(&submission("http-runner", &workflow))
        .await;
    let document = control_plane.wait_final(&run_id).await;
    assert_eq!(document["finalState"], "success", "run: {document}");
    let event = wait_until("the http event", Duration::from_secs(10), async || {
        let view = control_plane.runner_view("http-runner").await?;
        view["events"]
            .as_array()?
            .iter()
            .find(|event| event["payload"]["kind"] == "http.checked")
            .cloned()
    })
    .await;

    assert_eq!(event["payload"]["payload"]["status"], 200, "event: {event}");
    assert_eq!(event["payload"]["payload"]["runners"], 1, "event: {event}");
}

#[tokio::test]
async fn runaway_hooks_fail_alone() {
    let env = TestEnv::new();
    let hooks = env.folder("hooks");
    write(
        &hooks,
        "pre.lua",
        r#"
function pre_run(run)
  if run.pipelineFqn == "svc.loop" then
    while true do end
  elseif run.pipelineFqn == "svc.memory" then
    local parts = {}
    for i = 1, 1e9 do parts[i] = string.rep("x", 1024 * 1024) end
  elseif run.pipelineFqn == "svc.error" then
    error("broken lookup table")
  end
  return nil
end
"#,
    );
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("sturdy-runner")
            .pipeline("metadata", "true")
            .capacity(8)
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let mut bad = Vec::new();
    for fqn in ["svc.loop", "svc.memory", "svc.error"] {
        let mut body = submission("sturdy-runner", PLAIN_WORKFLOW);
        body["pipelineFqn"] = fqn.into();
        bad.push((fqn, control_plane.submit(&body).await));
    }
    let good = control_plane
        .submit(&submission("sturdy-runner", PLAIN_WORKFLOW))
        .await;

    let document = control_plane.wait_final(&good).await;
    assert_eq!(document["finalState"], "success", "run: {document}");
    let expected = [
        ("svc.loop", "exceeded its time limit"),
        ("svc.memory", "memory"),
        ("svc.error", "broken lookup table"),
    ];
    for ((fqn, run_id), (_, text)) in bad.iter().zip(expected) {
        let document = control_plane.wait_final(run_id).await;
        let reason = rejection_reason(&document, "hookRejected");
        assert!(reason.contains(text), "{fqn}: reason {reason:?}");
    }
    // The runner still serves after all three.
    let after = control_plane
        .submit(&submission("sturdy-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&after).await;
    assert_eq!(document["finalState"], "success", "run: {document}");
}
