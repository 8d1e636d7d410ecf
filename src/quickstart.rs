//! `hybrid-runner quickstart`: the whole product in one command.
//!
//! Starts the reference control plane (HTTPS and WSS with a fresh self-signed
//! certificate) and a demo database on 127.0.0.1, starts a real runner
//! process with `examples/quickstart/runner.yaml`, submits the runs listed in
//! `examples/quickstart/runs.yaml` through the control plane's HTTP API, and
//! prints each run's status timeline and redacted log. It then prints the
//! results of the runner's pre-checks as the control plane received them, and
//! checks that no secret value reached the control plane or the runner's log.
//! It succeeds only when every run and pre-check ended as expected and nothing
//! leaked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::control_plane::{ControlPlaneOptions, TlsFiles};
use crate::demo::{DemoDatabase, DemoUser};

/// Maximum wait for one run to end.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Maximum wait for the runner to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum wait for a first result of every pre-check.
const PRECHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// One entry of runs.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunSpec {
    name: String,
    workflow: PathBuf,
    pipeline_type: String,
    pipeline_fqn: String,
    /// `success`, `failed` or `rejected`.
    expect: String,
    /// Text the rejection or failure reason must contain.
    expect_reason: Option<String>,
}

/// Runs the quickstart; returns whether every run ended as expected.
pub fn run(examples: &Path) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(run_async(examples))
}

async fn run_async(examples: &Path) -> anyhow::Result<bool> {
    let quickstart = examples.join("quickstart");
    if !quickstart.join("runs.yaml").is_file() {
        bail!(
            "{} not found; run the quickstart from the repository root or pass --examples DIR",
            quickstart.join("runs.yaml").display()
        );
    }
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let (client, base, handle) = start_control_plane(scratch.path()).await?;
    let database = start_database(&quickstart).await?;
    println!(
        "control plane: {base} (runner endpoint wss://{}{})",
        handle.local_addr(),
        crate::protocol::CONNECT_PATH
    );
    println!("demo database: {}", database.addr);

    let runner_log = scratch.path().join("runner.log");
    let mut runner = start_runner(&quickstart, scratch.path(), &handle, &runner_log, &database)?;
    let connected = wait_connected(&client, &base).await;
    let mut all_ok = connected.is_ok();
    match connected {
        Ok(()) => println!("runner quickstart-runner: Connected\n"),
        Err(error) => println!("runner did not connect: {error:#}"),
    }

    let mut sent_texts = Vec::new();
    if all_ok {
        let specs: Vec<RunSpec> = read_yaml(&quickstart.join("runs.yaml"))?;
        for spec in &specs {
            let (ok, texts) = run_one(&client, &base, &quickstart, spec, &database).await?;
            all_ok &= ok;
            sent_texts.extend(texts);
        }
        let (ok, texts) = show_prechecks(&client, &base, &quickstart).await?;
        all_ok &= ok;
        sent_texts.extend(texts);
    }

    stop_runner(&mut runner).await;
    handle.shutdown().await;
    let runner_output = std::fs::read_to_string(&runner_log).unwrap_or_default();
    sent_texts.push(runner_output);
    all_ok &= check_no_leak(&quickstart, &sent_texts)?;

    println!(
        "\n{}",
        if all_ok {
            "quickstart passed: every run and pre-check ended as expected and no secret value left the runner"
        } else {
            "quickstart FAILED: see above"
        }
    );
    if !all_ok {
        println!("runner log: {}", runner_log.display());
        // Keep the folder so the runner log can be read.
        let kept = scratch.keep();
        println!("scratch folder kept at {}", kept.display());
    }
    Ok(all_ok)
}

async fn start_control_plane(
    scratch: &Path,
) -> anyhow::Result<(
    reqwest::Client,
    String,
    crate::control_plane::ControlPlaneHandle,
)> {
    let certificate = crate::tls::local_certificate()?;
    let cert_path = scratch.join("ca.pem");
    let key_path = scratch.join("key.pem");
    std::fs::write(&cert_path, &certificate.cert_pem)?;
    write_private(&key_path, &certificate.key_pem)?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    write_private(&scratch.join("runner.token"), &token)?;
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    std::fs::write(
        scratch.join("signing.pub"),
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            signing_key.verifying_key().as_bytes(),
        ),
    )?;

    crate::tls::install_crypto_provider();
    let handle = crate::control_plane::start(ControlPlaneOptions {
        listen: "127.0.0.1:0".parse()?,
        runner_tokens: vec![token],
        api_token: None,
        tls: Some(TlsFiles {
            cert: cert_path,
            key: key_path,
        }),
        heartbeat_interval: Duration::from_secs(2),
        signer: Some(std::sync::Arc::new(crate::signing::RequestSigner::new(
            signing_key,
            None,
        ))),
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}"))?;

    let ca = reqwest::Certificate::from_pem(certificate.cert_pem.as_bytes())?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(RUN_TIMEOUT + Duration::from_secs(10))
        .build()?;
    let base = format!("https://{}", handle.local_addr());
    Ok((client, base, handle))
}

