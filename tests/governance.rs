//! Secret governance through the real binary: prefixes scoped to the run's
//! service, routing across two stores, a `map_secret` hook that picks the
//! store, and the audit log with `hybrid-runner audit tail`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use common::{ControlPlane, Runner, RunnerConfig, TestEnv, rejection_reason};

const SALES_PASSWORD: &str = "sales-Pa55word-71";
const FINANCE_PASSWORD: &str = "finance-Pa55word-93";
const SCOPED_PREFIX: &str = "/collate/hybrid-ingestion/{service}/";
const PASSWORD_FIELD: &str = "source.serviceConnection.config.authType.password";

/// Prints "ran" so a test can tell that the workflow process started.
const RAN: &str = "echo ran";

/// Returns a MySQL metadata workflow of `service` whose password is `reference`.
fn workflow(service: &str, reference: &str) -> String {
    format!(
        "
source:
  type: mysql
  serviceName: '{service}'
  serviceConnection:
    config:
      type: Mysql
      username: ingest
      authType:
        password: '{reference}'
      hostPort: 127.0.0.1:3306
  sourceConfig:
    config:
      type: DatabaseMetadata
sink:
  type: metadata-rest
  config: {{}}
"
    )
}

/// Submits a run of pipeline `fqn` to `runner` and returns its run id and final
/// document.
async fn run(
    control_plane: &ControlPlane,
    runner: &Runner,
    fqn: &str,
    config: &str,
) -> (String, Value) {
    let body = json!({
        "agentId": runner.agent_id,
        "pipelineFqn": fqn,
        "pipelineType": "metadata",
        "config": config,
    });
    let run_id = control_plane.submit(&body).await;
    let document = control_plane.wait_final(&run_id).await;
    (run_id, document)
}

/// Returns the runner's audit log path: `audit.jsonl` in its state folder.
fn audit_path(runner: &Runner) -> PathBuf {
    runner
        .work_dir
        .parent()
        .expect("state folder")
        .join("audit.jsonl")
}

/// Reads every audit entry, dropping `time` and `durationMs`, which vary.
fn audit_entries(runner: &Runner) -> Vec<Value> {
    let text = std::fs::read_to_string(audit_path(runner)).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("audit line {line:?}: {error}"));
            let fields = entry.as_object_mut().expect("audit entry is an object");
            assert!(fields.remove("time").is_some_and(|time| time.is_string()));
            assert!(fields.remove("durationMs").is_some_and(|ms| ms.is_number()));
            entry
        })
        .collect()
}

/// Returns the audit entries of one run.
fn run_entries(runner: &Runner, run_id: &str) -> Vec<Value> {
    audit_entries(runner)
        .into_iter()
        .filter(|entry| entry["runId"] == run_id)
        .collect()
}

/// Returns the audit entry of a file store read by run `run_id` of pipeline
/// `pg_sales.metadata_ingest`.
fn sales_entry(run_id: &str, reference: &str, outcome: &str, cached: bool) -> Value {
    let name = reference.trim_start_matches("secret:");
    let mut entry = json!({
        "runId": run_id,
        "service": "pg_sales",
        "pipelineFqn": "pg_sales.metadata_ingest",
        "reference": reference,
        "provider": "file",
        "name": name,
        "version": null,
        "outcome": outcome,
        "cached": cached,
    });
    if outcome == "not_found" {
        entry["error"] = json!(format!(
            "{reference} was not found in the file store (looked up as {name:?})"
        ));
    }
    entry
}

/// Asserts that no secret value appears in the audit log, the runner's output
/// or anything the control plane received.
async fn assert_no_values(
    env: &TestEnv,
    control_plane: &ControlPlane,
    runner: &Runner,
    values: &[&str],
) {
    env.assert_no_leaks(control_plane, &[runner], values).await;
}

/// Starts a runner with the file provider and prefixes scoped to the run's
/// service.
fn scoped_runner(env: &TestEnv, control_plane: &ControlPlane) -> Runner {
    env.start_runner(control_plane, scoped_config())
}

/// Returns the config of a runner with the file provider and prefixes scoped
/// to the run's service.
fn scoped_config() -> RunnerConfig {
    RunnerConfig::new("scoped")
        .pipeline("metadata", RAN)
        .secret(
            "/collate/hybrid-ingestion/pg_sales/password",
            SALES_PASSWORD,
        )
        .secret(
            "/collate/hybrid-ingestion/pg_finance/password",
            FINANCE_PASSWORD,
        )
        .section(
            "secrets",
            json!({
                "allowed_prefixes": [SCOPED_PREFIX],
                "provider": { "type": "file", "path": "secrets.yaml" },
            }),
        )
}

