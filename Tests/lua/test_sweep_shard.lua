-- Sharded sweeps (qlora sweep --shard I/N, Slurm job arrays, qlora sweep --slurm): three shards
-- run as separate processes (two at once, one killed with SIGKILL and run again) give exactly
-- the records of one unsharded sweep, each shard writing only files of its own; the shard comes
-- from SLURM_ARRAY_TASK_* when --shard is absent; the generated sbatch script passes `bash -n`,
-- names the array range, and run once per task id gives the same records again.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local here = arg[0]:match("(.*/)") or "./"
local qlora = arg[-1]
local script = here .. "scripts/sweep_shard.lua"

local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); return d end
local function read(p) local f = io.open(p, "rb"); if not f then return nil end local s = f:read("a"); f:close(); return s end
local function write(p, s) local f = assert(io.open(p, "wb")); f:write(s); f:close() end
local function exists(p) local f = io.open(p, "rb"); if f then f:close() end return f ~= nil end
local function sh(cmd) local ok, _, code = os.execute(cmd); return ok and 0 or code end
-- The records of an out dir, read without writing its summary.md.
local function report(path) return (q.report(path, { out = os.tmpname() })) end
local function sweep_cmd(opts, out, extra)
  return string.format("%q sweep %s %q %q %s", qlora, opts, script, out, extra or "")
end

-- What must agree between runs: id, config, status, metrics, error (not the durations).
local function essence(rows)
  local parts = {}
  for i, r in ipairs(rows) do
    local m = r.metrics or {}
    parts[i] = string.format("%s|a=%s|b=%s|seed=%s|%s|value=%s|mseed=%s|%s", r.id, tostring(r.config.a), tostring(r.config.b),
      tostring(r.config.seed), r.status, tostring(m.value), tostring(m.seed), tostring(r.error and r.error:match("[^\n]*"):gsub("^.-:%d+: ", "")))
  end
  return table.concat(parts, "\n")
end

local reference
local function unsharded()
  if reference then return reference end
  local out = tmpdir()
  T.eq(sh(sweep_cmd("", out .. "/s") .. " > " .. out .. "/log 2>&1"), 0, "the unsharded sweep's exit status")
  reference = essence(report(out .. "/s"))
  assert(reference:find("a=2,b=yy|a=2|b=yy|seed=%d+|error|value=nil"), reference)
  T.eq(select(2, reference:gsub("|ok|", "")), 5, "five points ok")
  return reference
end

