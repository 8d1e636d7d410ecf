//! Signed run requests through the real binaries: a runner configured with
//! `control_plane.signing` runs requests signed by the control plane's key
//! and rejects unsigned, tampered, wrong-key and unknown-kid requests with
//! `invalidSignature` before anything starts.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use hybrid_runner::protocol::{Envelope, RunRequest};
use hybrid_runner::signing::RequestSigner;
use serde_json::{Value, json};

use common::{
    ControlPlane, PLAIN_WORKFLOW, Runner, RunnerConfig, TestEnv, rejection_reason, submission,
};

/// Writes the PKCS#8 PEM private key of `seed` and returns its path.
fn write_private_key(env: &TestEnv, name: &str, seed: u8) -> PathBuf {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let path = env.path(name);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("encode private key");
    std::fs::write(&path, pem.as_bytes()).expect("write private key");
    path
}

/// Writes the SPKI PEM public key of `seed` and returns its path.
fn write_public_key(env: &TestEnv, name: &str, seed: u8) -> PathBuf {
    let key = SigningKey::from_bytes(&[seed; 32]).verifying_key();
    let path = env.path(name);
    let pem = key
        .to_public_key_pem(LineEnding::LF)
        .expect("encode public key");
    std::fs::write(&path, pem).expect("write public key");
    path
}

/// Writes a JWKS with the public key of `seed` as `kid` and returns its path.
fn write_jwks(env: &TestEnv, kid: &str, seed: u8) -> PathBuf {
    let key = SigningKey::from_bytes(&[seed; 32]).verifying_key();
    let jwks = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(key.as_bytes()),
    }]});
    let path = env.path("jwks.json");
    std::fs::write(&path, jwks.to_string()).expect("write JWKS");
    path
}