#[tokio::test]
async fn service_reads_its_own_secret() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let runner = scoped_runner(&env, &control_plane);
    control_plane.wait_connected(&runner).await;

    let reference = "secret:/collate/hybrid-ingestion/pg_sales/password";
    let (run_id, document) = run(
        &control_plane,
        &runner,
        "pg_sales.metadata_ingest",
        &workflow("pg_sales", reference),
    )
    .await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    assert_eq!(
        run_entries(&runner, &run_id),
        vec![sales_entry(&run_id, reference, "resolved", false)]
    );
    assert_no_values(
        &env,
        &control_plane,
        &runner,
        &[SALES_PASSWORD, FINANCE_PASSWORD],
    )
    .await;
}

#[tokio::test]
async fn cross_service_reads_are_denied_and_audited() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let runner = scoped_runner(&env, &control_plane);
    control_plane.wait_connected(&runner).await;

    // (service, pipeline FQN, reference): each tries to reach pg_finance.
    let attempts = [
        (
            "pg_sales",
            "pg_sales.metadata_ingest",
            "secret:/collate/hybrid-ingestion/pg_finance/password",
        ),
        (
            "pg_sales",
            "pg_sales.metadata_ingest",
            "secret:/collate/hybrid-ingestion/pg_sales%2F..%2Fpg_finance/password",
        ),
        (
            "pg_sales",
            "pg_sales.metadata_ingest",
            "secret:/collate/hybrid-ingestion/pg_sales_old/password",
        ),
        (
            "pg_sales/../pg_finance",
            "\"pg_sales/../pg_finance\".metadata_ingest",
            "secret:/collate/hybrid-ingestion/pg_finance/password",
        ),
    ];
    for (service, fqn, reference) in attempts {
        let (run_id, document) =
            run(&control_plane, &runner, fqn, &workflow(service, reference)).await;

        let reason = rejection_reason(&document, "secretError");
        assert!(
            reason.starts_with(&format!(
                "{PASSWORD_FIELD}: {reference} is outside the allowed prefixes"
            )),
            "{service}: {reason}"
        );
        assert!(
            control_plane.logs(&run_id).await.is_empty(),
            "{service}: the workflow ran"
        );
        let entries = run_entries(&runner, &run_id);
        assert_eq!(entries.len(), 1, "{service}: {entries:?}");
        assert_eq!(entries[0]["outcome"], "denied", "{service}");
        assert_eq!(entries[0]["reference"], reference, "{service}");
        assert_eq!(entries[0]["service"], service, "{service}");
        assert_eq!(entries[0]["provider"], Value::Null, "{service}");
        assert_eq!(entries[0]["cached"], false, "{service}");
    }

    // A `..` segment never parses as a reference, so the run is rejected
    // before the policy is asked.
    let dotted = "secret:/collate/hybrid-ingestion/pg_sales/../pg_finance/password";
    let (run_id, document) = run(
        &control_plane,
        &runner,
        "pg_sales.metadata_ingest",
        &workflow("pg_sales", dotted),
    )
    .await;
    assert_eq!(document["outcome"], "rejected", "run: {document}");
    assert!(
        document["rejection"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("'..' path segments are not allowed")),
        "run: {document}"
    );
    assert!(control_plane.logs(&run_id).await.is_empty());
    assert_no_values(
        &env,
        &control_plane,
        &runner,
        &[SALES_PASSWORD, FINANCE_PASSWORD],
    )
    .await;
}

