//! The cloud secrets providers end to end. For each store, a local emulator
//! or fake on 127.0.0.1 stores the values and a real `hybrid-runner run`
//! process uses that provider. The handed workflow cases in
//! `tests/fixtures/cases/workflows/` are submitted through the reference
//! control plane.
//!
//! Every runner starts with an empty environment plus `PATH`, `HOME` (its own
//! folder) and the test credentials, so no provider can fall back to a
//! credential chain, a profile or an instance metadata address.

// Built with some providers left out, the helpers that only the others use
// are unused.
#![cfg_attr(
    not(all(
        feature = "aws",
        feature = "azure",
        feature = "gcp",
        feature = "kubernetes"
    )),
    allow(unused_imports, dead_code)
)]

mod common;

use std::path::Path;

use serde_json::{Value, json};

use common::{
    ControlPlane, MASK, Output, Runner, RunnerConfig, TestEnv, assert_no_secret, read_case,
    rejection_reason, submission,
};

const MYSQL_REFERENCE: &str = "secret:/collate/hybrid-ingestion/mysql/password";
const MYSQL_FIELD: &str = "source.serviceConnection.config.authType.password";
const MYSQL_PASSWORD: &str = "Mysql-Pa55!word";
const BOT_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.bot-jwt-for-providers.c2lnbmF0dXJl";

/// Workflow command that copies the resolved config to `$OUT/config.json`
/// and prints the value of the JSON key `$FIELD`, which the runner must mask.
/// The config is compact JSON, and no test value contains a quote.
const COPY_AND_PRINT: &str = r#"
cp "$1" "$OUT/config.json"
value=$(sed -n "s/.*\"$FIELD\": *\"\([^\"]*\)\".*/\1/p" "$1")
echo "$FIELD: $value"
"#;

/// Workflow command that only creates `$OUT/ran`, to show that it ran.
const MARKER: &str = r#"touch "$OUT/ran""#;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// Configures a runner that uses `provider`, runs `script` for pipeline type
/// `metadata` with `OUT` set to `out`, and has no inherited environment.
fn provider_runner(agent_id: &str, out: &Path, script: &str, provider: Value) -> RunnerConfig {
    RunnerConfig::new(agent_id)
        .pipeline("metadata", script)
        .env("OUT", out)
        .provider(provider)
        .clear_env()
}

