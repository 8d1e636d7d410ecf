//! The handed workflow cases in `tests/fixtures/cases/workflows/` that use a
//! local secrets provider, each checked for the behaviour its header states.

mod common;

use std::path::Path;

use serde_json::{Value, json};

use common::{MASK, RunnerConfig, TestEnv, read_case, rejection_reason, submission};

const MYSQL_PASSWORD: &str = "Mysql-Pa55!word";
const BOT_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.bot-jwt-for-cases.c2lnbmF0dXJl";
const PLAIN_BOT_TOKEN: &str = "plain-bot-token-7Q2w9Zr4";
const PASSPHRASE: &str = "s3cr3t-phrase";

/// A made-up PEM block in the shape of an encrypted PKCS#8 key: 8 lines and a
/// final newline.
const PRIVATE_KEY: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----
MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQIx3Lr0Vd8kQcCAggA
MAwGCCqGSIb3DQIJBQAwFAYIKoZIhvcNAwcECJ2m5Kq7Wf1XBIIEyBq9Zt0P4uHn
Yc7fJ3vR8sLw2Ea6Nn5Tq1Ud9Xk0Hb4Gm7Jp2Vr6Ws3Cz8Af5Ey1Dg9Ki4Lo7Mp
Qs2Rt6Uv0Ww3Xy8Za1Bc5De9Fg2Hi6Jk0Lm4No8Pq1Rs5Tu9Vw3Xy7Za2Bc6De0F
g4Hi8Jk1Lm5No9Pq3Rs7Tu1Vw5Xy9Za3Bc7De1Fg5Hi9Jk2Lm6No0Pq4Rs8Tu2V
w6Xy0Za4Bc8De2Fg6Hi0Jk3Lm7No1Pq5Rs9Tu3Vw7Xy1Za5Bc9De3Fg7Hi1Jk4L==
-----END ENCRYPTED PRIVATE KEY-----
";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// Configures a runner whose workflow only creates a marker file, to show it ran.
fn marker_runner(agent_id: &str, out: &Path) -> RunnerConfig {
    RunnerConfig::new(agent_id)
        .pipeline("metadata", r#"touch "$OUT/ran""#)
        .env("OUT", out)
}

/// Asserts that no workflow process ran and no run directory was made.
fn assert_nothing_started(out: &Path, runner: &common::Runner) {
    assert!(!out.join("ran").exists(), "the workflow process ran");
    let entries: Vec<_> = std::fs::read_dir(&runner.work_dir)
        .map(|dir| dir.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "run directories: {entries:?}");
}

#[tokio::test]
async fn reference_in_hostport_is_rejected() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let host = "10.0.0.5:5432";
    let password = "Pg-Reader-Pa55";
    let runner = env.start_runner(
        &control_plane,
        marker_runner("host-runner", &out)
            .secret("/collate/hybrid-ingestion/pg/host", host)
            .secret("/collate/hybrid-ingestion/pg/password", password)
            .secret("/collate/hybrid-ingestion/bot/jwt", BOT_JWT),
    );
    control_plane.wait_connected(&runner).await;

    let workflow = read_case("workflows/reference-in-non-secret-field.yaml");
    let run_id = control_plane
        .submit(&submission("host-runner", &workflow))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "secretError");
    assert!(
        reason.contains("source.serviceConnection.config.hostPort"),
        "reason: {reason:?}"
    );
    assert!(
        reason.contains("secret references are only allowed in secret fields"),
        "reason: {reason:?}"
    );
    assert_nothing_started(&out, &runner);
    env.assert_no_leaks(&control_plane, &[&runner], &[host, password, BOT_JWT])
        .await;
}

