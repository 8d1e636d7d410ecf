//! Lua hook costs, in three parts:
//!
//! 1. An empty `pre_run` hook called through `HookSet::fire` with a run-shaped
//!    input, against a plain spawn-and-wait of `/bin/true` (tokio), in
//!    alternating blocks in one process run. Reports both medians and their
//!    ratio, and the hook's cost when each call follows a spawn-and-wait.
//! 2. Hot reload latency: from writing a script in the hooks folder to
//!    `HookSet::current()` serving the edited content, through the real
//!    watcher (`hooks::watch`) whose callback triggers `HookSet::reload`.
//!    Measured with the runner's default debounce (100 ms) and with 20 ms.
//! 3. Throughput with slow hooks: runs whose `pre_run` awaits
//!    `runner.sleep(0.1)`, submitted with at most 1, 8 and 32 in flight to the
//!    real runner binary, connected over a loopback WebSocket to the control
//!    plane in this process. Reports completed runs per second.
//!
//! Run with `cargo bench --bench hooks`. Under `cargo test` it runs a few
//! samples of each part as a smoke test.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hybrid_runner::control_plane::{self, ControlPlaneEvent, ControlPlaneOptions, RunSubmission};
use hybrid_runner::hooks::{HookLimits, HookOutcome, HookPoint, HookSet};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

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

/// Default of `hooks.reload_debounce` in runner.yaml.
const RUNNER_DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// Time a single edit may take to be served before the benchmark fails.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

struct Sizes {
    empty_hook_samples: usize,
    reload_edits: usize,
    reload_debounces: Vec<Duration>,
    /// Runs submitted at each concurrency, as (concurrency, runs).
    throughput: Vec<(usize, usize)>,
}

fn main() {
    // `cargo bench` passes --bench. Without it, as under `cargo test
    // --all-targets`, this runs as a quick smoke test.
    let full = std::env::args().any(|arg| arg == "--bench");
    let sizes = if full {
        Sizes {
            empty_hook_samples: 2000,
            reload_edits: 100,
            reload_debounces: vec![RUNNER_DEFAULT_DEBOUNCE, Duration::from_millis(20)],
            throughput: vec![(1, 20), (8, 160), (32, 640)],
        }
    } else {
        Sizes {
            empty_hook_samples: 20,
            reload_edits: 3,
            reload_debounces: vec![Duration::from_millis(20)],
            throughput: vec![(1, 2), (8, 8), (32, 32)],
        }
    };
    // The runner's agent runs on a current-thread runtime, so the hook call
    // and the spawn are measured on one too.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(empty_hook(sizes.empty_hook_samples));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        for debounce in &sizes.reload_debounces {
            reload_latency(sizes.reload_edits, *debounce).await;
        }
        throughput(&sizes.throughput).await;
    });
}

/// Builds the `pre_run` input the runner passes: the run request's ids and the
/// workflow config as JSON.
fn pre_run_input() -> Value {
    let config: Value = serde_yaml::from_str(WORKFLOW).expect("workflow YAML");
    json!({
        "runId": "0b8f1c1e-6d0e-4c55-9a43-2f0c2d3f4a5b",
        "pipelineFqn": "bench_mysql.bench",
        "pipelineType": "metadata",
        "config": config,
    })
}

