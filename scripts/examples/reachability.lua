-- Rejects a run before it starts when the database in its workflow config
-- does not accept TCP connections, so an unreachable host fails fast with a
-- clear reason in place of a timeout inside the ingestion workflow.

local TIMEOUT_SECONDS = 3

---@param run hybrid.Run
---@return hybrid.PreRunResult|nil
function pre_run(run)
  local source = run.config.source or {}
  local connection = (source.serviceConnection or {}).config or {}
  local host_port = connection.hostPort
  if type(host_port) ~= "string" then
    return nil
  end

  -- The last colon separates the port, so "host:5432" and "[::1]:5432" both split.
  local host, port = host_port:match("^(.+):(%d+)$")
  if host == nil then
    return { reject = "hostPort " .. host_port .. " is not HOST:PORT" }
  end
  host = host:match("^%[(.*)%]$") or host

  local ok, message = runner.tcp.check(host, tonumber(port), TIMEOUT_SECONDS)
  if not ok then
    return { reject = "database " .. host_port .. " is not reachable: " .. message }
  end
  runner.log.debug("database " .. host_port .. " accepted a connection in " .. message .. " ms")
  return nil
end
