use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::{fire_err, fire_ok, load, load_with, test_limits};
use crate::hooks::{HookLimits, HookPoint};

#[tokio::test]
async fn json_round_trips() {
    let script = r#"
        function pre_run(input)
            local decoded = runner.json.decode(input.text)
            return {
                decoded = decoded,
                encoded = runner.json.encode({ b = { 1, 2 }, a = "x" }),
                explicit_null = runner.json.encode({ value = runner.json.null }),
                null_is_nil = decoded.gone == nil,
            }
        end
    "#;
    let (_root, engine) = load(&[("json.lua", script)]);

    let returned = fire_ok(
        &engine,
        HookPoint::PreRun,
        json!({ "text": r#"{"name":"db","ports":[5432,5433],"gone":null}"# }),
    )
    .await;
    assert_eq!(
        returned["decoded"],
        json!({ "name": "db", "ports": [5432, 5433] })
    );
    assert_eq!(returned["encoded"], json!(r#"{"a":"x","b":[1,2]}"#));
    assert_eq!(returned["explicit_null"], json!(r#"{"value":null}"#));
    assert_eq!(returned["null_is_nil"], json!(true));
}

#[tokio::test]
async fn json_errors_name_caller() {
    let script = "function pre_run(input)\n  if input.encode then return runner.json.encode(print) end\n  return runner.json.decode('{not json')\nend\n";
    let (_root, engine) = load(&[("json.lua", script)]);

    let decode = fire_err(&engine, HookPoint::PreRun, json!({}))
        .await
        .to_string();
    assert!(
        decode.contains("hooks/json.lua:3: runner.json.decode: invalid JSON"),
        "{decode}"
    );

    let encode = fire_err(&engine, HookPoint::PreRun, json!({ "encode": true }))
        .await
        .to_string();
    assert!(
        encode.contains("hooks/json.lua:2: runner.json.encode:"),
        "{encode}"
    );
}

#[tokio::test]
async fn yaml_round_trips() {
    let script = r#"
        function pre_run(input)
            local decoded = runner.yaml.decode(input.text)
            return {
                decoded = decoded,
                encoded = runner.yaml.encode({ source = { type = "mysql" } }),
            }
        end
    "#;
    let (_root, engine) = load(&[("yaml.lua", script)]);

    let returned = fire_ok(
        &engine,
        HookPoint::PreRun,
        json!({ "text": "source:\n  type: postgres\n  ports: [1, 2]\nenabled: true\n" }),
    )
    .await;
    assert_eq!(
        returned["decoded"],
        json!({ "source": { "type": "postgres", "ports": [1, 2] }, "enabled": true })
    );
    assert_eq!(returned["encoded"], json!("source:\n  type: mysql\n"));
}

#[tokio::test]
async fn yaml_decode_error_names_caller() {
    let script = "function pre_run()\n  return runner.yaml.decode('a: [unclosed')\nend\n";
    let (_root, engine) = load(&[("yaml.lua", script)]);

    let message = fire_err(&engine, HookPoint::PreRun, json!({}))
        .await
        .to_string();
    assert!(
        message.contains("hooks/yaml.lua:2: runner.yaml.decode: invalid YAML"),
        "{message}"
    );
}

#[tokio::test]
async fn env_get_follows_allowlist() {
    let script = "function pre_run(input) return { value = runner.env.get(input.name) } end";
    let limits = HookLimits {
        env_allowlist: vec!["PATH".to_string(), "HYBRID_RUNNER_TEST_UNSET".to_string()],
        ..test_limits()
    };
    let (_root, engine) = load_with(&[("env.lua", script)], limits);

    let path = fire_ok(&engine, HookPoint::PreRun, json!({ "name": "PATH" })).await;
    assert_eq!(
        path["value"],
        json!(std::env::var("PATH").expect("PATH is set"))
    );

    let unset = fire_ok(
        &engine,
        HookPoint::PreRun,
        json!({ "name": "HYBRID_RUNNER_TEST_UNSET" }),
    )
    .await;
    assert_eq!(unset, json!({}));

    let denied = fire_err(&engine, HookPoint::PreRun, json!({ "name": "HOME" }))
        .await
        .to_string();
    assert!(denied.contains("hooks/env.lua:1:"), "{denied}");
    assert!(
        denied.contains("HOME is not on the hooks environment allow-list"),
        "{denied}"
    );
}

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_and_print_reach_tracing() {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let script = "function post_run()\n  runner.log.warn('disk almost full')\n  print('rows', 42)\n  runner.log.debug('detail')\nend\n";
    let (_root, engine) = load(&[("log.lua", script)]);
    fire_ok(&engine, HookPoint::PostRun, json!({})).await;

    let output = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 3, "{output}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].contains("disk almost full"), "{}", lines[0]);
    assert!(lines[0].contains("hook=post_run"), "{}", lines[0]);
    assert!(
        lines[0].contains("file=hooks/log.lua line=2"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("INFO"), "{}", lines[1]);
    assert!(lines[1].contains("rows\t42"), "{}", lines[1]);
    assert!(lines[1].contains("line=3"), "{}", lines[1]);
    assert!(lines[2].contains("DEBUG"), "{}", lines[2]);
}

#[tokio::test]
async fn tcp_check_reports_open_and_closed_ports() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = {
        let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        spare.local_addr().unwrap().port()
    };
    let script = r#"
function pre_run(input)
  local up = runner.tcp.check("127.0.0.1", input.open, 2)
  local down, message = runner.tcp.check("127.0.0.1", input.closed, 2)
  return { up = up, down = down, message = message }
end
"#;
    let (_root, engine) = load(&[("tcp.lua", script)]);

    let returned = fire_ok(
        &engine,
        HookPoint::PreRun,
        json!({ "open": open, "closed": closed }),
    )
    .await;

    assert_eq!(returned["up"], true, "returned: {returned}");
    assert_eq!(returned["down"], false, "returned: {returned}");
    let message = returned["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("127.0.0.1:{closed}")),
        "message: {message}"
    );
    drop(listener);
}
