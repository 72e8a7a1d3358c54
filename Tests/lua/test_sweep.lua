-- q.sweep and q.report. Sweeps run in child `qlora run` processes (scripts/sweep_points.lua,
-- scripts/sweep_model.lua), since each worker runs its script again from the top: points that
-- fail in every way (error, NaN, exit status, signal) are recorded and the rest complete; done
-- points are skipped on a re-run; a sweep killed with SIGKILL finishes only the missing points;
-- QLORA_SWEEP_PARALLEL overrides `parallel`; a tiny 4-bit model sweep trains and saves adapters.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local here = arg[0]:match("(.*/)") or "./"
local qlora = arg[-1]

local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); return d end
local function read(p) local f = io.open(p, "rb"); if not f then return nil end local s = f:read("a"); f:close(); return s end
local function write(p, s) local f = assert(io.open(p, "wb")); f:write(s); f:close() end
local function lines(p)
  local out = {}
  for line in (read(p) or ""):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end
local function count(list, value)
  local n = 0
  for _, x in ipairs(list) do if x == value then n = n + 1 end end
  return n
end
-- Runs a sweep script to the end; returns its exit status and output.
local function run_script(script, out, mode, env)
  local cmd = string.format("%s%q run %q %q %s > %q 2>&1", env or "", qlora, here .. "scripts/" .. script, out, mode or "", out .. "/parent.txt")
  local ok, _, code = os.execute(cmd)
  return ok and 0 or code, read(out .. "/parent.txt") or ""
