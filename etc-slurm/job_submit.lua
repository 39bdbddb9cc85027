-- isense-slurm: job_submit.lua for slurmctld (slurm.conf: JobSubmitPlugins=lua; the file
-- goes next to slurm.conf). Slurm 22.05 - 26.05, Lua 5.1 or later.
--
-- On each submit (and each update: a release makes a held job eligible) it replaces one
-- small file that `isense serve` watches ([slurm] submit_wake in isense.toml). The
-- controller then stops at once the workers that the new job would preempt, so the job
-- starts on their epilog instead of waiting up to a second for slurmctld's next
-- scheduling pass. See docs/controller.md, "Make way".
--
-- It never rejects, changes or delays a job: the write is wrapped in pcall, and a
-- missing or unwritable folder only means Slurm reclaims alone, as without isense.
-- Sites with their own job_submit.lua: copy isense_wake() and the two pcall lines
-- into it.

-- Must equal [slurm] submit_wake; its folder must be writable by SlurmUser and
-- readable by the account that runs `isense serve`.
local ISENSE_WAKE_FILE = "/var/spool/isense/submit.wake"

local isense_wakes = 0

local function isense_wake(uid)
  isense_wakes = isense_wakes + 1
  -- A new file renamed over the old one: the controller never sees a half-written file,
  -- also when slurmctld (23.02+) runs job_submit calls concurrently. The temporary name
  -- is this call's own (the address of a fresh table), so no two calls share one.
  local tmp = ISENSE_WAKE_FILE .. "." .. (string.match(tostring({}), "(%x+)$") or isense_wakes) .. ".tmp"
  local f = io.open(tmp, "w")
  if f == nil then
    return
  end
  -- The content is for people; the controller watches the file's mtime and size.
  f:write(os.time(), " ", isense_wakes, " uid=", tostring(uid), "\n")
  f:close()
  if not os.rename(tmp, ISENSE_WAKE_FILE) then
    os.remove(tmp)
  end
end

function slurm_job_submit(job_desc, part_list, submit_uid)
  pcall(isense_wake, submit_uid)
  return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  pcall(isense_wake, modify_uid)
  return slurm.SUCCESS
end