/// Returns the resolved config the workflow process copied to `$OUT`.
fn resolved_config(out: &Path) -> Value {
    let text = read(&out.join("config.json"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("config.json: {error}: {text}"))
}

/// Returns the MySQL password field of a resolved mysql-metadata config.
fn mysql_password(config: &Value) -> &Value {
    &config["source"]["serviceConnection"]["config"]["authType"]["password"]
}

/// Returns the bot token field of a resolved config.
fn bot_jwt(config: &Value) -> &Value {
    &config["workflowConfig"]["openMetadataServerConfig"]["securityConfig"]["jwtToken"]
}

/// Returns the mysql-metadata case with its password reference replaced.
fn mysql_case_with_reference(reference: &str) -> String {
    let workflow = read_case("workflows/mysql-metadata.yaml");
    let replaced = workflow.replace(MYSQL_REFERENCE, reference);
    assert_ne!(
        replaced, workflow,
        "mysql-metadata.yaml has no {MYSQL_REFERENCE}"
    );
    replaced
}

/// Submits `workflow` to `runner` once it is connected and returns the run id
/// and the final run document.
async fn run_workflow(
    control_plane: &ControlPlane,
    runner: &Runner,
    workflow: &str,
) -> (String, Value) {
    control_plane.wait_connected(runner).await;
    let run_id = control_plane
        .submit(&submission(&runner.agent_id, workflow))
        .await;
    let document = control_plane.wait_final(&run_id).await;
    (run_id, document)
}

/// Asserts that the run succeeded and that its only stdout line is the
/// masked value of `field`, as printed by [`COPY_AND_PRINT`].
async fn assert_success_masked(
    control_plane: &ControlPlane,
    run_id: &str,
    document: &Value,
    field: &str,
) {
    assert_eq!(document["finalState"], "success", "run: {document}");
    let stdout = control_plane.log_texts(run_id, "stdout").await;
    assert_eq!(stdout, vec![format!("{field}: {MASK}")], "stdout lines");
}

/// Asserts that the run was rejected because `reference` in `field` is not
/// in the `provider` store.
fn assert_not_found(document: &Value, field: &str, reference: &str, provider: &str) {
    let reason = rejection_reason(document, "secretError");
    assert!(
        reason.starts_with(&format!("{field}: ")),
        "reason: {reason:?}"
    );
    assert!(reason.contains(reference), "reason: {reason:?}");
    assert!(
        reason.contains(&format!("was not found in the {provider} store")),
        "reason: {reason:?}"
    );
}

/// Asserts that no workflow process ran and no run directory was made.
fn assert_nothing_started(out: &Path, runner: &Runner) {
    assert!(!out.join("ran").exists(), "the workflow process ran");
    let entries: Vec<_> = std::fs::read_dir(&runner.work_dir)
        .map(|dir| dir.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "run directories: {entries:?}");
}

#[cfg(feature = "aws")]
mod aws {
    use aws_sdk_secretsmanager::Client;
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    use base64::Engine;

    use super::*;
    use common::emulators::{EmulatorProcess, MOTO};

    const SNOWFLAKE_KEY_PATH: &str = "/collate/hybrid-ingestion/snowflake/private-key";
    const SNOWFLAKE_PASSPHRASE_PATH: &str = "/collate/hybrid-ingestion/snowflake/passphrase";
    const PASSPHRASE: &str = "s3cr3t-phrase";
    const PAYMENTS_PATH: &str = "/prod/payments/db-password";
    const PAYMENTS_PASSWORD: &str = "do-not-read-me";

    /// A made-up PEM block in the shape of an encrypted PKCS#8 key: 8 lines
    /// and a final newline.
    const PRIVATE_KEY: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----
MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQIq8Vd2Lr0xKcCAggA
MAwGCCqGSIb3DQIJBQAwFAYIKoZIhvcNAwcECK7m2Wq5Xf9ZBIIEyCr8Yt1P3uGm
Xb6eK2uQ7rKv1Fa5Mm4Sp0Tc8Wj9Ga3Fl6Io3Lk2Np7Qr1Su5Vx9Yz3Ab7Cd1Ef5
Gh9Ij3Kl7Mn1Op5Qr9St3Uv7Wx1Yz5Ab9Cd3Ef7Gh1Ij5Kl9Mn3Op7Qr1St5Uv9W
x3Yz7Ab1Cd5Ef9Gh3Ij7Kl1Mn5Op9Qr3St7Uv1Wx5Yz9Ab3Cd7Ef1Gh5Ij9Kl3M
n7Op1Qr5St9Uv3Wx7Yz1Ab5Cd9Ef3Gh7Ij1Kl5Mn9Op3Qr7St1Uv5Wx9Yz3Ab7C==
-----END ENCRYPTED PRIVATE KEY-----
";

    /// Environment of the runner: static test credentials, and no instance
    /// metadata lookups.
    const PROCESS_ENV: [(&str, &str); 3] = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];

    /// File in moto's working directory that its request recorder appends to.
    const RECORDING: &str = "requests.jsonl";

    /// Starts moto with its request recorder on.
    async fn start_moto() -> EmulatorProcess {
        let env = [
            ("MOTO_ENABLE_RECORDING", "True"),
            ("MOTO_RECORDER_FILEPATH", RECORDING),
        ];
        EmulatorProcess::start(&MOTO, &env).await
    }

    /// Returns a Secrets Manager client for moto with static test credentials.
    fn admin(moto: &EmulatorProcess) -> Client {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(moto.url())
            .credentials_provider(Credentials::new("test", "test", None, None, "static"))
            .build();
        Client::from_conf(config)
    }

    async fn create(admin: &Client, name: &str, value: &str) {
        admin
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap_or_else(|error| panic!("CreateSecret {name}: {error:?}"));
    }

    /// Adds a new current version, so the previous one gets `AWSPREVIOUS`.
    async fn put(admin: &Client, name: &str, value: &str) {
        admin
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .unwrap_or_else(|error| panic!("PutSecretValue {name}: {error:?}"));
    }

    /// Configures a runner that reads AWS Secrets Manager at `moto`.
    fn aws_runner(
        agent_id: &str,
        out: &Path,
        script: &str,
        moto: &EmulatorProcess,
    ) -> RunnerConfig {
        let provider = json!({
            "type": "aws",
            "region": "us-east-1",
            "endpoint_url": moto.url(),
        });
        let mut config = provider_runner(agent_id, out, script, provider);
        for (name, value) in PROCESS_ENV {
            config = config.process_env(name, value);
        }
        config
    }

    /// Returns the JSON bodies of the requests moto recorded with
    /// `X-Amz-Target: secretsmanager.<action>`, oldest first.
    fn recorded(moto: &EmulatorProcess, action: &str) -> Vec<Value> {
        let target = format!("secretsmanager.{action}");
        let text = read(&moto.dir.path().join(RECORDING));
        let mut bodies = Vec::new();
        for line in text.lines() {
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("recorded request {line}: {error}"));
            let headers = entry["headers"].as_object().expect("recorded headers");
            let matches = headers.iter().any(|(name, value)| {
                name.eq_ignore_ascii_case("x-amz-target") && value == target.as_str()
            });
            if !matches {
                continue;
            }
            let body = entry["body"].as_str().unwrap_or_default();
            let bytes = if entry["body_encoded"] == true {
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .expect("base64 request body")
            } else {
                body.as_bytes().to_vec()
            };
            let json = serde_json::from_slice(&bytes)
                .unwrap_or_else(|error| panic!("{action} body {body}: {error}"));
            bodies.push(json);
        }
        bodies
    }

    /// Returns the `SecretId`s of the recorded `GetSecretValue` requests, sorted.
    fn read_ids(moto: &EmulatorProcess) -> Vec<String> {
        let mut ids: Vec<String> = recorded(moto, "GetSecretValue")
            .iter()
            .map(|body| body["SecretId"].as_str().unwrap_or_default().to_string())
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn mysql_metadata_succeeds() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let moto = start_moto().await;
        let admin = admin(&moto);
        create(
            &admin,
            "/collate/hybrid-ingestion/mysql/password",
            MYSQL_PASSWORD,
        )
        .await;
        create(&admin, "/collate/hybrid-ingestion/bot/jwt", BOT_JWT).await;
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(
            &control_plane,
            aws_runner("aws-mysql", &out, COPY_AND_PRINT, &moto).env("FIELD", "password"),
        );

        let workflow = read_case("workflows/mysql-metadata.yaml");
        let (run_id, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_success_masked(&control_plane, &run_id, &document, "password").await;
        let config = resolved_config(&out);
        assert_eq!(mysql_password(&config), MYSQL_PASSWORD, "resolved password");
        assert_eq!(bot_jwt(&config), BOT_JWT, "resolved bot token");
        assert_eq!(
            read_ids(&moto),
            vec![
                "/collate/hybrid-ingestion/bot/jwt",
                "/collate/hybrid-ingestion/mysql/password"
            ],
            "GetSecretValue requests"
        );
        env.assert_no_leaks(&control_plane, &[&runner], &[MYSQL_PASSWORD, BOT_JWT])
            .await;
    }

    #[tokio::test]
    async fn snowflake_keypair_keeps_pem() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let moto = start_moto().await;
        let admin = admin(&moto);
        create(&admin, SNOWFLAKE_KEY_PATH, PRIVATE_KEY).await;
        create(&admin, SNOWFLAKE_PASSPHRASE_PATH, PASSPHRASE).await;
        create(&admin, "/collate/hybrid-ingestion/bot/jwt", BOT_JWT).await;
        let control_plane = env.control_plane().await;
        // The key is read back from the resolved config as a JSON string, and
        // `printf %b` turns its `\n` escapes into newlines. A PEM body
        // contains no quote. The key is printed whole, then one line per write.
        let script = r#"
cp "$1" "$OUT/config.json"
key=$(sed -n 's/.*"privateKey": *"\([^"]*\)".*/\1/p' "$1")
printf '%b' "$key"
printf '%b' "$key" | while IFS= read -r line; do printf '%s\n' "$line"; done
"#;
        let runner = env.start_runner(
            &control_plane,
            aws_runner("aws-snowflake", &out, script, &moto),
        );

        let workflow = read_case("workflows/snowflake-keypair.yaml");
        let (run_id, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_eq!(document["finalState"], "success", "run: {document}");
        let config = resolved_config(&out);
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
    async fn missing_secret_is_rejected() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let moto = start_moto().await;
        let admin = admin(&moto);
        create(&admin, "/collate/hybrid-ingestion/bot/jwt", BOT_JWT).await;
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(
            &control_plane,
            aws_runner("aws-missing", &out, MARKER, &moto),
        );

        let workflow = read_case("workflows/mysql-metadata.yaml");
        let (_, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_not_found(&document, MYSQL_FIELD, MYSQL_REFERENCE, "aws");
        assert_nothing_started(&out, &runner);
        env.assert_no_leaks(&control_plane, &[&runner], &[BOT_JWT])
            .await;
    }

    #[tokio::test]
    async fn outside_prefix_is_never_read() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let moto = start_moto().await;
        let admin = admin(&moto);
        create(&admin, PAYMENTS_PATH, PAYMENTS_PASSWORD).await;
        create(&admin, "/collate/hybrid-ingestion/bot/jwt", BOT_JWT).await;
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(
            &control_plane,
            aws_runner("aws-prefix", &out, MARKER, &moto),
        );

        let workflow = read_case("workflows/reference-outside-allowed-prefix.yaml");
        let (_, document) = run_workflow(&control_plane, &runner, &workflow).await;

        let reason = rejection_reason(&document, "secretError");
        assert!(
            reason.starts_with("source.serviceConnection.config.authType.password: "),
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
        // The recording contains the test's own CreateSecret for the name,
        // which shows that moto records requests that name it.
        let created: Vec<Value> = recorded(&moto, "CreateSecret")
            .iter()
            .map(|body| body["Name"].clone())
            .collect();
        assert!(
            created.contains(&json!(PAYMENTS_PATH)),
            "recorded CreateSecret names: {created:?}"
        );
        let read = read_ids(&moto);
        assert!(
            !read.iter().any(|id| id == PAYMENTS_PATH),
            "GetSecretValue requests: {read:?}"
        );
        let log = runner.log();
        let denial = log
            .lines()
            .find(|line| line.contains("denied by policy"))
            .unwrap_or_else(|| panic!("no denial in the runner log: {log}"));
        assert!(denial.contains(PAYMENTS_PATH), "denial line: {denial}");
        env.assert_no_leaks(&control_plane, &[&runner], &[PAYMENTS_PASSWORD, BOT_JWT])
            .await;
    }

    #[tokio::test]
    async fn previous_stage_is_used() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let moto = start_moto().await;
        let admin = admin(&moto);
        let previous = "Mysql-Previous-Pa55";
        let current = "Mysql-Current-Pa55";
        create(&admin, "/collate/hybrid-ingestion/mysql/password", previous).await;
        put(&admin, "/collate/hybrid-ingestion/mysql/password", current).await;
        create(&admin, "/collate/hybrid-ingestion/bot/jwt", BOT_JWT).await;
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(
            &control_plane,
            aws_runner("aws-previous", &out, COPY_AND_PRINT, &moto).env("FIELD", "password"),
        );

        let workflow = mysql_case_with_reference(&format!("{MYSQL_REFERENCE}#AWSPREVIOUS"));
        let (run_id, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_success_masked(&control_plane, &run_id, &document, "password").await;
        let config = resolved_config(&out);
        assert_eq!(mysql_password(&config), previous, "resolved password");
        let stages: Vec<Value> = recorded(&moto, "GetSecretValue")
            .iter()
            .filter(|body| body["SecretId"] == "/collate/hybrid-ingestion/mysql/password")
            .map(|body| body["VersionStage"].clone())
            .collect();
        assert_eq!(
            stages,
            vec![json!("AWSPREVIOUS")],
            "VersionStage of the password read"
        );
        env.assert_no_leaks(&control_plane, &[&runner], &[previous, current, BOT_JWT])
            .await;
    }
}

#[cfg(feature = "gcp")]
mod gcp {
    use base64::Engine;

    use super::*;
    use common::emulators::{DRONGO, EmulatorProcess};

    const PROJECT: &str = "test-project";
    const MYSQL_ID: &str = "collate_hybrid-ingestion_mysql_password";
    const BOT_JWT_ID: &str = "collate_hybrid-ingestion_bot_jwt";

    /// A running drongo and a client for its REST API.
    struct Drongo {
        process: EmulatorProcess,
        http: reqwest::Client,
    }

    impl Drongo {
        async fn start() -> Drongo {
            Drongo {
                process: EmulatorProcess::start(&DRONGO, &[]).await,
                http: reqwest::Client::new(),
            }
        }

        async fn post(&self, path: &str, body: Value) -> Value {
            let url = format!("{}/v1/{path}", self.process.url());
            let response = self
                .http
                .post(&url)
                .json(&body)
                .send()
                .await
                .unwrap_or_else(|error| panic!("POST {url} failed: {error}"));
            let status = response.status();
            let text = response.text().await.expect("drongo response");
            assert!(status.is_success(), "POST {url}: {status} {text}");
            serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("POST {url}: {error}: {text}"))
        }

        async fn create_secret(&self, id: &str) {
            let path = format!("projects/{PROJECT}/secrets?secretId={id}");
            self.post(&path, json!({"replication": {"automatic": {}}}))
                .await;
        }

        async fn add_version(&self, id: &str, value: &str) {
            let path = format!("projects/{PROJECT}/secrets/{id}:addVersion");
            let data = base64::engine::general_purpose::STANDARD.encode(value);
            self.post(&path, json!({"payload": {"data": data}})).await;
        }

        /// Creates secret `id` with one version holding `value`.
        async fn store(&self, id: &str, value: &str) {
            self.create_secret(id).await;
            self.add_version(id, value).await;
        }

        fn provider(&self) -> Value {
            json!({
                "type": "gcp",
                "project": PROJECT,
                "endpoint": self.process.url(),
                "anonymous": true,
            })
        }
    }

    /// Configures a runner that prints the `password` field and reads GCP
    /// Secret Manager at `drongo`.
    fn gcp_runner(agent_id: &str, out: &Path, drongo: &Drongo) -> RunnerConfig {
        provider_runner(agent_id, out, COPY_AND_PRINT, drongo.provider()).env("FIELD", "password")
    }

    #[tokio::test]
    async fn mysql_metadata_succeeds() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let drongo = Drongo::start().await;
        drongo.store(MYSQL_ID, MYSQL_PASSWORD).await;
        drongo.store(BOT_JWT_ID, BOT_JWT).await;
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(&control_plane, gcp_runner("gcp-mysql", &out, &drongo));

        let workflow = read_case("workflows/mysql-metadata.yaml");
        let (run_id, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_success_masked(&control_plane, &run_id, &document, "password").await;
        let config = resolved_config(&out);
        assert_eq!(mysql_password(&config), MYSQL_PASSWORD, "resolved password");
        assert_eq!(bot_jwt(&config), BOT_JWT, "resolved bot token");
        env.assert_no_leaks(&control_plane, &[&runner], &[MYSQL_PASSWORD, BOT_JWT])
            .await;
    }

    #[tokio::test]
    async fn dotted_path_maps_to_id() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let drongo = Drongo::start().await;
        let password = "Dotted-Pa55-word";
        drongo
            .store("collate_hybrid-ingestion_my_db_pass_word", password)
            .await;
        drongo.store(BOT_JWT_ID, BOT_JWT).await;
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(&control_plane, gcp_runner("gcp-dotted", &out, &drongo));

        let workflow =
            mysql_case_with_reference("secret:/collate/hybrid-ingestion/my.db/pass word");
        let (run_id, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_success_masked(&control_plane, &run_id, &document, "password").await;
        let config = resolved_config(&out);
        assert_eq!(mysql_password(&config), password, "resolved password");
        env.assert_no_leaks(&control_plane, &[&runner], &[password, BOT_JWT])
            .await;
    }

    #[tokio::test]
    async fn pinned_version_is_used() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let drongo = Drongo::start().await;
        let first = "Mysql-First-Pa55";
        let second = "Mysql-Second-Pa55";
        drongo.create_secret(MYSQL_ID).await;
        drongo.add_version(MYSQL_ID, first).await;
        drongo.add_version(MYSQL_ID, second).await;
        drongo.store(BOT_JWT_ID, BOT_JWT).await;
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(&control_plane, gcp_runner("gcp-pinned", &out, &drongo));

        let workflow = mysql_case_with_reference(&format!("{MYSQL_REFERENCE}#1"));
        let (run_id, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_success_masked(&control_plane, &run_id, &document, "password").await;
        let config = resolved_config(&out);
        assert_eq!(mysql_password(&config), first, "resolved password");
        env.assert_no_leaks(&control_plane, &[&runner], &[first, second, BOT_JWT])
            .await;
    }

    #[tokio::test]
    async fn missing_secret_is_rejected() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let drongo = Drongo::start().await;
        drongo.store(BOT_JWT_ID, BOT_JWT).await;
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(
            &control_plane,
            provider_runner("gcp-missing", &out, MARKER, drongo.provider()),
        );

        let workflow = read_case("workflows/mysql-metadata.yaml");
        let (_, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_not_found(&document, MYSQL_FIELD, MYSQL_REFERENCE, "gcp");
        assert_nothing_started(&out, &runner);
        env.assert_no_leaks(&control_plane, &[&runner], &[BOT_JWT])
            .await;
    }

    #[tokio::test]
    async fn missing_project_stops_startup() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let control_plane = env.control_plane().await;
        // The runner's environment is cleared, so GOOGLE_CLOUD_PROJECT is unset.
        let provider = json!({"type": "gcp", "anonymous": true});
        let mut runner = env.start_runner(
            &control_plane,
            provider_runner("gcp-no-project", &out, MARKER, provider),
        );

        let code = runner.wait_exit().await;

        assert!(code.is_some_and(|code| code != 0), "exit code: {code:?}");
        let log = runner.log();
        assert!(
            log.contains("secrets.provider.project"),
            "runner log: {log}"
        );
        assert!(log.contains("GOOGLE_CLOUD_PROJECT"), "runner log: {log}");
    }
}

