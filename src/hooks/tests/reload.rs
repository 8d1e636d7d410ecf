use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{hooks_dir, test_limits, write};
use crate::hooks::{HookLoadError, HookOutcome, HookPoint, HookSet, watch};

fn version_script(version: &str) -> String {
    format!(
        "function pre_run(input)\n  if input.sleep then runner.sleep(input.sleep) end\n  return '{version}'\nend\n"
    )
}

async fn fire_version(set: &HookSet) -> String {
    match set.fire(HookPoint::PreRun, json!({})).await {
        Ok(HookOutcome::Returned(serde_json::Value::String(version))) => version,
        other => panic!("expected a version string, got {other:?}"),
    }
}

#[tokio::test]
async fn in_flight_call_finishes_on_old_generation() {
    let (_root, dir) = hooks_dir(&[("pre.lua", &version_script("v1"))]);
    let set = Arc::new(HookSet::load(&dir, test_limits()).unwrap());

    let in_flight = {
        let set = Arc::clone(&set);
        tokio::spawn(async move { set.fire(HookPoint::PreRun, json!({ "sleep": 0.3 })).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    write(&dir, "pre.lua", &version_script("v2"));
    let report = set.reload().await.expect("reload");

    assert!(report.changed);
    assert_eq!(report.previous_generation, 1);
    assert_eq!(report.generation, 2);
    assert_eq!(fire_version(&set).await, "v2");
    let old = in_flight.await.expect("join").expect("in-flight call");
    assert_eq!(old, HookOutcome::Returned(json!("v1")));
}

#[tokio::test]
async fn broken_edit_keeps_last_good_generation() {
    let (_root, dir) = hooks_dir(&[("pre.lua", &version_script("v1"))]);
    let set = HookSet::load(&dir, test_limits()).unwrap();
    let first_hash = set.current().content_hash();

    write(
        &dir,
        "pre.lua",
        "function pre_run()\n  return 'v2'\nend end\n",
    );
    let err = set.reload().await.expect_err("syntax error");
    assert!(matches!(err, HookLoadError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains("hooks/pre.lua:3:"), "{err}");
    assert_eq!(set.current().generation(), 1);
    assert_eq!(set.current().content_hash(), first_hash);
    assert_eq!(fire_version(&set).await, "v1");

    write(&dir, "pre.lua", "error('not configured')\n");
    let err = set.reload().await.expect_err("top-level error");
    assert_eq!(
        err.to_string(),
        "loading hooks/pre.lua failed: hooks/pre.lua:1: not configured"
    );
    assert_eq!(fire_version(&set).await, "v1");

    write(&dir, "pre.lua", &version_script("v3"));
    let report = set.reload().await.expect("fixed edit");
    assert_eq!(report.generation, 2);
    assert_eq!(fire_version(&set).await, "v3");
}

#[tokio::test]
async fn generation_counts_successful_reloads() {
    let (_root, dir) = hooks_dir(&[("pre.lua", &version_script("v1"))]);
    let set = HookSet::load(&dir, test_limits()).unwrap();

    let unchanged = set.reload().await.expect("unchanged reload");
    assert!(!unchanged.changed);
    assert_eq!(unchanged.generation, 1);

    for (expected, version) in [(2, "v2"), (3, "v3")] {
        write(&dir, "pre.lua", &version_script(version));
        let report = set.reload().await.expect("reload");
        assert_eq!(report.generation, expected);
        assert_eq!(set.current().generation(), expected);
        assert_eq!(report.files, vec![dir.join("pre.lua")]);
    }

    write(&dir, "extra.lua", "function post_run() return 'added' end");
    let report = set.reload().await.expect("new file");
    assert_eq!(report.generation, 4);
    assert_eq!(report.files.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_requests_reload_until_dropped() {
    let (_root, dir) = hooks_dir(&[("pre.lua", &version_script("v1"))]);
    let set = HookSet::load(&dir, test_limits()).unwrap();
    let (sender, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let handle = watch(
        &set,
        Duration::from_millis(100),
        CancellationToken::new(),
        move |request| {
            let _ = sender.send(request);
        },
    )
    .expect("start watcher");

    write(&dir, "pre.lua", &version_script("v2"));
    let request = tokio::time::timeout(Duration::from_secs(5), requests.recv())
        .await
        .expect("reload request within 5s")
        .expect("channel open");
    assert!(request.paths.contains(&dir.join("pre.lua")), "{request:?}");
    set.reload().await.expect("reload");
    assert_eq!(fire_version(&set).await, "v2");

    drop(handle);
    // Reading files must not count as a change, and nothing may arrive after the drop.
    while requests.try_recv().is_ok() {}
    write(&dir, "pre.lua", &version_script("v3"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        requests.try_recv().is_err(),
        "request after the handle was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_stops_on_cancel() {
    let (_root, dir) = hooks_dir(&[("pre.lua", &version_script("v1"))]);
    let set = HookSet::load(&dir, test_limits()).unwrap();
    let (sender, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let _handle = watch(
        &set,
        Duration::from_millis(100),
        cancel.clone(),
        move |request| {
            let _ = sender.send(request);
        },
    )
    .expect("start watcher");

    cancel.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    write(&dir, "pre.lua", &version_script("v2"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(requests.try_recv().is_err(), "request after cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_ignores_non_script_files() {
    let (_root, dir) = hooks_dir(&[("pre.lua", &version_script("v1"))]);
    let set = HookSet::load(&dir, test_limits()).unwrap();
    let (sender, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let _handle = watch(
        &set,
        Duration::from_millis(100),
        CancellationToken::new(),
        move |request| {
            let _ = sender.send(request);
        },
    )
    .expect("start watcher");

    write(&dir, "notes.txt", "not a script");
    write(&dir, ".pre.lua.swp", "editor swap file");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        requests.try_recv().is_err(),
        "request for a non-script file"
    );
}
