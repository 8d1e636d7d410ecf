//! End-to-end OpenMetadata ingestion through the runner: the real `metadata`
//! CLI of openmetadata-ingestion reads a real PostgreSQL database whose
//! password exists only in AWS Secrets Manager (moto), and sends what it finds
//! to the reference control plane's OpenMetadata API.
//!
//! Needs PostgreSQL's server programs (Debian package `postgresql`) and the
//! CLI in `.venv-om`; `bash .ci/openmetadata-e2e` installs both. A missing
//! program fails the test with that command; the test never skips.
#![cfg(feature = "aws")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output as ProcessOutput, Stdio};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use common::emulators::{EmulatorProcess, MOTO};
use common::*;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Secret path of the database password.
const PASSWORD_PATH: &str = "/collate/hybrid-ingestion/shop-pg/password";

/// Database, role and service names.
const DATABASE: &str = "shop";
const ROLE: &str = "ingest";
const SERVICE: &str = "shop_pg";
const PIPELINE_FQN: &str = "shop_pg.metadata_ingest";

/// Schemas the workflow ingests; `inventory.v2` needs a quoted FQN part.
const SCHEMAS: [&str; 3] = ["public", "sales", "inventory.v2"];

/// Tables and columns of the test database, created by the superuser.
const SCHEMA_SQL: &str = r#"
CREATE SCHEMA sales;
CREATE SCHEMA "inventory.v2";
CREATE TABLE public.audit_log (id bigserial PRIMARY KEY, happened_at timestamptz NOT NULL, detail jsonb);
CREATE TABLE sales.customers (id bigint PRIMARY KEY, email varchar(200) NOT NULL, created date);
CREATE TABLE sales.orders (
  id bigint PRIMARY KEY,
  customer_id bigint REFERENCES sales.customers (id),
  total numeric(10, 2),
  placed_at timestamptz,
  note text
);
CREATE TABLE "inventory.v2"."stock.items" (sku text PRIMARY KEY, quantity integer, "bin.code" char(4));
CREATE TABLE "inventory.v2".warehouses (code char(3) PRIMARY KEY, city text);
GRANT USAGE ON SCHEMA public, sales, "inventory.v2" TO ingest;
GRANT SELECT ON ALL TABLES IN SCHEMA public, sales, "inventory.v2" TO ingest;
"#;

/// Environment of the runner: static test credentials and no instance
/// metadata lookups.
const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Server URL written into the submitted workflows. The runner must replace
/// it; port 9 on the loopback address (discard) has no OpenMetadata server.
const STALE_HOST_PORT: &str = "http://127.0.0.1:9/api";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Returns the bin folder of the venv with the `metadata` CLI:
/// `$OPENMETADATA_VENV/bin`, or `.venv-om/bin` in the crate folder.
fn openmetadata_bin() -> PathBuf {
    let venv = std::env::var_os("OPENMETADATA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join(".venv-om"));
    let bin = venv.join("bin");
    assert!(
        bin.join("metadata").is_file(),
        "the OpenMetadata CLI is not installed at {}: run `bash .ci/openmetadata-e2e` in {} \
         (it creates .venv-om with `pip install -c <(echo 'dbt-core<1.12') \
         'openmetadata-ingestion[postgres]~=2.0.0'`), or set OPENMETADATA_VENV to a venv that has it",
        bin.join("metadata").display(),
        crate_dir().display()
    );
    bin
}

/// Returns the folder of PostgreSQL's server programs: `$POSTGRES_BIN`, the
/// newest `/usr/lib/postgresql/*/bin`, or the folder of `pg_ctl` on `PATH`.
fn postgres_bin() -> PathBuf {
    let has_tools = |dir: &Path| {
        ["initdb", "pg_ctl", "psql"]
            .iter()
            .all(|name| dir.join(name).is_file())
    };
    if let Some(dir) = std::env::var_os("POSTGRES_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_tools(&dir),
            "POSTGRES_BIN is {}, which lacks initdb, pg_ctl or psql",
            dir.display()
        );
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return dir;
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| has_tools(dir)));
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server programs (initdb, pg_ctl, psql) were not found: run \
             `bash .ci/openmetadata-e2e`, which installs them with \
             `apt-get install -y postgresql`, or set POSTGRES_BIN to their folder"
        )
    })
}

