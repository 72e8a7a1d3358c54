// q.sweep, written in Lua over the helpers in SweepBindings.swift. The points of a grid (or of
// a seeded random search) get a fixed order and a stable id ("alpha=16,r=8"). Each point runs
// in its own process: this executable runs the same script again with QLORA_SWEEP_* variables
// naming the sweep (by its out dir) and the point; in that worker, the matching q.sweep call
// runs only run(cfg), writes the result as JSON and exits. The parent keeps `parallel` workers
// busy, records each finished point and skips points already recorded as "ok", so a sweep that
// was stopped resumes where it was. A point's record is written to its own file,
// out/points/<dir>/record.json (a temp file renamed into place); an unsharded run also appends it
// to out/results.jsonl. A shard (QLORA_SWEEP_SHARD=I/N, set by `qlora sweep --shard`) runs only
// its points and writes only their files, so shards of one sweep can share the out dir.

let sweepSource = #"""
local q, sys = ...

local allowed = { grid = true, random = true, run = true, parallel = true, out = true, seed = true, timeout = true }
local reserved = { out = true }
-- Most workers at once, most points of a grid, and the largest magnitude an integer = true
-- random range may reach (beyond it floats no longer hold every integer).
local max_parallel, max_points, max_exact_integer = 1024, 100000, 2 ^ 53

-- Result lists returned by q.sweep -> their out dir (so q.report can write summary.md there).
sys.result_dirs = setmetatable({}, { __mode = "k" })

