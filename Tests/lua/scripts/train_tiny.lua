-- A small training run used by test_trainer.lua (run as its own process so it can be killed):
--   qlora run train_tiny.lua OUT_DIR STEPS [kill_at_step] [resume]
local q = require "qlora"
local out, steps, kill_at, resume = arg[1], tonumber(arg[2]), tonumber(arg[3] or ""), arg[4] == "resume"
local here = arg[0]:match("(.*/)") or "./"
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
  resume = resume and (out .. "/ckpt") or nil, print_every = 1000,
  on_step = function(s)
    if kill_at and s.step == kill_at then os.execute("kill -9 $PPID") end
  end }:run()
local f = assert(io.open(out .. "/final.txt", "w"))
f:write(string.format("%.17g\n", result.train_loss))
f:close()
model:save_adapter(out .. "/adapter")
