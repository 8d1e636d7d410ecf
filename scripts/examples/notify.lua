-- Sends an event of kind run.finished to the control plane after every run,
-- success or not. The control plane shows it in the runner's events.

---@param run hybrid.FinishedRun
function post_run(run)
  runner.saas.send("run.finished", {
    runId = run.runId,
    state = run.result.state,
    durationMs = run.result.durationMs,
  })
end