#[tokio::test]
async fn reference_outside_prefix_is_denied() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let payments_password = "do-not-read-me";
    let runner = env.start_runner(
        &control_plane,
        marker_runner("prefix-runner", &out)
            .secret("/prod/payments/db-password", payments_password)
            .secret("/collate/hybrid-ingestion/bot/jwt", BOT_JWT),
    );
    control_plane.wait_connected(&runner).await;

    let workflow = read_case("workflows/reference-outside-allowed-prefix.yaml");
    let run_id = control_plane
        .submit(&submission("prefix-runner", &workflow))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "secretError");
    assert!(
        reason.contains("source.serviceConnection.config.authType.password"),
        "reason: {reason:?}"
    );
    assert!(
        reason.contains("secret:/prod/payments/db-password"),
        "reason: {reason:?}"
    );
    assert!(
        reason.contains("outside the allowed prefixes"),
        "reason: {reason:?}"
    );
    assert_nothing_started(&out, &runner);
    let log = runner.log();
    let denial = log
        .lines()
        .find(|line| line.contains("denied by policy"))
        .unwrap_or_else(|| panic!("no denial in the runner log: {log}"));
    assert!(
        denial.contains("/prod/payments/db-password"),
        "denial line: {denial}"
    );
    env.assert_no_leaks(&control_plane, &[&runner], &[payments_password, BOT_JWT])
        .await;
}

#[tokio::test]
async fn invalid_enum_does_not_leak() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        marker_runner("enum-runner", &out)
            .secret("/collate/hybrid-ingestion/mysql/password", MYSQL_PASSWORD),
    );
    control_plane.wait_connected(&runner).await;

    let workflow = read_case("workflows/invalid-enum-must-not-leak.yaml");
    let run_id = control_plane
        .submit(&submission("enum-runner", &workflow))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "invalidConfig");
    assert!(
        reason.contains("sourceConfig.config.type"),
        "reason: {reason:?}"
    );
    assert!(
        reason.contains("\"DatabaseMetadataa\""),
        "reason: {reason:?}"
    );
    assert_nothing_started(&out, &runner);
    env.assert_no_leaks(
        &control_plane,
        &[&runner],
        &[MYSQL_PASSWORD, PLAIN_BOT_TOKEN],
    )
    .await;
}

#[tokio::test]
async fn missing_secret_names_field() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let runner = env.start_runner(
        &control_plane,
        marker_runner("missing-runner", &out).secret("/collate/hybrid-ingestion/bot/jwt", BOT_JWT),
    );
    control_plane.wait_connected(&runner).await;

    let workflow = read_case("workflows/mysql-metadata.yaml");
    let run_id = control_plane
        .submit(&submission("missing-runner", &workflow))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "secretError");
    assert!(
        reason.starts_with("source.serviceConnection.config.authType.password: "),
        "reason: {reason:?}"
    );
    assert!(
        reason.contains("secret:/collate/hybrid-ingestion/mysql/password"),
        "reason: {reason:?}"
    );
    assert!(reason.contains("not found"), "reason: {reason:?}");
    assert_nothing_started(&out, &runner);
    env.assert_no_leaks(&control_plane, &[&runner], &[BOT_JWT])
        .await;
}

#[tokio::test]
async fn unreadable_secret_entry_names_field() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    // An operator wrote the value as a mapping, as some stores wrap values.
    let runner = env.start_runner(
        &control_plane,
        marker_runner("wrapped-runner", &out)
            .secret_value(
                "/collate/hybrid-ingestion/mysql/password",
                json!({ "value": MYSQL_PASSWORD }),
            )
            .secret("/collate/hybrid-ingestion/bot/jwt", BOT_JWT),
    );
    control_plane.wait_connected(&runner).await;

    let workflow = read_case("workflows/mysql-metadata.yaml");
    let run_id = control_plane
        .submit(&submission("wrapped-runner", &workflow))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "secretError");
    assert!(
        reason.starts_with("source.serviceConnection.config.authType.password: "),
        "reason: {reason:?}"
    );
    assert!(
        reason.contains("secret:/collate/hybrid-ingestion/mysql/password"),
        "reason: {reason:?}"
    );
    assert!(reason.contains("is not a string"), "reason: {reason:?}");
    assert_nothing_started(&out, &runner);
    env.assert_no_leaks(&control_plane, &[&runner], &[MYSQL_PASSWORD, BOT_JWT])
        .await;
}