async fn empty_hook(samples: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("hooks.lua"), "function pre_run(run) end\n")
        .expect("hook script");
    let set = HookSet::load(dir.path(), HookLimits::default()).expect("hook scripts load");
    let input = pre_run_input();

    // Warm-up: first spawn, Lua allocations, page cache.
    for _ in 0..20 {
        fire_empty(&set, &input).await;
        baseline_once().await;
    }
    // Blocks of each kind alternate, so drift in machine load touches both.
    let block = (samples / 10).max(1);
    let mut hook = Vec::with_capacity(samples);
    let mut baseline = Vec::with_capacity(samples);
    let mut hook_after_spawn = Vec::with_capacity(samples);
    while hook.len() < samples {
        for _ in 0..block {
            hook.push(fire_empty(&set, &input).await);
        }
        for _ in 0..block {
            baseline.push(baseline_once().await);
        }
        // The same call right after a spawn-and-wait, when the CPU has idled
        // for about a millisecond.
        for _ in 0..block {
            baseline_once().await;
            hook_after_spawn.push(fire_empty(&set, &input).await);
        }
    }
    hook.sort();
    baseline.sort();
    hook_after_spawn.sort();

    let baseline_median = percentile(&baseline, 0.5).as_secs_f64();
    let share =
        |sorted: &[Duration]| percentile(sorted, 0.5).as_secs_f64() / baseline_median * 100.0;
    println!("== empty pre_run hook ({samples} samples each)");
    println!("                               p50 (us)   p90 (us)   p99 (us)");
    for (name, sorted) in [
        ("empty pre_run", &hook),
        ("empty pre_run after a spawn", &hook_after_spawn),
        ("spawn+wait /bin/true", &baseline),
    ] {
        println!(
            "{name:<29} {:>10.1} {:>10.1} {:>10.1}",
            micros(percentile(sorted, 0.5)),
            micros(percentile(sorted, 0.9)),
            micros(percentile(sorted, 0.99))
        );
    }
    println!(
        "median hook / median spawn: {:.2} % (target: at most 1 %); right after a spawn: {:.2} %",
        share(&hook),
        share(&hook_after_spawn)
    );
    println!();
}

