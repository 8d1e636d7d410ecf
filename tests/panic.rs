//! Panic messages reach stderr only through the redactor. The test runs
//! itself again as a child process, which installs the runner's panic hook
//! and panics with a registered secret in the message. The parent reads the
//! child's output.

use std::process::Command;
use std::sync::Arc;

use hybrid_runner::redact::Redactor;

const SECRET: &str = "panic-Pa55word-66";

/// Set in the child process, which panics instead of starting a child.
const CHILD_VAR: &str = "HYBRID_RUNNER_PANIC_TEST_CHILD";

#[test]
fn panic_message_is_redacted() {
    if std::env::var_os(CHILD_VAR).is_some() {
        let redactor = Arc::new(Redactor::default());
        redactor.register(SECRET);
        hybrid_runner::logging::install_panic_hook(redactor);
        panic!("cannot log in with password {SECRET}");
    }

    let output = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--exact", "panic_message_is_redacted", "--nocapture"])
        .env(CHILD_VAR, "1")
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(
        !output.status.success(),
        "the child did not panic: {stdout}"
    );
    assert!(
        stderr.contains("cannot log in with password ******"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains(SECRET), "stderr: {stderr}");
    assert!(!stdout.contains(SECRET), "stdout: {stdout}");
}