/// A PostgreSQL server on 127.0.0.1 with its data in a scratch folder,
/// stopped on drop. The server refuses to run as root, so under root every
/// server program runs as the `postgres` user through `runuser`.
struct Postgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    as_postgres_user: bool,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("create PostgreSQL folder");
        let as_postgres_user = nix::unistd::geteuid().is_root();
        if as_postgres_user {
            let user = nix::unistd::User::from_name("postgres")
                .expect("look up the postgres user")
                .expect("the postgres user exists when the Debian package is installed");
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))
                .expect("give the PostgreSQL folder to the postgres user");
        }
        let server = Postgres {
            bin,
            dir,
            port: free_port(),
            as_postgres_user,
        };
        let data = server.data_dir();
        server.run_server_program(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
        );
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={}",
            server.port,
            server.dir.path().display()
        );
        let log = server.dir.path().join("server.log").display().to_string();
        server.run_server_program(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-o", &options, "start"],
        );
        server
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs a server program (as the postgres user under root) and panics
    /// with its output when it fails.
    fn run_server_program(&self, program: &str, args: &[&str]) -> ProcessOutput {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", path.display()));
        assert!(
            output.status.success(),
            "{program} failed with {}:\n{}\n{}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
        output
    }

    /// Runs SQL as the superuser over the Unix socket and returns the
    /// unaligned, tuples-only output with `|` between fields.
    fn psql(&self, database: &str, sql: &str) -> String {
        let socket_dir = self.dir.path().display().to_string();
        let port = self.port.to_string();
        let output = self.run_server_program(
            "psql",
            &[
                "-h",
                &socket_dir,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-A",
                "-t",
                "-F",
                "|",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let data = self.data_dir();
        let mut command = if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Creates the role, the database and its tables.
fn create_database(postgres: &Postgres, password: &str) {
    postgres.psql(
        "postgres",
        &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'"),
    );
    postgres.psql("postgres", &format!("CREATE DATABASE {DATABASE}"));
    postgres.psql(DATABASE, SCHEMA_SQL);
}

/// Returns the columns of every table in [`SCHEMAS`], by (schema, table),
/// as PostgreSQL lists them.
fn database_columns(postgres: &Postgres) -> BTreeMap<(String, String), BTreeSet<String>> {
    let schemas: Vec<String> = SCHEMAS.iter().map(|s| format!("'{s}'")).collect();
    let sql = format!(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns \
         WHERE table_schema IN ({}) ORDER BY 1, 2, 3",
        schemas.join(", ")
    );
    let mut tables: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for line in postgres
        .psql(DATABASE, &sql)
        .lines()
        .filter(|l| !l.is_empty())
    {
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 3, "psql line {line:?}");
        tables
            .entry((fields[0].to_string(), fields[1].to_string()))
            .or_default()
            .insert(fields[2].to_string());
    }
    tables
}

/// Quotes an FQN part that contains a dot, as OpenMetadata does.
fn fqn_part(name: &str) -> String {
    if name.contains('.') {
        format!("\"{name}\"")
    } else {
        name.to_string()
    }
}

fn moto_client(moto: &EmulatorProcess) -> Client {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.url())
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .build();
    Client::from_conf(config)
}

fn metadata_workflow(postgres_port: u16) -> String {
    let schemas: Vec<String> = SCHEMAS
        .iter()
        .map(|s| format!("\"^{}$\"", s.replace('.', "\\\\.")))
        .collect();
    format!(
        r#"source:
  type: postgres
  serviceName: {SERVICE}
  serviceConnection:
    config:
      type: Postgres
      username: {ROLE}
      authType:
        password: secret:{PASSWORD_PATH}
      hostPort: 127.0.0.1:{postgres_port}
      database: {DATABASE}
  sourceConfig:
    config:
      type: DatabaseMetadata
      schemaFilterPattern:
        includes: [{}]
sink:
  type: metadata-rest
  config: {{}}
workflowConfig:
  loggerLevel: DEBUG
  openMetadataServerConfig:
    hostPort: {STALE_HOST_PORT}
    authProvider: openmetadata
    securityConfig:
      jwtToken: token-the-runner-replaces
"#,
        schemas.join(", ")
    )
}

fn test_connection_workflow(postgres_port: u16, id: &str) -> String {
    format!(
        r#"id: {id}
name: test-connection-{SERVICE}
workflowType: TEST_CONNECTION
request:
  connection:
    config:
      type: Postgres
      username: {ROLE}
      authType:
        password: secret:{PASSWORD_PATH}
      hostPort: 127.0.0.1:{postgres_port}
      database: {DATABASE}
  serviceType: Database
  connectionType: Postgres
  serviceName: {SERVICE}
openMetadataServerConnection:
  hostPort: {STALE_HOST_PORT}
  authProvider: openmetadata
"#
    )
}

fn submission(pipeline_fqn: &str, pipeline_type: &str, config: &str) -> Value {
    json!({
        "agentId": "om-runner",
        "pipelineFqn": pipeline_fqn,
        "pipelineType": pipeline_type,
        "config": config,
        "timeoutSeconds": 300,
    })
}

/// Sends a GET to the OpenMetadata API with the bot token.
async fn openmetadata_get(control_plane: &ControlPlane, token: &str, path: &str) -> (u16, Value) {
    let response = control_plane
        .client
        .get(format!("{}/api/v1/{path}", control_plane.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET /api/v1/{path}: {error}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Asserts a run ended in `state` and returns its document.
async fn assert_final(control_plane: &ControlPlane, run_id: &str, state: &str) -> Value {
    let document = control_plane.wait_final(run_id).await;
    if document["finalState"] != state {
        let logs = control_plane.log_texts(run_id, "stderr").await;
        let tail = logs.len().saturating_sub(60);
        panic!(
            "run {run_id} ended as {} instead of {state}: {document}\nlast stderr lines:\n{}",
            document["finalState"],
            logs[tail..].join("\n")
        );
    }
    document
}

/// Returns every log line of a run, all streams.
async fn all_log_text(control_plane: &ControlPlane, run_id: &str) -> String {
    control_plane
        .logs(run_id)
        .await
        .iter()
        .map(|line| line["text"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn postgres_ingestion_end_to_end() {
    let bin = openmetadata_bin();
    let password = format!("pg-{}", uuid::Uuid::new_v4().simple());
    let wrong_password = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let postgres = Postgres::start();
    create_database(&postgres, &password);
    let expected = database_columns(&postgres);
    assert_eq!(expected.len(), 5, "tables created: {expected:?}");

    let moto = EmulatorProcess::start(&MOTO, &[]).await;
    let admin = moto_client(&moto);
    admin
        .create_secret()
        .name(PASSWORD_PATH)
        .secret_string(&password)
        .send()
        .await
        .expect("CreateSecret");

    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let test_connection_script = crate_dir().join("examples/openmetadata/test_connection.py");
    let mut config = RunnerConfig::new("om-runner")
        .provider(json!({ "type": "aws", "region": "us-east-1", "endpoint_url": moto.url() }))
        .section(
            "openmetadata",
            json!({ "host_port": format!("{}/api", control_plane.base) }),
        );
    config.pipelines.insert(
        "metadata".into(),
        json!([bin.join("metadata"), "ingest", "-c", "{config}"]),
    );
    config.pipelines.insert(
        "testConnection".into(),
        json!([bin.join("python"), test_connection_script, "{config}"]),
    );
    for (name, value) in AWS_ENV {
        config = config.process_env(name, value);
    }
    let runner = env.start_runner(&control_plane, config);
    control_plane.wait_connected(&runner).await;

    // Test connection.
    let workflow_id = uuid::Uuid::new_v4().to_string();
    let body = submission(
        "shop_pg.test_connection",
        "testConnection",
        &test_connection_workflow(postgres.port, &workflow_id),
    );
    let test_run = control_plane.submit(&body).await;
    assert_final(&control_plane, &test_run, "success").await;
    let (_, stored) = control_plane.get("/v1/openmetadata/entities").await;
    let workflow = stored["automationWorkflows"]
        .as_array()
        .expect("automation workflows")
        .iter()
        .find(|w| w["id"] == workflow_id.as_str())
        .unwrap_or_else(|| panic!("no test connection result for {workflow_id}: {stored}"))
        .clone();
    assert_eq!(workflow["response"]["status"], "Successful", "{workflow}");

    // Metadata ingestion.
    let body = submission(PIPELINE_FQN, "metadata", &metadata_workflow(postgres.port));
    let run_id = control_plane.submit(&body).await;
    let document = assert_final(&control_plane, &run_id, "success").await;
    let last = document["statuses"]
        .as_array()
        .expect("statuses")
        .last()
        .cloned();
    let last = last.expect("a final status");
    assert_eq!(last["pipelineStatus"]["runId"], run_id.as_str());
    assert_eq!(last["pipelineStatus"]["pipelineState"], "success");

    // The workflow's own status, through the OpenMetadata API.
    let status_path = format!("services/ingestionPipelines/{PIPELINE_FQN}/pipelineStatus/{run_id}");
    let (code, status) = openmetadata_get(&control_plane, &env.token, &status_path).await;
    assert_eq!(code, 200, "GET {status_path}: {status}");
    assert_eq!(status["runId"], run_id.as_str(), "{status}");
    assert_eq!(status["pipelineState"], "success", "{status}");
    let (code, _) = openmetadata_get(&control_plane, "not-the-bot-token", &status_path).await;
    assert_eq!(code, 401, "a wrong bot token is rejected");

    // Every table and column, under the right service, database and schema.
    let (_, stored) = control_plane
        .get("/v1/openmetadata/entities?type=table")
        .await;
    let tables = stored["entities"]["table"]
        .as_array()
        .expect("tables")
        .clone();
    let database_fqn = format!("{SERVICE}.{DATABASE}");
    for ((schema, table), columns) in &expected {
        let schema_fqn = format!("{database_fqn}.{}", fqn_part(schema));
        let table_fqn = format!("{schema_fqn}.{}", fqn_part(table));
        let entity = tables
            .iter()
            .find(|t| t["fullyQualifiedName"] == table_fqn.as_str())
            .unwrap_or_else(|| panic!("table {table_fqn} was not ingested; stored: {stored}"));
        assert_eq!(entity["service"]["name"], SERVICE, "{table_fqn}");
        assert_eq!(
            entity["database"]["fullyQualifiedName"],
            database_fqn.as_str(),
            "{table_fqn}"
        );
        assert_eq!(
            entity["databaseSchema"]["fullyQualifiedName"],
            schema_fqn.as_str(),
            "{table_fqn}"
        );
        let names: BTreeSet<String> = entity["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(&names, columns, "columns of {table_fqn}");
        for column in entity["columns"].as_array().expect("columns") {
            let column_fqn = format!(
                "{table_fqn}.{}",
                fqn_part(column["name"].as_str().unwrap_or_default())
            );
            assert_eq!(column["fullyQualifiedName"], column_fqn.as_str());
        }
    }
    assert_eq!(tables.len(), expected.len(), "no other tables are stored");
    // The runner sets storeServiceConnection: false, so the workflow creates
    // the service without its connection and the password never leaves.
    let (code, service) = openmetadata_get(
        &control_plane,
        &env.token,
        &format!("services/databaseServices/name/{SERVICE}"),
    )
    .await;
    assert_eq!(code, 200, "GET the service: {service}");
    assert_eq!(service["serviceType"], "Postgres");
    assert!(
        service.get("connection").is_none(),
        "the service connection was sent: {service}"
    );
    for schema in SCHEMAS {
        let path = format!("databaseSchemas/name/{database_fqn}.{}", fqn_part(schema));
        let (code, entity) = openmetadata_get(&control_plane, &env.token, &path).await;
        assert_eq!(code, 200, "GET {path}: {entity}");
        assert_eq!(entity["service"]["name"], SERVICE);
    }

    // A wrong password in the secrets store fails the run with the database's error.
    admin
        .put_secret_value()
        .secret_id(PASSWORD_PATH)
        .secret_string(&wrong_password)
        .send()
        .await
        .expect("PutSecretValue");
    let failed_run = control_plane.submit(&body).await;
    let document = assert_final(&control_plane, &failed_run, "failed").await;
    let log = all_log_text(&control_plane, &failed_run).await;
    assert!(
        log.contains(&format!(
            "password authentication failed for user \"{ROLE}\""
        )),
        "the log names the authentication error: {log}"
    );
    let failed_status_path =
        format!("services/ingestionPipelines/{PIPELINE_FQN}/pipelineStatus/{failed_run}");
    let (code, status) = openmetadata_get(&control_plane, &env.token, &failed_status_path).await;
    assert_eq!(code, 200, "GET {failed_status_path}: {status}");
    assert_eq!(status["pipelineState"], "failed", "{status} vs {document}");

    // No password, and no bot token, in any log, status or stored entity.
    let (_, everything) = control_plane.get("/v1/openmetadata/entities").await;
    let (_, statuses) = openmetadata_get(
        &control_plane,
        &env.token,
        &format!("services/ingestionPipelines/{PIPELINE_FQN}/pipelineStatus"),
    )
    .await;
    assert_eq!(
        statuses["data"].as_array().map(Vec::len),
        Some(2),
        "{statuses}"
    );
    let mut outputs = control_plane.outputs().await;
    outputs.extend(runner.outputs());
    outputs.extend(Output::json("stored OpenMetadata entities", &everything));
    outputs.extend(Output::json("pipeline statuses", &statuses));
    assert_no_secret(&[&password, &wrong_password, &env.token], &outputs);
}

/// Runs the package's fallback for a failed status update of a test
/// connection, with the workflow copy the example script reports through.
/// The request bodies it would send must carry no secret.
#[test]
fn test_connection_fallback_sends_no_secret() {
    let bin = openmetadata_bin();
    let password = format!("pg-{}", uuid::Uuid::new_v4().simple());
    let token = format!("jwt-{}", uuid::Uuid::new_v4().simple());
    let dir = TempDir::new().expect("temporary folder");
    let workflow = dir.path().join("workflow.yaml");
    let config = test_connection_workflow(5432, "5d7c6a1e-0c3f-4f0e-9a59-7f6c1b6b2a10")
        .replace(&format!("secret:{PASSWORD_PATH}"), &password)
        + &format!("  securityConfig:\n    jwtToken: {token}\n");
    std::fs::write(&workflow, config).expect("write workflow");

    let output = Command::new(bin.join("python"))
        .arg(crate_dir().join("tests/fixtures/openmetadata/test_connection_fallback.py"))
        .arg(crate_dir().join("examples/openmetadata"))
        .arg(&workflow)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");

    let sent: Vec<String> = serde_json::from_str(&stdout).expect("a JSON list of bodies");
    assert_eq!(sent.len(), 1, "bodies: {sent:?}");
    let body: Value = serde_json::from_str(&sent[0]).expect("a JSON body");
    assert_eq!(
        body["request"]["connection"]["config"]["authType"]["password"],
        "**********"
    );
    assert_eq!(body["request"]["connection"]["config"]["username"], ROLE);
    assert!(!stdout.contains(&password), "bodies: {stdout}");
    assert!(!stdout.contains(&token), "bodies: {stdout}");
}
