//! Run latency: from `run.request` to the final status of a `/bin/true`
//! workflow, against a plain spawn-and-wait of `/bin/true`, in one process run.
//!
//! The control plane runs in this process; the runner is the real binary,
//! connected over a loopback WebSocket. Each workflow carries one secret
//! reference, resolved from the file provider. Runner and baseline samples
//! alternate, so machine noise hits both alike.
//!
//! Run with `cargo bench --bench run_latency` (`RUNS=N` sets the sample
//! count, 300 by default). Under `cargo test` it runs 5 samples as a smoke
//! test.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hybrid_runner::control_plane::{self, ControlPlaneEvent, ControlPlaneOptions, RunSubmission};
use serde_json::json;

const WORKFLOW: &str = "
source:
  type: mysql
  serviceName: bench_mysql
  serviceConnection:
    config:
      type: Mysql
      username: bench
      authType:
        password: secret:/collate/hybrid-ingestion/bench/password
      hostPort: 127.0.0.1:3306
  sourceConfig:
    config:
      type: DatabaseMetadata
sink:
  type: metadata-rest
  config: {}
workflowConfig:
  openMetadataServerConfig:
    hostPort: http://127.0.0.1:8585/api
    authProvider: openmetadata
";

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a
    // quick smoke test instead.
    let full = std::env::args().any(|arg| arg == "--bench");
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(if full { 300 } else { 5 });
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(bench(runs));
}

async fn bench(runs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = "bench-token-0123456789";
    std::fs::write(dir.path().join("token"), token).expect("token file");
    std::fs::write(
        dir.path().join("secrets.yaml"),
        "/collate/hybrid-ingestion/bench/password: bench-password-42\n",
    )
    .expect("secrets file");

    let handle = control_plane::start(ControlPlaneOptions::new(
        "127.0.0.1:0".parse().expect("address"),
        vec![token.to_string()],
    ))
    .await
    .expect("control plane");
    let mut events = handle.events();
    let mut runner = start_runner(dir.path(), handle.local_addr());
    wait_connected(&mut events).await;

    // Warm-up: page cache, first spawn, allocator.
    for _ in 0..10 {
        run_once(&handle, &mut events).await;
        baseline_once().await;
    }
    let mut through_runner = Vec::with_capacity(runs);
    let mut baseline = Vec::with_capacity(runs);
    for _ in 0..runs {
        through_runner.push(run_once(&handle, &mut events).await);
        baseline.push(baseline_once().await);
    }
    let _ = runner.kill().await;
    handle.shutdown().await;

    report(&mut through_runner, &mut baseline);
}

fn start_runner(dir: &Path, addr: std::net::SocketAddr) -> tokio::process::Child {
    let config = format!(
        "agent_id: bench-runner
control_plane:
  url: ws://{addr}/agent/v1/connect
  token_file: token
runs:
  capacity: 1
pipelines:
  metadata: [/bin/true]
secrets:
  provider:
    type: file
    path: secrets.yaml
log:
  level: warn
"
    );
    let path = dir.join("runner.yaml");
    std::fs::write(&path, config).expect("runner.yaml");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hybrid-runner"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("runner")
}

async fn wait_connected(events: &mut tokio::sync::broadcast::Receiver<ControlPlaneEvent>) {
    let wait = async {
        loop {
            if let Ok(ControlPlaneEvent::RunnerConnected { .. }) = events.recv().await {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("runner connects within 30 s");
}

/// Returns the time from sending `run.request` to the arrival of the final status.
async fn run_once(
    handle: &control_plane::ControlPlaneHandle,
    events: &mut tokio::sync::broadcast::Receiver<ControlPlaneEvent>,
) -> Duration {
    let submission = RunSubmission::new(
        "bench-runner",
        "bench_mysql.bench",
        "metadata",
        json!(WORKFLOW),
    );
    let run_id = handle.submit(submission).await.expect("submit");
    loop {
        match events.recv().await {
            Ok(ControlPlaneEvent::RunFinal {
                run_id: id,
                state,
                at,
                submitted_at: Some(submitted_at),
                ..
            }) if id == run_id => {
                assert_eq!(
                    state,
                    Some(hybrid_runner::protocol::PipelineState::Success),
                    "bench run failed"
                );
                return at - submitted_at;
            }
            Ok(_) => {}
            Err(error) => panic!("event stream failed: {error}"),
        }
    }
}

/// Returns the time of a plain spawn-and-wait of `/bin/true` with tokio.
async fn baseline_once() -> Duration {
    let started = Instant::now();
    let status = tokio::process::Command::new("/bin/true")
        .status()
        .await
        .expect("/bin/true");
    assert!(status.success());
    started.elapsed()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn report(through_runner: &mut [Duration], baseline: &mut [Duration]) {
    through_runner.sort();
    baseline.sort();
    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    println!("samples: {} each", through_runner.len());
    println!("                      p50 (us)   p90 (us)   p99 (us)");
    for (name, samples) in [
        ("run.request -> final", &*through_runner),
        ("spawn+wait /bin/true", &*baseline),
    ] {
        println!(
            "{name:<20} {:>10.0} {:>10.0} {:>10.0}",
            micros(percentile(samples, 0.5)),
            micros(percentile(samples, 0.9)),
            micros(percentile(samples, 0.99))
        );
    }
    let ratio = micros(percentile(through_runner, 0.5)) / micros(percentile(baseline, 0.5));
    println!("median ratio (runner / plain spawn): {ratio:.2}x");
}
