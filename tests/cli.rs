//! The command line: `check` on valid and invalid runner.yaml files, and
//! `--help` of every subcommand.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{BIN, RunnerConfig, TestEnv};

/// Exit status of `check` for an invalid file (`EX_USAGE`).
const EXIT_USAGE: i32 = 64;

/// Runs the binary with `args`, with no `${VAR}` of the tests set.
fn hybrid_runner(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("HYBRID_RUNNER_TEST_UNSET")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {BIN} {args:?}: {error}"))
}

fn check(config: &Path) -> Output {
    hybrid_runner(&["check", "-c", config.to_str().expect("UTF-8 path")])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_valid_file() {
    let env = TestEnv::new();
    let config = env.write_runner_config(
        "ws://127.0.0.1:8585/agent/v1/connect",
        None,
        &RunnerConfig::new("valid-runner")
            .pipeline("metadata", "exit 0")
            .secret(
                "/collate/hybrid-ingestion/mysql/password",
                "Mysql-Pa55!word",
            ),
    );

    let output = check(&config);

    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("is valid"), "stdout: {stdout}");
    assert!(stdout.contains("agent valid-runner"), "stdout: {stdout}");
    assert!(!stdout.contains("Mysql-Pa55!word"), "stdout: {stdout}");
    assert!(!stdout.contains(&env.token), "stdout: {stdout}");
}

#[test]
fn check_accepts_tls_ca_file() {
    let env = TestEnv::new();
    let certificate = hybrid_runner::tls::local_certificate().expect("generate certificate");
    let ca_file = env.path("ca.pem");
    std::fs::write(&ca_file, &certificate.cert_pem).expect("write certificate");
    let config = env.write_runner_config(
        "wss://127.0.0.1:8585/agent/v1/connect",
        Some(&ca_file),
        &RunnerConfig::new("tls-runner").pipeline("metadata", "exit 0"),
    );

    let output = check(&config);

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn check_lists_every_problem() {
    let env = TestEnv::new();
    let config = env.path("runner.yaml");
    std::fs::write(
        &config,
        r#"agent_id: "bad id!"
control_plane:
  url: ws://control-plane.invalid/agent/v1/connect
  token_file: runner.token
  heartbeat_interval: often
runs:
  capacity: 0
  max_log_lines: 5
pipelines:
  metadata: ["/bin/sh", "-c", "echo {configg}"]
exec:
  env:
    HYBRID_RUNNER_RUN_ID: chosen-by-the-config
secrets:
  allowed_prefixes: ["collate/"]
  provider:
    type: vault
state_dir: ${HYBRID_RUNNER_TEST_UNSET}
"#,
    )
    .expect("write runner.yaml");

    let output = check(&config);

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EXIT_USAGE), "stderr: {stderr}");
    let expected = [
        ("agent_id", "invalid agent id"),
        ("control_plane.url", "only for loopback hosts"),
        ("control_plane.heartbeat_interval", "invalid duration"),
        ("runs.capacity", "from 1 to 10000"),
        ("runs.max_log_lines", "unknown key"),
        ("pipelines.metadata", "unknown placeholder {configg}"),
        ("exec.env.HYBRID_RUNNER_RUN_ID", "set by the runner"),
        ("secrets.allowed_prefixes[0]", "invalid prefix"),
        ("secrets.provider.type", "unknown provider"),
        ("state_dir", "HYBRID_RUNNER_TEST_UNSET is not set"),
    ];
    for (path, message) in expected {
        let line = stderr
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("- {path}: ")));
        let line = line.unwrap_or_else(|| panic!("no problem reported at {path}: {stderr}"));
        assert!(line.contains(message), "problem at {path}: {line}");
    }
    assert!(
        stderr.contains(&format!("has {} problem(s)", expected.len())),
        "stderr: {stderr}"
    );
}

#[test]
fn check_reports_missing_files() {
    let env = TestEnv::new();
    let config = env.write_runner_config(
        "ws://127.0.0.1:8585/agent/v1/connect",
        None,
        &RunnerConfig::new("lonely-runner")
            .pipeline("metadata", "exit 0")
            .token_file(&env.path("missing.token")),
    );
    std::fs::remove_file(config.parent().unwrap().join("secrets.yaml")).expect("remove secrets");

    let output = check(&config);

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EXIT_USAGE), "stderr: {stderr}");
    assert!(stderr.contains("missing.token"), "stderr: {stderr}");
    assert!(
        stderr.contains("control_plane.token_file"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("secrets.provider.path"), "stderr: {stderr}");
}