/// Returns the time of one `pre_run` call, including the copy of the input
/// that the runner also builds for every run.
async fn fire_empty(set: &HookSet, input: &Value) -> Duration {
    let started = Instant::now();
    let outcome = set
        .fire(HookPoint::PreRun, input.clone())
        .await
        .expect("empty pre_run succeeds");
    let elapsed = started.elapsed();
    assert_eq!(outcome, HookOutcome::Returned(Value::Null));
    elapsed
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

fn counter_script(counter: usize) -> String {
    format!("function pre_run(run) return {{ counter = {counter} }} end\n")
}

async fn reload_latency(edits: usize, debounce: Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("hooks.lua");
    std::fs::write(&script, counter_script(0)).expect("hook script");
    let set =
        Arc::new(HookSet::load(dir.path(), HookLimits::default()).expect("hook scripts load"));

    // The watcher's callback runs on the watcher's thread, so it only hands the
    // request to a task that reloads, as the runner does.
    let (requests, mut requested) = tokio::sync::mpsc::unbounded_channel::<()>();
    let cancel = CancellationToken::new();
    let _watcher = hybrid_runner::hooks::watch(&set, debounce, cancel.clone(), move |_| {
        let _ = requests.send(());
    })
    .expect("watch the hooks folder");
    let reloader = {
        let set = Arc::clone(&set);
        tokio::spawn(async move {
            while requested.recv().await.is_some() {
                // A reload can read a half-written file. The write's later
                // events trigger another reload, so an error here is not fatal.
                let _ = set.reload().await;
            }
        })
    };

    let mut latencies = Vec::with_capacity(edits);
    for counter in 1..=edits {
        // Lets events of the previous write settle, so each edit starts its own burst.
        tokio::time::sleep(debounce + Duration::from_millis(20)).await;
        let started = Instant::now();
        std::fs::write(&script, counter_script(counter)).expect("edit hook script");
        wait_for_counter(&set, counter, started).await;
        latencies.push(started.elapsed());
    }
    cancel.cancel();
    reloader.abort();

    latencies.sort();
    println!(
        "== hot reload, debounce {} ms ({edits} edits)",
        debounce.as_millis()
    );
    println!(
        "write -> new content serving: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target: p99 at most 300 ms)",
        millis(percentile(&latencies, 0.5)),
        millis(percentile(&latencies, 0.99)),
        millis(latencies[latencies.len() - 1])
    );
    println!(
        "generation serving at the end: {}",
        set.current().generation()
    );
    println!();
}

/// Polls the set every millisecond until `pre_run` returns `counter`.
async fn wait_for_counter(set: &HookSet, counter: usize, started: Instant) {
    let expected = HookOutcome::Returned(json!({ "counter": counter }));
    loop {
        // A failing call means a reload of a half-written file is serving,
        // which the next reload replaces.
        if let Ok(outcome) = set.fire(HookPoint::PreRun, json!({})).await
            && outcome == expected
        {
            return;
        }
        assert!(
            started.elapsed() < RELOAD_TIMEOUT,
            "edit {counter} was not served within {RELOAD_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn throughput(rounds: &[(usize, usize)]) {
    let max_concurrency = rounds.iter().map(|(concurrency, _)| *concurrency).max();
    let capacity = max_concurrency.unwrap_or(1);

    let dir = tempfile::tempdir().expect("temp dir");
    let token = "bench-token-0123456789";
    std::fs::write(dir.path().join("token"), token).expect("token file");
    std::fs::write(
        dir.path().join("secrets.yaml"),
        "/collate/hybrid-ingestion/bench/password: bench-password-42\n",
    )
    .expect("secrets file");
    let hooks_dir = dir.path().join("hooks");
    std::fs::create_dir(&hooks_dir).expect("hooks folder");
    std::fs::write(
        hooks_dir.join("slow.lua"),
        "function pre_run(run) runner.sleep(0.1) end\n",
    )
    .expect("hook script");

    let handle = control_plane::start(ControlPlaneOptions::new(
        "127.0.0.1:0".parse().expect("address"),
        vec![token.to_string()],
    ))
    .await
    .expect("control plane");
    let mut events = handle.events();
    let mut runner = start_runner(dir.path(), &hooks_dir, capacity, handle.local_addr());
    wait_connected(&mut events).await;

    // Warm-up: first spawn, first hook call.
    run_batch(&handle, &mut events, 1, 2).await;

    println!("== throughput, pre_run awaits runner.sleep(0.1), runs.capacity {capacity}");
    println!("concurrency   runs   elapsed (s)   runs/s   ideal runs/s   vs concurrency 1");
    let mut single_rate = None;
    for &(concurrency, runs) in rounds {
        let elapsed = run_batch(&handle, &mut events, concurrency, runs).await;
        let rate = runs as f64 / elapsed.as_secs_f64();
        let speedup = rate / *single_rate.get_or_insert(rate);
        // Each run spends at least 100 ms in its hook.
        let ideal = concurrency as f64 / 0.1;
        println!(
            "{concurrency:>11} {runs:>6} {:>13.2} {rate:>8.1} {ideal:>14.0} {speedup:>17.1}x",
            elapsed.as_secs_f64()
        );
    }
    println!();
    let _ = runner.kill().await;
    handle.shutdown().await;
}

fn start_runner(
    dir: &Path,
    hooks_dir: &Path,
    capacity: usize,
    addr: std::net::SocketAddr,
) -> tokio::process::Child {
    let config = format!(
        "agent_id: bench-runner
control_plane:
  url: ws://{addr}/agent/v1/connect
  token_file: token
runs:
  capacity: {capacity}
pipelines:
  metadata: [/bin/true]
secrets:
  provider:
    type: file
    path: secrets.yaml
hooks:
  dir: {}
log:
  level: warn
",
        hooks_dir.display()
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

async fn wait_connected(events: &mut broadcast::Receiver<ControlPlaneEvent>) {
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

/// Submits `runs` runs with at most `concurrency` in flight and returns the
/// time from the first submission to the last final status.
async fn run_batch(
    handle: &control_plane::ControlPlaneHandle,
    events: &mut broadcast::Receiver<ControlPlaneEvent>,
    concurrency: usize,
    runs: usize,
) -> Duration {
    let started = Instant::now();
    let mut submitted = 0;
    let mut in_flight = std::collections::HashSet::new();
    while submitted < runs.min(concurrency) {
        in_flight.insert(submit(handle).await);
        submitted += 1;
    }
    let mut finished = 0;
    while finished < runs {
        let run_id = match events.recv().await {
            Ok(ControlPlaneEvent::RunFinal {
                run_id,
                state,
                rejected,
                ..
            }) => {
                assert!(!rejected, "bench run {run_id} was rejected");
                assert_eq!(
                    state,
                    Some(hybrid_runner::protocol::PipelineState::Success),
                    "bench run {run_id} failed"
                );
                run_id
            }
            Ok(_) => continue,
            Err(error) => panic!("event stream failed: {error}"),
        };
        if !in_flight.remove(&run_id) {
            continue;
        }
        finished += 1;
        if submitted < runs {
            in_flight.insert(submit(handle).await);
            submitted += 1;
        }
    }
    started.elapsed()
}

async fn submit(handle: &control_plane::ControlPlaneHandle) -> String {
    let submission = RunSubmission::new(
        "bench-runner",
        "bench_mysql.bench",
        "metadata",
        json!(WORKFLOW),
    );
    handle.submit(submission).await.expect("submit")
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
