-- A hand-written training loop, Torch7 style, for what the trainer does not cover: here a LoRA
-- adapter learns to continue a repeating pattern, with AdamW, a cosine schedule and clipping.
--   scripts/run examples/manual_loop.lua [MODEL_DIR]      (default: the tiny test model)
local q = require "qlora"
local dir = arg[1] or ((arg[0]:match("(.*/)") or "./") .. "../Tests/fixtures/tiny-llama")

local model = q.load_model(dir, { quant = { type = "nf4" } })
model:add_lora{ r = 8, alpha = 16, targets = "all-linear", seed = 1 }
local params = model:parameters{ trainable = true }
local opt = q.optim.adamw(params, { lr = 1e-2, weight_decay = 0 })

local pattern = {}
for i = 1, 32 do pattern[i] = ({ 10, 20, 30, 40 })[(i - 1) % 4 + 1] end
local ids = q.tensor({ pattern }, { dtype = "i64" })

local steps = 40
for step = 1, steps do
  opt:set_lr(q.lr_at("cosine", step, { lr = 1e-2, warmup = 4, total = steps }))
  local loss = model:loss(ids)
  loss:backward()
  local norm = q.clip_grad_norm(params, 1.0)
  opt:step()
  opt:zero_grad()
  if step % 10 == 0 then print(string.format("step %2d  loss %.4f  |g| %.3f", step, loss:item(), norm)) end
end
print("continues 10 20 30 40 10 as: " .. table.concat(model:generate({ 10, 20, 30, 40, 10 }, { max_tokens = 7 }), " "))
