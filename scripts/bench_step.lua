-- Times training steps of the `qlora bench train` configuration for profiling and A/B runs:
--   COMPUTE=f32|bf16 STEPS=n LAYERS=n CKPT=1 DROPOUT=p HEAD=f32|bf16 .build/release/qlora run scripts/bench_step.lua
-- prints wall seconds and process CPU seconds (both threads) per step after one warm-up step, the
-- last loss and peak RSS. CPU seconds move less than wall time on a shared machine.
local q = require "qlora"
local compute = os.getenv("COMPUTE") or "f32"
local steps = tonumber(os.getenv("STEPS") or "3")
local layers = tonumber(os.getenv("LAYERS") or "8")
local cfg = { vocab = 8192, hidden = 512, layers = layers, heads = 8, intermediate = 1408, seed = 1 }
local B, T = 4, 256
local model = q.llama(cfg)
model:quantize{ type = "nf4", block = 64, double_quant = true, compute = compute }
if os.getenv("HEAD") then model:head_compute(os.getenv("HEAD")) end -- the head's compute alone
local dropout = tonumber(os.getenv("DROPOUT") or "0")
model:add_lora{ r = 16, alpha = 32, targets = "all-linear", seed = 1, dropout = dropout }
if dropout > 0 then model:train(true) end
if os.getenv("CKPT") == "1" then model:gradient_checkpointing(true) end
local params = model:parameters{ trainable = true }
local opt = q.optim.adamw(params, { lr = 1e-4 })
local ids = (q.rand({ B, T }, { seed = 3 }) * cfg.vocab):to("i64")
local function step()
  local loss = model:loss(ids)
  loss:backward()
  opt:step()
  opt:zero_grad()
  return loss:item()
end
step()
local t0, c0 = q.clock(), os.clock()
local l
for i = 1, steps do l = step() end
local _, peak = q.memory_mb()
print(string.format("%s layers=%d ckpt=%s step_s=%.3f cpu_s=%.3f loss=%.6f peak=%.0f", compute, layers, os.getenv("CKPT") or "0", (q.clock() - t0) / steps, (os.clock() - c0) / steps, l, peak))
