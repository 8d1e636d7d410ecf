//! Scheduler tests against real Lua hook scripts, on tokio's paused clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::*;
use crate::hooks::{DeclaredCheck, HookLimits, HookSet};

/// A wall clock that follows tokio's paused clock plus an adjustable jump.
struct TestClock {
    start: tokio::time::Instant,
    jump_ms: AtomicI64,
}

impl TestClock {
    fn new() -> Arc<Self> {
        Arc::new(TestClock {
            start: tokio::time::Instant::now(),
            jump_ms: AtomicI64::new(0),
        })
    }

    fn now(&self) -> DateTime<Utc> {
        let base = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let elapsed = chrono::Duration::from_std(self.start.elapsed()).unwrap();
        base + elapsed + chrono::Duration::milliseconds(self.jump_ms.load(Ordering::SeqCst))
    }

    fn jump(&self, by: chrono::Duration) {
        self.jump_ms
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

struct Fixture {
    _root: tempfile::TempDir,
    dir: std::path::PathBuf,
    hooks: Arc<HookSet>,
    prechecks: Arc<Prechecks>,
    clock: Arc<TestClock>,
    sent: Arc<Mutex<Vec<PrecheckResult>>>,
}

fn yaml_check(name: &str, schedule: &str, function: &str, gate: bool) -> PrecheckSpec {
    PrecheckSpec {
        name: name.into(),
        schedule: Schedule::parse(schedule).unwrap(),
        timeout: Duration::from_secs(60),
        gate,
        gates: Gates::default(),
        source: Source::Yaml {
            function: function.into(),
        },
    }
}

fn fixture(script: &str, yaml_checks: Vec<PrecheckSpec>) -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("hooks");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("checks.lua"), script).unwrap();
    let declared_checks = yaml_checks
        .iter()
        .filter_map(|check| match &check.source {
            Source::Yaml { function } => Some(DeclaredCheck {
                name: check.name.clone(),
                function: function.clone(),
            }),
            Source::Lua { .. } => None,
        })
        .collect();

    let limits = HookLimits {
        declared_checks,
        time_limit: Duration::from_secs(60),
        ..HookLimits::default()
    };
    let hooks = Arc::new(HookSet::load(&dir, limits).unwrap());

    let clock = TestClock::new();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let sink_sent = Arc::clone(&sent);
    let clock_source = Arc::clone(&clock);
    let prechecks = Prechecks::new(
        yaml_checks,
        Tz::UTC,
        Some(Arc::clone(&hooks)),
        Arc::new(move |result| sink_sent.lock().unwrap().push(result.clone())),
    )
    .with_clock(Arc::new(move || clock_source.now()));
    Fixture {
        _root: root,
        dir,
        hooks,
        prechecks: Arc::new(prechecks),
        clock,
        sent,
    }
}

fn status(prechecks: &Prechecks, name: &str) -> CheckStatus {
    prechecks
        .list()
        .into_iter()
        .find(|check| check.spec.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

async fn advance(seconds: u64) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    // Lets the spawned calls that the last tick started finish.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn interval_runs_once_per_interval() {
    let f = fixture(
        "function ping() return true, 'pong' end",
        vec![yaml_check("ping", "@every 10s", "ping", false)],
    );
    f.prechecks.start();
    advance(35).await;

    let ping = status(&f.prechecks, "ping");
    assert_eq!(ping.runs, 3);
    assert_eq!(ping.skipped, 0);
    let sent = f.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter()
            .all(|result| result.ok && result.message == "pong")
    );
    f.prechecks.stop();
}

#[tokio::test(start_paused = true)]
async fn overlapping_ticks_are_skipped() {
    let f = fixture(
        "function slow() runner.sleep(25) return true end",
        vec![yaml_check("slow", "@every 10s", "slow", false)],
    );
    f.prechecks.start();
    // Ticks at 10 s (runs until 35 s), 20 s and 30 s (both skipped).
    advance(32).await;
    let slow = status(&f.prechecks, "slow");
    assert_eq!(slow.runs, 0);
    assert_eq!(slow.skipped, 2);

    advance(6).await;
    let slow = status(&f.prechecks, "slow");
    assert_eq!(slow.runs, 1);
    f.prechecks.stop();
}

#[tokio::test(start_paused = true)]
async fn clock_jump_runs_missed_tick_once() {
    let f = fixture(
        "function ping() return true end",
        vec![yaml_check("ping", "@every 10s", "ping", false)],
    );
    f.prechecks.start();
    advance(11).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 1);

    // An hour of missed slots while the machine slept.
    f.clock.jump(chrono::Duration::hours(1));
    advance(10).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 2);
    advance(5).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 2);
    f.prechecks.stop();
}

#[tokio::test(start_paused = true)]
async fn interval_survives_clock_going_back() {
    let f = fixture(
        "function ping() return true end",
        vec![yaml_check("ping", "@every 10s", "ping", false)],
    );
    f.prechecks.start();
    advance(11).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 1);

    // The clock goes back an hour: the interval counts from the new time
    // instead of waiting for the old time to come round again.
    f.clock.jump(chrono::Duration::hours(-1));
    advance(18).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 1);
    advance(2).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 2);
    advance(10).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 3);
    f.prechecks.stop();
}