#[cfg(feature = "azure")]
mod azure {
    use common::BIN;
    use common::key_vault::KeyVaultFake;

    use super::*;

    const TENANT: &str = "test-tenant";
    const CLIENT_ID: &str = "runner-client";
    const CLIENT_SECRET: &str = "runner-client-secret-7Rk~p";
    const ADLS_REFERENCE: &str = "secret:/collate/hybrid-ingestion/adls/client-secret";
    const ADLS_FIELD: &str =
        "source.serviceConnection.config.configSource.securityConfig.clientSecret";
    const ADLS_NAME: &str = "collate-hybrid-ingestion-adls-client-secret";
    const ADLS_SECRET: &str = "adls~client~secret";
    const BOT_JWT_NAME: &str = "collate-hybrid-ingestion-bot-jwt";

    /// Starts the fake with the runner's client and the secrets `secrets`
    /// (Key Vault name to value).
    fn start_vault(secrets: &[(&str, &str)]) -> KeyVaultFake {
        let secrets: serde_json::Map<String, Value> = secrets
            .iter()
            .map(|(name, value)| (name.to_string(), json!([{ "value": value }])))
            .collect();
        KeyVaultFake::start(&json!({
            "tenant": TENANT,
            "clients": { CLIENT_ID: CLIENT_SECRET },
            "readers": [CLIENT_ID],
            "secrets": secrets,
        }))
    }

