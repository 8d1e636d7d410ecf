//! Property tests (proptest) of the parsers that read untrusted input and of
//! the redactor: the protocol decoder, the secret reference parser, the
//! runner.yaml loader and the streaming line redactor.
//!
//! Each property runs `PROPTEST_CASES` cases, or its default below when the
//! variable is unset; `PROPTEST_CASES=100000 cargo test --release --test
//! properties` is the longer run recorded in docs/reliability.md.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hybrid_runner::config::{Config, ConfigError};
use hybrid_runner::protocol::{
    Envelope, LogLine, LogStream, PipelineState, PipelineStatus, RunLog, RunRequest, RunStatus,
    RunnerMessage, ServerMessage,
};
use hybrid_runner::redact::Redactor;
use hybrid_runner::secrets::SecretRef;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Value, json};

/// Returns a proptest config with `PROPTEST_CASES` cases, or `default`.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value up to a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Floats are left out: serde_json without `float_roundtrip` may
        // change the last digit of a float, which no field of the protocol uses.
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-zA-Z]{1,10}",
                    Just("runId".to_string()),
                    Just("type".to_string())
                ],
                inner,
                0..6
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

const MESSAGE_TYPES: &[&str] = &[
    "welcome",
    "run.request",
    "run.cancel",
    "runner.drain",
    "runner.reload",
    "message",
    "ack",
    "hello",
    "heartbeat",
    "run.accepted",
    "run.rejected",
    "run.status",
    "run.log",
    "event",
    "hooks.reloaded",
    "hooks.failed",
    "run.explode",
];

