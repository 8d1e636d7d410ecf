-- luacheck configuration for the Lua hooks in scripts/. Hooks run on Lua 5.4.
std = "lua54"

-- Hook scripts define these global functions; the runner calls them.
globals = { "pre_run", "post_run", "map_secret", "on_message" }

-- The runner provides this table to every hook.
read_globals = { "runner" }

-- The type definitions file declares `runner` and stub functions whose
-- parameters exist only for their annotations.
files["scripts/runner.lua"] = {
  globals = { "runner" },
  unused_args = false,
}