    /// Configures a runner that reads the fake vault as a service principal.
    fn azure_runner(
        agent_id: &str,
        out: &Path,
        script: &str,
        vault: &KeyVaultFake,
    ) -> RunnerConfig {
        let provider = json!({
            "type": "azure",
            "vault_url": vault.url(),
            "credential": "client_secret",
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret_file": vault.write_secret_file(CLIENT_ID, CLIENT_SECRET),
            "authority_host": vault.url(),
            "ca_file": vault.ca_file(),
        });
        provider_runner(agent_id, out, script, provider)
    }

    #[tokio::test]
    async fn datalake_uses_mapped_name() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let vault = start_vault(&[(ADLS_NAME, ADLS_SECRET), (BOT_JWT_NAME, BOT_JWT)]);
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(
            &control_plane,
            azure_runner("azure-datalake", &out, COPY_AND_PRINT, &vault)
                .env("FIELD", "clientSecret"),
        );

        let workflow = read_case("workflows/datalake-azure-client-secret.yaml");
        let (run_id, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_success_masked(&control_plane, &run_id, &document, "clientSecret").await;
        let config = resolved_config(&out);
        let security =
            &config["source"]["serviceConnection"]["config"]["configSource"]["securityConfig"];
        assert_eq!(
            security["clientSecret"], ADLS_SECRET,
            "resolved clientSecret"
        );
        assert_eq!(bot_jwt(&config), BOT_JWT, "resolved bot token");
        let mut names = vault.requested_names().await;
        names.sort();
        assert_eq!(
            names,
            vec![ADLS_NAME, BOT_JWT_NAME],
            "requested Key Vault names"
        );
        env.assert_no_leaks(
            &control_plane,
            &[&runner],
            &[ADLS_SECRET, BOT_JWT, CLIENT_SECRET],
        )
        .await;
    }

