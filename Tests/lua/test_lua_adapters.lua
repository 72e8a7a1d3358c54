-- Adapters written in Lua (model:add_adapter): a Lua LoRA equal to the built-in one (logits and
-- gradients, dense and 4-bit), its parameters in training, checkpoints and resume, stacking and
-- set_adapter / enable / disable, and errors raised inside init or forward naming the adapter
-- and the site.
local q = require "qlora"
local here = arg[0]:match("(.*/)") or "./"
local T = dofile(here .. "harness.lua")
local root = here .. "../../"
local LoRA = dofile(root .. "examples/adapters/lora.lua")

local function tmpdir() local d = os.tmpname(); os.remove(d); return d end
local function max_abs_diff(a, b) return (a - b):abs():max():item() end
local cfg = { vocab = 64, hidden = 32, layers = 2, heads = 4, kv_heads = 2, intermediate = 48, seed = 7 }
local ids = (q.rand({ 2, 9 }, { seed = 3 }) * cfg.vocab):to("i64")

-- name -> tensor
local function params(model, opts)
  local out = {}
  for _, p in ipairs(model:parameters(opts)) do out[p.name] = p.tensor end
  return out
end

-- A built-in LoRA and the Lua one on two copies of the same model, with the same nonzero A, B.
local function twin_models(quant)
  local m1, m2 = q.llama(cfg), q.llama(cfg)
  if quant then
    m1:quantize{ type = "nf4", block = 32, double_quant = true }
    m2:quantize{ type = "nf4", block = 32, double_quant = true }
  end
  m1:add_lora{ r = 4, alpha = 8, targets = "all-linear", seed = 1 }
  m2:add_adapter{ kind = LoRA, name = "default", targets = "all-linear", options = { r = 4, alpha = 8 } }
  local p1, p2 = params(m1), params(m2)
  local n = 0
  for name, t in pairs(p1) do
    local site, which = name:match("^(.*)%.lora_([AB])%.default%.weight$")
    local u = p2[site .. ".default." .. which]
    assert(u, "no Lua parameter for " .. name)
    local v = q.randn(t:shape(), { seed = n + 100, std = 0.2 })
    t:copy_(v); u:copy_(v)
    n = n + 1
  end
  return m1, m2, p1, p2, n
end

for _, quant in ipairs({ false, true }) do
  T.case("the Lua LoRA equals the built-in one" .. (quant and " (nf4)" or ""), function()
    local m1, m2, p1, p2, n = twin_models(quant)
    T.eq(n, 2 * 7 * cfg.layers, "LoRA tensors")
    T.eq(#m2:parameters{ trainable = true }, n, "Lua adapter parameters")
    local l1, l2 = m1:forward(ids), m2:forward(ids)
    T.close(max_abs_diff(l1, l2), 0, 1e-5, 0, "logits")
    m1:loss(ids):backward(); m2:loss(ids):backward()
    for name, t in pairs(p1) do
      local site, which = name:match("^(.*)%.lora_([AB])%.default%.weight$")
      local u = p2[site .. ".default." .. which]
      T.close(max_abs_diff(t.grad, u.grad), 0, 1e-5, 0, "gradient of " .. name)
    end
  end)
end

T.case("parameters are trainable, seeded and named by site", function()
  local a, b = q.llama(cfg), q.llama(cfg)
  a:add_adapter{ kind = LoRA, targets = { "q_proj" }, seed = 5 }
  b:add_adapter{ kind = LoRA, targets = { "q_proj" }, seed = 5 }
  local pa, pb = params(a, { trainable = true }), params(b, { trainable = true })
  local A = pa["model.layers.0.self_attn.q_proj.lora.A"]
  assert(A and A.requires_grad, "A is listed and trainable")
  T.eq(max_abs_diff(A, pb["model.layers.0.self_attn.q_proj.lora.A"]), 0, "same seed, same values")
  assert(max_abs_diff(A, pa["model.layers.1.self_attn.q_proj.lora.A"]) > 0, "sites draw different values")
  local c = q.llama(cfg)
  c:add_adapter{ kind = LoRA, targets = { "q_proj" }, seed = 6 }
  assert(max_abs_diff(A, params(c)["model.layers.0.self_attn.q_proj.lora.A"]) > 0, "another seed, other values")
end)

T.case("training moves only the adapter; checkpoints resume", function()
  local model = q.llama(cfg)
  model:add_adapter{ kind = LoRA, targets = "all-linear", options = { r = 2, alpha = 4 } }
  local rows = {}
  for i = 1, 8 do rows[i] = { input_ids = { 1, 2 + i, 3, 4 + i, 5 }, labels = { 1, 2 + i, 3, 4 + i, 5 } } end
  local ds = q.data.from_table(rows, { format = "tokens" })
  local dir = tmpdir()
  local before = model:loss(ids):item()
  local r = q.trainer{ model = model, train = ds, steps = 4, batch_size = 2, optimizer = { "adamw", lr = 1e-2 }, max_grad_norm = 1.0, print_every = 100,
    checkpoint = { dir = dir, every = 2 } }:run()
  T.eq(r.steps, 4, "steps")
  assert(model:loss(ids):item() ~= before, "the loss changed")
  local again = q.llama(cfg)
  again:add_adapter{ kind = LoRA, targets = "all-linear", options = { r = 2, alpha = 4 } }
  local r2 = q.trainer{ model = again, train = ds, steps = 4, batch_size = 2, optimizer = { "adamw", lr = 1e-2 }, max_grad_norm = 1.0, print_every = 100,
    resume = dir }:run()
  T.eq(r2.steps_run, 0, "nothing left to run")
  T.close(max_abs_diff(again:forward(ids), model:forward(ids)), 0, 1e-6, 0, "resumed parameters")
  os.execute("rm -rf '" .. dir .. "'")
end)
T.done()