end
-- The lists q.sweep returned in the child, by sweep name (the last run's).
local function returned(out)
  local env = { R = {} }
  assert(load(read(out .. "/returned.lua") or "", "returned", "t", env))()
  return env.R
end
local function by_id(list)
  local t = {}
  for _, r in ipairs(list) do t[r.id] = r end
  return t
end

T.case("failing points are recorded (error, NaN, exit status, signal) and the others complete", function()
  local out = tmpdir()
  local code, text = run_script("sweep_points.lua", out, "mixed")
  T.eq(code, 0, "the sweep script's exit status")
  assert(text:find("7 points, 0 done earlier, 7 to run, 2 at a time", 1, true), text)
  local rows = q.report(out .. "/mixed/results.jsonl")
  T.eq(#rows, 7, "records in results.jsonl")
  local r = by_id(rows)
  T.eq(r["case=a"].status, "ok"); T.eq(r["case=a"].metrics.value, 1)
  T.eq(r["case=b"].status, "ok"); T.eq(r["case=b"].metrics.out_ok, true, "cfg.out exists when run starts")
  T.eq(r["case=error"].status, "error")
  assert(r["case=error"].error:find("this point fails on purpose", 1, true), r["case=error"].error)
  T.eq(r["case=nan"].status, "error"); T.eq(r["case=nan"].error, "metric 'value' is NaN")
  T.eq(r["case=exit"].status, "error")
  assert(r["case=exit"].error:find("worker exited with status 3", 1, true), r["case=exit"].error)
  T.eq(r["case=exit0"].status, "error")
  assert(r["case=exit0"].error:find("run ended the worker process before returning", 1, true), r["case=exit0"].error)
  T.eq(r["case=kill"].status, "error")
  assert(r["case=kill"].error:find("killed by signal 9 (SIGKILL)", 1, true), r["case=kill"].error)
  for _, row in ipairs(rows) do
    assert(type(row.duration_s) == "number" and row.duration_s >= 0, "duration_s")
    assert(math.type(row.config.seed) == "integer", "each config carries its seed")
    assert(read(out .. "/mixed/points/" .. row.id .. "/log.txt"), "a log per point")
  end
  T.eq(r["case=a"].metrics.nested.seed, r["case=a"].config.seed, "nested metrics and cfg.seed")
  assert(r["case=a"].config.seed ~= r["case=b"].config.seed, "points get different seeds")
  -- the returned list: all points in point order (grid values in the order given)
  local R = returned(out)
  local ids = {}
  for i, x in ipairs(R.mixed) do ids[i] = x.id end
  T.eq(table.concat(ids, " "), "case=a case=b case=error case=nan case=exit case=kill case=exit0", "point order")
  T.eq(R.mixed[1].seed, r["case=a"].config.seed, "the returned list matches the file")
  -- the parent logs start and finish of each point
  assert(text:find("[sweep] start case=a", 1, true) and text:find("[sweep] ok    case=a in", 1, true), text)
  assert(text:find("[sweep] FAIL  case=exit after", 1, true), text)
  -- top level ran once in the parent, once per worker of each sweep (7 + 2);
  -- the second sweep's workers did not run the first sweep's points again
  T.eq(#lines(out .. "/top.txt"), 1 + 7 + 2, "runs of the script's top level")
  local ran = lines(out .. "/ran.txt")
  T.eq(count(ran, "mixed a"), 1, "point a ran once"); T.eq(count(ran, "second 1"), 1); T.eq(count(ran, "second 2"), 1)
  T.eq(#R.second, 2); T.eq(R.second[2].value, 20)
end)

T.case("a re-run skips points recorded ok; deleting a line re-runs only that point", function()
  local out = tmpdir()
  T.eq((run_script("sweep_points.lua", out, "ok")), 0)
  T.eq(#lines(out .. "/ran.txt"), 2, "first run")
  local code, text = run_script("sweep_points.lua", out, "ok")
  T.eq(code, 0)
  assert(text:find("2 points, 2 done earlier, 0 to run", 1, true), text)
  T.eq(#lines(out .. "/ran.txt"), 2, "nothing ran again")
  local R = returned(out)
  T.eq(#R.ok, 2, "skipped points are in the returned list"); T.eq(R.ok[1].id, "a=x,b=1"); T.eq(R.ok[2].value, 2.5)
  -- drop the record of b=2: only that point runs
  local kept = {}
  for _, line in ipairs(lines(out .. "/ok/results.jsonl")) do
    if not line:find('"id":"a=x,b=2"', 1, true) then kept[#kept + 1] = line end
  end
  T.eq(#kept, 1)
  write(out .. "/ok/results.jsonl", table.concat(kept, "\n") .. "\n")
  T.eq((run_script("sweep_points.lua", out, "ok")), 0)
  local ran = lines(out .. "/ran.txt")
  T.eq(#ran, 3); T.eq(ran[3], "ok 2")
  T.eq(#q.report(out .. "/ok"), 2, "results.jsonl complete again")
end)

T.case("a re-run with another sweep seed runs the points again (their configs changed)", function()
  local out = tmpdir()
  T.eq((run_script("sweep_points.lua", out, "reseed 5")), 0)
  local seeds = {}
  for _, r in ipairs(returned(out).ok) do seeds[r.id] = r.seed end
  local code, text = run_script("sweep_points.lua", out, "reseed 6")
  T.eq(code, 0)
  assert(text:find("2 point(s) recorded with another config run again", 1, true), text)
  T.eq(#lines(out .. "/ran.txt"), 4, "both points ran again")
  for _, r in ipairs(returned(out).ok) do
    assert(r.seed ~= seeds[r.id], "point " .. r.id .. " kept seed " .. tostring(r.seed))
  end
  T.eq((run_script("sweep_points.lua", out, "reseed 6")), 0)
  T.eq(#lines(out .. "/ran.txt"), 4, "same seed: nothing ran again")
end)

T.case("a sweep killed with SIGKILL (parent and workers) finishes only the missing points when run again", function()
  local out = tmpdir()
  local cmd = string.format("%q run %q %q slow > %q 2>&1 & echo $! > %q", qlora, here .. "scripts/sweep_points.lua", out,
    out .. "/parent.txt", out .. "/pid")
  assert(os.execute(cmd))
  local pid = tonumber(read(out .. "/pid"))
  local waited = 0
  while #lines(out .. "/slow/results.jsonl") < 1 and waited < 200 do os.execute("sleep 0.05"); waited = waited + 1 end
  assert(#lines(out .. "/slow/results.jsonl") >= 1, "a point finished")
  os.execute("kill -9 " .. pid)
  os.execute("sleep 0.4")  -- the running worker notices its parent is gone within 0.1 s
  local done_before = {}
  for _, row in ipairs(q.report(out .. "/slow")) do if row.status == "ok" then done_before[row.config.i] = true end end
  local ran_before = #lines(out .. "/ran.txt")
  assert(not done_before[4], "killed before the last point")
  os.execute("sleep 0.5")
  T.eq(#lines(out .. "/ran.txt"), ran_before, "no worker outlived the killed parent")
  T.eq((run_script("sweep_points.lua", out, "slow")), 0)
  local rerun = {}
  local ran = lines(out .. "/ran.txt")
  for k = ran_before + 1, #ran do rerun[tonumber(ran[k]:match("%d+"))] = true end
  for i = 1, 4 do
    T.eq(rerun[i] == true, not done_before[i], "point " .. i .. " ran again exactly when it was missing")
  end
  local rows = q.report(out .. "/slow")
  T.eq(#rows, 4)
  for _, row in ipairs(rows) do T.eq(row.status, "ok") end
end)

T.case("QLORA_SWEEP_PARALLEL overrides parallel", function()
  local out = tmpdir()
  local code, text = run_script("sweep_points.lua", out, "overlap", "QLORA_SWEEP_PARALLEL=3 ")
  T.eq(code, 0)
  assert(text:find("3 points, 0 done earlier, 3 to run, 3 at a time", 1, true), text)
  local rows = q.report(out .. "/overlap")
  local first_end, last_start = math.huge, -math.huge
  for _, r in ipairs(rows) do
    first_end = math.min(first_end, r.metrics.ended); last_start = math.max(last_start, r.metrics.started)
  end
  assert(last_start < first_end, "the three points ran at the same time")
  local bad = tmpdir()
  local code2, text2 = run_script("sweep_points.lua", bad, "overlap", "QLORA_SWEEP_PARALLEL=0 ")
  T.eq(code2, 1)
  assert(text2:find("qlora.sweep: QLORA_SWEEP_PARALLEL must be an integer in 1...1024, got '0'", 1, true), text2)
end)

T.case("random search: seeded, in range, stable ids", function()
  local out = tmpdir()
  T.eq((run_script("sweep_points.lua", out, "random")), 0)
  local first = returned(out).random
  T.eq(#first, 4)
  for i, r in ipairs(first) do
    T.eq(r.status, "ok", r.id .. " " .. r.error)
    assert(r.id:match("^00" .. i .. ",layers=[123],lr=[%d%.e%-]+,r=%d+$"), r.id)
  end
  local code, text = run_script("sweep_points.lua", out, "random")
  T.eq(code, 0)
  assert(text:find("4 points, 4 done earlier, 0 to run", 1, true), "the same seed draws the same points: " .. text)
end)

T.case("a tiny 4-bit model sweep trains each rank and saves its adapter", function()
  local out = tmpdir()
  local code, text = run_script("sweep_model.lua", out)
  T.eq(code, 0, text)
  local rows = q.report(out .. "/sweep", { sort = "r" })
  T.eq(#rows, 2)
  for _, r in ipairs(rows) do
    T.eq(r.status, "ok", r.id .. ": " .. tostring(r.error))
    T.eq(r.metrics.steps, 4)
    assert(r.metrics.eval_loss > 0 and r.metrics.eval_loss < 10, "eval loss")
    assert(read(out .. "/sweep/points/" .. r.id .. "/adapter/adapter_config.json"), "adapter saved in cfg.out")
  end
  assert(text:find("eval_loss", 1, true) and text:find("r=4", 1, true), text)
end)

T.case("a point past the timeout is stopped and recorded; the others complete", function()
  local out = tmpdir()
  local t0 = q.clock()
  local code, text = run_script("sweep_points.lua", out, "timeout")
  T.eq(code, 0, "the sweep script's exit status")
  assert(q.clock() - t0 < 20, "the sweep waited for the slow point instead of stopping it")
  local r = by_id(q.report(out .. "/timeout/results.jsonl"))
  T.eq(r["wait=0"].status, "ok")
  T.eq(r["wait=30"].status, "error")
  assert(r["wait=30"].error:find("timed out after 1s", 1, true), r["wait=30"].error)
  assert(r["wait=30"].error:find("waiting 30 s", 1, true), "the log's last lines are in the error")
  T.eq(count(lines(out .. "/ran.txt"), "timeout 30"), 0, "the stopped point never finished")
  local pid = tonumber(read(out .. "/sleep.pid") or "")
  assert(pid, "the point recorded the pid of the process it started")
  -- gone, or a zombie (dead; reaping it is up to whoever adopted it)
  local stat = read("/proc/" .. pid .. "/stat")
  assert(stat == nil or stat:match("^%d+ %b() (%a)") == "Z", "the point's own process " .. pid .. " outlived the stopped worker: " .. tostring(stat))
  q.rmtree(out)
end)

T.case("bad sweep options are clear errors", function()
  local run = function() return {} end
  T.errors(function() q.sweep("x") end, "qlora.sweep: expected a table of options")
  T.errors(function() q.sweep{ grid = { a = { 1 } }, run = run } end, "qlora.sweep: missing option 'out'")
  T.errors(function() q.sweep{ out = "o", run = run } end, "qlora.sweep: give the points as grid")
  T.errors(function() q.sweep{ out = "o", run = run, grid = {} } end, "qlora.sweep: grid is empty")
  T.errors(function() q.sweep{ out = "o", run = run, grid = { a = {} } } end, "grid.a must be a non-empty list")
  T.errors(function() q.sweep{ out = "o", run = run, grid = { a = { print } } } end, "grid.a[1] must be a number")
  T.errors(function() q.sweep{ out = "o", run = run, grid = { out = { 1 } } } end, "grid key 'out' is reserved")
  T.errors(function() q.sweep{ out = "o", run = 3, grid = { a = { 1 } } } end, "qlora.sweep: option 'run' must be a function")
  T.errors(function() q.sweep{ out = "o", run = run, grid = { a = { 1 } }, parallel = 0 } end, "option 'parallel' must be an integer in 1...1024")
  T.errors(function() q.sweep{ out = "o", run = run, grid = { a = { 1 } }, parallel = "2" } end, "got a string")
  T.errors(function() q.sweep{ out = "o", run = run, grid = { a = { 1 } }, paralel = 2 } end, "unknown option 'paralel'")
  T.errors(function() q.sweep{ out = "o", run = run, grid = { a = { 1 } }, timeout = 0 } end, "option 'timeout' must be a number of seconds > 0")
  T.errors(function() q.sweep{ out = "o", run = run, grid = { a = { 1 } }, timeout = 0 / 0 } end, "option 'timeout'")
  T.errors(function() q.sweep{ out = "o", run = run, grid = { a = { 1 } }, random = { n = 1, space = { b = { 1 } } } } end, "not both")
  T.errors(function() q.sweep{ out = "o", run = run, random = { n = 0, space = { b = { 1 } } } } end, "random.n must be an integer")
  T.errors(function() q.sweep{ out = "o", run = run, random = { n = 2, space = { b = { min = 0, max = 1, log = true } } } } end,
    "log = true needs min > 0")
  T.errors(function() q.sweep{ out = "o", run = run, random = { n = 2, space = { b = { min = 2, max = 1 } } } } end, "min (2) is greater than max (1)")
end)

local sample = {
  { id = "lr=0.001,r=8", config = { r = 8, lr = 0.001, seed = 11 }, status = "ok", duration_s = 1.5,
    metrics = { eval_loss = 2.3456789, tokens_per_sec = 12345.678, steps = 200, extra = { peak = 0.000012 } } },
  { id = "lr=0.001,r=16", config = { r = 16, lr = 0.001, seed = 12 }, status = "error", duration_s = 0.2, metrics = {},
    error = "worker killed by signal 9 (SIGKILL)\nlast lines of its log" },
  { id = "lr=0.01,r=8", config = { r = 8, lr = 0.01, seed = 13 }, status = "ok", duration_s = 1.2,
    metrics = { eval_loss = 1.25, tokens_per_sec = 999.5, steps = 200, extra = { peak = 3 } } },
}

T.case("q.report: aligned table, sort, columns, summary.md", function()
  local dir = tmpdir()
  local rows, text, path = q.report(sample, { sort = "eval_loss", out = dir .. "/table.md" })
  T.eq(path, dir .. "/table.md")
  T.eq(rows[1].id, "lr=0.01,r=8"); T.eq(rows[2].id, "lr=0.001,r=8"); T.eq(rows[3].id, "lr=0.001,r=16", "failed rows last")
  local expected = table.concat({
    "   lr   r  eval_loss  extra.peak  steps  tokens_per_sec  error",
    "-----  --  ---------  ----------  -----  --------------  -----------------------------------",
    " 0.01   8       1.25           3    200           999.5",
    "0.001   8      2.346   1.200e-05    200           12346",
    "0.001  16                                                worker killed by signal 9 (SIGKILL)",
  }, "\n")
  T.eq(text, expected, "text table")
  local md = read(dir .. "/table.md")
  assert(md:find("3 points: 2 ok, 1 failed. Sorted by eval_loss (ascending).", 1, true), md)
  assert(md:find("| lr | r | eval_loss | extra.peak | steps | tokens_per_sec | error |\n|---:|---:|---:|---:|---:|---:|---|\n| 0.01 | 8 | 1.25 | 3 | 200 | 999.5 |  |", 1, true), md)
  local desc = q.report(sample, { sort = "-tokens_per_sec", columns = { "r", "tokens_per_sec", "status" } })
  T.eq(desc[1].id, "lr=0.001,r=8"); T.eq(desc[3].status, "error")
  local _, narrow = q.report(sample, { columns = { "id", "status" } })
  T.eq(narrow, "id             status\n-------------  ------\nlr=0.001,r=8   ok\nlr=0.001,r=16  error\nlr=0.01,r=8    ok")
  T.errors(function() q.report(sample, { sortt = "x" }) end, "qlora.report: unknown option 'sortt'")
  T.errors(function() q.report(42) end, "qlora.report: expected the results of q.sweep or a path")
  T.errors(function() q.report(dir .. "/nowhere") end, "qlora.report:", "nowhere/results.jsonl: cannot open")
  T.errors(function() q.report(sample, { columns = {} }) end, "option 'columns' must be a non-empty list")
  local none, none_text = q.report({}, { out = dir .. "/none.md" })
  T.eq(#none, 0); T.eq(none_text, "(no sweep results)")
end)

T.case("q.report on a results path writes summary.md next to it", function()
  local out = tmpdir()
  T.eq((run_script("sweep_points.lua", out, "ok")), 0)
  local rows, text = q.report(out .. "/ok/results.jsonl", { sort = "-value" })
  T.eq(rows[1].id, "a=x,b=2")
  assert(text:find("a  b  value", 1, true), text)
  local md = read(out .. "/ok/summary.md")
  assert(md and md:find("| a | b | value |", 1, true) and md:find("| x | 2 | 2.5 |", 1, true), tostring(md))
end)

T.done()