    #[tokio::test]
    async fn secrets_get_shows_mapped_name() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let vault = start_vault(&[(ADLS_NAME, ADLS_SECRET)]);
        let config = azure_runner("azure-cli", &out, MARKER, &vault);
        // `secrets get` does not connect to the control plane, so the URL is
        // only written to runner.yaml.
        let config_path =
            env.write_runner_config("ws://127.0.0.1:8585/agent/v1/connect", None, &config);

        let mut command = tokio::process::Command::new(BIN);
        command
            .args(["secrets", "get", ADLS_REFERENCE, "-c"])
            .arg(&config_path);
        env.set_process_env(&mut command, &config);
        let output = command
            .output()
            .await
            .unwrap_or_else(|error| panic!("cannot run {BIN} secrets get: {error}"));

        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(0),
            "stdout: {stdout}\nstderr: {stderr}"
        );
        let lines: Vec<&str> = stdout.lines().collect();
        let name_line = format!("name:      {ADLS_NAME}");
        assert!(lines.contains(&name_line.as_str()), "stdout: {stdout}");
        let value_line = format!(
            "value:     {MASK} ({} bytes; --reveal prints it)",
            ADLS_SECRET.len()
        );
        assert!(lines.contains(&value_line.as_str()), "stdout: {stdout}");
        assert_eq!(
            vault.requested_names().await,
            vec![ADLS_NAME],
            "requested Key Vault names"
        );
        let outputs = [
            Output::new("secrets get stdout", stdout),
            Output::new("secrets get stderr", stderr),
        ];
        assert_no_secret(&[ADLS_SECRET, CLIENT_SECRET], &outputs);
    }

    #[tokio::test]
    async fn missing_secret_is_rejected() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let vault = start_vault(&[(BOT_JWT_NAME, BOT_JWT)]);
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(
            &control_plane,
            azure_runner("azure-missing", &out, MARKER, &vault),
        );

        let workflow = read_case("workflows/datalake-azure-client-secret.yaml");
        let (_, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_not_found(&document, ADLS_FIELD, ADLS_REFERENCE, "azure");
        assert_nothing_started(&out, &runner);
        env.assert_no_leaks(&control_plane, &[&runner], &[BOT_JWT, CLIENT_SECRET])
            .await;
    }
}

