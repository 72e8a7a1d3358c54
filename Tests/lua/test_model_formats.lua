-- The shapes a Hugging Face directory can take: sharded weights with an index, the older
-- rope_theta style of config, tied embeddings, bf16 weights, Mistral and Qwen2 (q/k/v biases).
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"

local function max_abs_diff(a, b) return (a - b):abs():max():item() end
local function tmpdir() local d = os.tmpname(); os.remove(d); os.execute("mkdir -p " .. d); return d end
local function read(p) local f = assert(io.open(p)); local s = f:read("a"); f:close(); return s end
local function write(p, s) local f = assert(io.open(p, "w")); f:write(s); f:close() end
local ids = q.tensor({ { 1, 5, 9, 200, 17, 3 } }, { dtype = "i64" })
local base = q.load_model(fixtures .. "tiny-llama")
local ref = base:forward(ids)
local weights = q.load_tensors(fixtures .. "tiny-llama/model.safetensors")
local config = read(fixtures .. "tiny-llama/config.json")

local function model_dir(cfg, tensors)
  local d = tmpdir()
  write(d .. "/config.json", cfg)
  q.save_tensors(d .. "/model.safetensors", tensors)
  return d
end

T.case("sharded weights with an index", function()
  local d = tmpdir()
  write(d .. "/config.json", config)
  local a, b, map = {}, {}, {}
  local i = 0
  for name, t in pairs(weights) do
    i = i + 1
    local shard = (i % 2 == 0) and "model-00001-of-00002.safetensors" or "model-00002-of-00002.safetensors"
    if i % 2 == 0 then a[name] = t else b[name] = t end
    map[#map + 1] = string.format('"%s": "%s"', name, shard)
  end
  q.save_tensors(d .. "/model-00001-of-00002.safetensors", a)
  q.save_tensors(d .. "/model-00002-of-00002.safetensors", b)
  write(d .. "/model.safetensors.index.json", '{"metadata": {}, "weight_map": {' .. table.concat(map, ", ") .. "}}")
  T.eq(max_abs_diff(q.load_model(d):forward(ids), ref), 0)
  os.remove(d .. "/model-00002-of-00002.safetensors")
  T.errors(function() q.load_model(d) end, "shard \"model-00002-of-00002.safetensors\"", "does not exist")
  write(d .. "/model.safetensors.index.json", '{"weight_map": {"x": "../etc/passwd"}}')
  T.errors(function() q.load_model(d) end, "must name a file in the directory")
  os.execute("rm -rf " .. d)
end)

T.case("rope_theta + rope_scaling style config", function()
  local old = config:gsub('"rope_parameters": {[^}]*},', '"rope_theta": 10000.0, "rope_scaling": null,')
  assert(old ~= config)
  local d = model_dir(old, weights)
  T.eq(max_abs_diff(q.load_model(d):forward(ids), ref), 0)
  -- a different theta changes the model; an unknown scaling type is an error
  write(d .. "/config.json", config:gsub('"rope_theta": 10000.0', '"rope_theta": 500.0'))
  assert(max_abs_diff(q.load_model(d):forward(ids), ref) > 1e-4, "rope_theta had no effect")
  write(d .. "/config.json", config:gsub('"rope_type": "default"', '"rope_type": "yarn"'))
  T.errors(function() q.load_model(d) end, "unsupported rope scaling type \"yarn\"")
  write(d .. "/config.json", config:gsub('"rope_type": "default"', '"rope_type": "linear", "factor": 2.0'))
  assert(max_abs_diff(q.load_model(d):forward(ids), ref) > 1e-4, "linear scaling had no effect")
  write(d .. "/config.json", config:gsub('"rope_type": "default"',
    '"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64'))
  local l3 = q.load_model(d):forward(ids)
  assert(max_abs_diff(l3, ref) > 1e-6, "llama3 scaling had no effect")
  os.execute("rm -rf " .. d)
end)

T.case("tied embeddings use embed_tokens as the head", function()
  local tied = {}
  for k, v in pairs(weights) do if k ~= "lm_head.weight" then tied[k] = v end end
  local d = model_dir(config:gsub('"tie_word_embeddings": false', '"tie_word_embeddings": true'), tied)
  local untied = {}
  for k, v in pairs(weights) do untied[k] = v end
  untied["lm_head.weight"] = weights["model.embed_tokens.weight"]
  local d2 = model_dir(config, untied)
  T.eq(max_abs_diff(q.load_model(d):forward(ids), q.load_model(d2):forward(ids)), 0)
  local mods = q.load_model(d):modules()
  T.eq(mods[#mods].name, "model.layers.1.mlp.down_proj", "no separate head")
  os.execute("rm -rf " .. d .. " " .. d2)
end)

T.case("bf16 weights load (computed in f32)", function()
  local half = {}
  for k, v in pairs(weights) do half[k] = v:to("bf16") end
  local d = model_dir(config, half)
  assert(max_abs_diff(q.load_model(d):forward(ids), ref) < 5e-2)
  os.execute("rm -rf " .. d)
end)

T.case("Mistral is the Llama layout; Qwen2 adds q/k/v biases", function()
  local d = model_dir(config:gsub("LlamaForCausalLM", "MistralForCausalLM"), weights)
  T.eq(max_abs_diff(q.load_model(d):forward(ids), ref), 0)
  os.execute("rm -rf " .. d)
  local qwen = config:gsub("LlamaForCausalLM", "Qwen2ForCausalLM")
  d = model_dir(qwen, weights)
  T.errors(function() q.load_model(d) end, "missing tensor \"model.layers.0.self_attn.q_proj.bias\"")
  local wb = {}
  for k, v in pairs(weights) do wb[k] = v end
  for l = 0, 1 do
    wb["model.layers." .. l .. ".self_attn.q_proj.bias"] = q.zeros(64)
    wb["model.layers." .. l .. ".self_attn.k_proj.bias"] = q.zeros(32)
    wb["model.layers." .. l .. ".self_attn.v_proj.bias"] = q.zeros(32)
  end
  q.save_tensors(d .. "/model.safetensors", wb)
  T.eq(max_abs_diff(q.load_model(d):forward(ids), ref), 0, "zero biases")
  wb["model.layers.0.self_attn.v_proj.bias"] = q.ones(32)
  q.save_tensors(d .. "/model.safetensors", wb)
  assert(max_abs_diff(q.load_model(d):forward(ids), ref) > 1e-3, "the v bias had no effect")
  wb["model.layers.0.self_attn.v_proj.bias"] = q.ones(31)
  q.save_tensors(d .. "/model.safetensors", wb)
  T.errors(function() q.load_model(d) end, "v_proj.bias\" has shape [31], expected [32]")
  -- saved and loaded back with its biases
  wb["model.layers.0.self_attn.v_proj.bias"] = q.ones(32)
  q.save_tensors(d .. "/model.safetensors", wb)
  local m = q.load_model(d)
  local d2 = tmpdir()
  m:save(d2)
  T.eq(max_abs_diff(q.load_model(d2):forward(ids), m:forward(ids)), 0, "Qwen2 round trip")
  os.execute("rm -rf " .. d .. " " .. d2)
end)

T.case("unsupported options are errors naming the field", function()
  local d = model_dir(config:gsub('"hidden_act": "silu"', '"hidden_act": "gelu"'), weights)
  T.errors(function() q.load_model(d) end, "config.json", "unsupported hidden_act \"gelu\"")
  write(d .. "/config.json", config:gsub('"num_key_value_heads": 2', '"num_key_value_heads": 3'))
  T.errors(function() q.load_model(d) end, "num_key_value_heads (3) must divide num_attention_heads (4)")
  write(d .. "/config.json", config:gsub('"vocab_size": 256', '"vocab_size": "many"'))
  T.errors(function() q.load_model(d) end, "field \"vocab_size\" must be an integer")
  write(d .. "/config.json", "{ not json")
  T.errors(function() q.load_model(d) end, "config.json")
  os.execute("rm -rf " .. d)
end)

T.done()
