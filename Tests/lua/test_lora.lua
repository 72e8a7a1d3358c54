-- LoRA adapters: a PEFT adapter loaded onto the tiny Llama gives PEFT's logits and gradients;
-- adapters we add and save have PEFT's layout and load back bit for bit; placement rules.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"

local function max_abs_diff(a, b) return (a - b):abs():max():item() end
local function tmpdir() local d = os.tmpname(); os.remove(d); return d end

T.case("a PEFT adapter reproduces PEFT's logits", function()
  local ref = q.load_tensors(fixtures .. "tiny-llama-lora-logits.safetensors")
  local ids = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors").input_ids
  local model = q.load_model(fixtures .. "tiny-llama")
  model:load_adapter(fixtures .. "tiny-llama-lora")
  local d = max_abs_diff(model:forward(ids), ref.logits)
  assert(d <= 1e-4, "logits differ by " .. d)
  model:disable_adapters()
  local base = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors").logits
  assert(max_abs_diff(model:forward(ids), base) <= 1e-4, "disabled adapters still change the output")
end)

T.case("one backward pass gives PEFT's loss and LoRA gradients", function()
  local ref = q.load_tensors(fixtures .. "tiny-llama-lora-grads.safetensors")
  local ids = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors").input_ids
  local model = q.load_model(fixtures .. "tiny-llama")
  model:load_adapter(fixtures .. "tiny-llama-lora")
  local loss = model:loss(ids, ids)
  T.close(loss:item(), ref.loss:item(), 1e-5)
  loss:backward()
  local n = 0
  for _, p in ipairs(model:parameters{ trainable = true }) do
    -- "model.layers.0.self_attn.q_proj.lora_A.default.weight" -> PEFT's key + ".grad"
    local key = "base_model.model." .. p.name:gsub("%.default%.weight$", ".weight") .. ".grad"
    local g = assert(ref[key], "no reference gradient " .. key)
    local scale = g:abs():max():item()
    local d = max_abs_diff(p.tensor.grad, g)
    assert(d <= 1e-4 * scale + 1e-7, key .. " differs by " .. d .. " (scale " .. scale .. ")")
    n = n + 1
  end
  T.eq(n, 12, "gradients checked")
end)

T.case("add_lora, save_adapter in PEFT's layout, load back bit for bit", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  local added = model:add_lora{ r = 4, alpha = 8, targets = { "q_proj", "down_proj" }, seed = 3 }
  T.eq(added, 4)
  local trainable, total = model:trainable_parameters()
  T.eq(trainable, 2 * (4 * 64 + 64 * 4) + 2 * (4 * 192 + 64 * 4))
  assert(total > trainable)
  local dir = tmpdir()
  model:save_adapter(dir)
  local w, meta = q.load_tensors(dir .. "/adapter_model.safetensors")
  T.eq(meta.format, "pt")
  T.close(w["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]:shape(), { 4, 192 })
  T.close(w["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]:shape(), { 64, 4 })
  local f = io.open(dir .. "/adapter_config.json"); local cfg = f:read("a"); f:close()
  for _, field in ipairs({ '"peft_type": "LORA"', '"r": 4', '"lora_alpha": 8', '"target_modules"', '"use_rslora": false', '"task_type": "CAUSAL_LM"' }) do
    assert(cfg:find(field, 1, true), "adapter_config.json lacks " .. field .. "\n" .. cfg)
  end
  local other = q.load_model(fixtures .. "tiny-llama")
  other:load_adapter(dir)
  local a, b = model:parameters{ trainable = true }, other:parameters{ trainable = true }
  T.eq(#a, #b)
  for i = 1, #a do
    T.eq(a[i].name, b[i].name)
    T.eq(max_abs_diff(a[i].tensor, b[i].tensor), 0, a[i].name)
  end
  os.execute("rm -rf " .. dir)
end)

T.case("placement: all-linear, regex, predicate, layers, rank_pattern", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  T.eq(model:add_lora{ name = "all", targets = "all-linear" }, 14)
  T.eq(model:add_lora{ name = "re", targets = "model\\.layers\\.1\\..*(q|k)_proj" }, 2)
  local seen = 0
  T.eq(model:add_lora{ name = "fn", targets = function(m) seen = seen + 1; return m.layer == 1 and m.kind:find("mlp") == nil and m.name:find("mlp") ~= nil end }, 3)
  T.eq(seen, 15)
  T.eq(model:add_lora{ name = "top", targets = { "v_proj" }, layers = { 1 } }, 1)
  model:add_lora{ name = "ranks", targets = { "q_proj", "k_proj" }, r = 2, rank_pattern = { k_proj = 5 } }
  for _, p in ipairs(model:parameters{ trainable = true }) do
    if p.name:find("k_proj.lora_A.ranks") then T.eq(p.tensor:shape(1), 5) end
    if p.name:find("q_proj.lora_A.ranks") then T.eq(p.tensor:shape(1), 2) end
  end
end)

T.case("bad LoRA options and adapters", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  T.errors(function() model:add_lora{ r = 0 } end, "r must be >= 1")
  T.errors(function() model:add_lora{ targets = { "qq_proj" } } end, "no module matches \"qq_proj\"")
  T.errors(function() model:add_lora{ targets = function() return 1 end } end, "must return true or false")
  T.errors(function() model:add_lora{ targets = function() error("oops") end } end, "oops")
  T.errors(function() model:add_lora{ targets = "(" } end, "not a valid regular expression")
  T.errors(function() model:add_lora{ rr = 4 } end, "unknown option 'rr'")
  T.errors(function() model:add_lora{ init = "olora" } end, "not supported yet")
  T.errors(function() model:add_lora{ dropout = 1.5 } end, "dropout")
  model:add_lora{}
  T.errors(function() model:add_lora{} end, "already has an adapter named \"default\"")
  T.errors(function() model:load_adapter("/nonexistent") end, "adapter_config.json")
  T.errors(function() model:set_adapter("nope") end, "no adapter named \"nope\"")
  -- an adapter for another model: shapes do not fit
  local dir = tmpdir(); os.execute("mkdir -p " .. dir)
  os.execute("cp " .. fixtures .. "tiny-llama-lora/adapter_config.json " .. dir .. "/")
  q.save_tensors(dir .. "/adapter_model.safetensors", {
    ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = q.zeros({ 8, 128 }),
    ["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] = q.zeros({ 64, 8 }) })
  T.errors(function() model:load_adapter(dir, { name = "x" }) end, "do not fit a layer of 64 inputs")
  q.save_tensors(dir .. "/adapter_model.safetensors", {
    ["base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"] = q.zeros({ 8, 64 }),
    ["base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight"] = q.zeros({ 64, 8 }) })
  T.errors(function() model:load_adapter(dir, { name = "y" }) end, "which this model does not have")
  os.execute("rm -rf " .. dir)
end)

T.done()