#[cfg(feature = "kubernetes")]
mod kubernetes {
    use common::kube_api::{KubeApiFake, RunningKubeApi, SecretRequest};

    use super::*;

    const NAMESPACE: &str = "ingest";
    const TOKEN: &str = "kube-test-token-5Hq2Lw9c";
    const MYSQL_NAME: &str = "collate-hybrid-ingestion-mysql-password";
    const BOT_JWT_NAME: &str = "collate-hybrid-ingestion-bot-jwt";

    /// Configures a runner that reads Secrets in namespace `ingest` through a
    /// kubeconfig for `api`.
    fn kube_runner(
        env: &TestEnv,
        agent_id: &str,
        out: &Path,
        script: &str,
        api: &RunningKubeApi,
    ) -> RunnerConfig {
        let kubeconfig = api.write_kubeconfig(&env.folder("kube"), TOKEN);
        let provider = json!({
            "type": "kubernetes",
            "kubeconfig": kubeconfig,
            "namespace": NAMESPACE,
        });
        provider_runner(agent_id, out, script, provider)
    }

    fn request(name: &str) -> SecretRequest {
        SecretRequest {
            namespace: NAMESPACE.to_string(),
            name: name.to_string(),
        }
    }

    #[tokio::test]
    async fn mysql_metadata_succeeds() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let api = KubeApiFake::new(TOKEN)
            .secret(NAMESPACE, MYSQL_NAME, "value", MYSQL_PASSWORD)
            .secret(NAMESPACE, BOT_JWT_NAME, "value", BOT_JWT)
            .start()
            .await;
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(
            &control_plane,
            kube_runner(&env, "kube-mysql", &out, COPY_AND_PRINT, &api).env("FIELD", "password"),
        );

