-- A sweep over LoRA ranks on a tiny 4-bit model, used by test_sweep.lua:
--   qlora run sweep_model.lua OUT
-- The base model is built once and saved quantized; workers run this script again and reuse it
-- (the `if not exists` guard is what keeps the one-time work idempotent).
local q = require "qlora"
local out = arg[1]
local base = out .. "/base"
if not io.open(base .. "/config.json") then
  q.llama{ vocab = 64, hidden = 32, layers = 2, heads = 4, kv_heads = 2, intermediate = 64, seed = 3 }
    :save(base, { quantized = true })
end
local rows = {}
for i = 1, 24 do
  local ids = {}
  for k = 1, 10 do ids[k] = ((i % 3 + 2) * k) % 50 + 5 end
  rows[i] = { input_ids = ids }
end
local train, eval = q.data.from_table(rows, { format = "tokens" }):split(0.75, { seed = 1 })
local results = q.sweep{ grid = { r = { 2, 4 } }, parallel = 2, out = out .. "/sweep",
  run = function(cfg)
    local model = q.load_model(base)
    model:add_lora{ r = cfg.r, alpha = 2 * cfg.r, targets = "all-linear", seed = cfg.seed }
    local m = q.trainer{ model = model, train = train, eval = eval, steps = 4, batch_size = 4,
      optimizer = { "adamw", lr = 1e-2 }, print_every = 1000 }:run()
    model:save_adapter(cfg.out .. "/adapter")
    return m
  end }
q.report(results, { sort = "eval_loss", columns = { "r", "eval_loss", "train_loss", "steps" } })
