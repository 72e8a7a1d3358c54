-- Gradient checkpointing: recomputing each decoder layer in backward gives the same gradients
-- (dropout masks included: the random stream is rewound) and keeps less memory alive.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"

local function grads(checkpointing, quant)
  local model = q.load_model(fixtures .. "tiny-llama", { quant = quant and { type = "nf4" } or false })
  model:add_lora{ r = 4, alpha = 8, targets = "all-linear", dropout = 0.1, seed = 3 }
  for i, p in ipairs(model:parameters{ trainable = true }) do
    p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 50 + i, std = 0.05 }))
  end
  model:train(true)
  model:gradient_checkpointing(checkpointing)
  q.manual_seed(9)
  local ids = q.tensor({ { 1, 5, 9, 200, 17, 3, 64, 0 }, { 7, 7, 7, 1, 2, 3, 4, 5 } }, { dtype = "i64" })
  local loss = model:loss(ids)
  loss:backward()
  local out = { loss = loss:item() }
  for _, p in ipairs(model:parameters{ trainable = true }) do out[p.name] = p.tensor.grad end
  return out
end

for _, quant in ipairs({ false, true }) do
  T.case("same gradients with and without checkpointing (4-bit " .. tostring(quant) .. ")", function()
    local a, b = grads(false, quant), grads(true, quant)
    T.eq(a.loss, b.loss, "loss")
    local n = 0
    for name, g in pairs(a) do
      if name ~= "loss" then
        local h = assert(b[name], "no gradient for " .. name .. " with checkpointing")
        local scale = g:abs():max():item()
        local d = (g - h):abs():max():item()
        assert(d <= 1e-6 * scale, string.format("%s differs by %g (scale %g)", name, d, scale))
        n = n + 1
      end
    end
    T.eq(n, 28, "gradients compared")
  end)
end

T.case("the trainer's grad_checkpointing option trains the same", function()
  local function run(ck)
    local model = q.load_model(fixtures .. "tiny-llama")
    model:add_lora{ r = 4, targets = { "q_proj", "v_proj" }, dropout = 0.1, seed = 1 }
    local rows = {}
    for i = 1, 16 do rows[i] = { input_ids = { i, i + 1, i + 2, i + 3, i + 4, i + 5 } } end
    local ds = q.data.from_table(rows, { format = "tokens" })
    return q.trainer{ model = model, train = ds, steps = 4, batch_size = 4, grad_checkpointing = ck, seed = 2,
      optimizer = { "adamw", lr = 1e-2 } }:run().train_loss
  end
  T.eq(run(true), run(false), "final loss")
end)

T.done()
