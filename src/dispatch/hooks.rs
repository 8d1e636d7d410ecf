//! The run hook points: `pre_run` before secrets are resolved, `post_run`
//! after the final status is reported.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use super::{Dispatcher, Rejection};
use crate::hooks::{HookOutcome, HookPoint};
use crate::protocol::{PipelineState, RejectCode, RunRequest};
use crate::workflow::Workflow;

/// Outcome of a finished run, as passed to `post_run`.
pub(super) struct RunResult<'a> {
    pub state: PipelineState,
    pub exit_code: Option<i32>,
    pub reason: Option<&'a str>,
    pub duration_ms: u64,
    pub last_lines: &'a VecDeque<String>,
}

impl Dispatcher {
    /// Calls `pre_run` with the config as it arrived, references unresolved.
    /// The hook may return nil, or a table with `reject` (a reason), `config`
    /// (a replacement workflow config) and `env` (variables for the child).
    pub(super) async fn pre_run(
        &self,
        request: &RunRequest,
        workflow: Workflow,
    ) -> Result<(Workflow, BTreeMap<String, String>), Rejection> {
        let Some(hooks) = &self.hooks else {
            return Ok((workflow, BTreeMap::new()));
        };
        let input = json!({
            "runId": request.run_id,
            "pipelineFqn": request.pipeline_fqn,
            "pipelineType": request.pipeline_type,
            "config": workflow.value(),
        });
        let returned = match hooks.fire(HookPoint::PreRun, input).await {
            Ok(HookOutcome::NotDefined) | Ok(HookOutcome::Returned(Value::Null)) => {
                return Ok((workflow, BTreeMap::new()));
            }
            Ok(HookOutcome::Returned(value)) => value,
            Err(error) => {
                return Err(Rejection::new(
                    RejectCode::HookRejected,
                    format!("the pre_run hook failed: {error}"),
                ));
            }
        };
        self.apply_pre_run(returned, workflow)
    }

    fn apply_pre_run(
        &self,
        returned: Value,
        workflow: Workflow,
    ) -> Result<(Workflow, BTreeMap<String, String>), Rejection> {
        let invalid = |detail: String| Rejection::new(RejectCode::HookRejected, detail);
        let Value::Object(mut fields) = returned else {
            return Err(invalid(
                "the pre_run hook returned a value that is not a table; return nil or a table with reject, config or env".into(),
            ));
        };
        if let Some(reason) = fields.remove("reject") {
            let reason = reason.as_str().unwrap_or("no reason given");
            return Err(invalid(format!("rejected by the pre_run hook: {reason}")));
        }
        let workflow = match fields.remove("config") {
            None | Some(Value::Null) => workflow,
            Some(config) => Workflow::from_request(&config, self.config.runs.max_config_bytes)
                .map_err(|error| {
                    invalid(format!(
                        "the pre_run hook returned an invalid config: {error}"
                    ))
                })?,
        };
        let env = match fields.remove("env") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(env) => hook_env(env).map_err(invalid)?,
        };
        if let Some(unknown) = fields.keys().next() {
            return Err(invalid(format!(
                "the pre_run hook returned an unknown field {unknown:?}; expected reject, config or env"
            )));
        }
        Ok((workflow, env))
    }

    /// Calls `post_run`. It cannot change the outcome; a failure is logged.
    pub(super) async fn post_run(&self, request: &RunRequest, result: RunResult<'_>) {
        let Some(hooks) = &self.hooks else {
            return;
        };
        let input = json!({
            "runId": request.run_id,
            "pipelineFqn": request.pipeline_fqn,
            "pipelineType": request.pipeline_type,
            "result": {
                "state": result.state,
                "exitCode": result.exit_code,
                "reason": result.reason,
                "durationMs": result.duration_ms,
                "lastLines": result.last_lines,
            },
        });
        if let Err(error) = hooks.fire(HookPoint::PostRun, input).await {
            tracing::warn!(%error, "the post_run hook failed; the run's status is unchanged");
            self.outbox.push(&crate::protocol::Event {
                kind: "hook.failed".into(),
                payload: json!({
                    "hook": "post_run",
                    "runId": request.run_id,
                    "error": error.to_string(),
                }),
            });
        }
    }
}

impl Dispatcher {
    /// Hands a custom message from the control plane to `on_message`.
    pub(super) async fn on_message(&self, message: crate::protocol::CustomMessage) {
        let Some(hooks) = &self.hooks else {
            tracing::info!(name = %message.name, "no hooks are configured for custom messages; ignoring it");
            return;
        };
        let input = json!({ "name": message.name, "body": message.body });
        match hooks.fire(HookPoint::OnMessage, input).await {
            Ok(HookOutcome::NotDefined) => {
                tracing::info!(name = %message.name, "no on_message hook; ignoring the custom message");
            }
            Ok(HookOutcome::Returned(_)) => {
                tracing::info!(name = %message.name, "custom message handled by on_message");
            }
            Err(error) => {
                tracing::warn!(name = %message.name, %error, "the on_message hook failed")
            }
        }
    }
}

/// Checks the `env` table a pre_run hook returned.
fn hook_env(env: Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(entries) = env else {
        return Err("the pre_run hook returned env that is not a table of names to strings".into());
    };
    let mut out = BTreeMap::new();
    for (name, value) in entries {
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name || name.starts_with("HYBRID_RUNNER_") {
            return Err(format!(
                "the pre_run hook returned an invalid variable name {name:?}; use letters, digits and _, not starting with HYBRID_RUNNER_"
            ));
        }
        let Value::String(value) = value else {
            return Err(format!(
                "the pre_run hook returned env.{name} that is not a string"
            ));
        };
        out.insert(name, value);
    }
    Ok(out)
}

/// Reloads the hook scripts and reports the result to the control plane as
/// `hooks.reloaded` or `hooks.failed`. A failed reload keeps the last good
/// generation serving.
pub async fn reload_and_report(hooks: &crate::hooks::HookSet, outbox: &crate::control::Outbox) {
    match hooks.reload().await {
        Ok(report) if report.changed => {
            tracing::info!(
                generation = report.generation,
                content_hash = %report.content_hash,
                "hooks reloaded"
            );
            outbox.push(&crate::protocol::HooksReloaded {
                generation: report.generation,
                content_hash: report.content_hash,
                files: report
                    .files
                    .iter()
                    .map(|file| file.display().to_string())
                    .collect(),
            });
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, "hooks reload failed; the previous generation keeps serving");
            outbox.push(&crate::protocol::HooksFailed {
                generation: hooks.current().generation(),
                error: error.to_string(),
            });
        }
    }
}
