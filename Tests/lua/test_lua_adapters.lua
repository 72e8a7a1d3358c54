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

-- PEFT's own files and logits (scripts/fixtures/make_peft_custom_adapters.py)
local fixtures = here .. "../fixtures/"
for _, case in ipairs({ { "ia3", "ia3" }, { "vera", "vera" }, { "prompt", "prompt_tuning" } }) do
  T.case("PEFT " .. case[1] .. " loads with PEFT's logits", function()
    local def = dofile(root .. "examples/adapters/" .. case[2] .. ".lua")
    local model = q.load_model(fixtures .. "tiny-llama", { quant = false })
    local golden = q.load_tensors(fixtures .. "peft-" .. case[1] .. "/logits.safetensors")
    model:load_adapter(fixtures .. "peft-" .. case[1], { kind = def })
    T.close(max_abs_diff(model:forward(golden.input_ids), golden.logits), 0, 1e-5, 0, "logits")
    -- and our export of it loads back to the same logits
    local dir = tmpdir()
    model:save_adapter(dir, { format = "peft" })
    local again = q.load_model(fixtures .. "tiny-llama", { quant = false })
    again:load_adapter(dir, { kind = def })
    T.close(max_abs_diff(again:forward(golden.input_ids), golden.logits), 0, 1e-5, 0, "re-exported logits")
    os.execute("rm -rf '" .. dir .. "'")
  end)
end

local Scale = { kind = "scale", at = "linear", init = function(site, q) return { s = q.ones({ 1 }) * 2 } end,
  forward = function(x, y, p) return y * p.s end }

