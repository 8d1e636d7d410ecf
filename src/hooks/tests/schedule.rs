//! `runner.schedule`, `runner.fs` and the checks of runner.yaml.

use super::*;
use crate::hooks::{CheckFunction, DeclaredCheck, HookLoadError};

fn load_error(files: &[(&str, &str)], limits: HookLimits) -> String {
    let (_root, dir) = hooks_dir(files);
    match HookEngine::load(&dir, limits) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("loading should fail"),
    }
}

#[test]
fn schedule_registers_checks() {
    let script = r#"
        runner.schedule("disk", "@every 30s", function() return true end)
        runner.schedule("db", "*/5 * * * *", function() return true end, {
          timeout = "10s", gate = true, gates = { pipeline_types = { "metadata" } },
        })
    "#;
    let (_root, engine) = load(&[("checks.lua", script)]);
    let checks = engine.scheduled_checks();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].name, "disk");
    assert_eq!(checks[0].timeout, None);
    assert_eq!(checks[1].schedule.as_str(), "*/5 * * * *");
    assert_eq!(checks[1].timeout, Some(Duration::from_secs(10)));
    assert!(checks[1].gate);
    assert_eq!(checks[1].gates.pipeline_types, vec!["metadata"]);
}

#[test]
fn invalid_expression_fails_load() {
    let script = r#"runner.schedule("nightly", "0 25 * * *", function() return true end)"#;
    let error = load_error(&[("checks.lua", script)], test_limits());
    assert!(error.contains("hooks/checks.lua:1"), "{error}");
    assert!(error.contains("pre-check nightly"), "{error}");
    assert!(error.contains("\"0 25 * * *\""), "{error}");
}

#[test]
fn schedule_rejects_bad_registrations() {
    let cases = [
        (
            r#"runner.schedule("a", "@every 1m", function() end, { colour = 1 })"#,
            "unknown option \"colour\"",
        ),
        (
            r#"runner.schedule("a", "@every 1m", function() end)
               runner.schedule("a", "@every 1m", function() end)"#,
            "a pre-check named a is already registered",
        ),
        (
            r#"runner.schedule("has space", "@every 1m", function() end)"#,
            "invalid pre-check name",
        ),
        (
            r#"runner.schedule("disk", "@every 1m", function() end)"#,
            "already declared in runner.yaml",
        ),
    ];
    for (script, expected) in cases {
        let limits = HookLimits {
            declared_checks: vec![DeclaredCheck {
                name: "disk".into(),
                function: "check_disk".into(),
            }],
            ..test_limits()
        };
        let files = [
            ("checks.lua", script),
            ("yaml.lua", "function check_disk() end"),
        ];
        let error = load_error(&files, limits);
        assert!(error.contains(expected), "{script}: {error}");
    }
}

#[tokio::test]
async fn schedule_after_load_is_rejected() {
    let script = r#"
        function pre_run()
          runner.schedule("late", "@every 1m", function() return true end)
        end
    "#;
    let (_root, engine) = load(&[("late.lua", script)]);
    let error = fire_err(&engine, HookPoint::PreRun, serde_json::json!({})).await;
    assert!(
        error.to_string().contains("only by the top-level code"),
        "{error}"
    );
    assert!(engine.scheduled_checks().is_empty());
}

#[test]
fn missing_declared_function_fails_load() {
    let limits = HookLimits {
        declared_checks: vec![DeclaredCheck {
            name: "database".into(),
            function: "check_database".into(),
        }],
        ..test_limits()
    };
    let (_root, dir) = hooks_dir(&[("other.lua", "check_database = 5")]);
    match HookEngine::load(&dir, limits) {
        Err(HookLoadError::MissingCheckFunction {
            check,
            function,
            found,
        }) => {
            assert_eq!(check, "database");
            assert_eq!(function, "check_database");
            assert_eq!(found, "integer");
        }
        other => panic!("expected MissingCheckFunction, got {other:?}"),
    }
}

#[tokio::test]
async fn call_check_returns_two_values() {
    let script = r#"
        function check_database(check) return false, "refused by " .. check.name end
        runner.schedule("lua", "@every 1m", function() return { ok = true } end)
    "#;
    let (_root, engine) = load(&[("checks.lua", script)]);
    let global = CheckFunction::Global("check_database".into());
    let returned = engine
        .call_check("database", &global, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(returned, serde_json::json!([false, "refused by database"]));
    let registered = engine
        .call_check("lua", &CheckFunction::Registered, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(registered, serde_json::json!([{ "ok": true }]));
    let missing = engine
        .call_check("gone", &CheckFunction::Registered, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("not defined"), "{missing}");
}

#[test]
fn free_space_reports_work_dir() {
    let work = tempfile::tempdir().unwrap();
    let script = r#"
        local space = runner.fs.free_space(runner.fs.work_dir)
        assert(space.total_bytes > 0)
        assert(space.available_bytes <= space.total_bytes)
        assert(space.available_percent >= 0 and space.available_percent <= 100)
        for _, path in ipairs({ "relative", "/tmp/../etc", "/does/not/exist" }) do
          local ok, message = pcall(runner.fs.free_space, path)
          assert(not ok)
          assert(tostring(message):find("runner.fs.free_space", 1, true), tostring(message))
        end
    "#;
    let limits = HookLimits {
        work_dir: Some(work.path().to_path_buf()),
        ..test_limits()
    };
    let _loaded = load_with(&[("disk.lua", script)], limits);
}