#[tokio::test]
async fn hook_secrets_use_run_scope() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let hooks = env.folder("scoped-hooks");
    std::fs::write(
        hooks.join("hooks.lua"),
        r#"
local function outcome(reference)
  local ok, result = pcall(runner.secrets.get, reference)
  if ok then
    return "read " .. #result .. " bytes"
  end
  return (tostring(result):match("[^\n]*"))
end

function pre_run(run)
  local service = run.config.source.serviceName
  return { reject = "own: " .. outcome("secret:/collate/hybrid-ingestion/" .. service .. "/password")
    .. " | other: " .. outcome("secret:/collate/hybrid-ingestion/pg_finance/password") }
end
"#,
    )
    .expect("write hook");
    let runner = env.start_runner(&control_plane, scoped_config().hooks(&hooks));
    control_plane.wait_connected(&runner).await;

    let (run_id, document) = run(
        &control_plane,
        &runner,
        "pg_sales.metadata_ingest",
        &workflow(
            "pg_sales",
            "secret:/collate/hybrid-ingestion/pg_sales/password",
        ),
    )
    .await;

    let reason = rejection_reason(&document, "hookRejected");
    assert_eq!(
        reason,
        format!(
            "rejected by the pre_run hook: own: read {} bytes | other: runtime error: scoped-hooks/hooks.lua:3: runner.secrets.get: secret:/collate/hybrid-ingestion/pg_finance/password is outside the allowed prefixes (/collate/hybrid-ingestion/pg_sales/); store it under one of them or add its prefix to secrets.allowed_prefixes",
            SALES_PASSWORD.len()
        )
    );
    assert_eq!(
        run_entries(&runner, &run_id),
        vec![
            sales_entry(
                &run_id,
                "secret:/collate/hybrid-ingestion/pg_sales/password",
                "resolved",
                false,
            ),
            json!({
                "runId": run_id,
                "service": "pg_sales",
                "pipelineFqn": "pg_sales.metadata_ingest",
                "reference": "secret:/collate/hybrid-ingestion/pg_finance/password",
                "provider": null,
                "name": null,
                "version": null,
                "outcome": "denied",
                "cached": false,
                "error": "secret:/collate/hybrid-ingestion/pg_finance/password is outside the allowed prefixes (/collate/hybrid-ingestion/pg_sales/); store it under one of them or add its prefix to secrets.allowed_prefixes",
            }),
        ]
    );
    assert_no_values(
        &env,
        &control_plane,
        &runner,
        &[SALES_PASSWORD, FINANCE_PASSWORD],
    )
    .await;
}

#[tokio::test]
async fn service_name_must_match_pipeline_fqn() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let runner = scoped_runner(&env, &control_plane);
    control_plane.wait_connected(&runner).await;

    let (run_id, document) = run(
        &control_plane,
        &runner,
        "pg_sales.metadata_ingest",
        &workflow(
            "pg_finance",
            "secret:/collate/hybrid-ingestion/pg_finance/password",
        ),
    )
    .await;

    let reason = rejection_reason(&document, "invalidConfig");
    assert_eq!(
        reason,
        "source.serviceName \"pg_finance\" does not match the service \"pg_sales\" of pipelineFqn \"pg_sales.metadata_ingest\"; a run may only use its own service's secrets"
    );
    assert!(run_entries(&runner, &run_id).is_empty());
    assert!(control_plane.logs(&run_id).await.is_empty());
}

#[tokio::test]
async fn audit_records_cache_and_not_found() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let config = RunnerConfig::new("audited")
        .pipeline("metadata", RAN)
        .secret(
            "/collate/hybrid-ingestion/pg_sales/password",
            SALES_PASSWORD,
        )
        .section(
            "secrets",
            json!({
                "cache_ttl": "1h",
                "provider": { "type": "file", "path": "secrets.yaml" },
                "audit": { "fsync": "never" },
            }),
        );
    let runner = env.start_runner(&control_plane, config);
    control_plane.wait_connected(&runner).await;

    let reference = "secret:/collate/hybrid-ingestion/pg_sales/password";
    let missing = "secret:/collate/hybrid-ingestion/pg_sales/missing";
    let mut run_ids = Vec::new();
    for target in [reference, reference, missing] {
        let (run_id, _) = run(
            &control_plane,
            &runner,
            "pg_sales.metadata_ingest",
            &workflow("pg_sales", target),
        )
        .await;
        run_ids.push(run_id);
    }

    assert_eq!(
        audit_entries(&runner),
        vec![
            sales_entry(&run_ids[0], reference, "resolved", false),
            sales_entry(&run_ids[1], reference, "resolved", true),
            sales_entry(&run_ids[2], missing, "not_found", false),
        ]
    );

    let output = Command::new(env!("CARGO_BIN_EXE_hybrid-runner"))
        .args(["audit", "tail", "-n", "2", "-c"])
        .arg(runner_yaml(&runner))
        .output()
        .expect("run hybrid-runner audit tail");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "audit tail: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].contains(&format!(" resolved      {reference} provider=file ")),
        "{stdout}"
    );
    assert!(lines[0].ends_with(" cached"), "{stdout}");
    assert!(
        lines[1].contains(&format!(" not_found     {missing} provider=file ")),
        "{stdout}"
    );
    assert!(
        lines[1].contains(&format!("run={}", run_ids[2])),
        "{stdout}"
    );
    assert_no_values(&env, &control_plane, &runner, &[SALES_PASSWORD]).await;
}

/// Returns the runner.yaml the test harness wrote for `runner`.
fn runner_yaml(runner: &Runner) -> PathBuf {
    folder_of(runner).join("runner.yaml")
}

fn folder_of(runner: &Runner) -> &Path {
    runner
        .work_dir
        .parent()
        .and_then(Path::parent)
        .expect("runner folder")
}