T.case("errors inside init and forward name the adapter and the site", function()
  local m = q.llama(cfg)
  T.errors(function() m:add_adapter{ name = "bad", targets = { "k_proj" }, init = function(site) error("no init here") end,
    forward = Scale.forward } end, "add_adapter", "adapter \"bad\" at model.layers.0.self_attn.k_proj (linear)", "no init here")
  T.eq(#m:parameters(), 0, "nothing attached after a failed init")
  m:add_adapter{ name = "boom", targets = { "v_proj" }, layers = 1, init = Scale.init,
    forward = function(x, y, p, site) error("kaboom at " .. site.name) end }
  T.errors(function() m:forward(ids) end, "adapter \"boom\" at model.layers.1.self_attn.v_proj (linear)", "kaboom")
  m:remove_adapter("boom")
  m:add_adapter{ name = "shape", targets = { "v_proj" }, init = Scale.init, forward = function(x, y) return x end }
  T.errors(function() m:forward(ids) end, "adapter \"shape\"", "returned shape")
  m:remove_adapter("shape")
  m:add_adapter{ name = "notensor", targets = { "v_proj" }, init = Scale.init, forward = function() return 3 end }
  T.errors(function() m:loss(ids) end, "adapter \"notensor\"", "must return a tensor, got number")
  m:remove_adapter("notensor")
  T.errors(function() m:add_adapter{ at = "nowhere", init = Scale.init, forward = Scale.forward } end, "not a placement")
  T.errors(function() m:add_adapter{ init = Scale.init } end, "forward must be a function")
  T.errors(function() m:add_adapter{ init = function() return 1 end, forward = Scale.forward } end, "init must return a table")
  T.errors(function() m:add_adapter{ init = Scale.init, forward = Scale.forward, colour = 1 } end, "unknown option 'colour'")
  T.errors(function() m:add_adapter{ init = Scale.init, forward = Scale.forward, targets = { "nope" } } end, "no module matches")
  m:add_adapter{ name = "x", init = Scale.init, forward = Scale.forward }
  T.errors(function() m:add_adapter{ name = "x", init = Scale.init, forward = Scale.forward } end, "already has an adapter named \"x\"")
  -- hostile forwards: recursion into the model, yielding, a table as the error, removing itself
  m:add_adapter{ name = "rec", targets = { "q_proj" }, layers = 0, init = Scale.init,
    forward = function(x, y) m:forward(ids); return y end }
  T.errors(function() m:forward(ids) end, "adapter \"rec\"")
  m:remove_adapter("rec")
  m:add_adapter{ name = "co", targets = { "q_proj" }, init = Scale.init, forward = function(x, y) coroutine.yield(1); return y end }
  T.errors(function() m:forward(ids) end, "adapter \"co\"", "yield")
  T.errors(function() coroutine.wrap(function() return m:forward(ids) end)() end, "adapter \"co\"", "yield")
  m:remove_adapter("co")
  m:add_adapter{ name = "tbl", targets = { "q_proj" }, init = Scale.init, forward = function() error({ 1 }) end }
  T.errors(function() m:forward(ids) end, "adapter \"tbl\"", "error object is a table")
  m:remove_adapter("tbl")
  m:add_adapter{ name = "rm", targets = { "q_proj" }, init = Scale.init,
    forward = function(x, y) m:remove_adapter("rm"); return y end }
  m:forward(ids)
  T.errors(function() m:remove_adapter("rm") end, "no adapter named \"rm\"")
  -- the model still works after all of that
  T.eq(m:forward(ids):shape(3), cfg.vocab, "forward")
end)

T.case("stacking order, set_adapter, enable and disable", function()
  local m = q.llama(cfg)
  local base = m:forward(ids)
  local Add = { init = function(site, q) return { b = q.ones({ site.out_features }) } end,
    forward = function(x, y, p) return y + p.b end }
  m:add_adapter{ kind = Scale, name = "s", targets = { "o_proj" } }
  m:add_adapter{ kind = Add, name = "a", targets = { "o_proj" } }
  -- in the order added: (y * 2) + 1, not (y + 1) * 2
  local ref = q.llama(cfg)
  ref:add_adapter{ name = "both", targets = { "o_proj" }, init = function() return {} end,
    forward = function(x, y) return y * 2 + 1 end }
  T.close(max_abs_diff(m:forward(ids), ref:forward(ids)), 0, 1e-5, 0, "stacked in order")
  m:set_adapter("a")
  local only_a = q.llama(cfg)
  only_a:add_adapter{ kind = Add, name = "a", targets = { "o_proj" } }
  T.close(max_abs_diff(m:forward(ids), only_a:forward(ids)), 0, 1e-6, 0, "set_adapter runs one")
  m:disable_adapters()
  T.eq(max_abs_diff(m:forward(ids), base), 0, "disabled")
  m:enable_adapters()
  T.close(max_abs_diff(m:forward(ids), only_a:forward(ids)), 0, 1e-6, 0, "enabled again (still only a)")
  T.errors(function() m:set_adapter("zzz") end, "no adapter named \"zzz\"")
  -- with a built-in LoRA on the same site: the LoRA first, then the Lua adapters
  local l = q.llama(cfg)
  l:add_lora{ name = "lo", r = 2, targets = { "o_proj" } }
  for _, p in ipairs(l:parameters()) do p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 9 })) end
  local lora_only = l:forward(ids)
  l:add_adapter{ kind = Scale, name = "s", targets = { "o_proj" } }
  local r2 = q.llama(cfg)
  r2:add_lora{ name = "lo", r = 2, targets = { "o_proj" } }
  for _, p in ipairs(r2:parameters()) do p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 9 })) end
  r2:add_adapter{ name = "s2", targets = { "o_proj" }, init = function() return {} end, forward = function(x, y) return y * 2 end }
  T.close(max_abs_diff(l:forward(ids), r2:forward(ids)), 0, 1e-5, 0, "LoRA, then the Lua adapter")
  assert(max_abs_diff(l:forward(ids), lora_only) > 1e-3, "the scale applies")
end)

-- h * 0 + h at every other placement: a no-op in value, so the logits stay; a scale of 1 + p
-- with p trainable must get a gradient at each
T.case("every placement runs and gets gradients", function()
  for _, at in ipairs({ "linear_input", "mlp_act", "mlp_out", "block_out", "embed" }) do
    local m = q.llama(cfg)
    local base = m:forward(ids)
    local width = at == "mlp_act" and cfg.intermediate or cfg.hidden
    m:add_adapter{ name = "p", at = at, targets = at == "linear_input" and { "o_proj" } or nil,
      init = function(site, q) return { g = q.zeros({ site.in_features }) } end,
      forward = function(h, p, site) return h * (p.g + 1) end }
    T.close(max_abs_diff(m:forward(ids), base), 0, 1e-6, 0, at .. ": identity at init")
    m:loss(ids):backward()
    local got = 0
    for _, p in ipairs(m:parameters{ trainable = true }) do
      T.eq(p.tensor:numel(), width, at .. " width")
      got = got + p.tensor.grad:abs():sum():item()
    end
    assert(got > 0, at .. ": gradients arrive")
  end
end)