#[tokio::test(start_paused = true)]
async fn cron_after_jump_runs_once() {
    let f = fixture(
        "function ping() return true end",
        vec![yaml_check("ping", "* * * * *", "ping", false)],
    );
    f.prechecks.start();
    advance(61).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 1);

    // Thirty missed minutes run once, at the next wake (at most MAX_SLEEP
    // later); then the schedule goes on from the new time.
    f.clock.jump(chrono::Duration::minutes(30));
    advance(31).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 2);
    advance(20).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 2);
    advance(10).await;
    assert_eq!(status(&f.prechecks, "ping").runs, 3);
    f.prechecks.stop();
}

#[tokio::test(start_paused = true)]
async fn failing_gate_rejects_until_recovery() {
    let script = r#"
        healthy = false
        function database()
          if healthy then return { ok = true, message = "reachable" } end
          return { ok = false, message = "connection refused" }
        end
    "#;
    let mut check = yaml_check("database", "@every 10s", "database", true);
    check.gates.pipeline_types = vec!["metadata".into()];
    let f = fixture(script, vec![check]);

    let failed = f.prechecks.run_now("database").await.unwrap();
    assert!(!failed.ok);
    let reason = f.prechecks.gate("metadata", "mysql.ingest").unwrap();
    assert_eq!(reason, "pre-check database is failing: connection refused");
    assert_eq!(f.prechecks.gate("profiler", "mysql.profile"), None);
    let summary = f.prechecks.summary().unwrap();
    assert!(summary.degraded);
    assert_eq!(summary.failing.len(), 1);
    assert_eq!(summary.failing[0].name, "database");
    assert!(summary.failing[0].gate);

    std::fs::write(
        f.dir.join("checks.lua"),
        script.replace("healthy = false", "healthy = true"),
    )
    .unwrap();
    f.hooks.reload().await.unwrap();
    let passed = f.prechecks.run_now("database").await.unwrap();
    assert!(passed.ok, "{}", passed.message);
    assert_eq!(f.prechecks.gate("metadata", "mysql.ingest"), None);
    assert!(!f.prechecks.summary().unwrap().degraded);
}

#[tokio::test(start_paused = true)]
async fn return_forms_are_read() {
    let script = r#"
        runner.schedule("plain_false", "@every 1h", function() return false end)
        runner.schedule("pair", "@every 1h", function() return false, "disk full" end)
        runner.schedule("raises", "@every 1h", function() error("no route") end)
        runner.schedule("number", "@every 1h", function() return 42 end)
        runner.schedule("slow", "@every 1h", function() runner.sleep(5) return true end, { timeout = 1 })
    "#;
    let f = fixture(script, vec![]);
    f.prechecks.sync_hooks();
    let run = |name: &'static str| {
        let prechecks = Arc::clone(&f.prechecks);
        async move { prechecks.run_now(name).await.unwrap() }
    };

    let plain_false = run("plain_false").await;
    assert!(!plain_false.ok);
    assert_eq!(plain_false.message, "failed");
    assert_eq!(run("pair").await.message, "disk full");
    let raises = run("raises").await;
    assert!(!raises.ok);
    assert!(raises.message.contains("no route"), "{}", raises.message);
    assert!(run("number").await.message.contains("returned a number"));
    let slow = run("slow").await;
    assert!(!slow.ok);
    assert!(
        slow.message.contains("timed out after 1s"),
        "{}",
        slow.message
    );
}

#[tokio::test(start_paused = true)]
async fn history_keeps_last_results() {
    let f = fixture(
        "function ping() return true end",
        vec![yaml_check("ping", "@every 1h", "ping", false)],
    );
    for _ in 0..HISTORY_LEN + 5 {
        f.prechecks.run_now("ping").await.unwrap();
    }
    let ping = status(&f.prechecks, "ping");
    assert_eq!(ping.history.len(), HISTORY_LEN);
    assert_eq!(ping.runs, (HISTORY_LEN + 5) as u64);
}

#[tokio::test(start_paused = true)]
async fn reload_replaces_lua_schedules() {
    let f = fixture(
        "runner.schedule('old', '@every 10s', function() return true end)",
        vec![],
    );
    f.prechecks.start();
    advance(11).await;
    assert_eq!(status(&f.prechecks, "old").runs, 1);

    std::fs::write(
        f.dir.join("checks.lua"),
        "runner.schedule('new', '@every 10s', function() return true end)",
    )
    .unwrap();
    f.hooks.reload().await.unwrap();
    advance(1).await;
    let names: Vec<String> = f
        .prechecks
        .list()
        .into_iter()
        .map(|c| c.spec.name)
        .collect();
    assert_eq!(names, vec!["new".to_string()]);

    advance(20).await;
    let sent = f.sent.lock().unwrap().clone();
    let old_runs = sent.iter().filter(|result| result.name == "old").count();
    let new_runs = sent.iter().filter(|result| result.name == "new").count();
    assert_eq!(old_runs, 1);
    assert_eq!(new_runs, 2);
    f.prechecks.stop();
}

#[test]
fn gates_match_type_and_service() {
    let gates = Gates {
        pipeline_types: vec!["metadata".into()],
        services: vec!["mysql_prod".into()],
    };
    assert!(gates.applies("metadata", "mysql_prod.ingest"));
    assert!(!gates.applies("profiler", "mysql_prod.ingest"));
    assert!(!gates.applies("metadata", "postgres.ingest"));
    assert!(Gates::default().applies("anything", "any.pipeline"));
}

#[test]
fn check_names_are_validated() {
    assert!(check_name("db-reachable.v2_x").is_ok());
    assert!(check_name("").is_err());
    assert!(check_name("has space").is_err());
    assert!(check_name(&"a".repeat(101)).is_err());
}
