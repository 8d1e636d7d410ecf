//! The example hooks in `scripts/examples` through the real runner: the
//! reachability check rejects runs whose database does not accept
//! connections, the notification reaches the control plane, and the Azure
//! mapping chooses Key Vault names. `luacheck` checks every script.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use common::{RunnerConfig, TestEnv, rejection_reason, submission, wait_until};

/// Returns the path of a file in the crate's `scripts` folder.
fn script_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(relative)
}

/// Creates a hooks folder that contains only the example `name`, so each test
/// loads one example.
fn hooks_with_example(env: &TestEnv, name: &str) -> PathBuf {
    let hooks = env.folder("hooks");
    std::fs::copy(script_path(&format!("examples/{name}")), hooks.join(name))
        .unwrap_or_else(|error| panic!("copy example {name}: {error}"));
    hooks
}

/// Returns a workflow config whose database is at `host_port`.
fn workflow(host_port: &str) -> String {
    format!(
        "
source:
  type: postgres
  serviceName: local_postgres
  serviceConnection:
    config:
      type: Postgres
      username: openmetadata_user
      hostPort: {host_port}
  sourceConfig:
    config:
      type: DatabaseMetadata
sink:
  type: metadata-rest
  config: {{}}
"
    )
}

/// Creates `$OUT/$HYBRID_RUNNER_RUN_ID`, so a test can tell whether the
/// workflow process started. (runner.yaml expands `${...}`, so the script
/// avoids it.)
const MARK_STARTED: &str = r#"touch "$OUT/$HYBRID_RUNNER_RUN_ID""#;

#[tokio::test]
async fn reachability_rejects_closed_port() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let hooks = hooks_with_example(&env, "reachability.lua");
    // The listener closes at once, so nothing accepts on its port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0");
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("closed-port-runner")
            .pipeline("metadata", MARK_STARTED)
            .env("OUT", &out)
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let run_id = control_plane
        .submit(&submission(
            "closed-port-runner",
            &workflow(&closed.to_string()),
        ))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "hookRejected");
    assert!(reason.contains("not reachable"), "reason: {reason:?}");
    assert!(
        reason.contains(&format!("database {closed}")),
        "reason: {reason:?}"
    );
    let started = std::fs::read_dir(&out).expect("out folder").count();
    assert_eq!(started, 0, "no workflow process may start");
}

#[tokio::test]
async fn reachability_passes_open_port() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let hooks = hooks_with_example(&env, "reachability.lua");
    // The kernel completes connections to a listening socket without accept.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let open = listener.local_addr().expect("local address");
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("open-port-runner")
            .pipeline("metadata", MARK_STARTED)
            .env("OUT", &out)
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let run_id = control_plane
        .submit(&submission(
            "open-port-runner",
            &workflow(&open.to_string()),
        ))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    assert!(
        out.join(&run_id).is_file(),
        "the workflow process did not start"
    );
    drop(listener);
}

#[tokio::test]
async fn notify_event_reaches_control_plane() {
    let env = TestEnv::new();
    let hooks = hooks_with_example(&env, "notify.lua");
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("notifying-runner")
            .pipeline("metadata", "true")
            .hooks(&hooks),
    );
    control_plane.wait_connected(&runner).await;

    let run_id = control_plane
        .submit(&submission(
            "notifying-runner",
            &workflow("db.internal:5432"),
        ))
        .await;
    let document = control_plane.wait_final(&run_id).await;
    assert_eq!(document["finalState"], "success", "run: {document}");

    let event = wait_until(
        "the run.finished event",
        Duration::from_secs(10),
        async || {
            let view = control_plane.runner_view("notifying-runner").await?;
            view["events"]
                .as_array()?
                .iter()
                .find(|event| {
                    event["type"] == "event" && event["payload"]["kind"] == "run.finished"
                })
                .cloned()
        },
    )
    .await;
    let payload = &event["payload"]["payload"];
    assert_eq!(payload["runId"], run_id.as_str(), "event: {event}");
    assert_eq!(payload["state"], "success", "event: {event}");
    assert!(payload["durationMs"].is_u64(), "event: {event}");
}

/// Calls the Azure mapping example through `hooks test map_secret` and
/// returns the JSON it prints. The routed store is named `main` and has type
/// `provider`.
fn map_secret(env: &TestEnv, hooks: &Path, path: &str, provider: &str) -> Value {
    let input = env.path("ref.json");
    let reference = json!({
        "reference": format!("secret:{path}"),
        "path": path,
        "provider": "main",
        "kind": provider,
    });
    std::fs::write(&input, reference.to_string()).expect("write input");
    let output = Command::new(common::BIN)
        .args(["hooks", "test", "map_secret", "--input"])
        .arg(&input)
        .arg("--dir")
        .arg(hooks)
        .output()
        .expect("run hooks test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "hooks test failed for {path} ({provider}): {stderr}"
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("hooks test printed no JSON ({error}): {stdout}"))
}

#[test]
fn azure_mapping_names() {
    let env = TestEnv::new();
    let hooks = hooks_with_example(&env, "azure_mapping.lua");
    let cases = [
        (
            "/collate/hybrid-ingestion/adls/accountKey",
            "azure",
            json!("adls-accountKey"),
        ),
        (
            "/collate/hybrid-ingestion/adls/team-a/sasToken",
            "azure",
            json!("adls-sasToken"),
        ),
        (
            "/collate/hybrid-ingestion/adls/accountKey",
            "aws",
            Value::Null,
        ),
        (
            "/collate/hybrid-ingestion/mysql/password",
            "azure",
            Value::Null,
        ),
        ("/collate/hybrid-ingestion/adls/", "azure", Value::Null),
    ];

    for (path, provider, expected) in cases {
        let returned = map_secret(&env, &hooks, path, provider);
        assert_eq!(returned, expected, "map_secret of {path} ({provider})");
    }
}

#[test]
fn luacheck_passes_on_scripts() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = match Command::new("luacheck")
        .args(["--no-color", "scripts/"])
        .current_dir(root)
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "luacheck not found, and this test needs it. Install it with \
             `apt-get install lua-check` (Debian, Ubuntu) or `luarocks install luacheck`"
        ),
        Err(error) => panic!("cannot run luacheck: {error}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "luacheck scripts/ in {root}:\n{stdout}"
    );
}
