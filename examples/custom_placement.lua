-- Adapters placed by a Lua predicate: MLP projections of the top half of the layers get rank 16,
-- attention's q/v projections of every layer rank 4 (a second, named adapter).
--   scripts/run examples/custom_placement.lua [MODEL_DIR]  (default: the tiny test Llama)
local q = require "qlora"
local dir = arg[1] or ((arg[0]:match("(.*/)") or "./") .. "../Tests/fixtures/tiny-llama")

local model = q.load_model(dir, { quant = { type = "nf4" } })
local layers = model:config().num_hidden_layers
local top_half = function(m)
  return m.layer ~= nil and m.layer >= layers // 2 and m.name:match("%.mlp%.") ~= nil
end
print("mlp adapters:", model:add_lora{ name = "mlp_top", r = 16, alpha = 32, targets = top_half, seed = 1 })
print("attention adapters:", model:add_lora{ name = "attn", r = 4, alpha = 8, targets = { "q_proj", "v_proj" }, seed = 2 })
local trainable, total = model:trainable_parameters()
print(string.format("trainable %d of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total))
for _, p in ipairs(model:parameters{ trainable = true }) do
  print(string.format("  %-60s %s", p.name, table.concat(p.tensor:shape(), "x")))
end
local out = os.tmpname()
os.remove(out)
model:save_adapter(out, { name = "mlp_top" })
print("saved the mlp_top adapter in PEFT's layout to " .. out)
os.execute("rm -rf " .. out)
