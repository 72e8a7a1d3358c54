-- Sweeps used by test_sweep.lua (each point runs in a worker that runs this script again):
--   qlora run sweep_points.lua OUT MODE
-- MODE "mixed": points that succeed, raise an error, return NaN, exit with status 3 or 0 and
--   kill themselves, two at a time; then a second sweep (its own out) whose workers must not run
--   the first one's points again.
-- MODE "reseed": MODE "ok"'s sweep with the sweep seed given as the third argument.
-- MODE "ok": three points that succeed.  MODE "slow": four points of 0.4 s, one at a time.
-- MODE "overlap": three points of 1 s recording their start and end (parallel = 1 here).
-- MODE "timeout": timeout = 1 s; one point returns at once, one sleeps 30 s (stopped at 1 s).
-- Every point appends "<sweep> <id>" to OUT/ran.txt when it ends; every run of the script's
-- top level appends a line to OUT/top.txt. The returned lists are written to OUT/returned.lua.
local q = require "qlora"
local out, mode = arg[1], arg[2]

local function append(path, line)
  local f = assert(io.open(path, "a"))
  f:write(line, "\n")
  f:close()
end
local function own_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

append(out .. "/top.txt", "top")

local function returned(name, list)
  local parts = {}
  for _, r in ipairs(list) do
    parts[#parts + 1] = string.format("{ id = %q, status = %q, value = %s, error = %q, seed = %s, out_ok = %s }", r.id, r.status,
      tostring(r.metrics and r.metrics.value), tostring(r.error), tostring(r.config.seed), tostring(r.metrics and r.metrics.out_ok))
  end
  append(out .. "/returned.lua", string.format("R[%q] = { %s }", name, table.concat(parts, ", ")))
end

if mode == "mixed" then
  local first = q.sweep{ grid = { case = { "a", "b", "error", "nan", "exit", "kill", "exit0" } }, parallel = 2, out = out .. "/mixed",
    run = function(cfg)
      append(out .. "/ran.txt", "mixed " .. cfg.case)
      if cfg.case == "error" then error("this point fails on purpose") end
      if cfg.case == "nan" then return { value = 0 / 0 } end
      if cfg.case == "exit" then os.exit(3) end
      if cfg.case == "exit0" then os.exit(0) end
      if cfg.case == "kill" then os.execute("kill -9 " .. own_pid()) end
      local dir_ok = io.open(cfg.out .. "/mark", "w")
      if dir_ok then dir_ok:close() end
      return { value = #cfg.case, out_ok = dir_ok ~= nil, nested = { seed = cfg.seed } }
    end }
  returned("mixed", first)
  local second = q.sweep{ grid = { x = { 1, 2 } }, out = out .. "/second",
    run = function(cfg)
      append(out .. "/ran.txt", "second " .. cfg.x)
      return { value = cfg.x * 10 }
    end }
  returned("second", second)
elseif mode == "ok" then
  returned("ok", q.sweep{ grid = { b = { 1, 2 }, a = { "x" } }, out = out .. "/ok", parallel = 2, seed = 5,
    run = function(cfg)
      append(out .. "/ran.txt", "ok " .. cfg.b)
      return { value = cfg.b + 0.5 }
    end })
elseif mode == "reseed" then
  returned("ok", q.sweep{ grid = { b = { 1, 2 }, a = { "x" } }, out = out .. "/ok", parallel = 2, seed = tonumber(arg[3]),
    run = function(cfg)
      append(out .. "/ran.txt", "ok " .. cfg.b)
      return { value = cfg.b + 0.5 }
    end })
elseif mode == "slow" then
  returned("slow", q.sweep{ grid = { i = { 1, 2, 3, 4 } }, out = out .. "/slow", parallel = 1,
    run = function(cfg)
      os.execute("sleep 0.4")
      append(out .. "/ran.txt", "slow " .. cfg.i)
      return { value = cfg.i }
    end })
elseif mode == "overlap" then
  returned("overlap", q.sweep{ grid = { i = { 1, 2, 3 } }, out = out .. "/overlap", parallel = 1,
    run = function(cfg)
      local t0 = q.clock()
      os.execute("sleep 1")
      return { value = cfg.i, started = t0, ended = q.clock() }
    end })
elseif mode == "timeout" then
  returned("timeout", q.sweep{ grid = { wait = { 0, 30 } }, out = out .. "/timeout", parallel = 2, timeout = 1,
    run = function(cfg)
      if cfg.wait > 0 then
        print("waiting " .. cfg.wait .. " s"); io.stdout:flush()
        -- a process of the point's own, which stopping the worker must stop too
        os.execute(string.format("sleep %d & echo $! > %q; wait", cfg.wait, out .. "/sleep.pid"))
      end
      append(out .. "/ran.txt", "timeout " .. cfg.wait)
      return { value = cfg.wait }
    end })
elseif mode == "random" then
  returned("random", q.sweep{ random = { n = 4, space = { lr = { min = 1e-4, max = 1e-2, log = true }, r = { 4, 8, 16 },
    layers = { min = 1, max = 3, integer = true } } }, out = out .. "/random", seed = 11, parallel = 2,
    run = function(cfg)
      assert(cfg.lr >= 1e-4 and cfg.lr <= 1e-2, "lr in range")
      assert(math.type(cfg.layers) == "integer" and cfg.layers >= 1 and cfg.layers <= 3, "layers in range")
      return { value = cfg.r }
    end })
else
  error("unknown mode " .. tostring(mode))
end
