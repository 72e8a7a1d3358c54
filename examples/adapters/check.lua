-- The checks every adapter of this directory passes, as a function(definition, name): on a small
-- Llama, a finite-difference gradcheck of its forward (into its parameters and its input), a few
-- training steps (the loss must fall), save_adapter / load_adapter into a fresh model (same
-- logits), PEFT's layout both ways where the adapter has one, and disable / enable. Raises on a
-- failure; prints one line on success. Used by run.lua and by each file run as a script.
local q = require "qlora"
local quick = os.getenv("QLORA_QUICK") ~= nil

local cfg = { vocab = 64, hidden = 32, layers = 2, heads = 4, kv_heads = 2, intermediate = 48, seed = 1 }
local ids = (q.rand({ 2, 12 }, { seed = 2 }) * cfg.vocab):to("i64")
local steps = quick and 8 or 40
local function max_abs_diff(a, b) return (a - b):abs():max():item() end
local function tmpdir() local d = os.tmpname(); os.remove(d); return d end
local function check(ok, msg) if not ok then error(msg, 2) end end

-- gradcheck of the adapter's forward at its first site: into x (h) and every trainable tensor,
-- with every parameter nudged off its init (a zero B would hide A's gradient)
local function gradcheck(model, def, name)
  local e = model:_script_adapters()[1]
  local keys, inputs = {}, {}
  for k, t in pairs(e.params) do
    if t.requires_grad then keys[#keys + 1] = k end
  end
  table.sort(keys)
  local fixed = {}
  for k, t in pairs(e.params) do fixed[k] = t:detach():clone() end
  for i, k in ipairs(keys) do fixed[k] = fixed[k] + q.randn(fixed[k]:shape(), { seed = 10 + i, std = 0.1 }) end
  local site = { name = e.site, at = e.at, layer = e.layer, options = e.info.options, in_features = 0, out_features = 0 }
  for _, m in ipairs(model:modules()) do
    if m.name == e.site then site.in_features = m.in_features; site.out_features = m.out_features; site.kind = m.kind end
  end
  local width = ({ mlp_act = cfg.intermediate })[e.at] or (site.in_features > 0 and site.in_features or cfg.hidden)
  local x = q.randn({ 2, 3, width }, { seed = 5 })
  inputs[1] = x
  for i, k in ipairs(keys) do inputs[i + 1] = fixed[k] end
  local W = q.randn({ math.max(site.out_features, 1), width }, { seed = 6, std = 0.3 })
  local ok, report = q.gradcheck(function(xx, ...)
    local p = {}
    for k, t in pairs(fixed) do p[k] = t end
    for i, k in ipairs(keys) do p[k] = select(i, ...) end
    if e.at == "linear" then return def.forward(xx, xx:linear(W), p, site) end
    return def.forward(xx, p, site)
  end, inputs, { eps = 1e-3, atol = 2e-3, rtol = 2e-2 })
  check(ok, name .. ": gradcheck failed: " .. tostring(report.worst))
  return report
end

return function(def, name)
  local model = q.llama(cfg)
  local base = model:forward(ids)
  local n = model:add_adapter{ kind = def, seed = 1 }
  local report = gradcheck(model, def, name)
  -- training
  local params = model:parameters{ trainable = true }
  local opt = q.optim.adamw(params, { lr = 1e-2, weight_decay = 0 })
  local first, last
  for s = 1, steps do
    local loss = model:loss(ids)
    loss:backward()
    q.clip_grad_norm(params, 1.0)
    opt:step(); opt:zero_grad()
    if s == 1 then first = loss:item() end
    last = loss:item()
  end
  check(last < first, string.format("%s: the loss did not fall (%.4f -> %.4f)", name, first, last))
  local logits = model:forward(ids)
  -- save and reload
  local dir = tmpdir()
  model:save_adapter(dir, { name = def.kind })
  local fresh = q.llama(cfg)
  fresh:load_adapter(dir, { kind = def })
  local reload = max_abs_diff(fresh:forward(ids), logits)
  check(reload == 0, name .. ": reloaded logits differ by " .. reload)
  local peft = "-"
  if def.peft_export and def.peft_import then
    local pdir = tmpdir()
    model:save_adapter(pdir, { name = def.kind, format = "peft" })
    local other = q.llama(cfg)
    other:load_adapter(pdir, { kind = def })
    local d = max_abs_diff(other:forward(ids), logits)
    check(d < 1e-5, name .. ": PEFT layout round trip differs by " .. d)
    peft = "ok"
    os.execute("rm -rf '" .. pdir .. "'")
  end
  model:disable_adapters()
  check(max_abs_diff(model:forward(ids), base) == 0, name .. ": disabled adapters still change the logits")
  model:enable_adapters()
  os.execute("rm -rf '" .. dir .. "'")
  print(string.format("%-14s sites %2d  params %5d  gradcheck %4d elems (max err %.1e)  loss %.3f -> %.3f  reload ok  peft %s",
    name, n, (function() local c = 0; for _, p in ipairs(params) do c = c + p.tensor:numel() end; return c end)(),
    report.checked, report.max_abs_error, first, last, peft))
end