#[test]
fn help_of_every_subcommand() {
    for subcommand in ["run", "check", "control-plane", "quickstart"] {
        let output = hybrid_runner(&[subcommand, "--help"]);

        let stdout = text(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{subcommand} --help: {stdout}"
        );
        assert!(
            stdout.contains(&format!("Usage: hybrid-runner {subcommand}")),
            "{subcommand} --help: {stdout}"
        );
    }
    let output = hybrid_runner(&["--help"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "--help: {stdout}");
    for subcommand in ["run", "check", "control-plane", "quickstart"] {
        assert!(stdout.contains(subcommand), "--help: {stdout}");
    }
}

#[test]
fn secrets_get_masks_and_guards_reveal() {
    let env = TestEnv::new();
    let config = env.write_runner_config(
        "ws://127.0.0.1:8585/agent/v1/connect",
        None,
        &RunnerConfig::new("lookup-runner").secret(
            "/collate/hybrid-ingestion/mysql/password",
            "Mysql-Pa55!word",
        ),
    );
    let config = config.to_string_lossy().to_string();
    let reference = "secret:/collate/hybrid-ingestion/mysql/password";

    let masked = hybrid_runner(&["secrets", "get", reference, "-c", &config]);
    let stdout = text(&masked.stdout);
    assert_eq!(masked.status.code(), Some(0), "stdout: {stdout}");
    assert!(
        stdout.contains("value:     ****** (15 bytes"),
        "stdout: {stdout}"
    );
    assert!(!stdout.contains("Mysql-Pa55!word"), "stdout: {stdout}");

    // Standard output is a pipe here, so --reveal alone is rejected.
    let refused = hybrid_runner(&["secrets", "get", reference, "-c", &config, "--reveal"]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(64), "stderr: {stderr}");
    assert!(stderr.contains("add --force"), "stderr: {stderr}");
    assert!(!text(&refused.stdout).contains("Mysql-Pa55!word"));

    let forced = hybrid_runner(&[
        "secrets", "get", reference, "-c", &config, "--reveal", "--force",
    ]);
    assert_eq!(forced.status.code(), Some(0));
    assert!(text(&forced.stdout).contains("value:     Mysql-Pa55!word"));

    let outside = hybrid_runner(&[
        "secrets",
        "get",
        "secret:/prod/payments/db-password",
        "-c",
        &config,
    ]);
    assert_eq!(outside.status.code(), Some(1));
    assert!(text(&outside.stderr).contains("outside the allowed prefixes"));
}

#[test]
fn secrets_get_takes_the_service_of_scoped_prefixes() {
    let env = TestEnv::new();
    let config = env.write_runner_config(
        "ws://127.0.0.1:8585/agent/v1/connect",
        None,
        &RunnerConfig::new("scoped-lookup")
            .secret(
                "/collate/hybrid-ingestion/pg_sales/password",
                "sales-Pa55word",
            )
            .section(
                "secrets",
                serde_json::json!({
                    "allowed_prefixes": ["/collate/hybrid-ingestion/{service}/"],
                    "provider": { "type": "file", "path": "secrets.yaml" },
                }),
            ),
    );
    let config = config.to_string_lossy().to_string();
    let reference = "secret:/collate/hybrid-ingestion/pg_sales/password";

    let without = hybrid_runner(&["secrets", "get", reference, "-c", &config]);
    let stdout = text(&without.stdout);
    let stderr = text(&without.stderr);
    assert_eq!(without.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("no service outside a run; hybrid-runner secrets get takes --service"),
        "stderr: {stderr}"
    );
    // A denied reference is not looked up, so no store or name is shown.
    assert!(!stdout.contains("provider:"), "stdout: {stdout}");

    let own = hybrid_runner(&[
        "secrets",
        "get",
        reference,
        "-c",
        &config,
        "--service",
        "pg_sales",
    ]);
    assert_eq!(own.status.code(), Some(0), "stderr: {}", text(&own.stderr));
    assert!(text(&own.stdout).contains("provider:  file"));

    let other = hybrid_runner(&[
        "secrets",
        "get",
        reference,
        "-c",
        &config,
        "--service",
        "pg_finance",
    ]);
    assert_eq!(other.status.code(), Some(1));
    assert!(
        text(&other.stderr).contains("(/collate/hybrid-ingestion/pg_finance/)"),
        "stderr: {}",
        text(&other.stderr)
    );
}

#[test]
fn check_loads_hook_scripts() {
    let env = TestEnv::new();
    let hooks = env.folder("broken-hooks");
    std::fs::write(hooks.join("hooks.lua"), "function pre_run(run\n").expect("write hook");
    let config = env.write_runner_config(
        "ws://127.0.0.1:8585/agent/v1/connect",
        None,
        &RunnerConfig::new("broken-hooks-runner")
            .pipeline("metadata", "exit 0")
            .hooks(&hooks),
    );

    let output = check(&config);

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EXIT_USAGE), "stderr: {stderr}");
    assert!(stderr.contains("cannot load the hooks"), "stderr: {stderr}");
    assert!(stderr.contains("hooks.lua:"), "stderr: {stderr}");
}
