-- Model families beyond Llama, each against transformers on a random-weight model made by a
-- committed generator (scripts/fixtures/make_<family>.py) with non-default sizes: its f32 logits
-- within 1e-4; and everything that works for Llama working for it: 4-bit on load with LoRA
-- (forward and backward), generation through the KV cache equal to full recomputation, and a
-- save / reload round trip.
--   Qwen3 (tiny-qwen3): q_norm / k_norm per head, head_dim 20 != hidden 48 / 4 heads, GQA 4/2,
--   odd vocab 101, untied head.
--   Gemma 2 (tiny-gemma2) and Gemma 3 (tiny-gemma3): the same sizes, (1 + w) norms around
--   attention and MLP, GeGLU, scaled embeddings, query_pre_attn_scalar 16, sliding-window layers
--   (window 6) on 10-token sequences; Gemma 2 soft-caps attention scores and logits, Gemma 3 has
--   q/k norms and its own RoPE theta on the sliding layers. The KV-cache check runs past the
--   window, so the cached path masks the window too.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"

local function max_abs_diff(a, b) return (a - b):abs():max():item() end
local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); return d end

for _, family in ipairs({ "qwen3", "gemma2", "gemma3" }) do
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
    -- quantized: not equal (the weights are large random ones, so the 4-bit error is large too)
    assert(d > 0 and d == d, "4-bit logits differ by " .. d)
    model:add_lora{ r = 4, alpha = 8, targets = "all-linear", seed = 2 }
    local params = model:parameters{ trainable = true }
    T.eq(#params, model:config().num_hidden_layers * 7 * 2, "LoRA tensors (A and B on 7 linears per layer)")
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

  T.case(family .. ": gradient checkpointing gives the same LoRA gradients", function()
    local model = q.load_model(dir)
    model:add_lora{ r = 4, alpha = 8, targets = "all-linear", seed = 5 }
    for i, p in ipairs(model:parameters{ trainable = true }) do
      p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 40 + i, std = 0.1 }))
    end
    local function grads()
      local loss = model:loss(ref.input_ids)
      loss:backward()
      local out = {}
      for _, p in ipairs(model:parameters{ trainable = true }) do out[p.name] = p.tensor.grad:clone(); p.tensor.grad = nil end
      return out, loss:item()
    end
    local g1, l1 = grads()
    model:gradient_checkpointing(true)
    local g2, l2 = grads()
    T.eq(l2, l1, "loss")
    for name, g in pairs(g1) do T.eq(max_abs_diff(g2[name], g), 0, name) end
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

T.case("gemma3: Lua adapters at mlp_act, mlp_out and block_out run inside Gemma layers and train", function()
  local ref = q.load_tensors(fixtures .. "tiny-gemma3-logits.safetensors")
  for _, at in ipairs({ "mlp_act", "mlp_out", "block_out" }) do
    local model = q.load_model(fixtures .. "tiny-gemma3")
    local n = model:add_adapter{ name = "scale", at = at,
      -- a per-channel scale (a uniform one would vanish in the RMSNorm after the MLP)
      init = function(site, qq) return { s = qq.rand({ at == "mlp_act" and site.intermediate_size or site.hidden_size }) + 0.5 } end,
      forward = function(h, p) return h * p.s end }
    T.eq(n, 4, at .. ": one site per layer")
    local logits = model:forward(ref.input_ids)
    assert(max_abs_diff(logits, ref.logits) > 1e-3, at .. ": the adapter changes the logits")
    local loss = model:loss(ref.input_ids)
    loss:backward()
    local p = model:parameters{ trainable = true }
    T.eq(#p, 4, at .. ": parameters")
    assert(p[1].tensor.grad:abs():max():item() > 0, at .. ": a gradient reaches the adapter")
  end
end)

T.case("families without a GGUF writer refuse GGUF exports instead of writing a llama file", function()
  for _, family in ipairs({ "qwen3", "gemma2", "gemma3" }) do
    local model = q.load_model(fixtures .. "tiny-" .. family)
    local path = os.tmpname() .. ".gguf"
    T.errors(function() model:save(path, { type = "f32" }) end, "cannot be written as GGUF")
    model:add_lora{ r = 2, targets = { "q_proj" } }
    T.errors(function() model:save_adapter(path, { format = "gguf" }) end, "cannot be written as GGUF")
    os.remove(path)
  end
end)

T.case("Gemma config fields that qlora cannot honour are errors naming them", function()
  local src = fixtures .. "tiny-gemma3"
  local f = assert(io.open(src .. "/config.json", "rb")); local text = f:read("a"); f:close()
  local function with(pattern, replacement, ...)
    local out = tmpdir()
    os.execute(string.format("cp %q %q", src .. "/model.safetensors", out .. "/model.safetensors"))
    local changed, n = text:gsub(pattern, replacement, 1)
    assert(n == 1, "pattern not found: " .. pattern)
    local w = assert(io.open(out .. "/config.json", "wb")); w:write(changed); w:close()
    T.errors(function() q.load_model(out) end, ...)
    q.rmtree(out)
  end
  with('"full_attention",', "", "layer_types has 3 entries for 4 layers")
  with('"full_attention"', '"chunked_attention"', "unsupported layer type")
  with('"use_bidirectional_attention": false', '"use_bidirectional_attention": true', "use_bidirectional_attention")
  with('"hidden_activation": "gelu_pytorch_tanh"', '"hidden_activation": "relu"', "hidden_activation", "relu")
  with('"sliding_window": 6', '"sliding_window": -1', "sliding_window")
end)

T.done()