#[tokio::test]
async fn snowflake_keypair_keeps_pem() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    // The key is read back from the resolved config, a JSON string with `\n`
    // escapes that `printf %b` turns into newlines; a PEM body contains no quote.
    // It is printed whole, then one line per write.
    let script = r#"
cp "$1" "$OUT/config.json"
key=$(sed -n 's/.*"privateKey": *"\([^"]*\)".*/\1/p' "$1")
printf '%b' "$key"
printf '%b' "$key" | while IFS= read -r line; do printf '%s\n' "$line"; done
"#;
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("snowflake-runner")
            .pipeline("metadata", script)
            .env("OUT", &out)
            .secret(
                "/collate/hybrid-ingestion/snowflake/private-key",
                PRIVATE_KEY,
            )
            .secret("/collate/hybrid-ingestion/snowflake/passphrase", PASSPHRASE)
            .secret("/collate/hybrid-ingestion/bot/jwt", BOT_JWT),
    );
    control_plane.wait_connected(&runner).await;

    let workflow = read_case("workflows/snowflake-keypair.yaml");
    let run_id = control_plane
        .submit(&submission("snowflake-runner", &workflow))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let config: Value = serde_json::from_str(&read(&out.join("config.json"))).expect("config JSON");
    let connection = &config["source"]["serviceConnection"]["config"];
    assert_eq!(connection["privateKey"], PRIVATE_KEY, "resolved privateKey");
    assert_eq!(
        connection["snowflakePrivatekeyPassphrase"], PASSPHRASE,
        "resolved passphrase"
    );
    let stdout = control_plane.log_texts(&run_id, "stdout").await;
    let key_lines = PRIVATE_KEY.lines().count();
    assert_eq!(stdout.len(), 2 * key_lines, "stdout lines: {stdout:?}");
    for (index, line) in stdout.iter().enumerate() {
        assert_eq!(line, MASK, "stdout line {index}");
    }
    env.assert_no_leaks(
        &control_plane,
        &[&runner],
        &[PRIVATE_KEY, PASSPHRASE, BOT_JWT],
    )
    .await;
}

#[tokio::test]
async fn secret_fields_allow_hostport_reference() {
    let env = TestEnv::new();
    let out = env.folder("out");
    let control_plane = env.control_plane().await;
    let host = "10.0.0.5:5432";
    let password = "Pg-Reader-Pa55";
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("listed-runner")
            .pipeline(
                "metadata",
                r#"cp "$1" "$OUT/config.json"; echo "connecting to $(cat "$OUT/host")""#,
            )
            .env("OUT", &out)
            .secret("/collate/hybrid-ingestion/pg/host", host)
            .secret("/collate/hybrid-ingestion/pg/password", password)
            .secret("/collate/hybrid-ingestion/bot/jwt", BOT_JWT),
    );
    std::fs::write(out.join("host"), host).expect("write host file");
    control_plane.wait_connected(&runner).await;

    // The same case as reference_in_hostport_is_rejected, with the field
    // listed as secret by the request.
    let workflow = read_case("workflows/reference-in-non-secret-field.yaml");
    let mut body = submission("listed-runner", &workflow);
    body["secretFields"] = json!(["source.serviceConnection.config.hostPort"]);
    let run_id = control_plane.submit(&body).await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let config: Value = serde_json::from_str(&read(&out.join("config.json"))).expect("config JSON");
    let connection = &config["source"]["serviceConnection"]["config"];
    assert_eq!(connection["hostPort"], host, "resolved hostPort");
    assert_eq!(
        connection["authType"]["password"], password,
        "resolved password"
    );
    let stdout = control_plane.log_texts(&run_id, "stdout").await;
    assert_eq!(
        stdout,
        vec![format!("connecting to {MASK}")],
        "stdout lines"
    );
    env.assert_no_leaks(&control_plane, &[&runner], &[host, password, BOT_JWT])
        .await;
}
