-- The Lua-written LoRA (examples/adapters/lora.lua) against the built-in add_lora on the
-- `qlora bench train` configuration (hidden 512, 8 layers, vocab 8192, batch 4 x 256, NF4 + double
-- quant, r 16 on every projection, AdamW), side by side in one process: tokens/s of each and the
-- ratio. Usage: qlora run scripts/bench/lua_lora_speed.lua [compute=f32] [steps=5]
local q = require "qlora"
local here = arg[0]:match("(.*/)") or "./"
local LoRA = dofile(here .. "../../examples/adapters/lora.lua")
local compute = arg[1] or "f32"
local steps = tonumber(arg[2] or "5")
local cfg = { vocab = 8192, hidden = 512, layers = 8, heads = 8, intermediate = 1408, seed = 1 }
local B, T, warmup = 4, 256, 2
local ids = (q.rand({ B, T }, { seed = 3 }) * cfg.vocab):to("i64")

local function measure(kind)
  local model = q.llama(cfg)
  model:quantize{ type = "nf4", block = 64, double_quant = true, compute = compute }
  if kind == "builtin" then
    model:add_lora{ r = 16, alpha = 32, targets = "all-linear", seed = 1 }
  else
    model:add_adapter{ kind = LoRA, name = "default", targets = "all-linear", seed = 1, options = { r = 16, alpha = 32 } }
  end
  local opt = q.optim.adamw(model:parameters{ trainable = true }, { lr = 1e-4 })
  local function step()
    local loss = model:loss(ids)
    loss:backward(); opt:step(); opt:zero_grad()
  end
  for _ = 1, warmup do step() end
  local times = {}
  for i = 1, steps do local t0 = q.clock(); step(); times[i] = q.clock() - t0 end
  table.sort(times)
  return B * T / times[(steps + 1) // 2]
end

-- interleaved, twice each, best of the two: the machine is shared
local best = { builtin = 0, lua = 0 }
for _ = 1, 2 do
  for _, kind in ipairs({ "builtin", "lua" }) do best[kind] = math.max(best[kind], measure(kind)) end
end
print(string.format("compute %s  built-in LoRA %.0f tok/s  Lua LoRA %.0f tok/s  ratio %.3f",
  compute, best.builtin, best.lua, best.lua / best.builtin))