async fn start_database(quickstart: &Path) -> anyhow::Result<DemoDatabase> {
    let users: BTreeMap<String, DemoUser> = read_yaml(&quickstart.join("demo-database.yaml"))?;
    Ok(DemoDatabase::start(users).await?)
}

fn start_runner(
    quickstart: &Path,
    scratch: &Path,
    handle: &crate::control_plane::ControlPlaneHandle,
    log: &Path,
    database: &DemoDatabase,
) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let url = format!(
        "wss://{}{}",
        handle.local_addr(),
        crate::protocol::CONNECT_PATH
    );
    let log_file = std::fs::File::create(log)?;
    let child = tokio::process::Command::new(&exe)
        .args(["run", "-c"])
        .arg(quickstart.join("runner.yaml"))
        .env("QUICKSTART_URL", url)
        .env("QUICKSTART_DIR", scratch)
        .env("QUICKSTART_BIN", &exe)
        .env("QUICKSTART_DATABASE", database.addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the runner")?;
    Ok(child)
}

async fn wait_connected(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        let runners: Value = client
            .get(format!("{base}/v1/runners"))
            .send()
            .await?
            .json()
            .await?;
        let connected = runners.as_array().is_some_and(|list| {
            list.iter().any(|runner| {
                runner["agentId"] == "quickstart-runner" && runner["status"] == "Connected"
            })
        });
        if connected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the runner did not connect within {}s",
        CONNECT_TIMEOUT.as_secs()
    )
}

/// Submits one run, waits for its end and prints it. Returns whether it
/// matched the expectation, and every text received about it.
async fn run_one(
    client: &reqwest::Client,
    base: &str,
    quickstart: &Path,
    spec: &RunSpec,
    database: &DemoDatabase,
) -> anyhow::Result<(bool, Vec<String>)> {
    let workflow_path = quickstart.join(&spec.workflow);
    let workflow = std::fs::read_to_string(&workflow_path)
        .with_context(|| format!("cannot read {}", workflow_path.display()))?
        .replace("${DEMO_DATABASE}", &database.addr.to_string());
    let body = json!({
        "agentId": "quickstart-runner",
        "pipelineFqn": spec.pipeline_fqn,
        "pipelineType": spec.pipeline_type,
        "config": workflow,
    });
    let submitted = tokio::time::Instant::now();
    let response: Value = client
        .post(format!("{base}/v1/runs"))
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let Some(run_id) = response["runId"].as_str() else {
        bail!("submission of {} failed: {response}", spec.name);
    };
    let run: Value = client
        .get(format!(
            "{base}/v1/runs/{run_id}/wait?timeoutMs={}",
            RUN_TIMEOUT.as_millis()
        ))
        .send()
        .await?
        .json()
        .await?;
    let logs: Value = client
        .get(format!("{base}/v1/runs/{run_id}/logs"))
        .send()
        .await?
        .json()
        .await?;
    let elapsed = submitted.elapsed();

    let (outcome, reason) = outcome_of(&run);
    let reason_ok = spec.expect_reason.as_ref().is_none_or(|expected| {
        reason
            .as_deref()
            .is_some_and(|reason| reason.contains(expected.as_str()))
    });
    let ok = outcome == spec.expect && reason_ok;
    print_run(spec, &workflow_path, run_id, &run, &logs, elapsed, ok);
    Ok((ok, vec![run.to_string(), logs.to_string()]))
}

