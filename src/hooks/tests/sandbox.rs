use serde_json::json;

use super::{fire_err, fire_ok, load};
use crate::hooks::{HookError, HookPoint};

/// One script with a case per escape attempt, so the same state also proves that
/// every failed call leaves it usable.
const ESCAPES: &str = r#"
local cases = {
    io_open = function() return io.open("/etc/hostname") end,
    os_execute = function() return os.execute("true") end,
    os_getenv = function() return os.getenv("HOME") end,
    os_exit = function() return os.exit(1) end,
    os_remove = function() return os.remove("/tmp/hybrid-runner-hook-test") end,
    package_loadlib = function() return package.loadlib("libc.so.6", "*") end,
    debug_getinfo = function() return debug.getinfo(1) end,
    dofile = function() return dofile("/etc/hostname") end,
    loadfile = function() return loadfile("/etc/hostname") end,
    load = function() return load("return 1") end,
    string_dump = function() return string.dump(function() end) end,
    collectgarbage_stop = function() return collectgarbage("stop") end,
    collectgarbage_collect = function() return collectgarbage() end,
    require_c_module = function() return require("socket.core") end,
}

function pre_run(input)
    return cases[input.case]()
end
"#;

#[tokio::test]
async fn sandbox_escapes_fail_clearly() {
    let (_root, engine) = load(&[("escape.lua", ESCAPES)]);
    let cases = [
        ("io_open", "attempt to index a nil value (global 'io')"),
        (
            "os_execute",
            "attempt to call a nil value (field 'execute')",
        ),
        ("os_getenv", "attempt to call a nil value (field 'getenv')"),
        ("os_exit", "attempt to call a nil value (field 'exit')"),
        ("os_remove", "attempt to call a nil value (field 'remove')"),
        (
            "package_loadlib",
            "attempt to index a nil value (global 'package')",
        ),
        (
            "debug_getinfo",
            "attempt to index a nil value (global 'debug')",
        ),
        ("dofile", "attempt to call a nil value (global 'dofile')"),
        (
            "loadfile",
            "attempt to call a nil value (global 'loadfile')",
        ),
        ("load", "attempt to call a nil value (global 'load')"),
        ("string_dump", "attempt to call a nil value (field 'dump')"),
        (
            "collectgarbage_stop",
            "collectgarbage(\"stop\") is not allowed in hooks; only \"count\" is",
        ),
        (
            "collectgarbage_collect",
            "collectgarbage(\"collect\") is not allowed in hooks",
        ),
        ("require_c_module", "invalid module name"),
    ];

    for (case, expected) in cases {
        let err = fire_err(&engine, HookPoint::PreRun, json!({ "case": case })).await;
        assert!(matches!(err, HookError::Runtime { .. }), "{case}: {err}");
        let message = err.to_string();
        assert!(message.contains(expected), "{case}: {message}");
        assert!(message.contains("hooks/escape.lua:"), "{case}: {message}");
    }
}

#[tokio::test]
async fn allowed_library_functions_work() {
    let script = r#"
        function pre_run()
            return {
                time = type(os.time()),
                clock = type(os.clock()),
                date = os.date("!%Y", 0),
                difftime = os.difftime(10, 4),
                memory_kb = type(collectgarbage("count")),
                upper = string.upper("ok"),
                sorted = (function() local t = { 3, 1, 2 } table.sort(t) return t end)(),
                floor = math.floor(2.7),
                utf8_len = utf8.len("héllo"),
                coroutine = coroutine.wrap(function() coroutine.yield(5) end)(),
                tostring = tostring(12),
                pcall = select(2, pcall(error, "caught", 0)),
            }
        end
    "#;
    let (_root, engine) = load(&[("libs.lua", script)]);

    let returned = fire_ok(&engine, HookPoint::PreRun, json!({})).await;
    assert_eq!(returned["time"], json!("number"));
    assert_eq!(returned["clock"], json!("number"));
    assert_eq!(returned["date"], json!("1970"));
    assert_eq!(returned["difftime"], json!(6.0));
    assert_eq!(returned["memory_kb"], json!("number"));
    assert_eq!(returned["upper"], json!("OK"));
    assert_eq!(returned["sorted"], json!([1, 2, 3]));
    assert_eq!(returned["floor"], json!(2));
    assert_eq!(returned["utf8_len"], json!(5));
    assert_eq!(returned["coroutine"], json!(5));
    assert_eq!(returned["tostring"], json!("12"));
    assert_eq!(returned["pcall"], json!("caught"));
}

#[tokio::test]
async fn removed_globals_are_absent() {
    let script = r#"
        function pre_run()
            local names = { "io", "package", "debug", "dofile", "loadfile", "load" }
            local present = {}
            for _, name in ipairs(names) do
                if _G[name] ~= nil then present[#present + 1] = name end
            end
            for _, name in ipairs({ "execute", "exit", "getenv", "remove", "rename", "tmpname", "setlocale" }) do
                if os[name] ~= nil then present[#present + 1] = "os." .. name end
            end
            return #present == 0 and "none" or table.concat(present, ",")
        end
    "#;
    let (_root, engine) = load(&[("globals.lua", script)]);

    assert_eq!(
        fire_ok(&engine, HookPoint::PreRun, json!({})).await,
        json!("none")
    );
}

#[tokio::test]
async fn string_rep_bomb_hits_memory_limit() {
    let script = r#"
        function pre_run(input)
            if input.bomb then
                local s = string.rep("x", 1024 * 1024 * 1024)
                return #s
            end
            return "still working"
        end
    "#;
    let (_root, engine) = load(&[("bomb.lua", script)]);

    let err = fire_err(&engine, HookPoint::PreRun, json!({ "bomb": true })).await;
    assert!(matches!(err, HookError::MemoryLimit { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "pre_run exceeded the Lua memory limit of {} bytes",
            16 * 1024 * 1024
        )
    );

    let returned = fire_ok(&engine, HookPoint::PreRun, json!({ "bomb": false })).await;
    assert_eq!(returned, json!("still working"));
}

#[tokio::test]
async fn table_growth_hits_memory_limit() {
    let script = r#"
        function pre_run(input)
            if input.bomb then
                local t = {}
                for i = 1, 1e9 do t[i] = tostring(i) end
            end
            return collectgarbage("count") < 16 * 1024
        end
    "#;
    let (_root, engine) = load(&[("grow.lua", script)]);

    let err = fire_err(&engine, HookPoint::PreRun, json!({ "bomb": true })).await;
    assert!(matches!(err, HookError::MemoryLimit { .. }), "{err}");

    let returned = fire_ok(&engine, HookPoint::PreRun, json!({ "bomb": false })).await;
    assert_eq!(returned, json!(true));
}
