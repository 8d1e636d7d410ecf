use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{fire_err, fire_ok, hooks_dir, load_with, test_limits};
use crate::hooks::{HookEngine, HookError, HookLimits, HookLoadError, HookPoint};

fn short_limits() -> HookLimits {
    HookLimits {
        time_limit: Duration::from_millis(300),
        ..test_limits()
    }
}

/// Each case runs forever in a different way; `normal` returns at once.
const RUNAWAY: &str = r#"
local cases = {
    plain_loop = function() while true do end end,
    pcall_loop = function()
        while true do pcall(function() while true do end end) end
    end,
    coroutine_loop = function()
        coroutine.wrap(function() while true do end end)()
    end,
    coroutine_pcall_loop = function()
        coroutine.wrap(function()
            while true do pcall(function() while true do end end) end
        end)()
    end,
    sort_comparator_loop = function()
        table.sort({ 3, 2, 1 }, function(a, b) while true do end end)
    end,
    recursion_in_pcall = function()
        local function f() pcall(f) pcall(f) end
        f()
    end,
    long_sleep = function() runner.sleep(60) end,
    normal = function() return "done" end,
}

function pre_run(input)
    return cases[input.case]()
end
"#;

#[tokio::test]
async fn runaway_calls_time_out_and_engine_recovers() {
    let (_root, engine) = load_with(&[("runaway.lua", RUNAWAY)], short_limits());
    let cases = [
        "plain_loop",
        "pcall_loop",
        "coroutine_loop",
        "coroutine_pcall_loop",
        "sort_comparator_loop",
        "recursion_in_pcall",
        "long_sleep",
    ];

    for case in cases {
        let started = Instant::now();
        let err = fire_err(&engine, HookPoint::PreRun, json!({ "case": case })).await;
        let elapsed = started.elapsed();

        assert!(matches!(err, HookError::TimedOut { .. }), "{case}: {err}");
        assert_eq!(
            err.to_string(),
            "pre_run exceeded its time limit of 300ms",
            "{case}"
        );
        assert!(
            elapsed >= Duration::from_millis(300),
            "{case}: stopped after {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "{case}: stopped after {elapsed:?}"
        );

        let returned = fire_ok(&engine, HookPoint::PreRun, json!({ "case": "normal" })).await;
        assert_eq!(returned, json!("done"), "after {case}");
    }
}

#[tokio::test]
async fn top_level_loop_fails_load() {
    let (_root, dir) = hooks_dir(&[("spin.lua", "local n = 0\nwhile true do n = n + 1 end\n")]);

    let err = HookEngine::load(&dir, short_limits()).expect_err("top-level loop");
    assert!(matches!(err, HookLoadError::TimedOut { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "loading hooks/spin.lua exceeded its time limit of 300ms"
    );
}

#[tokio::test]
async fn top_level_memory_bomb_fails_load() {
    let (_root, dir) = hooks_dir(&[("bomb.lua", "big = string.rep('x', 1024 * 1024 * 1024)\n")]);

    let err = HookEngine::load(&dir, short_limits()).expect_err("top-level bomb");
    assert!(matches!(err, HookLoadError::MemoryLimit { .. }), "{err}");
}

#[tokio::test]
async fn busy_hook_shares_state_with_sleeping_hooks() {
    let script = r#"
        function pre_run(input)
            if input.spin then
                local deadline = os.clock() + input.spin
                while os.clock() < deadline do end
                return "spun"
            end
            runner.sleep(0.05)
            return "slept"
        end
    "#;
    // A loaded machine stretches the spin's wall time, so the limit is wide.
    let limits = HookLimits {
        time_limit: Duration::from_secs(60),
        ..test_limits()
    };
    let (_root, engine) = load_with(&[("mix.lua", script)], limits);
    let engine = Arc::new(engine);

    // A busy call yields every time slice, so a short call started after it
    // finishes before it.
    let busy = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move { engine.fire(HookPoint::PreRun, json!({ "spin": 0.8 })).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let short = fire_ok(&engine, HookPoint::PreRun, json!({})).await;
    let busy_finished_first = busy.is_finished();
    let busy = busy.await.expect("join busy call").expect("busy call");

    assert_eq!(short, json!("slept"));
    assert!(
        !busy_finished_first,
        "the short call waited for the busy one"
    );
    assert_eq!(busy, crate::hooks::HookOutcome::Returned(json!("spun")));
}

const SLEEPER: &str = r#"
in_flight = 0
max_in_flight = 0

function pre_run(input)
    in_flight = in_flight + 1
    if in_flight > max_in_flight then max_in_flight = in_flight end
    runner.sleep(input.seconds)
    in_flight = in_flight - 1
    return max_in_flight
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_hooks_run_concurrently() {
    let (_root, engine) = load_with(&[("sleep.lua", SLEEPER)], test_limits());
    let engine = Arc::new(engine);
    let calls = 8;
    let input = json!({ "seconds": 0.1 });

    let serial_started = Instant::now();
    for _ in 0..calls {
        fire_ok(&engine, HookPoint::PreRun, input.clone()).await;
    }
    let serial = serial_started.elapsed();

    let concurrent_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let engine = Arc::clone(&engine);
        let input = input.clone();
        tasks.spawn(async move { engine.fire(HookPoint::PreRun, input).await });
    }
    let mut max_in_flight = 0;
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.expect("join hook call").expect("hook call");
        if let crate::hooks::HookOutcome::Returned(value) = outcome {
            max_in_flight = max_in_flight.max(value.as_u64().expect("integer"));
        }
    }
    let concurrent = concurrent_started.elapsed();

    assert!(
        serial >= Duration::from_millis(800),
        "serial run took {serial:?}"
    );
    assert!(
        concurrent * 2 < serial,
        "concurrent run took {concurrent:?}, serial run {serial:?}"
    );
    assert!(
        max_in_flight >= 4,
        "at most {max_in_flight} calls overlapped"
    );
}

#[tokio::test]
async fn sleep_rejects_invalid_durations() {
    let script = "function pre_run(input) runner.sleep(input.seconds) return 'ok' end";
    let (_root, engine) = load_with(&[("sleep.lua", script)], test_limits());

    let err = fire_err(&engine, HookPoint::PreRun, json!({ "seconds": -1 })).await;
    let message = err.to_string();
    assert!(message.contains("hooks/sleep.lua:1:"), "{message}");
    assert!(
        message.contains("expected a finite number of seconds >= 0"),
        "{message}"
    );

    let returned = fire_ok(&engine, HookPoint::PreRun, json!({ "seconds": 0 })).await;
    assert_eq!(returned, json!("ok"));
}
