-- Measures how much memory N sweep workers share when they load one 4-bit model directory:
--   qlora run scripts/sweep_memory.lua [OUT_DIR] [N]        (defaults: /tmp/qlora-sweep-memory, 4)
-- Builds a random Llama (hidden 1024, 8 layers, vocab 8000) once and saves it 4-bit
-- (bitsandbytes layout). Then two sweeps: N workers at once, and N workers one at a time. Each
-- worker loads the model, adds a LoRA adapter, runs a forward pass and reads its own
-- /proc/self/smaps_rollup while all workers of its sweep are alive (a barrier of marker files).
-- Prints the workers' total PSS at once against the sum of the single runs' RSS. The sweeps
-- resume like any sweep: measure again in a fresh OUT_DIR (the workers run this script again,
-- so it must not clear its own sweep directories).
local q = require "qlora"
local out = arg[1] or "/tmp/qlora-sweep-memory"
local n = tonumber(arg[2] or "4")
local base = out .. "/base"

-- One-time work, guarded so the workers (which run this script again) reuse the saved model.
if not io.open(base .. "/config.json") then
  q.mkdir(out)
  print("building the base model in " .. base)
  q.llama{ vocab = 8000, hidden = 1024, layers = 8, heads = 16, kv_heads = 4, intermediate = 2816, seed = 1 }
    :save(base, { quantized = true })
end

local function count_files(dir)
  return #q.listdir(dir)
end

-- Waits until `size` workers have touched a marker in dir (or 120 s pass).
local function barrier(dir, id, size)
  q.mkdir(dir)
  local f = assert(io.open(dir .. "/" .. id, "w")); f:close()
  local t0 = q.clock()
  while count_files(dir) < size and q.clock() - t0 < 120 do os.execute("sleep 0.05") end
end

-- Rss and Pss (MB) of this process's mappings of the model's safetensors file.
local function model_mapping_mb()
  local rss, pss, inside = 0, 0, false
  for line in io.lines("/proc/self/smaps") do
    local path = line:match("^%x+%-%x+ %S+ %x+ %S+ %d+%s+(.*)$")
    if path then inside = path:find("model.safetensors", 1, true) ~= nil
    elseif inside then
      local k, v = line:match("^(%a+):%s+(%d+) kB")
      if k == "Rss" then rss = rss + v / 1024 elseif k == "Pss" then pss = pss + v / 1024 end
    end
  end
  return rss, pss
end

local function measure(name, parallel, load)
  return q.sweep{ grid = { worker = (function() local t = {} for i = 1, n do t[i] = i end return t end)() },
    parallel = parallel, out = out .. "/" .. name,
    run = function(cfg)
      if load then
        local model = q.load_model(base)
        model:add_lora{ r = 8, alpha = 16, targets = "all-linear", seed = cfg.seed }
        local ids = {}
        for i = 1, 32 do ids[i] = (i * 37) % 8000 end
        q.no_grad(function() model:forward(q.tensor({ ids }, { dtype = "i32" })) end)
      end
      barrier(out .. "/" .. name .. "/loaded", cfg.worker, parallel)
      local m = q.process_memory()
      local model_rss, model_pss = model_mapping_mb()
      barrier(out .. "/" .. name .. "/measured", cfg.worker, parallel)
      return { rss_mb = m.rss, pss_mb = m.pss, pss_file_mb = m.pss_file, pss_anon_mb = m.pss_anon,
        shared_clean_mb = m.shared_clean, model_rss_mb = model_rss, model_pss_mb = model_pss, private_mb = (m.private_clean or 0) + (m.private_dirty or 0) }
    end }
end

local together = measure("together", n, true)
local alone = measure("alone", 1, true)
local empty = measure("empty", 1, false)  -- the same worker without a model: the fixed cost
local function sum(list, key)
  local s = 0
  for _, r in ipairs(list) do
    assert(r.status == "ok", r.id .. ": " .. tostring(r.error))
    s = s + r.metrics[key]
  end
  return s
end
local columns = { "worker", "rss_mb", "pss_mb", "pss_file_mb", "pss_anon_mb", "model_rss_mb", "model_pss_mb" }
print("-- " .. n .. " workers at once")
q.report(together, { columns = columns })
print("-- one at a time")
q.report(alone, { columns = columns })
print("-- no model")
q.report(empty, { columns = columns })
local bytes = 0
for _, name in ipairs(q.listdir(base)) do
  local f = io.open(base .. "/" .. name, "rb")
  if f then bytes = bytes + f:seek("end"); f:close() end
end
print(string.format("model directory: %.1f MB", bytes / 1048576))
print(string.format("%d workers at once: total PSS %.1f MB (total RSS %.1f MB)", n, sum(together, "pss_mb"), sum(together, "rss_mb")))
print(string.format("%d single runs: sum of RSS %.1f MB", n, sum(alone, "rss_mb")))