/// Starts a runner whose workflow creates `$OUT/ran`, with `signing` as
/// `control_plane.signing`.
async fn start_runner(
    env: &TestEnv,
    control_plane: &ControlPlane,
    agent_id: &str,
    signing: Value,
) -> (Runner, PathBuf) {
    let out = env.folder("out");
    let runner = env.start_runner(
        control_plane,
        RunnerConfig::new(agent_id)
            .pipeline("metadata", r#"touch "$OUT/ran""#)
            .env("OUT", &out)
            .signing(signing),
    );
    control_plane.wait_connected(&runner).await;
    (runner, out)
}

/// Returns the `run.request` frame for `run_id`, signed by `signer` when given.
fn request_envelope(run_id: &str, signer: Option<&RequestSigner>) -> Envelope {
    let request = RunRequest {
        run_id: run_id.to_string(),
        pipeline_fqn: "test_service.test_pipeline".into(),
        pipeline_type: "metadata".into(),
        config: Value::String(PLAIN_WORKFLOW.into()),
        timeout_seconds: None,
        secret_fields: vec![],
    };
    let mut envelope = Envelope::new(&request, None);
    envelope.signature = signer.map(|signer| signer.sign(&envelope.payload));
    envelope
}

/// Sends `envelope` to the runner and returns the reason of its rejection.
async fn rejected_reason(
    control_plane: &ControlPlane,
    agent_id: &str,
    envelope: &Envelope,
) -> String {
    let run_id = envelope.payload["runId"]
        .as_str()
        .expect("runId")
        .to_string();
    control_plane
        .send_frame(agent_id, &envelope.encode(), Some(&run_id))
        .await;
    let document = control_plane.wait_final(&run_id).await;
    rejection_reason(&document, "invalidSignature")
}

fn assert_nothing_started(out: &Path, runner: &Runner) {
    assert!(!out.join("ran").exists(), "the workflow process ran");
    let entries: Vec<_> = std::fs::read_dir(&runner.work_dir)
        .map(|dir| dir.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "run directories: {entries:?}");
}

#[tokio::test]
async fn signed_request_runs() {
    let env = TestEnv::new();
    let private = write_private_key(&env, "signing.pem", 11);
    let public = write_public_key(&env, "signing.pub", 11);
    let control_plane = env
        .control_plane_with(&["--signing-key".into(), private.display().to_string()])
        .await;
    let (runner, out) = start_runner(
        &env,
        &control_plane,
        "signed-runner",
        json!({ "public_key_file": public }),
    )
    .await;

    let run_id = control_plane
        .submit(&submission("signed-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    assert_eq!(document["finalState"], "success", "run: {document}");
    assert!(out.join("ran").exists(), "the workflow did not run");
    env.assert_no_leaks(&control_plane, &[&runner], &[]).await;
}

#[tokio::test]
async fn unsigned_request_is_rejected() {
    let env = TestEnv::new();
    let public = write_public_key(&env, "signing.pub", 11);
    let control_plane = env.control_plane().await;
    let (runner, out) = start_runner(
        &env,
        &control_plane,
        "strict-runner",
        json!({ "public_key_file": public }),
    )
    .await;

    let run_id = control_plane
        .submit(&submission("strict-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "invalidSignature");
    assert!(reason.contains("not signed"), "reason: {reason:?}");
    assert_nothing_started(&out, &runner);
}

#[tokio::test]
async fn tampered_request_is_rejected() {
    let env = TestEnv::new();
    let public = write_public_key(&env, "signing.pub", 11);
    let control_plane = env.control_plane().await;
    let (runner, out) = start_runner(
        &env,
        &control_plane,
        "tamper-runner",
        json!({ "public_key_file": public }),
    )
    .await;
    let signer = RequestSigner::new(SigningKey::from_bytes(&[11; 32]), None);

    let mut envelope = request_envelope("tampered-run", Some(&signer));
    envelope.payload["pipelineFqn"] = json!("other_service.other_pipeline");
    let reason = rejected_reason(&control_plane, "tamper-runner", &envelope).await;

    assert!(reason.contains("does not match"), "reason: {reason:?}");
    assert_nothing_started(&out, &runner);
    // The same request unchanged runs, so the rejection is due to the change.
    let intact = request_envelope("intact-run", Some(&signer));
    control_plane
        .send_frame("tamper-runner", &intact.encode(), Some("intact-run"))
        .await;
    let document = control_plane.wait_final("intact-run").await;
    assert_eq!(document["finalState"], "success", "run: {document}");
}

#[tokio::test]
async fn wrong_key_is_rejected() {
    let env = TestEnv::new();
    let public = write_public_key(&env, "signing.pub", 11);
    let other = write_private_key(&env, "other.pem", 12);
    let control_plane = env
        .control_plane_with(&["--signing-key".into(), other.display().to_string()])
        .await;
    let (runner, out) = start_runner(
        &env,
        &control_plane,
        "keyed-runner",
        json!({ "public_key_file": public }),
    )
    .await;

    let run_id = control_plane
        .submit(&submission("keyed-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;

    let reason = rejection_reason(&document, "invalidSignature");
    assert!(reason.contains("does not match"), "reason: {reason:?}");
    assert_nothing_started(&out, &runner);
}

#[tokio::test]
async fn jwks_checks_kid() {
    let env = TestEnv::new();
    let jwks = write_jwks(&env, "2026-key", 21);
    let private = write_private_key(&env, "signing.pem", 21);
    let control_plane = env
        .control_plane_with(&[
            "--signing-key".into(),
            private.display().to_string(),
            "--signing-kid".into(),
            "2026-key".into(),
        ])
        .await;
    let (runner, out) = start_runner(
        &env,
        &control_plane,
        "jwks-runner",
        json!({ "jwks_file": jwks }),
    )
    .await;

    let unknown = RequestSigner::new(SigningKey::from_bytes(&[21; 32]), Some("2025-key".into()));
    let reason = rejected_reason(
        &control_plane,
        "jwks-runner",
        &request_envelope("old-kid", Some(&unknown)),
    )
    .await;
    assert!(
        reason.contains("unknown signing key id \"2025-key\""),
        "reason: {reason:?}"
    );
    let wrong = RequestSigner::new(SigningKey::from_bytes(&[22; 32]), Some("2026-key".into()));
    let reason = rejected_reason(
        &control_plane,
        "jwks-runner",
        &request_envelope("wrong-key", Some(&wrong)),
    )
    .await;
    assert!(reason.contains("does not match"), "reason: {reason:?}");
    assert_nothing_started(&out, &runner);

    let run_id = control_plane
        .submit(&submission("jwks-runner", PLAIN_WORKFLOW))
        .await;
    let document = control_plane.wait_final(&run_id).await;
    assert_eq!(document["finalState"], "success", "run: {document}");
}
