-- Pre-check: the file system of the runner's work directory, where each run
-- writes its config and output, has room left. It does not gate runs, so a
-- low disk shows up as a degraded runner before runs start to fail.

local NAME = "work_dir_free_space"
local SCHEDULE = "*/10 * * * *"
local MIN_AVAILABLE_PERCENT = 10

local GIB = 1024 * 1024 * 1024

runner.schedule(NAME, SCHEDULE, function()
  local space = runner.fs.free_space(runner.fs.work_dir)
  local message = string.format(
    "%.1f GiB (%.0f%%) available in %s, minimum %d%%",
    space.available_bytes / GIB,
    space.available_percent,
    runner.fs.work_dir,
    MIN_AVAILABLE_PERCENT
  )
  return space.available_percent >= MIN_AVAILABLE_PERCENT, message
end)
