-- The trainer: loss goes down and the adapter saved and reloaded gives the same eval loss; two
-- runs with one seed log identical metrics; a run killed with SIGKILL (after a checkpoint, or at
-- any point inside a checkpoint write) and resumed, from the checkpoint root or from one step
-- directory, ends with the same loss and adapter bytes as an uninterrupted run; resuming a
-- finished run runs no steps and reports the saved loss; NaN stops a run.
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
-- kill: nil, a step number or a train_tiny.lua kill spec; resume: nil, true (the checkpoint root)
-- or a train_tiny.lua resume spec ("step:N")
local function run(out, steps, kill, resume)
  if resume == true then resume = "resume" end
  local cmd = string.format("%q run %q %q %d %s %s > %q 2>&1", qlora, here .. "scripts/train_tiny.lua", out, steps,
    kill and tostring(kill) or "-", resume or "-", out .. "/log.txt")
  return os.execute(cmd)
end
local function tmp_checkpoints(dir)
  local left = {}
  for _, name in ipairs(q.listdir(dir)) do if name:match("^%.tmp") then left[#left + 1] = name end end
  return table.concat(left, " ")
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

-- one uninterrupted 9-step run, the reference for the resume cases below
local reference
local function reference_run()
  if not reference then
    reference = tmpdir()
    assert(run(reference, 9), read(reference .. "/log.txt"))
  end
  return reference
end
local function same_as_reference(dir, what)
  local a = reference_run()
  T.eq(read(dir .. "/final.txt"), read(a .. "/final.txt"), what .. ": final loss")
  T.eq(read(dir .. "/adapter/adapter_model.safetensors"), read(a .. "/adapter/adapter_model.safetensors"),
    what .. ": adapter bytes")
end

T.case("resume from one step directory, also an older one than the newest", function()
  local c = tmpdir()
  assert(not run(c, 9, 5), "the run was not killed")
  assert(run(c, 9, nil, "step:3"), read(c .. "/log.txt"))
  same_as_reference(c, "resumed from ckpt/step-3")
  -- step-9 and step-6 exist now; resuming from step-3 again replays 4..9 over them
  assert(run(c, 9, nil, "step:3"), read(c .. "/log.txt"))
  same_as_reference(c, "resumed again from ckpt/step-3")
  q.rmtree(c)
end)

T.case("resuming a finished run runs no steps and reports its saved loss", function()
  local a = reference_run()
  local c = tmpdir()
  assert(run(c, 9), read(c .. "/log.txt"))
  for _, how in ipairs({ "resume", "step:9" }) do
    assert(run(c, 9, nil, how), read(c .. "/log.txt"))
    local log = read(c .. "/log.txt")
    assert(log:find("already complete", 1, true), "no message that the run is complete: " .. log)
    assert(not log:find("nan", 1, true), "a NaN in: " .. log)
    T.eq(read(c .. "/steps_run.txt"), "0\n", how .. ": steps run")
    same_as_reference(c, "finished run resumed with " .. how)
  end
  q.rmtree(c)
end)

T.case("SIGKILL at any point of a checkpoint write, then resumed, equals an unbroken run", function()
  -- save:6:K dies inside the step-6 checkpoint after K of its files (params, optimizer, then the
  -- adapter and trainer metadata);
  -- rename:6 dies when all are written but the directory is not yet in place
  for _, kill in ipairs({ "save:6:0", "save:6:1", "save:6:2", "rename:6" }) do
    local c = tmpdir()
    assert(not run(c, 9, kill), kill .. ": the run was not killed")
    assert(read(c .. "/ckpt/step-6/trainer.safetensors") == nil, kill .. ": a half-written step-6 is in place")
    assert(run(c, 9, nil, true), read(c .. "/log.txt"))
    T.eq(read(c .. "/steps_run.txt"), "6\n", kill .. ": steps run after resuming from step 3")
    same_as_reference(c, "killed at " .. kill)
    T.eq(tmp_checkpoints(c .. "/ckpt"), "", kill .. ": temporary checkpoint directories left behind")
    q.rmtree(c)
  end
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