/// Waits for a result of every pre-check in `expected-prechecks.yaml`, prints
/// the last result of each and the runner's degraded flag, and returns whether
/// each check passed or failed as expected, with the texts received.
async fn show_prechecks(
    client: &reqwest::Client,
    base: &str,
    quickstart: &Path,
) -> anyhow::Result<(bool, Vec<String>)> {
    let expected: BTreeMap<String, String> =
        read_yaml(&quickstart.join("expected-prechecks.yaml"))?;
    let deadline = tokio::time::Instant::now() + PRECHECK_TIMEOUT;
    let view = loop {
        let runners: Value = client
            .get(format!("{base}/v1/runners"))
            .send()
            .await?
            .json()
            .await?;
        let view = runners
            .as_array()
            .and_then(|list| {
                list.iter()
                    .find(|runner| runner["agentId"] == "quickstart-runner")
            })
            .cloned()
            .unwrap_or_default();
        let complete = expected.keys().all(|name| {
            view["prechecks"][name]
                .as_array()
                .is_some_and(|results| !results.is_empty())
        });
        if complete || tokio::time::Instant::now() >= deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    println!("== pre-checks (last result of each, as the control plane received it)");
    let mut all_ok = true;
    for (name, expect) in &expected {
        let last = view["prechecks"][name]
            .as_array()
            .and_then(|results| results.last());
        let Some(last) = last else {
            println!(
                "   {name}: no result within {}s: NOT AS EXPECTED",
                PRECHECK_TIMEOUT.as_secs()
            );
            all_ok = false;
            continue;
        };
        let outcome = if last["ok"] == true { "pass" } else { "fail" };
        let ok = outcome == expect;
        all_ok &= ok;
        println!(
            "   {name}: {} in {} ms: {}",
            if outcome == "pass" {
                "passed"
            } else {
                "failed"
            },
            last["durationMs"].as_u64().unwrap_or_default(),
            last["message"].as_str().unwrap_or("")
        );
        println!(
            "     expected {expect}, got {outcome}: {}",
            if ok { "as expected" } else { "NOT AS EXPECTED" }
        );
    }
    let failing: Vec<&str> = view["failingPrechecks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|check| check["name"].as_str())
        .collect();
    if view["degraded"] == true {
        println!(
            "   runner status: degraded; failing: {}\n",
            failing.join(", ")
        );
    } else {
        println!("   runner status: healthy\n");
    }
    Ok((all_ok, vec![view.to_string()]))
}

/// Returns `rejected`, the final pipeline state, or `unfinished`, and the reason.
fn outcome_of(run: &Value) -> (String, Option<String>) {
    if run["outcome"] == "rejected" {
        let reason = run["rejection"]["reason"].as_str().map(str::to_string);
        return ("rejected".into(), reason);
    }
    let state = run["finalState"]
        .as_str()
        .unwrap_or("unfinished")
        .to_string();
    (state, run["reason"].as_str().map(str::to_string))
}

fn print_run(
    spec: &RunSpec,
    workflow_path: &Path,
    run_id: &str,
    run: &Value,
    logs: &Value,
    elapsed: Duration,
    ok: bool,
) {
    println!("== {} ({} run {run_id})", spec.name, spec.pipeline_type);
    println!("   workflow: {}", normalize(workflow_path).display());
    // Status times are shown in milliseconds after submission.
    let submitted_at = run["submittedAt"].as_i64().unwrap_or_default();
    if let Some(rejection) = run.get("rejection").filter(|value| !value.is_null()) {
        println!(
            "   rejected ({}): {}",
            rejection["code"].as_str().unwrap_or("?"),
            rejection["reason"].as_str().unwrap_or("?")
        );
    }
    for status in run["statuses"].as_array().into_iter().flatten() {
        let pipeline_status = &status["pipelineStatus"];
        let at = pipeline_status["timestamp"].as_i64().unwrap_or_default() - submitted_at;
        let reason = status["reason"]
            .as_str()
            .map(|reason| format!(" ({reason})"))
            .unwrap_or_default();
        println!(
            "   +{:>5} ms after submission  {}{reason}",
            at,
            pipeline_status["pipelineState"].as_str().unwrap_or("?")
        );
    }
    let lines = logs["lines"].as_array().cloned().unwrap_or_default();
    if !lines.is_empty() {
        println!("   log:");
        for line in &lines {
            println!(
                "     [{}] {}",
                line["stream"].as_str().unwrap_or("?"),
                line["text"].as_str().unwrap_or("")
            );
        }
    }
    let (outcome, _) = outcome_of(run);
    println!(
        "   expected {}, got {outcome} after {} ms: {}\n",
        spec.expect,
        elapsed.as_millis(),
        if ok { "as expected" } else { "NOT AS EXPECTED" }
    );
}

/// Checks that no secret value, nor any line of one, appears in `texts`.
fn check_no_leak(quickstart: &Path, texts: &[String]) -> anyhow::Result<bool> {
    let secrets: BTreeMap<String, String> = read_yaml(&quickstart.join("secrets.yaml"))?;
    let leaks: Vec<&String> = secrets
        .iter()
        .filter(|(_, value)| {
            // PEM armour lines are public; every other line of a value is secret.
            let forms: Vec<&str> = std::iter::once(value.as_str())
                .chain(value.lines().filter(|line| {
                    line.len() >= crate::redact::DEFAULT_MIN_SECRET_LEN
                        && !line.starts_with("-----")
                }))
                .collect();
            texts
                .iter()
                .any(|text| forms.iter().any(|form| text.contains(form)))
        })
        .map(|(path, _)| path)
        .collect();
    if leaks.is_empty() {
        println!(
            "leak check: none of the {} secret values appeared in {} statuses, logs and runner log texts",
            secrets.len(),
            texts.len()
        );
        Ok(true)
    } else {
        for path in leaks {
            println!("leak check: the value of {path} appeared in output sent by the runner");
        }
        Ok(false)
    }
}

async fn stop_runner(runner: &mut tokio::process::Child) {
    if let Some(pid) = runner.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(15), runner.wait())
        .await
        .is_err()
    {
        let _ = runner.kill().await;
    }
}

/// Removes `.` and `dir/..` pairs from a path without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn read_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
