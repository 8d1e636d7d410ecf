//! Chaos tests through the real binaries: the runner killed with SIGKILL at
//! random points during 100 runs, and the control plane stopped and
//! unreachable for 60 seconds during 20 runs that log.
//!
//! Random choices come from a seeded generator. Each test prints its seed;
//! `CHAOS_SEED=N` replays it.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use common::{
    ControlPlane, PLAIN_WORKFLOW, RunnerConfig, Signal, TestEnv, states, submission, wait_until,
};

/// Returns a generator seeded from `CHAOS_SEED` or the clock, and prints the seed.
fn seeded_rng(test: &str) -> StdRng {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| hybrid_runner::now_millis() as u64);
    eprintln!("{test}: chaos seed {seed}; replay with CHAOS_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Submits a run with id `run_id`, retrying while the runner is not connected.
async fn submit_when_connected(control_plane: &ControlPlane, body: &Value) {
    let run_id = body["runId"].as_str().unwrap_or_default().to_string();
    wait_until(
        &format!("the control plane to take run {run_id}"),
        common::START_DEADLINE,
        async || {
            let (status, answer) = control_plane.post("/v1/runs", body).await;
            match status {
                StatusCode::ACCEPTED => Some(()),
                StatusCode::CONFLICT if answer.to_string().contains("not connected") => None,
                other => panic!("POST /v1/runs for {run_id}: {other} {answer}"),
            }
        },
    )
    .await;
}

/// Returns the number of final statuses in a run document.
fn final_statuses(document: &Value) -> usize {
    states(document)
        .iter()
        .filter(|state| !matches!(state.as_str(), "queued" | "running"))
        .count()
}

#[tokio::test]
async fn runner_killed_during_hundred_runs() {
    let mut rng = seeded_rng("runner_killed_during_hundred_runs");
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    // Each run takes about 300 ms, so a kill finds runs in every phase:
    // being checked, accepted, running and just finished.
    let config = RunnerConfig::new("chaos-runner")
        .pipeline("metadata", "echo first; sleep 0.3; echo second")
        .capacity(100);
    let mut runner = env.start_runner(&control_plane, config.clone());
    control_plane.wait_connected(&runner).await;

    let total = 100;
    let mut run_ids = Vec::new();
    let mut kills = 0;
    while run_ids.len() < total {
        let batch = rng.random_range(3..=15).min(total - run_ids.len());
        for _ in 0..batch {
            let run_id = format!("chaos-{:03}", run_ids.len() + 1);
            let mut body = submission("chaos-runner", PLAIN_WORKFLOW);
            body["runId"] = json!(run_id);
            submit_when_connected(&control_plane, &body).await;
            run_ids.push(run_id);
        }
        let delay = Duration::from_millis(rng.random_range(0..800));
        tokio::time::sleep(delay).await;
        if run_ids.len() < total || rng.random_bool(0.5) {
            runner.signal(Signal::SIGKILL);
            runner.wait_exit().await;
            kills += 1;
            runner = env.start_runner(&control_plane, config.clone());
        }
    }

    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for run_id in &run_ids {
        let document = control_plane.wait_final(run_id).await;
        let outcome = if document["outcome"] == "rejected" {
            assert_eq!(final_statuses(&document), 0, "run {run_id}: {document}");
            format!("rejected {}", document["rejection"]["code"])
        } else {
            assert_eq!(final_statuses(&document), 1, "run {run_id}: {document}");
            let state = document["finalState"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if state == "failed" {
                let reason = document["reason"].as_str().unwrap_or_default();
                assert!(
                    reason.contains("the runner restarted"),
                    "run {run_id}: {document}"
                );
            } else {
                assert_eq!(state, "success", "run {run_id}: {document}");
            }
            state
        };
        *tally.entry(outcome).or_default() += 1;
    }
    eprintln!("{total} runs, {kills} kills: {tally:?}");
    let (_, runs) = control_plane.get("/v1/runs").await;
    assert_eq!(runs.as_array().map(Vec::len), Some(total), "runs: {runs}");
    assert!(
        std::fs::read_dir(&runner.work_dir).map_or(0, |dir| dir.count()) <= 100,
        "run directories left"
    );
}

/// A TCP relay in front of the control plane that can drop every
/// connection and refuse new ones, as a network outage does.
struct Relay {
    addr: SocketAddr,
    /// Cancelled to cut the current connections; replaced when restored.
    cut: Arc<Mutex<Option<CancellationToken>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let cut = Arc::new(Mutex::new(Some(CancellationToken::new())));
        let state = Arc::clone(&cut);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                // While cut, a connection is closed at once.
                let Some(token) = state.lock().unwrap().clone() else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        Relay { addr, cut }
    }

    fn cut(&self) {
        if let Some(token) = self.cut.lock().unwrap().take() {
            token.cancel();
        }
    }

    fn restore(&self) {
        *self.cut.lock().unwrap() = Some(CancellationToken::new());
    }
}

#[tokio::test]
async fn control_plane_outage_loses_nothing() {
    let mut rng = seeded_rng("control_plane_outage_loses_nothing");
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let relay = Relay::start(control_plane.addr).await;
    let lines = 40;
    // Each run logs one line every 100 ms for about 4 s.
    let script =
        format!(r#"i=1; while [ $i -le {lines} ]; do echo "line $i"; sleep 0.1; i=$((i+1)); done"#);
    let runner = env.start_runner_at(
        &format!("ws://{}/agent/v1/connect", relay.addr),
        None,
        RunnerConfig::new("outage-runner")
            .pipeline("metadata", &script)
            .capacity(20),
    );
    control_plane.wait_connected(&runner).await;

    let mut run_ids = Vec::new();
    for number in 1..=20 {
        let run_id = format!("outage-{number:02}");
        let mut body = submission("outage-runner", PLAIN_WORKFLOW);
        body["runId"] = json!(run_id);
        control_plane.submit(&body).await;
        run_ids.push(run_id);
    }
    // Every run is running and has logged some lines, none has finished.
    for run_id in &run_ids {
        control_plane.wait_state(run_id, "running").await;
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;

    relay.cut();
    let pid = nix::unistd::Pid::from_raw(control_plane.pid() as i32);
    nix::sys::signal::kill(pid, Signal::SIGSTOP).expect("stop the control plane");
    tokio::time::sleep(Duration::from_secs(60)).await;
    nix::sys::signal::kill(pid, Signal::SIGCONT).expect("continue the control plane");
    relay.restore();

    for run_id in &run_ids {
        let document = control_plane.wait_final(run_id).await;
        assert_eq!(
            states(&document),
            vec!["queued", "running", "success"],
            "statuses of {run_id}: {document}"
        );
        let logs = control_plane.logs(run_id).await;
        let numbers: Vec<u64> = logs
            .iter()
            .map(|line| line["n"].as_u64().unwrap_or(0))
            .collect();
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "line numbers of {run_id}");
        let stdout: Vec<String> = logs
            .iter()
            .filter(|line| line["stream"] == "stdout")
            .map(|line| line["text"].as_str().unwrap_or_default().to_string())
            .collect();
        let expected: Vec<String> = (1..=lines).map(|i| format!("line {i}")).collect();
        assert_eq!(stdout, expected, "stdout of {run_id}");
    }
    let log = runner.log();
    assert!(
        log.contains("session lost; reconnecting"),
        "the runner did not reconnect; log: {log}"
    );
}
