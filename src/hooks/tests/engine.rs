use serde_json::json;

use super::{fire_err, fire_ok, hooks_dir, load, test_limits, write};
use crate::hooks::{HookEngine, HookError, HookLoadError, HookOutcome, HookPoint};

const ALL_HOOKS: &str = r#"
function pre_run(input) return { hook = "pre_run", run = input.run } end
function post_run(input) return { hook = "post_run", run = input.run } end
function map_secret(input) return { hook = "map_secret", run = input.run } end
function on_message(input) return { hook = "on_message", run = input.run } end
"#;

#[tokio::test]
async fn each_hook_point_calls_its_function() {
    let (_root, engine) = load(&[("all.lua", ALL_HOOKS)]);

    for hook in HookPoint::ALL {
        let returned = fire_ok(&engine, hook, json!({ "run": "r-1" })).await;
        assert_eq!(
            returned,
            json!({ "hook": hook.function_name(), "run": "r-1" })
        );
    }
    assert_eq!(engine.defined_hooks(), HookPoint::ALL.to_vec());
}

#[tokio::test]
async fn missing_function_is_not_defined() {
    let (_root, engine) = load(&[("pre.lua", "function pre_run() return 1 end")]);

    for hook in [
        HookPoint::PostRun,
        HookPoint::MapSecret,
        HookPoint::OnMessage,
    ] {
        let outcome = engine.fire(hook, json!({})).await.expect("fire");
        assert_eq!(outcome, HookOutcome::NotDefined, "{hook}");
    }
    assert_eq!(engine.defined_hooks(), vec![HookPoint::PreRun]);
}

#[tokio::test]
async fn empty_directory_defines_nothing() {
    let (_root, engine) = load(&[]);

    let outcome = engine
        .fire(HookPoint::PreRun, json!({}))
        .await
        .expect("fire");
    assert_eq!(outcome, HookOutcome::NotDefined);
    assert!(engine.files().is_empty());
}

#[tokio::test]
async fn input_and_return_values_convert() {
    let script = r#"
        function map_secret(input)
            return {
                reference = input.reference,
                missing_is_nil = input.nothing == nil,
                list = { 1, 2.5, "three", true },
                empty = {},
            }
        end
        function pre_run() end
    "#;
    let (_root, engine) = load(&[("map.lua", script)]);

    let returned = fire_ok(
        &engine,
        HookPoint::MapSecret,
        json!({ "reference": "secret:/my/db/password", "nothing": null }),
    )
    .await;
    assert_eq!(returned["reference"], json!("secret:/my/db/password"));
    assert_eq!(returned["missing_is_nil"], json!(true));
    assert_eq!(returned["list"], json!([1, 2.5, "three", true]));
    assert_eq!(returned["empty"], json!({}));

    let nothing = fire_ok(&engine, HookPoint::PreRun, json!({})).await;
    assert_eq!(nothing, serde_json::Value::Null);
}

