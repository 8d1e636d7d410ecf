---@meta
-- Type definitions for hybrid-runner Lua hooks, for the Lua language server
-- (LuaLS). The runner provides `runner` itself, and hook scripts define the
-- global hook functions declared at the end. Keep this file out of the hooks
-- folder, because the runner loads every *.lua file there and this one would
-- replace `runner` and define empty hooks.
-- docs/hooks.md describes each hook point and each function.

---@alias hybrid.PipelineState "queued"|"running"|"success"|"failed"|"partialSuccess"|"stopped"

---Input of `pre_run`: the run request, before any secret is resolved.
---@class hybrid.Run
---@field runId string
---@field pipelineFqn string
---@field pipelineType string
---@field config table<string, any> OpenMetadata workflow config with `secret:` references still unresolved

---Return value of `pre_run`. Every field is optional.
---@class hybrid.PreRunResult
---@field reject? string reason to reject the run with code `hookRejected`, so nothing starts
---@field config? table<string, any> replacement workflow config, checked like the original
---@field env? table<string, string> variables for the workflow process; names must not start with `HYBRID_RUNNER_`

---Outcome of a finished run.
---@class hybrid.RunResult
---@field state hybrid.PipelineState final state
---@field exitCode? integer exit code of the workflow process, when it exited with one
---@field reason? string reason reported with the final status, if any
---@field durationMs integer run time in milliseconds
---@field lastLines string[] the last five output lines, redacted

---Input of `post_run`: the run request and its outcome.
---@class hybrid.FinishedRun
---@field runId string
---@field pipelineFqn string
---@field pipelineType string
---@field result hybrid.RunResult

---Input of `map_secret`: one secret reference that the access policy allowed.
---@class hybrid.SecretRef
---@field reference string the reference as written, `secret:/...`
---@field path string the path after `secret:`
---@field version? string version named in the reference, if any
---@field provider string name of the store the routes chose (the type, for a runner with one `secrets.provider`)
---@field kind "aws"|"azure"|"gcp"|"kubernetes"|"file"|"env" type of that store

---Store name, version and store chosen by `map_secret`.
---@class hybrid.MappedSecret
---@field name string
---@field version? string
---@field provider? string name of a configured store to read from instead of the routed one

---Input of `on_message`: a custom message from the control plane.
---@class hybrid.Message
---@field name string
---@field body any JSON body, with `null` as nil

---The runner API, which the runner creates in every hook state.
runner = {}

---Waits without blocking other runs or hooks.
---@param seconds number
function runner.sleep(seconds) end

---Writes to the runner's log with the hook, file and line.
runner.log = {}

---@param message string
function runner.log.debug(message) end

---@param message string
function runner.log.info(message) end

---@param message string
function runner.log.warn(message) end

---@param message string
function runner.log.error(message) end

runner.json = {}

---Encodes a Lua value as JSON. Functions, userdata other than
---`runner.json.null` and tables with cycles raise an error.
---@param value any
---@return string
function runner.json.encode(value) end

---Decodes JSON text, with `null` as nil. Invalid JSON raises an error.
---@param text string
---@return any
function runner.json.decode(text) end

---The value that encodes as JSON `null`.
---@type lightuserdata
runner.json.null = nil

runner.yaml = {}

---Encodes a Lua value as YAML.
---@param value any
---@return string
function runner.yaml.encode(value) end

---Decodes YAML text and raises an error on invalid YAML.
---@param text string
---@return any
function runner.yaml.decode(text) end

runner.env = {}

---Returns an environment variable named in `hooks.env_allow`, or nil when it
---is unset. Any other name raises an error.
---@param name string
---@return string|nil
function runner.env.get(name) end

runner.saas = {}

---Sends an `event` to the control plane. The payload passes through the
---redactor like every message.
---@param kind string
---@param payload any
function runner.saas.send(kind, payload) end

runner.tcp = {}

---Opens and closes a TCP connection. Returns `true` and the elapsed
---milliseconds as a string, or `false` and an error message.
---@param host string
---@param port integer 1 to 65535
---@param timeout? number in seconds, default 5, at most 60
---@return boolean ok
---@return string elapsed_ms_or_message
function runner.tcp.check(host, port, timeout) end

