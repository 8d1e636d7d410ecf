//! The redaction cases of `tests/fixtures/cases/redaction/README.md` that
//! apply to workflow output: whatever the workflow process writes, no form of
//! a secret value reaches the control plane or the runner's own log.
//!
//! The workflow scripts print text that the test writes to files beforehand,
//! so each case controls the exact bytes and how they are split into writes.

mod common;

use std::path::PathBuf;

use common::{
    ControlPlane, MASK, Output, Runner, RunnerConfig, TestEnv, assert_absent, assert_no_fragment,
    assert_no_secret, submission,
};

/// The secret of the redaction cases, with '/', '+', '=' and quotes in it.
const TRICKY: &str = "Tr1cky/Pa55+word=\"x\"";

/// Encoded forms of [`TRICKY`], computed with Python's `base64`, `json` and
/// `urllib.parse` modules rather than with the code under test.
const ENCODED_FORMS: &[(&str, &str)] = &[
    ("base64 padded", "VHIxY2t5L1BhNTUrd29yZD0ieCI="),
    ("base64 unpadded", "VHIxY2t5L1BhNTUrd29yZD0ieCI"),
    (
        "base64 of the value and a newline",
        "VHIxY2t5L1BhNTUrd29yZD0ieCIK",
    ),
    (
        "base64 of u:value (basic auth)",
        "dTpUcjFja3kvUGE1NSt3b3JkPSJ4Ig==",
    ),
    ("JSON-escaped", r#"Tr1cky/Pa55+word=\"x\""#),
    (
        "percent-encoded (quote_plus)",
        "Tr1cky%2FPa55%2Bword%3D%22x%22",
    ),
    ("percent-encoded userinfo", "Tr1cky%2FPa55+word=%22x%22"),
];

const REFERENCE_PATH: &str = "/collate/hybrid-ingestion/tricky/password";

/// A MySQL workflow whose password is a reference to [`REFERENCE_PATH`].
const WORKFLOW: &str = "
source:
  type: mysql
  serviceName: local_mysql
  serviceConnection:
    config:
      type: Mysql
      username: openmetadata_user
      authType:
        password: secret:/collate/hybrid-ingestion/tricky/password
      hostPort: mysql.internal:3306
  sourceConfig:
    config:
      type: DatabaseMetadata
sink:
  type: metadata-rest
  config: {}
workflowConfig:
  openMetadataServerConfig:
    hostPort: https://example.getcollate.io/api
    authProvider: openmetadata
";

/// One redaction case: a control plane and a runner whose `metadata`
/// workflow runs `script` with `$OUT` set to a folder the test fills.
struct Case {
    env: TestEnv,
    out: PathBuf,
    control_plane: ControlPlane,
    runner: Runner,
}

impl Case {
    async fn start(agent_id: &str, secret: &str, script: &str) -> Case {
        let env = TestEnv::new();
        let out = env.folder("out");
        let control_plane = env.control_plane().await;
        let runner = env.start_runner(
            &control_plane,
            RunnerConfig::new(agent_id)
                .pipeline("metadata", script)
                .env("OUT", &out)
                .secret(REFERENCE_PATH, secret),
        );
        control_plane.wait_connected(&runner).await;
        Case {
            env,
            out,
            control_plane,
            runner,
        }
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.out.join(name), bytes).expect("write payload file");
    }

    /// Runs the workflow and returns the final run document.
    async fn run(&self) -> (String, serde_json::Value) {
        let run_id = self
            .control_plane
            .submit(&submission(&self.runner.agent_id, WORKFLOW))
            .await;
        let document = self.control_plane.wait_final(&run_id).await;
        (run_id, document)
    }

    /// Returns every output of the control plane and the runner.
    async fn outputs(&self) -> Vec<Output> {
        let mut outputs = self.control_plane.outputs().await;
        outputs.extend(self.runner.outputs());
        outputs
    }
}

#[tokio::test]
async fn split_writes_are_masked() {
    // The value arrives in writes of 4, 7 and 9 bytes, 50 ms apart. The first
    // line ends with a newline, the second with the end of the stream.
    let script = r#"
printf 'password='; cat "$OUT/part1"; sleep 0.05; cat "$OUT/part2"; sleep 0.05; cat "$OUT/part3"; printf ' end\n'
cat "$OUT/part1"; sleep 0.05; cat "$OUT/part2"; sleep 0.05; cat "$OUT/part3"
"#;
    let case = Case::start("split-runner", TRICKY, script).await;
    let bytes = TRICKY.as_bytes();
    case.write("part1", &bytes[..4]);
    case.write("part2", &bytes[4..11]);
    case.write("part3", &bytes[11..]);

    let (run_id, document) = case.run().await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let stdout = case.control_plane.log_texts(&run_id, "stdout").await;
    assert_eq!(
        stdout,
        vec![format!("password={MASK} end"), MASK.to_string()],
        "stdout lines"
    );
    let outputs = case.outputs().await;
    assert_no_secret(&[TRICKY, &case.env.token], &outputs);
    assert_no_fragment(TRICKY, 5, &outputs);
}