-- Keys of t in a stable order (shared with q.report's chunk, which is loaded after this one).
function sys.sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end
local sorted_keys = sys.sorted_keys

local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

local function is_scalar(v)
  local t = type(v)
  return t == "string" or t == "boolean" or (t == "number" and v == v and v ~= math.huge and v ~= -math.huge)
end

-- nil when v is a value a point may take (a finite number, string, boolean, or a list of those).
local function bad_value(v)
  if is_scalar(v) then return nil end
  if is_list(v) and #v > 0 then
    for _, x in ipairs(v) do if not is_scalar(x) then return "a list holding a " .. type(x) end end
    return nil
  end
  if type(v) == "number" then return tostring(v) end
  return "a " .. type(v)
end

local function format_value(v, digits)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = format_value(x, digits) end
    return table.concat(parts, "+")
  end
  if math.type(v) == "float" then return string.format("%." .. digits .. "g", v) end
  return tostring(v)
end

local function hash64(s)
  local h = 0xcbf29ce484222325
  for i = 1, #s do h = (h ~ s:byte(i)) * 0x100000001b3 end
  return h
end

-- splitmix64's finalizer: every input bit affects every output bit.
local function mix64(z)
  z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
  z = (z ~ (z >> 27)) * 0x94d049bb133111eb
  return z ~ (z >> 31)
end

-- splitmix64: a uniform number in [0, 1) per call, the same sequence for the same seed.
local function uniform_stream(seed)
  local state = hash64("random:" .. tostring(seed))
  return function()
    state = state + 0x9e3779b97f4a7c15
    return (mix64(state) >> 11) * (1.0 / 9007199254740992.0)
  end
end

local function check_options(opts)
  if type(opts) ~= "table" then return "expected a table of options, got " .. type(opts) end
  for k in pairs(opts) do
    if not allowed[k] then
      return "unknown option '" .. tostring(k) .. "' (expected grid, random, run, parallel, out, seed, timeout)"
    end
  end
  if opts.out == nil then return "missing option 'out' (the sweep's directory)" end
  if type(opts.out) ~= "string" or opts.out == "" then return "option 'out' must be a non-empty string" end
  if type(opts.run) ~= "function" then return "option 'run' must be a function (cfg) -> metrics, got " .. type(opts.run) end
  local p = opts.parallel
  if p ~= nil and (type(p) ~= "number" or math.tointeger(p) == nil or p < 1 or p > max_parallel) then
    return "option 'parallel' must be an integer in 1..." .. max_parallel .. ", got " .. (type(p) == "number" and tostring(p) or "a " .. type(p))
  end
  local t = opts.timeout
  if t ~= nil and (type(t) ~= "number" or not (t > 0) or t == math.huge) then
    return "option 'timeout' must be a number of seconds > 0, got " .. tostring(t)
  end
  local s = opts.seed
  if s ~= nil and (type(s) ~= "number" or math.tointeger(s) == nil or s < 0) then
    return "option 'seed' must be an integer >= 0, got " .. tostring(s)
  end
  if opts.grid == nil and opts.random == nil then return "give the points as grid = {key = {values...}} or random = {n =, space =}" end
  if opts.grid ~= nil and opts.random ~= nil then return "give grid or random, not both" end
  if opts.grid ~= nil then
    if type(opts.grid) ~= "table" then return "option 'grid' must be a table {key = {values...}}" end
    if next(opts.grid) == nil then return "grid is empty (expected {key = {values...}, ...})" end
    local count = 1.0
    for k, vs in pairs(opts.grid) do
      if type(k) ~= "string" then return "grid keys must be strings, got " .. type(k) end
      if reserved[k] then return "grid key '" .. k .. "' is reserved (each point's cfg.out is its own directory)" end
      if not is_list(vs) or #vs == 0 then return "grid." .. k .. " must be a non-empty list of values" end
      for i, v in ipairs(vs) do
        local bad = bad_value(v)
        if bad then return string.format("grid.%s[%d] must be a number, string, boolean or a list of those, got %s", k, i, bad) end
      end
      count = count * #vs
    end
    if count > max_points then
      return string.format("the grid has %.0f points (at most %d): split it into several sweeps", count, max_points)
    end
  else
    local r = opts.random
    if type(r) ~= "table" then return "option 'random' must be a table {n = N, space = {...}}" end
    for k in pairs(r) do
      if k ~= "n" and k ~= "space" then return "unknown field random." .. tostring(k) .. " (expected n, space)" end
    end
    if type(r.n) ~= "number" or math.tointeger(r.n) == nil or r.n < 1 or r.n > max_points then
      return "random.n must be an integer in 1..." .. max_points .. ", got " .. tostring(r.n)
    end
    if type(r.space) ~= "table" or next(r.space) == nil then return "random.space must be a non-empty table {key = {values...} | {min =, max =}}" end
    for k, spec in pairs(r.space) do
      if type(k) ~= "string" then return "random.space keys must be strings, got " .. type(k) end
      if reserved[k] then return "random.space key '" .. k .. "' is reserved" end
      local where = "random.space." .. k
      if type(spec) ~= "table" then return where .. " must be a list of values or {min =, max = [, log = true] [, integer = true]}" end
      if spec.min ~= nil or spec.max ~= nil then
        for f in pairs(spec) do
          if f ~= "min" and f ~= "max" and f ~= "log" and f ~= "integer" then return "unknown field " .. where .. "." .. tostring(f) .. " (expected min, max, log, integer)" end
        end
        if not is_scalar(spec.min) or type(spec.min) ~= "number" or type(spec.max) ~= "number" or not is_scalar(spec.max) then
          return where .. " needs finite numbers min and max"
        end
        if spec.min > spec.max then return where .. ": min (" .. spec.min .. ") is greater than max (" .. spec.max .. ")" end
        if spec.log ~= nil and type(spec.log) ~= "boolean" then return where .. ".log must be a boolean" end
        if spec.integer ~= nil and type(spec.integer) ~= "boolean" then return where .. ".integer must be a boolean" end
        if spec.log and spec.min <= 0 then return where .. ": log = true needs min > 0" end
        if spec.integer then
          if math.abs(spec.min) > max_exact_integer or math.abs(spec.max) > max_exact_integer then
            return where .. ": integer = true needs min and max within -2^53...2^53"
          end
          if math.ceil(spec.min) > math.floor(spec.max) then
            return where .. ": no integer between min (" .. spec.min .. ") and max (" .. spec.max .. ")"
          end
        end
      else
        if not is_list(spec) or #spec == 0 then return where .. " must be a non-empty list of values or {min =, max =}" end
        for i, v in ipairs(spec) do
          local bad = bad_value(v)
          if bad then return string.format("%s[%d] must be a number, string, boolean or a list of those, got %s", where, i, bad) end
        end
      end
    end
  end
  return nil
end

local function grid_points(grid)
  local keys = sorted_keys(grid)
  local configs = { {} }
  for _, k in ipairs(keys) do  -- the first key varies slowest
    local grown = {}
    for _, c in ipairs(configs) do
      for _, v in ipairs(grid[k]) do
        local d = {}
        for kk, vv in pairs(c) do d[kk] = vv end
        d[k] = v
        grown[#grown + 1] = d
      end
    end
    configs = grown
  end
  local points = {}
  for i, c in ipairs(configs) do
    local parts = {}
    for j, k in ipairs(keys) do parts[j] = k .. "=" .. format_value(c[k], 10) end
    points[i] = { id = table.concat(parts, ","), config = c }
  end
  return points, keys
end

local function random_points(r, seed)
  local keys = sorted_keys(r.space)
  local u = uniform_stream(seed)
  local points = {}
  for i = 1, math.tointeger(r.n) do
    local c, parts = {}, { string.format("%03d", i) }
    for _, k in ipairs(keys) do
      local spec = r.space[k]
      local v
      if spec.min ~= nil then
        local x = u()
        if spec.log then v = math.exp(math.log(spec.min) + x * (math.log(spec.max) - math.log(spec.min)))
        else v = spec.min + x * (spec.max - spec.min) end
        if spec.integer then
          v = spec.log and math.floor(v + 0.5) or math.floor(spec.min + x * (spec.max - spec.min + 1))
          v = math.tointeger(math.max(math.ceil(spec.min), math.min(math.floor(spec.max), v)))
        end
      else
        v = spec[math.min(#spec, math.floor(u() * #spec) + 1)]
      end
      c[k] = v
      parts[#parts + 1] = k .. "=" .. format_value(v, 4)
    end
    points[i] = { id = table.concat(parts, ","), config = c }
  end
  return points, keys
end

-- Ids made unique and safe as directory names; each config gets seed and out.
local function finish_points(points, keys, opts)
  local seen, swept_seed = {}, false
  for _, k in ipairs(keys) do if k == "seed" then swept_seed = true end end
  for i, p in ipairs(points) do
    p.index = i
    local id = p.id
    if seen[id] then
      local n = 2
      while seen[id .. "~" .. n] do n = n + 1 end
      id = id .. "~" .. n
    end
    seen[id] = true
    p.id = id
    local dir = id:gsub("[^%w%.%-%+_=,~]", "_")
    if #dir > 120 then dir = dir:sub(1, 100) .. string.format("~%08x", hash64(id) & 0xffffffff) end
    if not swept_seed then p.config.seed = mix64(hash64(tostring(opts.seed or 0) .. ":" .. id)) & 0x7fffffff end
    p.out = opts.out .. "/points/" .. dir
  end
  return points
end

local function same_config(recorded, config)
  local ok, text = pcall(sys.encode, recorded, "config")
  return ok and text == sys.encode(config, "config")
end

local function point_config(p)
  local c = {}
  for k, v in pairs(p.config) do c[k] = v end
  c.out = p.out
  return c
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

-- Files a decoded record under its id (a later one replaces an earlier, keeping its place in
-- `order`); false when it is not a record.
local function keep_record(by_id, order, r)
  if type(r) ~= "table" or type(r.id) ~= "string" then return false end
  if by_id[r.id] == nil then order[#order + 1] = r.id end
  by_id[r.id] = r
  return true
end

-- Records of results.jsonl by id (the last line for an id wins), the ids in file order and the
-- count of unreadable lines; a file that is not there holds none. A path that cannot be read
-- (a directory) gives nil and the reason.
local function read_records(path)
  local by_id, order, bad = {}, {}, 0
  local f = io.open(path, "r")
  if not f then return by_id, order, bad end
  local ok, err = pcall(function()
    for line in f:lines() do
      if line:find("%S") then
        if not keep_record(by_id, order, sys.decode(line)) then bad = bad + 1 end
      end
    end
  end)
  f:close()
  if not ok then return nil, path .. ": cannot read (" .. tostring(err):gsub("^[^:]*:%d+: ", "") .. ")" end
  return by_id, order, bad
end
sys.read_records = read_records

-- Sharding -----------------------------------------------------------------------------------
-- Shard I of N (0 <= I < N) runs the points whose 0-based index i has i % N == I. A run's
-- shard comes from QLORA_SWEEP_SHARD ("I/N"; nil when unsharded). Every file a shard writes is
-- its own: its points' directories and records, and a summary named after the shard, so a
-- per-run guard (a lock file) can be named per shard too: sys.shard_tag(shard).
local function shard_setting()
  local env = os.getenv("QLORA_SWEEP_SHARD")
  if env == nil or env == "" then return nil end
  local i, n = env:match("^%s*(%d+)%s*/%s*(%d+)%s*$")
  i, n = math.tointeger(tonumber(i)), math.tointeger(tonumber(n))
  if i == nil or n == nil or n < 1 or n > max_points or i >= n then
    error("qlora.sweep: QLORA_SWEEP_SHARD must be I/N with 0 <= I < N <= " .. max_points .. ", got '" .. env .. "'", 0)
  end
  return { index = i, count = n }
end
sys.shard_setting = shard_setting

-- "shard-I-of-N": names the files that belong to one shard's run.
function sys.shard_tag(shard) return string.format("shard-%d-of-%d", shard.index, shard.count) end

local function in_shard(shard, i) return shard == nil or (i - 1) % shard.count == shard.index end

-- A point's own record file (written whole by rename; one writer per point).
local function record_path(p) return p.out .. "/record.json" end

-- The union of what every run recorded in out: results.jsonl (unsharded runs) and the
-- points/*/record.json files (shards write one per finished point; an unsharded run removes a
-- point's file when it appends the point's line, so a file that is there is the newer). Returns
-- by_id, the ids in point order and the count of unreadable lines or files; nil and the reason
-- when a path cannot be read.
local function read_union(out)
  local by_id, order, bad = read_records(out .. "/results.jsonl")
  if not by_id then return nil, order end
  for _, name in ipairs(q.listdir(out .. "/points")) do
    local text = read_file(out .. "/points/" .. name .. "/record.json")
    if text then
      if not keep_record(by_id, order, sys.decode(text)) then bad = bad + 1 end
    end
  end
  -- In point order (records carry their point's index; older lines without one keep their place
  -- at the end, in file order).
  local position = {}
  for i, id in ipairs(order) do position[id] = i end
  local function key(id)
    local i = by_id[id].index
    return type(i) == "number" and math.tointeger(i) or math.maxinteger
  end
  table.sort(order, function(a, b)
    local ka, kb = key(a), key(b)
    if ka ~= kb then return ka < kb end
    return position[a] < position[b]
  end)
  return by_id, order, bad
end
sys.read_union = read_union

local function results_in_point_order(out, points)
  local by_id, problem = read_union(out)
  if not by_id then error("qlora.sweep: " .. problem, 0) end
  local list = {}
  for _, p in ipairs(points) do
    if by_id[p.id] then list[#list + 1] = by_id[p.id] end
  end
  sys.result_dirs[list] = out
  return list
end

local function find_nonfinite(t, prefix, depth)
  if depth > 32 then return nil end
  for _, k in ipairs(sorted_keys(t)) do
    local v = t[k]
    local name = prefix == "" and tostring(k) or prefix .. "." .. tostring(k)
    if type(v) == "number" and (v ~= v or v == math.huge or v == -math.huge) then
      return name, v ~= v and "NaN" or (v > 0 and "Inf" or "-Inf")
    elseif type(v) == "table" then
      local n, what = find_nonfinite(v, name, depth + 1)
      if n then return n, what end
    end
  end
  return nil
end

local point_running = false

-- In a worker: run this process's point, write its result, exit.
local function run_assigned_point(opts, points, assignment)
  local point
  for _, p in ipairs(points) do if p.id == assignment.point then point = p end end
  local result
  -- Stands until run returns: a worker that ends the process from inside run (os.exit(0))
  -- leaves this behind instead of nothing.
  sys.write_atomic(assignment.result, sys.encode({ ok = false,
    error = "run ended the worker process before returning (os.exit inside run?)" }))
  if not point then
    result = { ok = false, error = "point '" .. assignment.point .. "' is not among this sweep's points (did the grid change?)" }
  else
    q.mkdir(point.out)
    point_running = true
    local ok, metrics = xpcall(opts.run, function(e)
      io.stderr:write(debug.traceback(q.error_text(e), 2), "\n")
      return q.error_text(e)
    end, point_config(point))
    point_running = false
    if not ok then
      result = { ok = false, error = metrics }
    elseif metrics ~= nil and type(metrics) ~= "table" then
      result = { ok = false, error = "run must return a table of metrics (or nothing), got " .. type(metrics) }
    else
      metrics = metrics or {}
      local bad, what = find_nonfinite(metrics, "", 0)
      local encodable, problem = pcall(sys.encode, metrics, "metrics")
      if not encodable then
        result = { ok = false, error = tostring(problem):gsub("^qlora%.sweep: ", "") }
      else
        result = { ok = bad == nil, metrics = metrics }
        if bad then result.error = "metric '" .. bad .. "' is " .. what end
      end
    end
  end
  local ok, text = pcall(sys.encode, result, "result")
  if not ok then text = sys.encode({ ok = false, error = tostring(text) }) end
  io.stdout:flush()
  io.stderr:flush()
  sys.write_atomic(assignment.result, text)
  os.exit(0)
end

local function tail_lines(path, n)
  local text = read_file(path)
  if not text then return "" end
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return table.concat(lines, "\n", math.max(1, #lines - n + 1), #lines)
end

local signal_names = { [1] = "SIGHUP", [2] = "SIGINT", [3] = "SIGQUIT", [4] = "SIGILL", [6] = "SIGABRT", [7] = "SIGBUS",
  [8] = "SIGFPE", [9] = "SIGKILL", [11] = "SIGSEGV", [13] = "SIGPIPE", [15] = "SIGTERM" }

local function say(fmt, ...)
  print(string.format("[sweep] " .. fmt, ...))
  io.stdout:flush()
end

local function first_line(s) return (tostring(s):match("[^\n]*")) end

local function parallel_setting(opts)
  local env = os.getenv("QLORA_SWEEP_PARALLEL")
  if env ~= nil and env ~= "" then
    local n = math.tointeger(tonumber(env))
    if n == nil or n < 1 or n > max_parallel then
      error("qlora.sweep: QLORA_SWEEP_PARALLEL must be an integer in 1..." .. max_parallel .. ", got '" .. env .. "'", 3)
    end
    return n
  end
  return math.tointeger(opts.parallel or 1)
end

-- In the parent: run every point not yet "ok", `parallel` workers at a time.
local function run_points(opts, points, out_abs, parallel, shard)
  local out = opts.out
  q.mkdir(out .. "/points")
  local results_path = out .. "/results.jsonl"
  local done, problem, bad = read_union(out)
  if not done then error("qlora.sweep: " .. problem, 0) end
  if bad > 0 then say("%s: ignoring %d unreadable record(s)", out, bad) end
  local queue, changed, mine = {}, 0, 0
  for i, p in ipairs(points) do
    if in_shard(shard, i) then
      mine = mine + 1
      local r = done[p.id]
      local ok = r and r.status == "ok"
      -- A line for this id with another config (the sweep's seed changed, or the file was edited)
      -- is not this point's result.
      if ok and not same_config(r.config, p.config) then ok, changed = false, changed + 1 end
      if not ok then queue[#queue + 1] = p end
    end
  end
  if changed > 0 then say("%s: %d point(s) recorded with another config run again", out, changed) end
  if shard then
    say("%s: shard %d/%d: %d of %d points, %d done earlier, %d to run, %d at a time", out,
      shard.index, shard.count, mine, #points, mine - #queue, #queue, parallel)
  else
    say("%s: %d points, %d done earlier, %d to run, %d at a time", out, #points, #points - #queue, #queue, parallel)
  end
  if #queue == 0 then return end
  local threads = os.getenv("QLORA_THREADS")
  if threads == nil or threads == "" then threads = tostring(math.max(1, q.threads() // math.min(parallel, #queue))) end
  local running, nrunning, next_index, failed = {}, 0, 1, 0

  local function record(p, started, status, metrics, err)
    local line = '{"id":' .. sys.encode(p.id) .. ',"config":' .. sys.encode(p.config, "config")
      .. ',"status":' .. sys.encode(status) .. ',"metrics":' .. sys.encode(metrics or {}, "metrics")
      .. ',"duration_s":' .. string.format("%.3f", q.clock() - started)
      .. (err and (',"error":' .. sys.encode(err)) or "") .. ',"index":' .. p.index .. "}"
    if shard then
      sys.write_atomic(record_path(p), line)
    else
      -- results.jsonl now holds the newest record of p; a shard's older one must not win.
      sys.append_line(results_path, line)
      os.remove(record_path(p))
    end
    if status == "ok" then
      say("ok    %s in %.2fs", p.id, q.clock() - started)
    else
      failed = failed + 1
      say("FAIL  %s after %.2fs: %s (log: %s/log.txt)", p.id, q.clock() - started, first_line(err), p.out)
    end
  end

  local function start(p, k)
    q.mkdir(p.out)
    local job = { point = p, log = p.out .. "/log.txt", result = p.out .. "/result.json", started = q.clock() }
    os.remove(job.result)
    say("start %s (%d/%d)", p.id, k, #queue)
    local ok, pid = pcall(sys.spawn, job.log, {
      QLORA_SWEEP_OUT = out_abs, QLORA_SWEEP_POINT = p.id, QLORA_SWEEP_RESULT = sys.abspath(job.result),
      QLORA_SWEEP_PARENT = tostring(sys.pid()), QLORA_THREADS = threads,
    })
    if not ok then record(p, job.started, "error", nil, tostring(pid)) return end
    running[pid] = job
    nrunning = nrunning + 1
  end

  local function finish(job, kind, code)
    local p = job.point
    local text = read_file(job.result)
    local res = text and sys.decode(text)
    if kind == "exit" and code == 0 and type(res) == "table" then
      record(p, job.started, res.ok and "ok" or "error", res.metrics, not res.ok and tostring(res.error) or nil)
      return
    end
    local msg
    if kind == "signal" then
      msg = "worker killed by signal " .. code .. (signal_names[code] and (" (" .. signal_names[code] .. ")") or "")
    elseif code ~= 0 then
      msg = "worker exited with status " .. code
    else
      msg = "worker ended without a result: the script did not reach q.sweep{out = \"" .. out
        .. "\"} (the script must make the same sweeps with the same out in every run)"
    end
    local tail = tail_lines(job.log, 12)
    if tail ~= "" then msg = msg .. "\n" .. tail end
    record(p, job.started, "error", nil, msg)
  end

  local ok, err = pcall(function()
    while next_index <= #queue or nrunning > 0 do
      while nrunning < parallel and next_index <= #queue do
        start(queue[next_index], next_index)
        next_index = next_index + 1
      end
      local finished = false
      for pid, job in pairs(running) do
        local kind, code = sys.poll(pid)
        if kind then
          running[pid] = nil
          nrunning = nrunning - 1
          finished = true
          finish(job, kind, code)
        elseif opts.timeout and q.clock() - job.started > opts.timeout then
          -- A point past its time limit: stop its worker and record why.
          sys.stop(pid)
          running[pid] = nil
          nrunning = nrunning - 1
          finished = true
          local msg = string.format("timed out after %gs (timeout = %g); the worker was stopped", opts.timeout, opts.timeout)
          local tail = tail_lines(job.log, 12)
          record(job.point, job.started, "error", nil, tail ~= "" and (msg .. "\n" .. tail) or msg)
        end
      end
      if not finished and nrunning > 0 then sys.sleep(0.02) end
    end
  end)
  if not ok then
    -- The sweep itself failed (say, results.jsonl cannot be written): stop its workers first.
    for pid in pairs(running) do sys.stop(pid) end
    error(err, 0)
  end
  say("%s: %d ran, %d ok, %d failed (%s)", out, #queue, #queue - failed, failed,
    shard and (out .. "/points/*/record.json") or results_path)
end

-- `qlora sweep --slurm`: with QLORA_SWEEP_PLAN set, the first q.sweep reached writes its out dir
-- and point count there (JSON) and ends the process before running anything.
local function write_plan(path, opts, points, out_abs)
  sys.write_atomic(path, sys.encode({ out = out_abs, points = #points, given_out = opts.out }))
  io.stdout:flush()
  os.exit(0)
end

function q.sweep(opts)
  local err = check_options(opts)
  if err then error("qlora.sweep: " .. err, 2) end
  if point_running then error("qlora.sweep: sweeps cannot nest (q.sweep was called inside a point's run function)", 2) end
  local points, keys
  if opts.grid then points, keys = grid_points(opts.grid) else points, keys = random_points(opts.random, opts.seed or 0) end
  points = finish_points(points, keys, opts)
  local out_abs = sys.abspath(opts.out)
  local assignment = sys.assignment()
  if assignment then
    -- A worker: only its own sweep's point runs; other sweeps return what they recorded.
    if assignment.out == out_abs then run_assigned_point(opts, points, assignment) end
    return results_in_point_order(opts.out, points)
  end
  local plan = os.getenv("QLORA_SWEEP_PLAN")
  if plan ~= nil and plan ~= "" then write_plan(plan, opts, points, out_abs) end
  local parallel = parallel_setting(opts)
  local shard = shard_setting()
  if not sys.script() then
    error("qlora.sweep: needs a script run by `qlora run FILE.lua` (each point runs the script again in a new process)", 2)
  end
  local made, why = pcall(q.mkdir, opts.out .. "/points")
  if not made then
    local file = sys.file_in_the_way(opts.out)
    if file then error("qlora.sweep: out '" .. opts.out .. "' is not a directory ('" .. file .. "' is a file)", 2) end
    error("qlora.sweep: cannot create out '" .. opts.out .. "': " .. tostring(why):gsub("^qlora%.mkdir: ", ""), 2)
  end
  -- One sweep (or one shard of it) per out at a time: two would run the same points twice and
  -- append duplicate lines. Shards of one sweep lock their own file, so they can run at once.
  -- The lock goes with the process (a crashed or killed sweep leaves nothing stuck).
  local lock_name = shard and ("/.lock." .. sys.shard_tag(shard)) or "/.lock"
  local locked, holder = sys.lock(opts.out .. lock_name)
  if not locked then
    error("qlora.sweep: out '" .. opts.out .. "' is in use by another sweep" .. (shard and (" shard " .. sys.shard_tag(shard)) or "")
      .. (holder and (" (process " .. holder .. ")") or "") .. "; wait for it to finish or use another out", 2)
  end
  run_points(opts, points, out_abs, parallel, shard)
  return results_in_point_order(opts.out, points)
end
"""#