/// Decodes `text` the way the runner and the control plane do.
fn decode_everything(text: &str) {
    if let Ok(envelope) = Envelope::decode(text) {
        let _ = ServerMessage::from_envelope(&envelope);
        let _ = RunnerMessage::from_envelope(&envelope);
        let _ = envelope.encode();
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn decoder_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn decoder_survives_any_envelope(
        kind in prop::sample::select(MESSAGE_TYPES),
        payload in json_value(),
        version in prop_oneof![Just(1u32), any::<u32>()],
        seq in proptest::option::of(any::<u64>()),
    ) {
        let text = json!({"v": version, "type": kind, "id": "x", "ts": 0, "seq": seq,
                          "payload": payload}).to_string();
        decode_everything(&text);
        // Cutting the frame anywhere gives invalid JSON, never a panic.
        for end in (0..text.len()).step_by(7) {
            if text.is_char_boundary(end) {
                decode_everything(&text[..end]);
            }
        }
    }

    #[test]
    fn run_request_round_trips(
        run_id in "[A-Za-z0-9_:.-]{1,40}",
        fqn in ".{0,40}",
        kind in ".{0,20}",
        config in json_value(),
        timeout in proptest::option::of(any::<u64>()),
        fields in prop::collection::vec(".{1,20}", 0..4),
    ) {
        let request = RunRequest {
            run_id,
            pipeline_fqn: fqn,
            pipeline_type: kind,
            config,
            timeout_seconds: timeout,
            secret_fields: fields,
        };
        let envelope = Envelope::decode(&Envelope::new(&request, None).encode()).unwrap();
        prop_assert_eq!(ServerMessage::from_envelope(&envelope).unwrap(), ServerMessage::RunRequest(request));
    }

    #[test]
    fn runner_messages_round_trip(
        run_id in ".{1,40}",
        reason in proptest::option::of(".{0,80}"),
        state in prop::sample::select(vec![PipelineState::Queued, PipelineState::Running,
            PipelineState::Success, PipelineState::Failed, PipelineState::PartialSuccess,
            PipelineState::Stopped]),
        texts in prop::collection::vec(".{0,80}", 0..8),
        seq in any::<u64>(),
    ) {
        let status = RunStatus {
            run_id: run_id.clone(),
            pipeline_fqn: "svc.pipe".into(),
            pipeline_status: PipelineStatus {
                run_id: run_id.clone(),
                pipeline_state: state,
                start_date: Some(1),
                timestamp: 2,
                end_date: None,
            },
            reason,
            exit_code: Some(3),
        };
        let envelope = Envelope::decode(&Envelope::new(&status, Some(seq)).encode()).unwrap();
        prop_assert_eq!(envelope.seq, Some(seq));
        prop_assert_eq!(RunnerMessage::from_envelope(&envelope).unwrap(), RunnerMessage::RunStatus(status));

        let log = RunLog {
            run_id,
            lines: texts.into_iter().enumerate().map(|(index, text)| LogLine {
                n: index as u64 + 1,
                stream: LogStream::Stdout,
                ts: 5,
                text,
                truncated: index % 2 == 1,
            }).collect(),
        };
        let envelope = Envelope::decode(&Envelope::new(&log, Some(seq)).encode()).unwrap();
        prop_assert_eq!(RunnerMessage::from_envelope(&envelope).unwrap(), RunnerMessage::RunLog(log));
    }

    #[test]
    fn reference_parser_survives_any_text(text in "(secret:)?.{0,300}") {
        if let Ok(reference) = SecretRef::parse(&text) {
            // What parses starts with '/', has no empty, '.' or '..' segment
            // and no control character.
            prop_assert!(reference.path().starts_with('/'));
            prop_assert!(!reference.path().chars().any(char::is_control));
            for segment in reference.path()[1..].split('/') {
                prop_assert!(!matches!(segment, "" | "." | ".."), "segment {:?}", segment);
            }
            let again = SecretRef::parse(&reference.to_string()).unwrap();
            prop_assert_eq!(again, reference);
        }
    }

    #[test]
    fn valid_references_round_trip(
        segments in prop::collection::vec("[^/#\\p{Cc}]{1,20}", 1..6),
        version in proptest::option::of("[A-Za-z0-9._-]{1,20}"),
    ) {
        prop_assume!(segments.iter().all(|segment| segment != "." && segment != ".."));
        let mut text = format!("secret:/{}", segments.join("/"));
        if let Some(version) = &version {
            text.push('#');
            text.push_str(version);
        }
        let reference = SecretRef::parse(&text).unwrap();
        prop_assert_eq!(reference.version(), version.as_deref());
        prop_assert_eq!(reference.to_string(), text);
    }
}

/// Top-level runner.yaml keys, some known and some not.
const CONFIG_KEYS: &[&str] = &[
    "agent_id",
    "control_plane",
    "runs",
    "pipelines",
    "exec",
    "secrets",
    "state_dir",
    "work_dir",
    "log",
    "hooks",
    "unknown_key",
];

const SECTION_KEYS: &[&str] = &[
    "url",
    "token_file",
    "token_env",
    "tls",
    "ca_file",
    "signing",
    "public_key_file",
    "jwks_file",
    "capacity",
    "cancel_grace",
    "max_config_bytes",
    "provider",
    "type",
    "path",
    "env",
    "level",
    "format",
    "dir",
    "allowed_prefixes",
    "metadata",
    "heartbeat_interval",
];

/// Generates YAML values from config-like keys and arbitrary scalars.
fn config_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
        Just(json!("ws://127.0.0.1:1/agent/v1/connect")),
        Just(json!("${HOME}")),
        Just(json!("10s")),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(SECTION_KEYS).prop_map(String::from),
                inner,
                0..5
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Checks that `Config::parse` of `text` returns and that every reported
/// problem has a message and, in a mapping, a key path. With `known_keys`,
/// the document's top-level keys are from [`CONFIG_KEYS`] and each path
/// must start with one of them.
fn check_config(text: &str, known_keys: bool) -> Result<(), TestCaseError> {
    let result = Config::parse(
        text,
        Path::new("/nonexistent/runner.yaml"),
        Path::new("/nonexistent"),
        &|_| None,
    );
    if let Err(ConfigError::Invalid { issues, .. }) = result {
        prop_assert!(!issues.is_empty());
        let is_mapping = matches!(
            serde_yaml::from_str(text),
            Ok(serde_yaml::Value::Mapping(_))
        );
        for issue in issues {
            prop_assert!(
                !issue.message.is_empty(),
                "issue without a message: {}",
                issue
            );
            // An empty path is the document itself, which Display names
            // "(top level)"; in a mapping every problem has a key path.
            if is_mapping {
                prop_assert!(
                    !issue.path.is_empty(),
                    "issue without a key path: {}",
                    issue
                );
            }
            if known_keys {
                let root = issue.path.split(['.', '[']).next().unwrap_or_default();
                prop_assert!(
                    CONFIG_KEYS.contains(&root),
                    "issue without a key path: {}",
                    issue
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn config_loader_survives_any_text(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_config(&String::from_utf8_lossy(&bytes), false)?;
    }

    #[test]
    fn config_loader_names_paths(
        document in prop::collection::btree_map(
            prop::sample::select(CONFIG_KEYS).prop_map(String::from), config_value(), 0..8),
    ) {
        let text = serde_yaml::to_string(&document).unwrap();
        check_config(&text, true)?;
    }
}

/// Characters secrets are drawn from: letters, digits, the punctuation that
/// URL, JSON and shell encoders treat specially, and non-ASCII characters.
const SECRET_CHARS: &str = "[A-Za-z0-9 !\"#$%&'()*+,./:;<=>?@\\[\\\\\\]^_`{|}~-]|é|ß|€|日|😀";

/// Ways a secret is written into output.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Plain,
    /// Base64 of the secret after `prefix` bytes, standard or URL-safe
    /// alphabet, with or without padding.
    Base64 {
        prefix: usize,
        url_safe: bool,
        padded: bool,
    },
    Json,
    JsonAscii,
    /// Percent-encoding that keeps the characters of `keep` and writes hex
    /// digits in upper or lower case.
    Percent {
        keep: &'static str,
        plus_for_space: bool,
        lowercase: bool,
    },
}

/// Common percent-encoders as the characters they keep besides letters and
/// digits and whether they write a space as `+`: every byte encoded, Python
/// `quote(safe='')` and `quote_plus`, JavaScript `encodeURIComponent`, HTML
/// form encoding, and URL userinfo encoding.
const PERCENT_ENCODERS: &[(&str, bool)] = &[
    ("", false),
    ("", true),
    ("-._~", false),
    ("-._~", true),
    ("-._~!'()*", false),
    ("*-._", true),
    ("-._~!$&'()*+,;=", false),
];

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        Just(Encoding::Plain),
        (0..3usize, any::<bool>(), any::<bool>()).prop_map(|(prefix, url_safe, padded)| {
            Encoding::Base64 {
                prefix,
                url_safe,
                padded,
            }
        }),
        Just(Encoding::Json),
        Just(Encoding::JsonAscii),
        (prop::sample::select(PERCENT_ENCODERS), any::<bool>()).prop_map(
            |((keep, plus_for_space), lowercase)| Encoding::Percent {
                keep,
                plus_for_space,
                lowercase
            }
        ),
    ]
}

fn percent_encode(value: &str, keep: &str, plus_for_space: bool, lowercase: bool) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || keep.as_bytes().contains(&byte) {
            out.push(byte as char);
        } else if byte == b' ' && plus_for_space {
            out.push('+');
        } else if lowercase {
            out.push_str(&format!("%{byte:02x}"));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn json_ascii(value: &str) -> String {
    let json = serde_json::to_string(value).unwrap();
    let mut out = String::new();
    for c in json[1..json.len() - 1].chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Writes `secret` in `encoding`; `before` and `after` are the bytes around
/// it inside a base64 blob.
fn encode(secret: &str, encoding: Encoding, before: &[u8], after: &[u8]) -> String {
    match encoding {
        Encoding::Plain => secret.to_string(),
        Encoding::Base64 {
            prefix,
            url_safe,
            padded,
        } => {
            let mut input = before[..prefix].to_vec();
            input.extend_from_slice(secret.as_bytes());
            input.extend_from_slice(after);
            match (url_safe, padded) {
                (false, true) => STANDARD.encode(&input),
                (false, false) => STANDARD_NO_PAD.encode(&input),
                (true, true) => URL_SAFE.encode(&input),
                (true, false) => URL_SAFE_NO_PAD.encode(&input),
            }
        }
        Encoding::Json => {
            let json = serde_json::to_string(secret).unwrap();
            json[1..json.len() - 1].to_string()
        }
        Encoding::JsonAscii => json_ascii(secret),
        Encoding::Percent {
            keep,
            plus_for_space,
            lowercase,
        } => percent_encode(secret, keep, plus_for_space, lowercase),
    }
}

/// Returns the bytes of every base64 decoding of the runs of base64
/// characters in `text`, at each of the four character offsets.
fn base64_decodings(text: &str) -> Vec<Vec<u8>> {
    let mut decodings = Vec::new();
    for (alphabet, engine) in [("+/", &STANDARD_NO_PAD), ("-_", &URL_SAFE_NO_PAD)] {
        let is_base64 = |c: char| c.is_ascii_alphanumeric() || alphabet.contains(c);
        for run in text.split(|c: char| !is_base64(c)) {
            for offset in 0..4.min(run.len()) {
                let body = &run[offset..];
                let body = &body[..body.len() / 4 * 4];
                if let Ok(bytes) = engine.decode(body) {
                    decodings.push(bytes);
                }
            }
        }
    }
    decodings
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Feeds `output` to a line redactor in chunks cut at `cuts` and returns the
/// redacted lines joined with newlines.
fn redact_in_chunks(redactor: &Arc<Redactor>, output: &[u8], cuts: &[usize]) -> String {
    let mut lines = redactor.lines(1 << 20);
    let mut redacted = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (output.len() + 1)).collect();
    points.sort_unstable();
    points.push(output.len());
    for point in points {
        if point > start {
            redacted.extend(lines.push(&output[start..point]));
            start = point;
        }
    }
    redacted.extend(lines.finish());
    redacted
        .into_iter()
        .map(|line| line.text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks that no form of `secret` survives in `text`.
fn assert_no_secret(secret: &str, text: &str) -> Result<(), TestCaseError> {
    prop_assert!(!text.contains(secret), "plain secret in {:?}", text);
    let json = serde_json::to_string(secret).unwrap();
    prop_assert!(
        !text.contains(&json[1..json.len() - 1]),
        "JSON-escaped secret in {:?}",
        text
    );
    prop_assert!(
        !text.contains(&json_ascii(secret)),
        "ASCII JSON-escaped secret in {:?}",
        text
    );
    prop_assert!(
        !percent_decode(text).contains(secret),
        "percent-encoded secret in {:?}",
        text
    );
    for bytes in base64_decodings(text) {
        prop_assert!(
            !contains(&bytes, secret.as_bytes()),
            "base64 secret in {:?}",
            text
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn redactor_masks_every_form(
        secret in prop::collection::vec(prop::string::string_regex(SECRET_CHARS).unwrap(), 6..24)
            .prop_map(|chars| chars.concat()),
        encodings in prop::collection::vec(encoding(), 1..4),
        before in prop::collection::vec(any::<u8>(), 3),
        after in prop::collection::vec(any::<u8>(), 0..4),
        filler in prop::collection::vec("[ -~]{0,12}", 4),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let redactor = Arc::new(Redactor::default());
        redactor.register(&secret);
        let mut output = String::new();
        for (index, encoding) in encodings.iter().enumerate() {
            output.push_str(&filler[index % filler.len()]);
            output.push(' ');
            output.push_str(&encode(&secret, *encoding, &before, &after));
            output.push(' ');
            output.push_str(&filler[(index + 1) % filler.len()]);
            output.push('\n');
        }
        let redacted = redact_in_chunks(&redactor, output.as_bytes(), &cuts);
        assert_no_secret(&secret, &redacted)?;
        prop_assert_eq!(redactor.redact(&output).contains(&secret), false);
    }
}
