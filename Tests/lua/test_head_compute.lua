-- The dense output head's compute type (model:head_compute): quantize / load_model with
-- compute = "bf16" make the head (lm_head, or the tied embedding) compute its logits and its
-- input gradient with bf16-rounded operands; its weight gradient, when it trains, stays f32.
-- On a CPU without bf16 dot products compute = "bf16" runs the f32 kernels (q.bf16_kernels() is
-- false): the head is then exactly the f32 head; scripts/test also runs this file with
-- QLORA_BF16=emulate there, so the bf16 rounding is tested on every CPU.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local ids = q.tensor({ { 1, 5, 9, 20, 17, 3, 64, 0 }, { 7, 7, 7, 1, 2, 3, 4, 5 } }, { dtype = "i64" })

local function tiny(tied)
  return q.llama{ vocab = 97, hidden = 64, layers = 1, heads = 4, intermediate = 96, seed = 7,
                  tie_word_embeddings = tied }
end

local function rel_diff(a, b) return (a - b):abs():max():item() / b:abs():max():item() end

T.case("quantize sets the head's compute with the 4-bit layers'", function()
  local model = tiny(false)
  T.eq(model:head_compute(), "f32", "a new model")
  model:quantize{ type = "nf4", compute = "bf16" }
  T.eq(model:head_compute(), "bf16", "after quantize bf16")
  model:quantize{ type = "nf4", compute = "f32" }
  T.eq(model:head_compute(), "f32", "after quantize f32 (already 4-bit)")
  T.eq(model:head_compute("bf16"), "f32", "the setter returns the previous one")
  T.eq(model:head_compute(), "bf16", "set")
  T.errors(function() model:head_compute("bnb_bf16") end, "head compute must be")
  -- the summary says when bf16 runs the f32 kernels, and only then
  model:quantize{ type = "nf4", compute = "bf16" }
  local says = model:summary():find("compute bf16 runs the f32 kernels", 1, true) ~= nil
  T.eq(says, not q.bf16_kernels(), "summary names the f32 kernels exactly when they run")
  model:quantize{ type = "nf4", compute = "f32" }
  model:head_compute("f32")
  T.eq(model:summary():find("compute bf16", 1, true), nil, "f32 compute says nothing")
end)

-- Same model, head in f32 then bf16: logits and LoRA gradients move by bf16 rounding, not more.
for _, tied in ipairs({ false, true }) do
  T.case("a bf16 head rounds its operands (tied " .. tostring(tied) .. ")", function()
    local model = tiny(tied)
    model:quantize{ type = "nf4", block = 64, compute = "bf16" }
    model:add_lora{ r = 4, alpha = 8, targets = "all-linear", seed = 3 }
    for i, p in ipairs(model:parameters{ trainable = true }) do
      p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 80 + i, std = 0.1 }))
    end
    local function run(head)
      model:head_compute(head)
      local logits = model:forward(ids)
      local loss = model:loss(ids)
      loss:backward()
      local grads = {}
      for _, p in ipairs(model:parameters{ trainable = true }) do
        grads[p.name] = p.tensor.grad:clone(); p.tensor.grad = nil
      end
      return logits, grads
    end
    local l32, g32 = run("f32")
    local l16, g16 = run("bf16")
    local d = rel_diff(l16, l32)
    if not q.bf16_kernels() then
      T.eq(d, 0, "without bf16 dot products the bf16 head runs the f32 kernels")
      return
    end
    assert(d > 0, "the bf16 head changes the logits")
    assert(d < 1e-2, "logits differ by " .. d .. " of their scale")
    local n = 0
    for name, g in pairs(g32) do
      local dg = rel_diff(g16[name], g)
      assert(dg < 3e-2, name .. " gradient differs by " .. dg .. " of its scale")
      n = n + 1
    end
    T.eq(n, 14, "LoRA gradients compared")
  end)
end

T.case("a training head keeps an f32 weight gradient under a bf16 head", function()
  local model = tiny(false)
  model:set_trainable(true)
  local function head_grad(head)
    model:head_compute(head)
    local loss = model:loss(ids)
    loss:backward()
    local g
    for _, p in ipairs(model:parameters{ trainable = true }) do
      if p.name == "lm_head.weight" then g = p.tensor.grad:clone() end
      p.tensor.grad = nil
    end
    return assert(g, "lm_head.weight has a gradient")
  end
  local g32, g16 = head_grad("f32"), head_grad("bf16")
  local d = rel_diff(g16, g32)
  assert(d < 1e-2, "lm_head gradient differs by " .. d .. " of its scale")
end)

T.done()