---A request to `runner.exec`.
---@class hybrid.ExecRequest
---@field cmd string program to run; no shell is involved
---@field args? string[]
---@field env? table<string, string> the only variables besides PATH
---@field cwd? string
---@field timeout? number seconds, default 30, at most 600

---What `runner.exec` returns; output is redacted.
---@class hybrid.ExecResult
---@field code integer|nil exit code, nil when killed or timed out
---@field stdout string
---@field stderr string
---@field timedOut boolean

---Runs a program without a shell in its own process group.
---@param request hybrid.ExecRequest
---@return hybrid.ExecResult
function runner.exec(request) end

runner.http = {}

---A request to `runner.http.request`.
---@class hybrid.HttpRequest
---@field method? string default "GET"
---@field url string
---@field headers? table<string, string>
---@field body? string
---@field timeout? number seconds, default 10, at most 60

---What `runner.http.request` returns; the body is redacted.
---@class hybrid.HttpResponse
---@field status integer
---@field headers table<string, string>
---@field body string

---Sends an HTTP request.
---@param request hybrid.HttpRequest
---@return hybrid.HttpResponse
function runner.http.request(request) end

runner.secrets = {}

---Resolves a `secret:/...` reference through the runner's access policy,
---providers, audit log and redactor. Inside `pre_run`, `post_run` and
---`map_secret` the lookup is made for the run, so prefixes scoped to its
---service apply. Raises an error that names the reference when the lookup
---is denied or fails.
---@param reference string
---@return string value
function runner.secrets.get(reference) end

runner.fs = {}

---The runner's work directory (`work_dir` of runner.yaml), an absolute path.
---@type string
runner.fs.work_dir = ""

---Space of the file system that contains a folder.
---@class hybrid.FreeSpace
---@field total_bytes integer size of the file system
---@field free_bytes integer unused bytes, including those reserved for root
---@field available_bytes integer bytes an unprivileged process may still write
---@field available_percent number available_bytes as a percentage of total_bytes

---Reads the free space of the file system that contains `path`. Raises an error
---unless `path` is an absolute path of an existing folder without `..`.
---@param path string
---@return hybrid.FreeSpace
function runner.fs.free_space(path) end

---Options of `runner.schedule`. Every field is optional.
---@class hybrid.ScheduleOptions
---@field timeout? number|string time limit of one call in seconds, or a duration such as "30s"; default 30s
---@field gate? boolean reject new runs while the last result is a failure; default false
---@field gates? { pipeline_types?: string[], services?: string[] } runs a gating check applies to; all by default

---Registers a pre-check that runs `check` on `schedule`. Only the top-level
---code of a script may call it. `schedule` is a cron expression with 5, 6 or
---7 fields, a shorthand such as "@daily", or an interval such as "@every 30s".
---`check` receives `{ name = name }` and returns `true`/`false` (optionally
---followed by a message) or `{ ok = boolean, message = string }`; an error
---counts as a failure with the error as message. A reload of the hooks drops
---the checks of the old scripts.
---@param name string unique name: letters, digits, '_', '.' or '-'
---@param schedule string
---@param check fun(info: { name: string }): (boolean|{ ok: boolean, message?: string }), string?
---@param options? hybrid.ScheduleOptions
function runner.schedule(name, schedule, check, options) end

---Called after a run request passed the runner's checks and before any secret
---is resolved. Returns nil to let the run go on unchanged.
---@param run hybrid.Run
---@return hybrid.PreRunResult|nil
function pre_run(run) end

---Called after a run's final status was reported. It cannot change the outcome.
---@param run hybrid.FinishedRun
---@param result hybrid.RunResult the same table as `run.result`
function post_run(run, result) end

---Called for every secret reference. Returns nil for the provider's default
---mapping, a store name, or a name with a version.
---@param ref hybrid.SecretRef
---@return string|hybrid.MappedSecret|nil
function map_secret(ref) end

---Called for each custom `message` the control plane sends.
---@param msg hybrid.Message
function on_message(msg) end