T.case("three shards (two at once, one killed by SIGKILL and run again) give the unsharded sweep's records", function()
  local want = unsharded()
  local out = tmpdir()
  local s = out .. "/s"
  -- shards 0 and 1 at once; shard 1 takes its shard from a Slurm array's variables
  T.eq(sh(sweep_cmd("--shard 0/3", s) .. " > " .. out .. "/log0 2>&1 & " ..
    "SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=3 " .. sweep_cmd("", s) .. " > " .. out .. "/log1 2>&1; s1=$?; wait $! ; " ..
    "wait; exit $s1"), 0, "shards 0 and 1")
  local log0, log1 = read(out .. "/log0"), read(out .. "/log1")
  assert(log0:find("shard 0/3: 2 of 6 points, 0 done earlier, 2 to run", 1, true), log0)
  assert(log1:find("qlora sweep: running shard 1/3, from SLURM_ARRAY_TASK_ID=1, SLURM_ARRAY_TASK_COUNT=3", 1, true), log1)
  assert(log1:find("shard 1/3: 2 of 6 points, 0 done earlier, 2 to run", 1, true), log1)
  -- shard 2 holds a=2,b=x (index 2) and a=3,b=yy (index 5): kill it while the second one runs
  local slow_dir = s .. "/points/a=3,b=yy"
  local killer = string.format("%s > %q 2>&1 & pid=$!; n=0; while [ ! -e %q ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done; " ..
    "kill -9 $pid; wait $pid; exit 0", sweep_cmd("--shard 2/3", s, "a=3,b=yy"), out .. "/log2", slow_dir .. "/started")
  T.eq(sh(killer), 0)
  assert(exists(slow_dir .. "/started"), "the slow point started")
  assert(not exists(slow_dir .. "/record.json"), "the killed point has no record")
  assert(exists(s .. "/points/a=2,b=x/record.json"), "the shard's first point was recorded before the kill")
  local partial = report(s)
  T.eq(#partial, 5, "the union holds the five points recorded so far")
  os.execute("sleep 0.3")  -- the killed shard's worker notices within 0.1 s
  T.eq(sh(sweep_cmd("--shard 2/3", s) .. " > " .. out .. "/log2b 2>&1"), 0, "shard 2 run again")
  local log2b = read(out .. "/log2b")
  assert(log2b:find("shard 2/3: 2 of 6 points, 1 done earlier, 1 to run", 1, true), log2b)
  T.eq(essence(report(s)), want, "the union of the shards")
  T.eq(essence(report(s .. "/results.jsonl")), want, "the same through results.jsonl's path")
  -- every file in out belongs to one shard (or one point of it): no results.jsonl, a summary each,
  -- and a lock file each (a shard locks its own, so shards of one sweep run at once)
  assert(not exists(s .. "/results.jsonl"), "shards do not write results.jsonl")
  for i = 0, 2 do assert(exists(s .. "/summary.shard-" .. i .. "-of-3.md"), "shard " .. i .. "'s summary") end
  assert(not exists(s .. "/summary.md"), "no shard wrote the shared summary")
  local names = q.listdir(s)
  T.eq(table.concat(names, " "), ".lock.shard-0-of-3 .lock.shard-1-of-3 .lock.shard-2-of-3 points "
    .. "summary.shard-0-of-3.md summary.shard-1-of-3.md summary.shard-2-of-3.md", "files in out")
  -- an unsharded run afterwards finds every point done and reports the union
  local code = sh(sweep_cmd("", s) .. " > " .. out .. "/log3 2>&1")
  T.eq(code, 0)
  assert(read(out .. "/log3"):find("6 points, 5 done earlier, 1 to run", 1, true), read(out .. "/log3"))
  T.eq(essence(report(s)), want, "after the unsharded run (it ran the failed point again)")
  assert(exists(s .. "/summary.md"), "the unsharded run's summary")
end)

T.case("bad shards are usage errors", function()
  local out = tmpdir()
  for _, bad in ipairs({ "3/3", "-1/2", "1", "a/b", "0/0" }) do
    local code = sh(sweep_cmd("--shard=" .. bad, out .. "/s") .. " > " .. out .. "/log 2>&1")
    T.eq(code, 2, "--shard " .. bad)
    assert(read(out .. "/log"):find("--shard expects I/N", 1, true), read(out .. "/log"))
  end
  T.eq(sh("SLURM_ARRAY_TASK_ID=5 SLURM_ARRAY_TASK_COUNT=3 " .. sweep_cmd("", out .. "/s") .. " > " .. out .. "/log 2>&1"), 2)
  assert(read(out .. "/log"):find("SLURM_ARRAY_TASK_ID=5 is not task 0...2", 1, true), read(out .. "/log"))
  -- QLORA_SWEEP_SHARD set by hand is checked by q.sweep itself
  T.eq(sh("QLORA_SWEEP_SHARD=4/2 " .. string.format("%q run %q %q", qlora, script, out .. "/s") .. " > " .. out .. "/log 2>&1"), 1)
  assert(read(out .. "/log"):find("QLORA_SWEEP_SHARD must be I/N", 1, true), read(out .. "/log"))
end)

T.case("--slurm prints an sbatch array script that passes bash -n and, run per task, gives the same records", function()
  local want = unsharded()
  local out = tmpdir()
  local s = out .. "/my sweep"
  local file = out .. "/job.sbatch"
  T.eq(sh(sweep_cmd("--slurm --partition cpu --time 1:00:00 --cpus 2", s) .. " > " .. file .. " 2> " .. out .. "/err"), 0, read(out .. "/err"))
  local text = read(file)
  assert(text:find("^#!/bin/bash\n"), text)
  assert(text:find("\n#SBATCH --array=0-5\n", 1, true), text)
  assert(text:find("\n#SBATCH --partition=cpu\n", 1, true) and text:find("\n#SBATCH --time=1:00:00\n", 1, true)
    and text:find("\n#SBATCH --cpus-per-task=2\n", 1, true), text)
  assert(not exists(s), "counting the points ran nothing")
  T.eq(sh("bash -n " .. file), 0, "bash -n")
  T.eq(sh(sweep_cmd("--slurm --shards 4", s) .. " > " .. file .. " 2>&1"), 0)
  text = read(file)
  assert(text:find("\n#SBATCH --array=0-3\n", 1, true), text)
  assert(text:find('--shard "${SLURM_ARRAY_TASK_ID}/4"', 1, true), text)
  T.eq(sh("bash -n " .. file), 0, "bash -n")
  -- what each array task would run, here one after another
  for i = 0, 3 do
    T.eq(sh(string.format("SLURM_ARRAY_TASK_ID=%d SLURM_CPUS_PER_TASK=1 bash %q > %q 2>&1", i, file, out .. "/task" .. i)), 0,
      read(out .. "/task" .. i))
  end
  T.eq(essence(report(s)), want, "the array's records")
  -- a script that never reaches q.sweep cannot be counted
  write(out .. "/nosweep.lua", "print('no sweep here')\n")
  T.eq(sh(string.format("%q sweep %q --slurm > %q 2>&1", qlora, out .. "/nosweep.lua", out .. "/log")), 1)
  assert(read(out .. "/log"):find("the script ended without calling q.sweep", 1, true), read(out .. "/log"))
  T.eq(sh(string.format("%q sweep %q --slurm --shard 0/2 > %q 2>&1", qlora, script, out .. "/log")), 2)
  T.eq(sh(string.format("%q sweep %q --time 'a b' --slurm > %q 2>&1", qlora, script, out .. "/log")), 2)
end)

T.done()
