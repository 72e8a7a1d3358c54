-- A small training run used by test_trainer.lua (run as its own process so it can be killed):
--   qlora run train_tiny.lua OUT_DIR STEPS [KILL] [RESUME]
-- KILL: "-" (none), "N" (SIGKILL at the end of step N), "save:N:K" (SIGKILL inside the checkpoint
-- write of step N, after its first K tensor files are written: 0, 1 or 2), or
-- "rename:N" (SIGKILL just before the checkpoint of step N is renamed into place).
-- RESUME: "-" (a fresh run), "resume" (from the checkpoint root OUT_DIR/ckpt) or "step:N" (from
-- the one checkpoint directory OUT_DIR/ckpt/step-N).
local q = require "qlora"
local out, steps, kill, resume = arg[1], tonumber(arg[2]), arg[3] or "-", arg[4] or "-"
local here = arg[0]:match("(.*/)") or "./"
local function die() os.execute("kill -9 $PPID") end

local kill_step = tonumber(kill)
local save_step, save_after = kill:match("^save:(%d+):(%d+)$")
local rename_step = tonumber(kill:match("^rename:(%d+)$"))
if save_step then
  save_step, save_after = tonumber(save_step), tonumber(save_after)
  local save_tensors, written = q.save_tensors, 0
  q.save_tensors = function(path, ...)
    if path:find("/ckpt/.tmp-step-" .. save_step .. "/", 1, true) then
      if written == save_after then die() end
      written = written + 1
    end
    return save_tensors(path, ...)
  end
end
if rename_step then
  local rename = os.rename
  os.rename = function(from, to)
    if to:match("/ckpt/step%-" .. rename_step .. "$") then die() end
    return rename(from, to)
  end
end

local resume_from = nil
if resume == "resume" then resume_from = out .. "/ckpt"
elseif resume:match("^step:%d+$") then resume_from = out .. "/ckpt/step-" .. resume:match("%d+") end

local model = q.load_model(here .. "../../fixtures/tiny-llama", { quant = { type = "nf4" } })
model:add_lora{ r = 4, alpha = 8, targets = "all-linear", dropout = 0.1, seed = 1 }
local rows = {}
for i = 1, 48 do
  local ids = {}
  for k = 1, 12 do ids[k] = ((i % 5 + 2) * k) % 40 + 10 end
  rows[i] = { input_ids = ids }
end
local ds = q.data.from_table(rows, { format = "tokens" })
local result = q.trainer{ model = model, train = ds, steps = steps, batch_size = 4, grad_accum = 2,
  optimizer = { "adamw", lr = 5e-3 }, schedule = { "cosine", warmup = 2 }, max_grad_norm = 1.0, seed = 7,
  log = out .. "/metrics.jsonl", checkpoint = { dir = out .. "/ckpt", every = 3 },
  resume = resume_from, print_every = 1000,
  on_step = function(s)
    if kill_step and s.step == kill_step then die() end
  end }:run()
local f = assert(io.open(out .. "/final.txt", "w"))
f:write(string.format("%.17g\n", result.train_loss))
f:close()
f = assert(io.open(out .. "/steps_run.txt", "w"))
f:write(tostring(result.steps_run), "\n")
f:close()
model:save_adapter(out .. "/adapter")
