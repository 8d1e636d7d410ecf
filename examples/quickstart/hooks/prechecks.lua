-- Functions behind the pre-checks in the quickstart's runner.yaml.

local WAREHOUSE_PASSWORD = "secret:/collate/hybrid-ingestion/warehouse/password"

-- The demo database that the quickstart started accepts TCP connections.
function check_demo_database()
  local address = runner.env.get("QUICKSTART_DATABASE") or ""
  local host, port = address:match("^(.+):(%d+)$")
  if host == nil then
    return false, "QUICKSTART_DATABASE is " .. address .. ", expected HOST:PORT"
  end
  local ok, detail = runner.tcp.check(host, tonumber(port), 2)
  if not ok then
    return false, detail
  end
  return true, address .. " accepted a connection in " .. detail .. " ms"
end

-- The warehouse password is not in the quickstart's secrets.yaml, so this
-- check fails. It does not gate runs, so the runner only reports itself as
-- degraded. A failed lookup raises an error, which fails the check with the
-- error as its message; the value of a found secret is dropped.
function check_warehouse_password()
  runner.secrets.get(WAREHOUSE_PASSWORD)
  return true, WAREHOUSE_PASSWORD .. " is readable"
end
