-- Pre-check: the database accepts TCP connections. While it does not, the
-- runner rejects new metadata runs with this check's message (gate = true),
-- so they fail at once with a clear reason instead of timing out inside the
-- ingestion workflow. Only the TCP handshake happens; nothing is sent.

local NAME = "database_reachable"
local SCHEDULE = "*/5 * * * *"
local HOST = "mysql.internal"
local PORT = 3306
local TIMEOUT_SECONDS = 3

runner.schedule(NAME, SCHEDULE, function()
  local ok, detail = runner.tcp.check(HOST, PORT, TIMEOUT_SECONDS)
  if not ok then
    return { ok = false, message = detail }
  end
  return { ok = true, message = HOST .. ":" .. PORT .. " accepted a connection in " .. detail .. " ms" }
end, {
  timeout = TIMEOUT_SECONDS + 2,
  gate = true,
  gates = { pipeline_types = { "metadata" } },
})
