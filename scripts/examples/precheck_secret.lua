-- Pre-check: a secret that runs need can be read through the runner's secrets
-- provider and policy. The value is never returned or logged; a failure reports
-- only the provider's error, which names the reference.

local NAME = "database_password_readable"
local SCHEDULE = "0 * * * *"
local REFERENCE = "secret:/collate/hybrid-ingestion/mysql/password"

runner.schedule(NAME, SCHEDULE, function()
  -- On success pcall also returns the value, which is dropped here.
  local readable, lookup_error = pcall(runner.secrets.get, REFERENCE)
  if not readable then
    return false, tostring(lookup_error)
  end
  return true, REFERENCE .. " is readable"
end, { timeout = 30, gate = true })
