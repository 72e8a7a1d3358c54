-- The trainer: loss goes down and the adapter saved and reloaded gives the same eval loss; two
-- runs with one seed log identical metrics; a run killed with SIGKILL after a checkpoint and
-- resumed ends with the same loss and adapter bytes as an uninterrupted run; NaN stops a run.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local here = arg[0]:match("(.*/)") or "./"
local fixtures = here .. "../fixtures/"
local qlora = arg[-1]

local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); return d end
local function read(p) local f = io.open(p, "rb"); if not f then return nil end local s = f:read("a"); f:close(); return s end
-- the deterministic fields of a metrics file (timings and memory differ between runs)
local function metrics(p)
  local out = {}
  for line in (read(p) or ""):gmatch("[^\n]+") do
    out[#out + 1] = line:gsub(', "tokens_per_sec": [^,}]+', ""):gsub(', "elapsed_s": [^,}]+', ""):gsub(', "rss_mb": [^,}]+', "")
  end
  return table.concat(out, "\n")
end
local function run(out, steps, kill_at, resume)
  local cmd = string.format("%q run %q %q %d %s %s > %q 2>&1", qlora, here .. "scripts/train_tiny.lua", out, steps,
    kill_at and tostring(kill_at) or "-", resume and "resume" or "-", out .. "/log.txt")
  return os.execute(cmd)
end

T.case("fine-tuning a 4-bit model halves the loss; the saved adapter reloads to the same eval loss", function()
  local model = q.load_model(fixtures .. "tiny-llama", { quant = { type = "nf4", double_quant = true } })
  -- the output head is adapted too: the random tiny model's head alone cannot make confident logits
  model:add_lora{ r = 8, alpha = 16, targets = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
    "down_proj", "lm_head" }, seed = 1 }
  local rows = {}
  for i = 1, 40 do
    local ids = {}
    for k = 1, 16 do ids[k] = ({ 11, 22, 33, 44, 55 })[(i + k) % 5 + 1] end
    rows[i] = { input_ids = ids }
  end
  local ds = q.data.from_table(rows, { format = "tokens" })
  local train, eval = ds:split(0.8, { seed = 2 })
  local before = q.trainer{ model = model, train = train, eval = eval, steps = 1, optimizer = { "sgd", lr = 0 } }:run().eval_loss
  local r = q.trainer{ model = model, train = train, eval = eval, steps = 60, batch_size = 4,
    optimizer = { "adamw", lr = 2e-2 }, schedule = { "cosine", warmup = 5 }, seed = 1 }:run()
  assert(r.eval_loss < before / 2, string.format("eval loss %g -> %g", before, r.eval_loss))
  local dir = tmpdir()
  model:save_adapter(dir)
  local again = q.load_model(fixtures .. "tiny-llama", { quant = { type = "nf4", double_quant = true } })
  again:load_adapter(dir)
  local e2 = q.trainer{ model = again, train = train, eval = eval, steps = 1, optimizer = { "sgd", lr = 0 } }:run().eval_loss
  T.close(e2, r.eval_loss, 1e-6, 0, "eval loss after reload")
  q.rmtree(dir)
end)

T.case("same seed, same metrics; killed and resumed equals uninterrupted", function()
  local a, b, c = tmpdir(), tmpdir(), tmpdir()
  assert(run(a, 9), read(a .. "/log.txt"))
  assert(run(b, 9), read(b .. "/log.txt"))
  T.eq(metrics(a .. "/metrics.jsonl"), metrics(b .. "/metrics.jsonl"), "metrics of two runs")
  assert(#metrics(a .. "/metrics.jsonl") > 0)
  -- killed with SIGKILL at step 5 (after the checkpoint at step 3), then resumed
  local ok = run(c, 9, 5)
  assert(not ok, "the run was not killed")
  assert(read(c .. "/final.txt") == nil, "a killed run must not finish")
  assert(read(c .. "/ckpt/step-3/trainer.safetensors"), "no checkpoint at step 3")
  assert(run(c, 9, nil, true), read(c .. "/log.txt"))
  T.eq(read(c .. "/final.txt"), read(a .. "/final.txt"), "final loss")
  T.eq(read(c .. "/adapter/adapter_model.safetensors"), read(a .. "/adapter/adapter_model.safetensors"), "adapter bytes")
  for _, d in ipairs({ a, b, c }) do q.rmtree(d) end
end)

T.case("a NaN loss stops the run naming the step; bad options are errors", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  model:add_lora{ r = 2, targets = { "q_proj" } }
  local ds = q.data.from_table({ { input_ids = { 1, 2, 3, 4 } }, { input_ids = { 5, 6, 7, 8 } } }, { format = "tokens" })
  local n = 0
  T.errors(function()
    q.trainer{ model = model, train = ds, steps = 5, batch_size = 1,
      loss = function(m, b) n = n + 1; local l = m:loss(b.input_ids, b.labels); if n == 3 then return l * (0 / 0) end return l end }:run()
  end, "step 3", "NaN")
  T.errors(function() q.trainer{ model = model } end, "missing option 'train'")
  T.errors(function() q.trainer{ model = model, train = ds, stepz = 3 } end, "unknown option 'stepz'")
  T.errors(function() q.trainer{ model = model, train = ds, steps = 0 } end, "'steps' must be an integer >= 1")
  T.errors(function() q.trainer{ model = model, train = ds, optimizer = { "lion" } }:run() end, "unknown optimizer 'lion'")
  T.errors(function() q.trainer{ model = model, train = ds, schedule = { "cyclic" } }:run() end, "unknown schedule")
  T.errors(function() q.trainer{ model = model, train = ds, resume = "/nonexistent" }:run() end, "no complete checkpoint")
  local bare = q.load_model(fixtures .. "tiny-llama")
  T.errors(function() q.trainer{ model = bare, train = ds }:run() end, "no trainable parameters")
  local stopped = q.trainer{ model = model, train = ds, steps = 10, batch_size = 1,
    on_step = function(s) if s.step == 2 then return "stop" end end }:run()
  T.eq(stopped.steps, 2); T.eq(stopped.stopped, true)
end)

T.done()
