-- Model families beyond Llama, each against transformers on a random-weight model made by a
-- committed generator (scripts/fixtures/make_<family>.py) with non-default sizes: its f32 logits
-- within 1e-4; and everything that works for Llama working for it: 4-bit on load with LoRA
-- (forward and backward), generation through the KV cache equal to full recomputation, and a
-- save / reload round trip.
--   Qwen3 (tiny-qwen3): q_norm / k_norm per head, head_dim 20 != hidden 48 / 4 heads, GQA 4/2,
--   odd vocab 101, untied head.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"

local function max_abs_diff(a, b) return (a - b):abs():max():item() end
local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); return d end

for _, family in ipairs({ "qwen3" }) do
  local dir = fixtures .. "tiny-" .. family
  local ref = q.load_tensors(fixtures .. "tiny-" .. family .. "-logits.safetensors")

  T.case(family .. ": f32 logits match transformers within 1e-4", function()
    local model = q.load_model(dir)
    local d = max_abs_diff(model:forward(ref.input_ids), ref.logits)
    assert(d <= 1e-4, "logits differ by " .. d)
  end)

  T.case(family .. ": 4-bit on load with LoRA trains; KV-cache generation equals recomputation", function()
    local model = q.load_model(dir, { quant = { type = "nf4", double_quant = true } })
    local d = max_abs_diff(model:forward(ref.input_ids), ref.logits)
    -- quantized (not equal) and still the same model (within half the largest logit; the weights
    -- are large random ones, so 4-bit error is large too)
    assert(d > 0 and d < 0.5 * ref.logits:abs():max():item(), "4-bit logits differ by " .. d)
    model:add_lora{ r = 4, alpha = 8, targets = "all-linear", seed = 2 }
    local params = model:parameters{ trainable = true }
    assert(#params == 2 * 7 * 2, "LoRA tensors: " .. #params)
    local opt = q.optim.adamw(params, { lr = 1e-2 })
    local first, last
    for step = 1, 8 do
      local loss = model:loss(ref.input_ids)
      if step == 1 then first = loss:item() end
      last = loss:item()
      loss:backward(); opt:step(); opt:zero_grad()
    end
    assert(last < first, string.format("loss %g -> %g", first, last))
    local prompt = { 1, 5, 9, 20 }
    local cached = model:generate(prompt, { max_tokens = 6 })
    local ids = {}
    for i, v in ipairs(prompt) do ids[i] = v end
    for _ = 1, 6 do
      local logits = model:forward(q.tensor({ ids }, { dtype = "i64" }))
      local n = #ids
      ids[n + 1] = logits:slice(2, n, n):reshape({ logits:shape()[3] }):argmax():item()
    end
    local full = {}
    for i = #prompt + 1, #ids do full[#full + 1] = ids[i] end
    T.eq(table.concat(cached, ","), table.concat(full, ","), "greedy tokens with and without the KV cache")
  end)

  T.case(family .. ": saved and reloaded, the same logits", function()
    local model = q.load_model(dir)
    local out = tmpdir()
    model:save(out)
    local again = q.load_model(out)
    T.eq(again:config().architecture, model:config().architecture)
    T.eq(max_abs_diff(again:forward(ref.input_ids), model:forward(ref.input_ids)), 0)
    q.rmtree(out)
  end)
end

T.done()
