//! Tests of the hook engine against real Lua states and real files.

mod api;
mod engine;
mod limits;
mod reload;
mod sandbox;
mod schedule;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::{HookEngine, HookError, HookLimits, HookOutcome, HookPoint};

/// Creates `<tempdir>/hooks` with the given files and returns both paths. The
/// directory is named `hooks` so chunk names read `hooks/<file>`.
fn hooks_dir(files: &[(&str, &str)]) -> (TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("create temp dir");
    let dir = root.path().join("hooks");
    std::fs::create_dir(&dir).expect("create hooks dir");
    for (name, contents) in files {
        write(&dir, name, contents);
    }
    (root, dir)
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).expect("write hook script");
}

fn test_limits() -> HookLimits {
    HookLimits {
        time_limit: Duration::from_secs(2),
        memory_limit_bytes: 16 * 1024 * 1024,
        env_allowlist: Vec::new(),
        events: None,
        secrets: None,
        redactor: None,
        declared_checks: Vec::new(),
        work_dir: None,
    }
}

fn load(files: &[(&str, &str)]) -> (TempDir, HookEngine) {
    load_with(files, test_limits())
}

fn load_with(files: &[(&str, &str)], limits: HookLimits) -> (TempDir, HookEngine) {
    let (root, dir) = hooks_dir(files);
    let engine = HookEngine::load(&dir, limits).expect("load hook scripts");
    (root, engine)
}

/// Fires a hook that must return a value.
async fn fire_ok(
    engine: &HookEngine,
    hook: HookPoint,
    input: serde_json::Value,
) -> serde_json::Value {
    match engine.fire(hook, input).await {
        Ok(HookOutcome::Returned(value)) => value,
        other => panic!("{hook} should return a value, got {other:?}"),
    }
}

/// Fires a hook that must fail.
async fn fire_err(engine: &HookEngine, hook: HookPoint, input: serde_json::Value) -> HookError {
    match engine.fire(hook, input).await {
        Err(err) => err,
        Ok(outcome) => panic!("{hook} should fail, got {outcome:?}"),
    }
}
