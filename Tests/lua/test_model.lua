-- Llama-family models against transformers: the tiny Llama's logits and loss in f32, the same
-- model saved by transformers + bitsandbytes in 4-bit (loaded as it is), and quantized on load.
--
-- The 4-bit reference logits were computed by bitsandbytes' CPU inference path, which on a CPU
-- with AVX512-BF16 switches to a bf16-only kernel (bf16 code table, input, absmax and output)
-- whatever compute dtype is configured, and the checkpoint was saved after re-quantizing the
-- bf16-rounded absmax. So f32 compute cannot come closer than about 2.5e-3 to those logits; a
-- float64 re-implementation of the same weights agrees with qlora's numbers to 1e-7. The bound
-- below is 3e-3 for that reason (a bitsandbytes-compatible compute mode is planned).
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"

local function max_abs_diff(a, b) return (a - b):abs():max():item() end

T.case("tiny-llama f32 logits and loss match transformers", function()
  local ref = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors")
  local model = q.load_model(fixtures .. "tiny-llama")
  local logits = model:forward(ref.input_ids)
  T.close(logits:shape(), { 2, 17, 256 })
  local d = max_abs_diff(logits, ref.logits)
  assert(d <= 1e-4, "logits differ by " .. d)
  local loss = model:loss(ref.input_ids, ref.input_ids)
  T.close(loss:item(), ref.loss:item(), 1e-5)
end)

T.case("a 4-bit checkpoint saved by transformers loads as it is", function()
  local ref = q.load_tensors(fixtures .. "tiny-llama-bnb-nf4-logits.safetensors")
  local ids = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors").input_ids
  local model = q.load_model(fixtures .. "tiny-llama-bnb-nf4")
  for _, m in ipairs(model:modules()) do
    T.eq(m.quantized, m.layer ~= nil, m.name .. " quantized")
  end
  local d = max_abs_diff(model:forward(ids), ref.logits)
  assert(d <= 3e-3, "logits differ by " .. d)
end)

T.case("quantized on load (NF4 + double quant) matches bitsandbytes' logits", function()
  local ref = q.load_tensors(fixtures .. "tiny-llama-bnb-nf4-logits.safetensors")
  local ids = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors").input_ids
  local model = q.load_model(fixtures .. "tiny-llama", { quant = { type = "nf4", block = 64, double_quant = true } })
  local d = max_abs_diff(model:forward(ids), ref.logits)
  assert(d <= 3e-3, "logits differ by " .. d)
end)

T.case("modules and config", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  local mods = model:modules()
  T.eq(#mods, 2 * 7 + 1)
  T.eq(mods[1].name, "model.layers.0.self_attn.q_proj"); T.eq(mods[1].kind, "q_proj"); T.eq(mods[1].layer, 0)
  T.eq(mods[1].in_features, 64); T.eq(mods[1].out_features, 64)
  T.eq(mods[2].out_features, 32)
  T.eq(mods[#mods].name, "lm_head"); T.eq(mods[#mods].layer, nil)
  local c = model:config()
  T.eq(c.num_key_value_heads, 2); T.eq(c.head_dim, 16); T.eq(c.vocab_size, 256)
end)

T.case("bad model directories and inputs", function()
  T.errors(function() q.load_model("/nonexistent") end, "qlora.load_model", "not a directory")
  local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
  T.errors(function() q.load_model(dir) end, "config.json")
  local f = io.open(dir .. "/config.json", "w"); f:write('{"architectures": ["GPT2LMHeadModel"]}'); f:close()
  T.errors(function() q.load_model(dir) end, "unsupported architecture \"GPT2LMHeadModel\"")
  f = io.open(dir .. "/config.json", "w"); f:write('{"architectures": ["LlamaForCausalLM"], "vocab_size": 8}'); f:close()
  T.errors(function() q.load_model(dir) end, "missing field \"hidden_size\"")
  os.execute("cp " .. fixtures .. "tiny-llama/config.json " .. dir .. "/")
  T.errors(function() q.load_model(dir) end, "no model.safetensors")
  q.save_tensors(dir .. "/model.safetensors", { ["model.embed_tokens.weight"] = q.zeros({ 256, 64 }) })
  T.errors(function() q.load_model(dir) end, "missing tensor \"model.layers.0.input_layernorm.weight\"")
  q.save_tensors(dir .. "/model.safetensors", { ["model.embed_tokens.weight"] = q.zeros({ 256, 32 }) })
  T.errors(function() q.load_model(dir) end, "has shape [256,32], expected [256,64]")
  os.execute("rm -rf " .. dir)
  local model = q.load_model(fixtures .. "tiny-llama")
  T.errors(function() model:forward(q.ones({ 1, 3 })) end, "token ids must be integers")
  T.errors(function() model:forward({ { 1, 300 } }) end, "index 300 out of range")
  T.errors(function() model:loss({ { 1, 2 } }, { { 1 } }) end, "labels shape")
  T.errors(function() q.load_model(fixtures .. "tiny-llama", { quant = { type = "nf5" } }) end, "unknown quantization type")
  T.errors(function() q.load_model(fixtures .. "tiny-llama", { quant = 4 }) end, "option 'quant' must be")
end)

T.done()
