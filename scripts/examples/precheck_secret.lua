-- Pre-check: a secret that runs need can be read through the runner's secrets
-- provider and policy. The value is dropped, never returned or logged. A
-- failed lookup raises an error that names the reference, and the runner
-- reports it as the check's failure message.

local NAME = "database_password_readable"
local SCHEDULE = "0 * * * *"
local REFERENCE = "secret:/collate/hybrid-ingestion/mysql/password"

runner.schedule(NAME, SCHEDULE, function()
  runner.secrets.get(REFERENCE)
  return true, REFERENCE .. " is readable"
end, { timeout = 30, gate = true })
