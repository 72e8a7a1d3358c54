-- LoRA variants on the tiny Llama: DoRA (forward at init, against a hand-composed weight, its
-- gradients, PEFT's file layout), PiSSA and LoftQ initialisation (dense and 4-bit), merging
-- adapters into the base weights and back, and the errors for bad inputs.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"
local tiny = fixtures .. "tiny-llama"
local NF4 = { quant = { type = "nf4", block = 64, double_quant = true } }

local function max_abs_diff(a, b) return (a - b):abs():max():item() end
local function fro(t) return t:square():sum():sqrt():item() end
local function rms(t) return t:square():mean():sqrt():item() end
local function tmpdir() local d = os.tmpname(); os.remove(d); return d end
local ids = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors").input_ids
local base_logits = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors").logits
local W = q.load_tensors(tiny .. "/model.safetensors")   -- the dense f32 weights

-- name -> tensor for a model's LoRA parameters
local function params(model)
  local out = {}
  for _, p in ipairs(model:parameters()) do out[p.name] = p.tensor end
  return out
end

-- (m / ||W + s B A||_row) * (W + s B A), the merged DoRA weight, composed from q ops
local function dora_weight(w, a, b, m, s)
  local v = w + b:matmul(a) * s
  local norm = v:square():sum(2):sqrt()            -- [out]
  return v * (m / norm):reshape({ -1, 1 })
end

-- Gives adapter `name` on `module` a random B and (for DoRA) a magnitude away from its init.
local function perturb(p, module, name, seed)
  local b = p[module .. ".lora_B." .. name .. ".weight"]
  b:copy_(q.randn(b:shape(), { seed = seed, std = 0.05 }))
  local m = p[module .. ".lora_magnitude_vector." .. name .. ".weight"]
  if m then m:copy_(m * (q.randn(m:shape(), { seed = seed + 1, std = 0.1 }) + 1)) end
end

local function one_hot(n, i) return q.arange(n):eq(i - 1):to("f32") end

T.case("DoRA at init: same logits as the base; magnitude = row norms of W; listed as trainable", function()
  local model = q.load_model(tiny)
  T.eq(model:add_lora{ r = 4, alpha = 8, dora = true, targets = { "q_proj", "v_proj", "down_proj" }, seed = 2 }, 6)
  T.eq(max_abs_diff(model:forward(ids), base_logits) <= 1e-4, true, "logits at init")
  local p = params(model)
  local name = "model.layers.1.mlp.down_proj"
  local m = assert(p[name .. ".lora_magnitude_vector.default.weight"], "no magnitude parameter")
  T.close(m:shape(), { 64 })
  local norms = W[name .. ".weight"]:square():sum(2):sqrt()
  assert(max_abs_diff(m, norms) <= 1e-5 * norms:max():item(), "magnitude is not ||W||_row")
  assert(m.requires_grad, "magnitude must be trainable")
  local trainable = model:trainable_parameters()
  -- A, B and the magnitudes, counted from the tensors themselves
  local expect = 0
  for _, t in pairs(p) do expect = expect + t:numel() end
  T.eq(trainable, expect)
  -- the base never changes for DoRA / kaiming init
  T.eq(max_abs_diff(model:base_weight(name), W[name .. ".weight"]), 0)
end)

T.case("DoRA forward matches the hand-composed weight (m / ||W + sBA||) (W + sBA)", function()
  local model = q.load_model(tiny)
  local targets = { "model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "model.layers.1.self_attn.o_proj" }
  model:add_lora{ r = 4, alpha = 8, dora = true, targets = targets, seed = 5 }
  local p = params(model)
  for i, t in ipairs(targets) do perturb(p, t, "default", 10 * i) end
  local logits = model:forward(ids)
  assert(max_abs_diff(logits, base_logits) > 1e-3, "the perturbed adapter changes nothing")
  -- a dense model whose weights are the composed DoRA weights
  local composed = {}
  for k, v in pairs(W) do composed[k] = v end
  for _, t in ipairs(targets) do
    composed[t .. ".weight"] = dora_weight(W[t .. ".weight"], p[t .. ".lora_A.default.weight"],
      p[t .. ".lora_B.default.weight"], p[t .. ".lora_magnitude_vector.default.weight"], 2)
  end
  local dir = tmpdir(); os.execute("mkdir -p " .. dir)
  os.execute("cp " .. tiny .. "/config.json " .. dir .. "/")
  q.save_tensors(dir .. "/model.safetensors", composed)
  local ref = q.load_model(dir)
  local d = max_abs_diff(logits, ref:forward(ids))
  assert(d <= 1e-4, "DoRA logits differ from the composed model's by " .. d)
  -- with the adapter disabled the base comes back
  model:disable_adapters()
  assert(max_abs_diff(model:forward(ids), base_logits) <= 1e-4)
  os.execute("rm -rf " .. dir)
end)

T.case("DoRA on a 4-bit base: W dequantized on the fly; matches the composed dense model", function()
  local model = q.load_model(tiny, NF4)
  local plain = model:forward(ids)
  local targets = { "model.layers.0.self_attn.k_proj", "model.layers.1.mlp.gate_proj" }
  model:add_lora{ r = 4, alpha = 8, dora = true, targets = targets, seed = 7 }
  T.eq(max_abs_diff(model:forward(ids), plain) <= 1e-5, true, "4-bit DoRA at init")
  local p = params(model)
  local name = targets[2]
  local norms = model:base_weight(name):square():sum(2):sqrt()
  assert(max_abs_diff(p[name .. ".lora_magnitude_vector.default.weight"], norms) <= 1e-5 * norms:max():item(),
    "magnitude is not the row norms of the dequantized weight")
  for i, t in ipairs(targets) do perturb(p, t, "default", 20 * i) end
  local composed = {}
  for k, v in pairs(W) do composed[k] = v end
  for _, m in ipairs(model:modules()) do
    if m.quantized then composed[m.name .. ".weight"] = model:base_weight(m.name) end
  end
  for _, t in ipairs(targets) do
    composed[t .. ".weight"] = dora_weight(model:base_weight(t), p[t .. ".lora_A.default.weight"],
      p[t .. ".lora_B.default.weight"], p[t .. ".lora_magnitude_vector.default.weight"], 2)
  end
  local dir = tmpdir(); os.execute("mkdir -p " .. dir)
  os.execute("cp " .. tiny .. "/config.json " .. dir .. "/")
  q.save_tensors(dir .. "/model.safetensors", composed)
  local d = max_abs_diff(model:forward(ids), q.load_model(dir):forward(ids))
  assert(d <= 1e-4, "4-bit DoRA logits differ from the composed dense model's by " .. d)
  os.execute("rm -rf " .. dir)
end)

T.case("DoRA gradients: m by finite differences; A and B with the norm held fixed", function()
  local model = q.load_model(tiny)
  local t = "model.layers.0.self_attn.v_proj"
  local s = 8 / 4
  model:add_lora{ r = 4, alpha = 8, dora = true, targets = { t }, seed = 9 }
  local p = params(model)
  perturb(p, t, "default", 40)
  local A, B = p[t .. ".lora_A.default.weight"], p[t .. ".lora_B.default.weight"]
  local M = p[t .. ".lora_magnitude_vector.default.weight"]
  local w = W[t .. ".weight"]
  model:loss(ids, ids):backward()
  local gA, gB, gM = A.grad:clone(), B.grad:clone(), M.grad:clone()
  local function loss() return q.no_grad(function() return model:loss(ids, ids):item() end) end
  local function norms(a, b) return (w + b:matmul(a) * s):square():sum(2):sqrt() end
  -- d loss / d (flat element i of x), moving m along so that m / ||W + sBA|| stays put (the
  -- norm is detached in DoRA, so its gradient ignores the norm's dependence on A and B).
  local function numeric(x, i, eps, hold_norm)
    local h = one_hot(x:numel(), i):reshape(x:shape())
    local m0, n0 = M:clone(), norms(A, B)
    local function at(sign)
      x:add_(h, sign * eps)
      if hold_norm then M:copy_(m0 * norms(A, B) / n0) end
      local l = loss()
      x:add_(h, -sign * eps)
      M:copy_(m0)
      return l
    end
    return (at(1) - at(-1)) / (2 * eps)
  end
  local function check(x, g, label, hold)
    -- the three largest gradient entries
    local flat = g:reshape({ -1 })
    local _, order = flat:abs():reshape({ 1, -1 }):max(2)
    local idx = { order:item() + 1, 1, flat:numel() }
    for _, i in ipairs(idx) do
      local analytic = flat:slice(1, i, i):item()
      local num = numeric(x, i, 1e-2, hold)
      local scale = flat:abs():max():item()
      assert(math.abs(num - analytic) <= 5e-3 * scale + 1e-5,
        string.format("%s[%d]: autograd %.6g, finite differences %.6g", label, i, analytic, num))
    end
  end
  check(M, gM, "magnitude", false)
  check(A, gA, "lora_A", true)
  check(B, gB, "lora_B", true)
end)

T.case("DoRA adapters save in PEFT's layout and load back bit for bit", function()
  local model = q.load_model(tiny)
  model:add_lora{ name = "d", r = 4, alpha = 8, dora = true, targets = { "q_proj", "up_proj" }, seed = 3 }
  local p = params(model)
  perturb(p, "model.layers.0.self_attn.q_proj", "d", 60)
  perturb(p, "model.layers.1.mlp.up_proj", "d", 70)
  local dir = tmpdir()
  model:save_adapter(dir, { name = "d" })
  local w = q.load_tensors(dir .. "/adapter_model.safetensors")
  local key = "base_model.model.model.layers.1.mlp.up_proj.lora_magnitude_vector"
  assert(w[key], "no " .. key)
  T.close(w[key]:shape(), { 192 })
  T.eq(max_abs_diff(w[key], p["model.layers.1.mlp.up_proj.lora_magnitude_vector.d.weight"]), 0)
  local n = 0
  for _ in pairs(w) do n = n + 1 end
  T.eq(n, 4 * 3)
  local f = io.open(dir .. "/adapter_config.json"); local cfg = f:read("a"); f:close()
  assert(cfg:find('"use_dora": true', 1, true), "adapter_config.json lacks use_dora\n" .. cfg)
  local other = q.load_model(tiny)
  other:load_adapter(dir, { name = "d" })
  local a, b = model:parameters{ trainable = true }, other:parameters{ trainable = true }
  T.eq(#a, #b)
  for i = 1, #a do
    T.eq(a[i].name, b[i].name)
    T.eq(max_abs_diff(a[i].tensor, b[i].tensor), 0, a[i].name)
  end
  T.eq(max_abs_diff(model:forward(ids), other:forward(ids)), 0, "logits after loading")
  -- the key with a ".weight" suffix (PEFT's in-memory name) loads too
  local renamed = {}
  for k, v in pairs(w) do renamed[k:gsub("lora_magnitude_vector$", "lora_magnitude_vector.weight")] = v end
  q.save_tensors(dir .. "/adapter_model.safetensors", renamed, { format = "pt" })
  local third = q.load_model(tiny)
  third:load_adapter(dir)
  T.eq(max_abs_diff(model:forward(ids), third:forward(ids)), 0, "logits after loading .weight keys")
  os.execute("rm -rf " .. dir)
end)

T.case("PiSSA on a dense model: logits unchanged at init, A and B from the top singular triplets", function()
  local model = q.load_model(tiny)
  local r, alpha = 4, 16
  local s = alpha / r
  T.eq(model:add_lora{ r = r, alpha = alpha, init = "pissa", targets = "all-linear" }, 14)
  local d = max_abs_diff(model:forward(ids), base_logits)
  assert(d <= 1e-4, "PiSSA changes the logits at init by " .. d)
  local p = params(model)
  for _, t in ipairs({ "model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "model.layers.0.mlp.gate_proj" }) do
    local w = W[t .. ".weight"]
    local a, b = p[t .. ".lora_A.default.weight"], p[t .. ".lora_B.default.weight"]
    -- the residual base plus s B A is W
    local res = model:base_weight(t)
    assert(max_abs_diff(res + b:matmul(a) * s, w) <= 1e-5, t .. ": base + s B A is not W")
    -- A A^T = diag(S / s) = B^T B, and W A^T = B diag(S): singular vectors and values
    local sv = (a:matmul(a:t()) * s)
    local S = {}
    for k = 1, r do S[k] = sv:slice(1, k, k):slice(2, k, k):item() end
    for k = 2, r do assert(S[k] <= S[k - 1] * (1 + 1e-5), t .. ": singular values not descending") end
    local eye = q.arange(r):reshape({ r, 1 }):eq(q.arange(r):reshape({ 1, r })):to("f32")
    local Sdiag = eye * q.tensor(S):reshape({ 1, r })
    assert(max_abs_diff(sv, Sdiag) <= 1e-4 * S[1], t .. ": A A^T is not diagonal")
    assert(max_abs_diff(b:t():matmul(b) * s, Sdiag) <= 1e-4 * S[1], t .. ": B^T B is not diag(S / s)")
    assert(max_abs_diff(w:matmul(a:t()), b:matmul(Sdiag)) <= 1e-4 * S[1], t .. ": rows of A are not right singular vectors")
    -- the residual keeps the rest of the spectrum: ||W||^2 = ||res||^2 + sum S_k^2
    local sum2 = 0
    for k = 1, r do sum2 = sum2 + S[k] ^ 2 end
    T.close(fro(res) ^ 2 + sum2, fro(w) ^ 2, 1e-3 * fro(w) ^ 2, 0, t .. " spectrum")
  end
  -- DoRA on top of PiSSA also leaves the logits alone
  local m2 = q.load_model(tiny)
  m2:add_lora{ r = r, alpha = alpha, init = "pissa", dora = true, targets = { "q_proj", "o_proj" } }
  assert(max_abs_diff(m2:forward(ids), base_logits) <= 1e-4)
end)

T.case("4-bit PiSSA and LoftQ: closer to W than plain 4-bit; LoftQ logits closer to the dense model's", function()
  local plain = q.load_model(tiny, NF4)
  local plain_logits = plain:forward(ids)
  local d_plain = rms(plain_logits - base_logits)
  local r, alpha = 8, 16
  local s = alpha / r
  local names = { "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "model.layers.1.mlp.down_proj" }
  local results = {}
  for _, variant in ipairs({ { init = "loftq" }, { init = "loftq", loftq_iter = 3 }, { init = "pissa" } }) do
    local model = q.load_model(tiny, NF4)
    model:add_lora{ r = r, alpha = alpha, init = variant.init, loftq_iter = variant.loftq_iter, targets = "all-linear" }
    local p = params(model)
    for _, t in ipairs(names) do
      local w = W[t .. ".weight"]
      local e_plain = fro(w - plain:base_weight(t))
      local approx = model:base_weight(t) + p[t .. ".lora_B.default.weight"]:matmul(p[t .. ".lora_A.default.weight"]) * s
      local e = fro(w - approx)
      assert(e < e_plain, string.format("%s %s: ||W - (Q + sBA)|| = %.5g, plain 4-bit %.5g", variant.init, t, e, e_plain))
      assert(model:modules()[1].quantized, "the base must stay 4-bit")
    end
    local d = rms(model:forward(ids) - base_logits)
    results[#results + 1] = string.format("%s(iter %s): logits rms %.4g vs plain 4-bit %.4g", variant.init, tostring(variant.loftq_iter or 1), d, d_plain)
    assert(d < d_plain, results[#results])
  end
  print("  " .. table.concat(results, "\n  "))
end)

T.case("merge / unmerge: dense LoRA and DoRA round trips; 4-bit merge rounds and warns", function()
  local model = q.load_model(tiny)
  model:add_lora{ name = "l", r = 4, alpha = 8, targets = { "q_proj", "v_proj" }, seed = 1 }
  -- (separate layers: DoRA's norm reads the current base weight, so merging another adapter into
  -- a DoRA adapter's layer changes what that DoRA adapter computes, in PEFT as here)
  model:add_lora{ name = "d", r = 4, alpha = 8, dora = true, targets = { "o_proj", "down_proj", "k_proj" }, seed = 2 }
  local p = params(model)
  for i, t in ipairs({ "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj" }) do perturb(p, t, "l", 100 + i) end
  for i, t in ipairs({ "model.layers.0.self_attn.o_proj", "model.layers.1.mlp.down_proj", "model.layers.1.self_attn.k_proj" }) do
    perturb(p, t, "d", 200 + i)
  end
  local before = model:forward(ids)
  T.eq(model:merge_adapter("l"), 4)
  local t = "model.layers.0.self_attn.q_proj"
  local expect = W[t .. ".weight"] + p[t .. ".lora_B.l.weight"]:matmul(p[t .. ".lora_A.l.weight"]) * 2
  assert(max_abs_diff(model:base_weight(t), expect) <= 1e-6, "merged weight is not W + s B A")
  assert(max_abs_diff(model:forward(ids), before) <= 1e-5, "merging l changed the output")
  T.errors(function() model:merge_adapter("l") end, "already merged")
  T.eq(model:merge_adapter(), 6)                  -- the remaining active adapter, d
  local o = "model.layers.0.self_attn.o_proj"
  local dw = dora_weight(W[o .. ".weight"], p[o .. ".lora_A.d.weight"], p[o .. ".lora_B.d.weight"],
    p[o .. ".lora_magnitude_vector.d.weight"], 2)
  assert(max_abs_diff(model:base_weight(o), dw) <= 1e-6, "merged DoRA weight")
  local d = max_abs_diff(model:forward(ids), before)
  assert(d <= 1e-5, "merging d changed the output by " .. d)
  T.errors(function() model:merge_adapter() end, "already merged")
  T.eq(model:unmerge_adapter("l"), 4)
  T.errors(function() model:unmerge_adapter("l") end, "is not merged")
  T.eq(model:unmerge_adapter(), 6)
  T.errors(function() model:unmerge_adapter() end, "no adapter is merged")
  for _, m in ipairs(model:modules()) do
    local dd = max_abs_diff(model:base_weight(m.name), W[m.name .. ".weight"])
    assert(dd <= 1e-6, m.name .. ": unmerge leaves the weight off by " .. dd)
  end
  assert(max_abs_diff(model:forward(ids), before) <= 1e-5, "round trip changed the output")
  model:disable_adapters()
  assert(max_abs_diff(model:forward(ids), base_logits) <= 1e-5, "the base after a round trip")
end)

T.case("merging into 4-bit weights re-quantizes and warns on stderr", function()
  local model = q.load_model(tiny, NF4)
  model:add_lora{ r = 4, alpha = 8, targets = { "q_proj" }, seed = 4 }
  local p = params(model)
  perturb(p, "model.layers.0.self_attn.q_proj", "default", 300)
  local before = model:forward(ids)
  T.eq(model:merge_adapter(), 2)
  local d = max_abs_diff(model:forward(ids), before)
  assert(d > 0 and d < 0.05, "4-bit merge: logits moved by " .. d)
  T.eq(model:unmerge_adapter(), 2)
  -- the warning, from a child process (Linux: our own command line in /proc)
  local f = io.open("/proc/self/cmdline", "rb")
  if f then
    local exe = f:read("a"):match("^([^%z]+)"); f:close()
    local dir = tmpdir(); os.execute("mkdir -p " .. dir)
    local script = dir .. "/merge.lua"
    local g = io.open(script, "w")
    g:write(string.format([[
      local q = require "qlora"
      local m = q.load_model(%q, { quant = { type = "nf4" } })
      m:add_lora{ targets = { "q_proj" } }
      m:merge_adapter()
      m:unmerge_adapter()
    ]], tiny))
    g:close()
    local ok = os.execute(string.format("%q run %q 2> %q", exe, script, dir .. "/err"))
    assert(ok, "the child script failed")
    local e = io.open(dir .. "/err"):read("a")
    local _, warnings = e:gsub("warning", "")
    T.eq(warnings, 2, "one warning per call:\n" .. e)
    assert(e:find("4-bit", 1, true), e)
    os.execute("rm -rf " .. dir)
  end
end)

T.case("bad inputs", function()
  local dense = q.load_model(tiny)
  T.errors(function() dense:add_lora{ init = "loftq" } end, "loftq needs a 4-bit base")
  T.errors(function() dense:add_lora{ init = "olora" } end, "not supported yet")
  T.errors(function() dense:add_lora{ init = "pissa", r = 65, targets = { "q_proj" } } end, "needs r <= min(in, out) = 64")
  T.errors(function() dense:add_lora{ init = "pissa", alpha = 0 } end, "positive scaling")
  T.errors(function() dense:add_lora{ loftq_iter = 2 } end, "loftq_iter applies to init = \"loftq\" only")
  T.errors(function() dense:add_lora{ dora = 1 } end, "dora")
  local q4 = q.load_model(tiny, NF4)
  T.errors(function() q4:add_lora{ init = "loftq", loftq_iter = 0 } end, "loftq_iter must be >= 1")
  -- nothing half-done: the failed calls added no adapter
  T.eq(#dense:parameters(), 0)
  T.errors(function() dense:merge_adapter() end, "no active adapter")
  T.errors(function() dense:merge_adapter("nope") end, "no adapter named \"nope\"")
  T.errors(function() dense:unmerge_adapter("nope") end, "no adapter named \"nope\"")
  T.errors(function() dense:base_weight("model.layers.9.mlp.up_proj") end, "no linear layer named")
  dense:add_lora{ dora = true }
  T.errors(function() dense:unmerge_adapter("default") end, "is not merged")
  dense:merge_adapter("default")
  T.errors(function() dense:merge_adapter("default") end, "already merged")
  -- adapter files: use_dora without magnitudes, magnitudes without use_dora, a wrong shape
  local dir = tmpdir(); os.execute("mkdir -p " .. dir)
  local function config(use_dora)
    local f = io.open(dir .. "/adapter_config.json", "w")
    f:write(string.format('{"peft_type": "LORA", "r": 2, "lora_alpha": 2, "use_dora": %s, "target_modules": ["q_proj"]}', use_dora))
    f:close()
  end
  local k = "base_model.model.model.layers.0.self_attn.q_proj."
  local ab = { [k .. "lora_A.weight"] = q.zeros({ 2, 64 }), [k .. "lora_B.weight"] = q.zeros({ 64, 2 }) }
  config("true"); q.save_tensors(dir .. "/adapter_model.safetensors", ab)
  local m = q.load_model(tiny)
  T.errors(function() m:load_adapter(dir) end, "missing", "lora_magnitude_vector", "use_dora")
  ab[k .. "lora_magnitude_vector"] = q.ones({ 64 })
  config("false"); q.save_tensors(dir .. "/adapter_model.safetensors", ab)
  T.errors(function() m:load_adapter(dir) end, "does not set use_dora")
  ab[k .. "lora_magnitude_vector"] = q.ones({ 63 })
  config("true"); q.save_tensors(dir .. "/adapter_model.safetensors", ab)
  T.errors(function() m:load_adapter(dir) end, "does not fit a layer of 64 outputs")
  os.execute("rm -rf " .. dir)
end)

T.done()