#[tokio::test]
async fn multi_line_secret_is_masked() {
    let secret = "line-one-secret\nline-two-secret";
    let case = Case::start("multi-line-runner", secret, r#"cat "$OUT/secret""#).await;
    case.write("secret", format!("{secret}\n"));

    let (run_id, document) = case.run().await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let stdout = case.control_plane.log_texts(&run_id, "stdout").await;
    assert_eq!(stdout, vec![MASK, MASK], "stdout lines");
    assert_no_secret(&[secret, &case.env.token], &case.outputs().await);
}

#[tokio::test]
async fn encoded_forms_are_masked() {
    let case = Case::start("encoded-runner", TRICKY, r#"cat "$OUT/forms""#).await;
    let mut forms = String::new();
    for (name, form) in ENCODED_FORMS {
        forms.push_str(&format!("{name}: {form}\n"));
    }
    forms.push_str(&format!(
        "config: {{\"password\": \"{}\"}}\n",
        ENCODED_FORMS[4].1
    ));
    forms.push_str(&format!(
        "url: mysql://openmetadata_user:{}@mysql.internal:3306/db\n",
        ENCODED_FORMS[5].1
    ));
    case.write("forms", forms);

    let (run_id, document) = case.run().await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let stdout = case.control_plane.log_texts(&run_id, "stdout").await;
    assert_eq!(
        stdout.len(),
        ENCODED_FORMS.len() + 2,
        "stdout lines: {stdout:?}"
    );
    for line in &stdout {
        assert!(line.contains(MASK), "line not masked: {line:?}");
    }
    let outputs = case.outputs().await;
    let needles: Vec<String> = ENCODED_FORMS
        .iter()
        .map(|(_, form)| form.to_string())
        .collect();
    assert_absent(&needles, &outputs);
    assert_no_secret(&[TRICKY, &case.env.token], &outputs);
}

#[tokio::test]
async fn huge_line_is_truncated() {
    // One 50 MiB line that ends with the secret, a line that the 64 KiB cap
    // cuts 6 bytes into the secret, then a short line.
    let script = r#"
head -c 52428800 /dev/zero | tr '\0' x
cat "$OUT/secret"
echo
head -c 65530 /dev/zero | tr '\0' y
cat "$OUT/secret"
printf '\nafter the long lines\n'
"#;
    let case = Case::start("huge-line-runner", TRICKY, script).await;
    case.write("secret", TRICKY);

    let (run_id, document) = case.run().await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let lines: Vec<serde_json::Value> = case
        .control_plane
        .logs(&run_id)
        .await
        .into_iter()
        .filter(|line| line["stream"] == "stdout")
        .collect();
    assert_eq!(lines.len(), 3, "{} stdout lines", lines.len());
    let max_text = 65536 + " [truncated]".len();
    for (index, line) in lines[..2].iter().enumerate() {
        let text = line["text"].as_str().expect("text");
        let tail = &text[text.len().saturating_sub(40)..];
        assert_eq!(line["truncated"], true, "truncated flag of line {index}");
        assert!(text.ends_with(" [truncated]"), "line {index} ends {tail:?}");
        assert!(
            text.len() <= max_text,
            "line {index} is {} bytes",
            text.len()
        );
    }
    let cut = lines[1]["text"].as_str().expect("text");
    assert!(
        cut.ends_with(&format!("y{MASK} [truncated]")),
        "line cut inside the secret ends {:?}",
        &cut[cut.len().saturating_sub(40)..]
    );
    assert_eq!(lines[2]["text"], "after the long lines", "third line");

    // The debug build of the runner peaks near 20 MiB in this test. A runner
    // that held the 50 MiB line would need that much again for the line and
    // for each copy of it (redacted text, JSON frame), so it would fail this bound.
    let peak_kib = case.runner.peak_rss_kib();
    assert!(peak_kib < 150 * 1024, "runner peak RSS is {peak_kib} KiB");
    let outputs = case.outputs().await;
    assert_no_secret(&[TRICKY, &case.env.token], &outputs);
    assert_no_fragment(TRICKY, 5, &outputs);
}

#[tokio::test]
async fn failing_workflow_does_not_leak() {
    // The workflow prints the secret, dumps its resolved config and a
    // connection URL to stderr, then fails.
    let script = r#"
cat "$OUT/secret"; echo
cat "$1" >&2; echo >&2
echo "connection failed for mysql://openmetadata_user:$(cat "$OUT/url-password")@mysql.internal:3306" >&2
exit 1
"#;
    let case = Case::start("failing-runner", TRICKY, script).await;
    case.write("secret", TRICKY);
    case.write("url-password", ENCODED_FORMS[5].1);

    let (run_id, document) = case.run().await;

    assert_eq!(document["finalState"], "failed", "run: {document}");
    assert_eq!(document["exitCode"], 1, "run: {document}");
    let reason = document["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("exited with code 1"), "reason: {reason:?}");
    assert!(
        reason.contains("last output: ")
            && reason.contains("connection failed for mysql://openmetadata_user:******@"),
        "reason: {reason:?}"
    );
    let stderr = case.control_plane.log_texts(&run_id, "stderr").await;
    assert!(
        stderr
            .iter()
            .any(|line| line.contains(&format!("\"password\":\"{MASK}\""))
                || line.contains(&format!("\"password\": \"{MASK}\""))),
        "stderr lines: {stderr:?}"
    );
    let outputs = case.outputs().await;
    let needles: Vec<String> = ENCODED_FORMS
        .iter()
        .map(|(_, form)| form.to_string())
        .collect();
    assert_absent(&needles, &outputs);
    assert_no_secret(&[TRICKY, &case.env.token], &outputs);
}

#[tokio::test]
async fn literal_secret_field_is_masked() {
    // A plain value in a secret field is masked like a resolved one.
    let token = "plain-bot-token-7Q2w9Zr4";
    let case = Case::start(
        "literal-runner",
        TRICKY,
        r#"echo "token=$(cat "$OUT/token")""#,
    )
    .await;
    case.write("token", token);
    let workflow = format!("{WORKFLOW}    securityConfig:\n      jwtToken: {token}\n");

    let run_id = case
        .control_plane
        .submit(&submission(&case.runner.agent_id, &workflow))
        .await;
    let document = case.control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let stdout = case.control_plane.log_texts(&run_id, "stdout").await;
    assert_eq!(stdout, vec![format!("token={MASK}")], "stdout lines");
    assert_no_secret(&[TRICKY, token, &case.env.token], &case.outputs().await);
}

#[tokio::test]
async fn ascii_json_escape_is_masked() {
    // Python's json.dumps escapes every non-ASCII character by default, as
    // \uXXXX with surrogate pairs beyond the Basic Multilingual Plane.
    let secret = "Pässwörd-🔑-Ünï";
    let escaped = r"P\u00e4ssw\u00f6rd-\ud83d\udd11-\u00dcn\u00ef";
    let case = Case::start("unicode-runner", secret, r#"cat "$OUT/dump""#).await;
    case.write(
        "dump",
        format!("{{\"password\": \"{escaped}\"}}\n{secret}\n"),
    );

    let (run_id, document) = case.run().await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    let stdout = case.control_plane.log_texts(&run_id, "stdout").await;
    assert_eq!(
        stdout,
        vec![format!("{{\"password\": \"{MASK}\"}}"), MASK.to_string()],
        "stdout lines"
    );
    let outputs = case.outputs().await;
    assert_absent(&[escaped.to_string()], &outputs);
    assert_no_secret(&[secret, &case.env.token], &outputs);
}

#[tokio::test]
async fn short_secret_warns_once() {
    let env = TestEnv::new();
    let control_plane = env.control_plane().await;
    let short = "Zq9x";
    let runner = env.start_runner(
        &control_plane,
        RunnerConfig::new("short-runner")
            .pipeline("metadata", "exit 0")
            .secret(REFERENCE_PATH, short),
    );
    control_plane.wait_connected(&runner).await;

    for _ in 0..2 {
        let run_id = control_plane
            .submit(&submission("short-runner", WORKFLOW))
            .await;
        let document = control_plane.wait_final(&run_id).await;
        assert_eq!(document["finalState"], "success", "run: {document}");
    }

    let log = runner.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("shorter than the redaction minimum"))
        .collect();
    assert_eq!(warnings.len(), 1, "warnings: {warnings:?}");
    assert!(
        warnings[0].contains(REFERENCE_PATH),
        "warning: {}",
        warnings[0]
    );
    assert!(!log.contains(short), "the runner log shows the short value");
}