        let workflow = read_case("workflows/mysql-metadata.yaml");
        let (run_id, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_success_masked(&control_plane, &run_id, &document, "password").await;
        let config = resolved_config(&out);
        assert_eq!(mysql_password(&config), MYSQL_PASSWORD, "resolved password");
        assert_eq!(bot_jwt(&config), BOT_JWT, "resolved bot token");
        let mut requests = api.requests();
        requests.sort();
        assert_eq!(
            requests,
            vec![request(BOT_JWT_NAME), request(MYSQL_NAME)],
            "Secret requests"
        );
        env.assert_no_leaks(
            &control_plane,
            &[&runner],
            &[MYSQL_PASSWORD, BOT_JWT, TOKEN],
        )
        .await;
    }

    #[tokio::test]
    async fn missing_secret_is_rejected() {
        let env = TestEnv::new();
        let out = env.folder("out");
        let api = KubeApiFake::new(TOKEN)
            .secret(NAMESPACE, BOT_JWT_NAME, "value", BOT_JWT)
            .start()
            .await;
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(
            &control_plane,
            kube_runner(&env, "kube-missing", &out, MARKER, &api),
        );

        let workflow = read_case("workflows/mysql-metadata.yaml");
        let (_, document) = run_workflow(&control_plane, &runner, &workflow).await;

        assert_not_found(&document, MYSQL_FIELD, MYSQL_REFERENCE, "kubernetes");
        assert_nothing_started(&out, &runner);
        assert!(
            api.requests().contains(&request(MYSQL_NAME)),
            "Secret requests: {:?}",
            api.requests()
        );
        env.assert_no_leaks(&control_plane, &[&runner], &[BOT_JWT, TOKEN])
            .await;
    }
}