#[tokio::test]
async fn map_secret_hook_chooses_the_store() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let hooks = env.folder("store-hooks");
    std::fs::write(
        hooks.join("hooks.lua"),
        r#"
function map_secret(ref)
  if ref.path:find("^/collate/hybrid%-ingestion/vars/") then
    return { name = "SALES_DB_PASSWORD", provider = "vars" }
  end
  return nil
end
"#,
    )
    .expect("write hook");
    let config = RunnerConfig::new("mapped")
        .pipeline("metadata", RAN)
        .hooks(&hooks)
        .process_env("SALES_DB_PASSWORD", SALES_PASSWORD)
        .section(
            "secrets",
            json!({
                "providers": {
                    "files": { "type": "file", "path": "secrets.yaml" },
                    "vars": { "type": "env" },
                },
                "default_provider": "files",
            }),
        );
    let runner = env.start_runner(&control_plane, config);
    control_plane.wait_connected(&runner).await;

    let reference = "secret:/collate/hybrid-ingestion/vars/sales";
    let (run_id, document) = run(
        &control_plane,
        &runner,
        "pg_sales.metadata_ingest",
        &workflow("pg_sales", reference),
    )
    .await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let entries = run_entries(&runner, &run_id);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["provider"], "vars");
    assert_eq!(entries[0]["name"], "SALES_DB_PASSWORD");
    assert_eq!(entries[0]["outcome"], "resolved");
    assert_no_values(&env, &control_plane, &runner, &[SALES_PASSWORD]).await;
}

#[cfg(feature = "aws")]
mod routing {
    use aws_sdk_secretsmanager::Client;
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};

    use super::*;
    use common::emulators::{EmulatorProcess, MOTO};

    const CLOUD_PASSWORD: &str = "cloud-Pa55word-52";

    async fn store_in_moto(moto: &EmulatorProcess, name: &str, value: &str) {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(moto.url())
            .credentials_provider(Credentials::new("test", "test", None, None, "static"))
            .build();
        Client::from_conf(config)
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap_or_else(|error| panic!("CreateSecret {name}: {error:?}"));
    }

    #[tokio::test]
    async fn two_stores_serve_their_prefixes() {
        let moto = EmulatorProcess::start(&MOTO, &[]).await;
        store_in_moto(
            &moto,
            "/collate/hybrid-ingestion/cloud/password",
            CLOUD_PASSWORD,
        )
        .await;

        let env = TestEnv::new();
        let control_plane = env.control_plane().await;
        let config = RunnerConfig::new("routed")
            .pipeline("metadata", RAN)
            .secret("/collate/hybrid-ingestion/local/password", SALES_PASSWORD)
            .clear_env()
            .process_env("AWS_ACCESS_KEY_ID", "test")
            .process_env("AWS_SECRET_ACCESS_KEY", "test")
            .process_env("AWS_EC2_METADATA_DISABLED", "true")
            .section(
                "secrets",
                json!({
                    "providers": {
                        "cloud": {
                            "type": "aws",
                            "region": "us-east-1",
                            "endpoint_url": moto.url(),
                        },
                        "local": { "type": "file", "path": "secrets.yaml" },
                    },
                    "routes": [
                        { "prefix": "/collate/hybrid-ingestion/cloud/", "provider": "cloud" },
                    ],
                    "default_provider": "local",
                }),
            );
        let runner = env.start_runner(&control_plane, config);
        control_plane.wait_connected(&runner).await;

        for (reference, provider, name) in [
            (
                "secret:/collate/hybrid-ingestion/cloud/password",
                "cloud",
                "/collate/hybrid-ingestion/cloud/password",
            ),
            (
                "secret:/collate/hybrid-ingestion/local/password",
                "local",
                "/collate/hybrid-ingestion/local/password",
            ),
        ] {
            let (run_id, document) = run(
                &control_plane,
                &runner,
                "pg_sales.metadata_ingest",
                &workflow("pg_sales", reference),
            )
            .await;
            assert_eq!(document["finalState"], "success", "{reference}: {document}");
            let entries = run_entries(&runner, &run_id);
            assert_eq!(entries.len(), 1, "{entries:?}");
            assert_eq!(entries[0]["provider"], provider, "{reference}");
            assert_eq!(entries[0]["name"], name, "{reference}");
            assert_eq!(entries[0]["outcome"], "resolved", "{reference}");
        }
        assert_no_values(
            &env,
            &control_plane,
            &runner,
            &[SALES_PASSWORD, CLOUD_PASSWORD],
        )
        .await;
    }
}