/// Object and array fields of a hook argument are built on first read; scripts
/// see the same table whichever way they reach it.
#[tokio::test]
async fn nested_argument_fields_behave_as_plain_tables() {
    let script = r#"
        function pre_run(run)
            local before = rawget(run, "config")
            local first = run.config
            local keys = {}
            for key in pairs(run) do keys[#keys + 1] = key end
            table.sort(keys)
            run.tags = nil
            run.extra = "added"
            return {
                raw_before_read = before == nil,
                same_table = first == run.config,
                service = run.config.source.serviceName,
                keys = keys,
                tags_after_nil = run.tags == nil,
                encoded = runner.json.decode(runner.json.encode(run)),
            }
        end
        function post_run(run)
            -- Passed on unread: the conversion to JSON still sees every field.
            return run
        end
    "#;
    let (_root, engine) = load(&[("hooks.lua", script)]);
    let input = json!({
        "runId": "r-1",
        "config": { "source": { "serviceName": "pg_sales" }, "empty": [] },
        "tags": ["a", "b"],
        "nothing": null,
    });

    let returned = fire_ok(&engine, HookPoint::PreRun, input.clone()).await;
    assert_eq!(returned["raw_before_read"], json!(true));
    assert_eq!(returned["same_table"], json!(true));
    assert_eq!(returned["service"], json!("pg_sales"));
    assert_eq!(returned["keys"], json!(["config", "runId", "tags"]));
    assert_eq!(returned["tags_after_nil"], json!(true));
    assert_eq!(
        returned["encoded"],
        json!({
            "runId": "r-1",
            "config": { "source": { "serviceName": "pg_sales" }, "empty": [] },
            "extra": "added",
        })
    );

    let passed_on = fire_ok(&engine, HookPoint::PostRun, input).await;
    assert_eq!(
        passed_on,
        json!({
            "runId": "r-1",
            "config": { "source": { "serviceName": "pg_sales" }, "empty": [] },
            "tags": ["a", "b"],
        })
    );
}

#[tokio::test]
async fn unconvertible_return_is_invalid_return() {
    let (_root, engine) = load(&[("pre.lua", "function pre_run() return { f = print } end")]);

    let err = fire_err(&engine, HookPoint::PreRun, json!({})).await;
    assert!(matches!(err, HookError::InvalidReturn { .. }), "{err}");
}

#[tokio::test]
async fn global_that_is_not_function_fails() {
    let (_root, engine) = load(&[("pre.lua", "pre_run = 42")]);

    let err = fire_err(&engine, HookPoint::PreRun, json!({})).await;
    assert!(
        matches!(
            err,
            HookError::NotAFunction {
                type_name: "integer",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "global pre_run is a integer, expected a function"
    );
}

#[tokio::test]
async fn runtime_error_names_file_and_line() {
    let script = "local x = 1\n\nfunction post_run()\n  error(\"upload failed\")\nend\n";
    let (_root, engine) = load(&[("post.lua", script)]);

    let err = fire_err(&engine, HookPoint::PostRun, json!({})).await;
    assert!(matches!(err, HookError::Runtime { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "post_run failed: hooks/post.lua:4: upload failed"
    );
}

#[tokio::test]
async fn lua_type_error_names_file_and_line() {
    let script = "function pre_run(input)\n  return input.missing.field\nend\n";
    let (_root, engine) = load(&[("pre.lua", script)]);

    let err = fire_err(&engine, HookPoint::PreRun, json!({})).await;
    let message = err.to_string();
    assert!(message.contains("hooks/pre.lua:2:"), "{message}");
    assert!(
        message.contains("attempt to index a nil value"),
        "{message}"
    );
}

#[tokio::test]
async fn files_load_in_name_order() {
    let (_root, engine) = load(&[
        ("b.lua", "order = order .. 'b'"),
        ("a.lua", "order = 'a'"),
        (
            "c.lua",
            "order = order .. 'c'\nfunction pre_run() return order end",
        ),
    ]);

    assert_eq!(
        fire_ok(&engine, HookPoint::PreRun, json!({})).await,
        json!("abc")
    );
    let names: Vec<String> = engine
        .files()
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a.lua", "b.lua", "c.lua"]);
}

#[tokio::test]
async fn non_lua_and_hidden_files_are_skipped() {
    let (_root, engine) = load(&[
        ("pre.lua", "function pre_run() return 'ok' end"),
        ("notes.txt", "this is not Lua"),
        (".pre.lua.swp", "neither is this"),
    ]);

    assert_eq!(engine.files().len(), 1);
    assert_eq!(
        fire_ok(&engine, HookPoint::PreRun, json!({})).await,
        json!("ok")
    );
}

#[tokio::test]
async fn syntax_error_names_file_and_line() {
    let (_root, dir) = hooks_dir(&[("bad.lua", "local ok = 1\nfunction pre_run(\n")]);

    let err = HookEngine::load(&dir, test_limits()).expect_err("syntax error");
    assert!(
        matches!(err, HookLoadError::Syntax { ref file, .. } if file == "hooks/bad.lua"),
        "{err}"
    );
    assert!(err.to_string().contains("hooks/bad.lua:3:"), "{err}");
}

#[tokio::test]
async fn top_level_error_names_file_and_line() {
    let (_root, dir) = hooks_dir(&[("cfg.lua", "local x = 1\nerror('missing setting')\n")]);

    let err = HookEngine::load(&dir, test_limits()).expect_err("top-level error");
    assert!(matches!(err, HookLoadError::TopLevel { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "loading hooks/cfg.lua failed: hooks/cfg.lua:2: missing setting"
    );
}

#[tokio::test]
async fn binary_chunk_is_rejected() {
    let (_root, dir) = hooks_dir(&[]);
    std::fs::write(
        dir.join("compiled.lua"),
        b"\x1bLuaT\x00\x19\x93\r\n\x1a\n\x04\x08\x08",
    )
    .unwrap();

    let err = HookEngine::load(&dir, test_limits()).expect_err("binary chunk");
    assert!(matches!(err, HookLoadError::Syntax { .. }), "{err}");
    assert!(
        err.to_string().contains("attempt to load a binary chunk"),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_script_is_rejected() {
    let (_root, dir) = hooks_dir(&[]);
    let big = "-- padding\n".repeat(crate::hooks::MAX_SCRIPT_BYTES / 10);
    write(&dir, "big.lua", &big);

    let err = HookEngine::load(&dir, test_limits()).expect_err("oversized script");
    assert!(matches!(err, HookLoadError::FileTooLarge { .. }), "{err}");
}

#[tokio::test]
async fn missing_directory_is_read_error() {
    let root = tempfile::tempdir().unwrap();

    let err =
        HookEngine::load(&root.path().join("absent"), test_limits()).expect_err("missing dir");
    assert!(matches!(err, HookLoadError::ReadDir { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("failed to read hooks directory"),
        "{err}"
    );
}

#[tokio::test]
async fn content_hash_follows_contents() {
    let (_root, dir) = hooks_dir(&[("pre.lua", "function pre_run() return 1 end")]);
    let first = HookEngine::load(&dir, test_limits()).unwrap();
    let same = HookEngine::load(&dir, test_limits()).unwrap();
    write(&dir, "pre.lua", "function pre_run() return 2 end");
    let changed = HookEngine::load(&dir, test_limits()).unwrap();

    assert_eq!(first.content_hash().len(), 64);
    assert!(first.content_hash().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(first.content_hash(), same.content_hash());
    assert_ne!(first.content_hash(), changed.content_hash());
    assert_eq!(first.generation(), 1);
}

#[tokio::test]
async fn require_loads_module_from_directory() {
    let (_root, engine) = load(&[
        (
            "util.lua",
            "util_loads = (util_loads or 0) + 1\nreturn { greet = function(n) return 'hi ' .. n end }",
        ),
        (
            "pre.lua",
            "local util = require('util')\nfunction pre_run(input) return { text = util.greet(input.name), loads = util_loads } end",
        ),
    ]);

    let returned = fire_ok(&engine, HookPoint::PreRun, json!({ "name": "ada" })).await;
    assert_eq!(returned["text"], json!("hi ada"));
    // pre.lua required util.lua first, so the top-level pass skipped it.
    assert_eq!(returned["loads"], json!(1));
    assert_eq!(engine.required_modules(), vec!["util".to_string()]);
}

#[tokio::test]
async fn require_at_call_time_returns_cached_module() {
    let (_root, engine) = load(&[
        ("a_util.lua", "return { value = 7 }"),
        (
            "pre.lua",
            "function pre_run() return require('a_util').value end",
        ),
    ]);

    assert_eq!(
        fire_ok(&engine, HookPoint::PreRun, json!({})).await,
        json!(7)
    );
    assert_eq!(
        fire_ok(&engine, HookPoint::PreRun, json!({})).await,
        json!(7)
    );
}

#[tokio::test]
async fn require_outside_directory_fails() {
    let (root, dir) = hooks_dir(&[(
        "pre.lua",
        "function pre_run(input) return require(input.module) end",
    )]);
    std::fs::write(root.path().join("outside.lua"), "return 'escaped'").unwrap();
    let engine = HookEngine::load(&dir, test_limits()).unwrap();

    let cases = [
        (
            "outside",
            "module not found: no file outside.lua in hooks directory",
        ),
        ("../outside", "invalid module name"),
        ("/etc/passwd", "invalid module name"),
        ("sub.module", "invalid module name"),
        ("io", "module not found"),
        ("", "invalid module name"),
    ];
    for (module, expected) in cases {
        let err = fire_err(&engine, HookPoint::PreRun, json!({ "module": module })).await;
        let message = err.to_string();
        assert!(message.contains(expected), "require({module:?}): {message}");
        assert!(
            message.contains("hooks/pre.lua:1:"),
            "require({module:?}): {message}"
        );
    }
}

#[tokio::test]
async fn circular_require_fails() {
    let (_root, dir) = hooks_dir(&[("a.lua", "require('b')"), ("b.lua", "require('a')")]);

    let err = HookEngine::load(&dir, test_limits()).expect_err("circular require");
    let message = err.to_string();
    assert!(message.contains("circular require"), "{message}");
    assert!(message.contains("hooks/b.lua:1:"), "{message}");
}

#[tokio::test]
async fn syntax_error_in_required_module_names_module() {
    let (_root, dir) = hooks_dir(&[
        ("a.lua", "local lib = require('lib')"),
        ("lib.lua", "return {\n"),
    ]);

    let err = HookEngine::load(&dir, test_limits()).expect_err("syntax error in module");
    let message = err.to_string();
    assert!(
        message.starts_with("loading hooks/a.lua failed"),
        "{message}"
    );
    assert!(message.contains("hooks/lib.lua:2:"), "{message}");
}