T.case("embed: zero embeddings give every position the same logits", function()
  local m = q.llama(cfg)
  m:add_adapter{ name = "e", at = "embed", init = function() return {} end, forward = function(h) return h * 0 end }
  local z = m:forward(ids)
  -- zero embeddings: every position sees the same (zero) input, so logits equal across positions
  T.close(max_abs_diff(z:slice(2, 1, 1), z:slice(2, 5, 5)), 0, 1e-5, 0, "zero embeddings")
end)

local Prompt = dofile(root .. "examples/adapters/prompt_tuning.lua")

T.case("prefix: logits equal a model fed the virtual tokens by hand; KV cache in generation", function()
  local m = q.llama(cfg)
  m:add_adapter{ kind = Prompt, options = { tokens = 3 }, seed = 4 }
  local prompt = m:parameters()[1].tensor
  T.eq(table.concat(prompt:shape(), "x"), "3x" .. cfg.hidden, "prompt shape")
  local logits = m:forward(ids)
  T.eq(table.concat(logits:shape(), "x"), "2x9x" .. cfg.vocab, "logits for the real tokens only")
  -- by hand: an embed adapter that replaces the first 3 embeddings of a longer input
  local h = q.llama(cfg)
  local longer = q.concat({ q.zeros({ 2, 3 }, { dtype = "i64" }), ids }, 2)
  h:add_adapter{ name = "hand", at = "embed", init = function() return {} end,
    forward = function(e) return q.concat({ prompt:reshape({ 1, 3, -1 }):expand({ 2, 3, cfg.hidden }), e:slice(2, 4) }, 2) end }
  T.close(max_abs_diff(logits, h:forward(longer):slice(2, 4)), 0, 1e-5, 0, "same as by hand")
  -- generation with the cache = generation without it (recomputing everything each step)
  local out = m:generate({ 5, 6, 7 }, { max_tokens = 4 })
  local seq = { 5, 6, 7 }
  for i = 1, 4 do
    local l = m:forward(q.tensor({ seq }, { dtype = "i64" }))
    local nxt = l:slice(2, -1):reshape({ cfg.vocab }):argmax():item()
    seq[#seq + 1] = nxt
  end
  local want = { table.unpack(seq, 4) }
  local got = type(out) == "table" and (out.ids or out) or out
  T.eq(table.concat(got, ","), table.concat(want, ","), "greedy tokens with and without the KV cache")
end)

T.case("prefix in a packed batch: each example sees the virtual tokens as if alone", function()
  local m = q.llama(cfg)
  m:add_adapter{ kind = Prompt, options = { tokens = 2 }, seed = 4 }
  local a, b = { 3, 4, 5, 6 }, { 7, 8, 9 }
  local packed = q.tensor({ { 3, 4, 5, 6, 7, 8, 9 } }, { dtype = "i64" })
  local seg = q.tensor({ { 1, 1, 1, 1, 2, 2, 2 } }, { dtype = "i64" })
  local pos = q.tensor({ { 0, 1, 2, 3, 0, 1, 2 } }, { dtype = "i64" })
  local lp = m:forward(packed, { segment_ids = seg, position_ids = pos })
  local la = m:forward(q.tensor({ a }, { dtype = "i64" }))
  local lb = m:forward(q.tensor({ b }, { dtype = "i64" }))
  T.close(max_abs_diff(lp:slice(2, 1, 4), la), 0, 1e-5, 0, "first example")
  T.close(max_abs_diff(lp:slice(2, 5, 7), lb), 0, 1e-5, 0, "second example")
end)

T.case("a definition passes directly and names the adapter by its kind", function()
  local m = q.llama(cfg)
  T.eq(m:add_adapter(dofile(root .. "examples/adapters/ia3.lua")), 3 * cfg.layers, "IA3 sites")
  local names = {}
  for _, p in ipairs(m:parameters{ trainable = true }) do names[#names + 1] = p.name end
  table.sort(names)
  T.eq(names[1], "model.layers.0.mlp.down_proj.ia3.l", "named by kind")
end)

T.case("adapters release their Lua functions with their model or on removal", function()
  local function held()
    local n = 0
    for k, v in pairs(debug.getregistry()) do if math.type(k) == "integer" and type(v) ~= "number" then n = n + 1 end end
    return n
  end
  collectgarbage(); collectgarbage()
  local before = held()
  for _ = 1, 3 do
    local m = q.llama(cfg)
    m:add_adapter{ kind = LoRA, targets = { "q_proj" } }
  end
  local m = q.llama(cfg)
  m:add_adapter{ kind = LoRA, targets = { "q_proj" } }
  assert(held() > before, "attached adapters hold their functions")
  m:remove_adapter("lora")
  collectgarbage(); collectgarbage()
  T.eq(held(), before, "registry entries left")
end)

-- the shifted cross-entropy from a model's logits, composed from q ops
local function xent(logits, labels)
  local b, t, v = logits:shape(1), logits:shape(2), logits:shape(3)
  local lp = logits:slice(2, 1, t - 1):reshape({ b * (t - 1), v }):log_softmax()
  local tgt = labels:slice(2, 2, t):reshape({ b * (t - 1), 1 })
  return -(lp:gather(2, tgt):mean():item())
end

T.case("loss (which may skip the logits) sees adapters on the head and the prefix", function()
  local m = q.llama(cfg)
  m:add_adapter{ name = "head", targets = { "lm_head" }, init = function(site, q) return { s = q.full({ 1 }, 3) } end,
    forward = function(x, y, p) return y * p.s end }
  T.close(m:loss(ids):item(), xent(m:forward(ids), ids), 1e-5, 0, "adapter on lm_head")
  m:remove_adapter("head")
  m:add_adapter{ kind = dofile(root .. "examples/adapters/prompt_tuning.lua"), options = { tokens = 3 } }
  T.close(m:loss(ids):item(), xent(m:forward(ids), ids), 1e-5, 0, "prefix")
end)

T.case("gradient checkpointing re-runs Lua adapters in backward with the same gradients", function()
  local function grads(ckpt)
    local m = q.llama(cfg)
    m:add_adapter{ kind = LoRA, targets = "all-linear", seed = 2 }
    m:add_adapter{ name = "bn", kind = dofile(root .. "examples/adapters/bottleneck.lua"), seed = 2 }
    for _, p in ipairs(m:parameters()) do p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 3, std = 0.1 })) end
    m:gradient_checkpointing(ckpt)
    m:loss(ids):backward()
    local out = {}
    for _, p in ipairs(m:parameters()) do out[p.name] = p.tensor.grad end
    return out
  end
  local a, b = grads(false), grads(true)
  local n = 0
  for k, g in pairs(a) do T.close(max_abs_diff(g, b[k]), 0, 1e-6, 0, k); n = n + 1 end
  assert(n > 0)
end)

T.case("save_adapter writes a manifest; load_adapter restores; errors", function()
  local m = q.llama(cfg)
  m:add_adapter{ kind = LoRA, targets = { "q_proj" }, options = { r = 2, alpha = 4 }, seed = 3 }
  for _, p in ipairs(m:parameters()) do p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 1 })) end
  local dir = tmpdir()
  m:save_adapter(dir)
  local f = assert(io.open(dir .. "/adapter_manifest.json")); local text = f:read("a"); f:close()
  assert(text:find('"kind":"lora"', 1, true), "manifest names the kind: " .. text)
  assert(text:find('"model.layers.1.self_attn.q_proj"', 1, true), "manifest names the sites")
  local other = q.llama(cfg)
  other:load_adapter(dir, { kind = LoRA })
  T.eq(max_abs_diff(other:forward(ids), m:forward(ids)), 0, "reloaded")
  T.errors(function() q.llama(cfg):load_adapter(dir) end, "pass its definition")
  T.errors(function() q.llama(cfg):load_adapter(dir, { kind = Scale }) end, "holds a \"lora\" adapter")
  os.execute("rm -rf '" .. dir .. "'")
end)
T.done()
