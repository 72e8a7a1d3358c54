-- PiSSA and LoftQ against golden initialisations made by the SVD that LAPACK's dgesdd replaced
-- (scripts/fixtures/make_lora_init_golden.lua): the same singular values, the same low-rank part
-- s B A (A and B themselves may flip sign per component) and the same new base weight.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"
local tiny = fixtures .. "tiny-llama"
local golden = q.load_tensors(fixtures .. "lora-init-golden.safetensors")
local names = { "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "model.layers.1.mlp.down_proj" }

local function max_abs(t) return t:abs():max():item() end
local function fro(t) return t:square():sum():sqrt():item() end

local function params(model)
  local out = {}
  for _, p in ipairs(model:parameters()) do out[p.name] = p.tensor end
  return out
end

-- diag(A A^T) * s: the singular values (A = sqrt(S / s) Vh with orthonormal rows)
local function singular_values(a, s)
  local g = a:matmul(a:t()) * s
  local out = {}
  for k = 1, a:shape()[1] do out[k] = g:slice(1, k, k):slice(2, k, k):item() end
  return out
end

local function compare(tag, model, r, s, tol)
  local p = params(model)
  for _, t in ipairs(names) do
    local a, b = p[t .. ".lora_A.default.weight"], p[t .. ".lora_B.default.weight"]
    local ga, gb = golden[tag .. "." .. t .. ".A"], golden[tag .. "." .. t .. ".B"]
    T.eq(a:shape()[1], r, t .. " rank")
    local sv, gsv = singular_values(a, s), singular_values(ga, s)
    for k = 1, r do T.close(sv[k], gsv[k], tol.sv * gsv[1], 0, string.format("%s %s: singular value %d", tag, t, k)) end
    local low, glow = b:matmul(a) * s, gb:matmul(ga) * s
    local dl = fro(low - glow) / fro(glow)
    assert(dl <= tol.low, string.format("%s %s: s B A differs from the golden one by %.3g (relative)", tag, t, dl))
    local base, gbase = model:base_weight(t), golden[tag .. "." .. t .. ".base"]
    local db = fro(base - gbase) / fro(gbase)
    assert(db <= tol.base, string.format("%s %s: the new base differs from the golden one by %.3g (relative)", tag, t, db))
    print(string.format("  %s %s: s B A %.2g, base %.2g, max |base diff| %.2g", tag, t, dl, db, max_abs(base - gbase)))
  end
end

T.case("PiSSA on the dense tiny Llama matches the golden initialisation", function()
  local model = q.load_model(tiny)
  model:add_lora{ r = 4, alpha = 16, init = "pissa", targets = "all-linear" }
  compare("pissa", model, 4, 4, { sv = 1e-5, low = 1e-5, base = 1e-6 })
end)

T.case("LoftQ on the NF4 tiny Llama matches the golden initialisation", function()
  local model = q.load_model(tiny, { quant = { type = "nf4", block = 64, double_quant = true } })
  model:add_lora{ r = 8, alpha = 16, init = "loftq", loftq_iter = 2, targets = "all-linear" }
  -- the second round re-quantizes W - s B A: a value on a rounding boundary may take the
  -- neighbouring code, so the base and the low-rank part get a looser bound
  compare("loftq", model, 8, 2, { sv = 1e-4, low = 1e-3, base = 1e-3 })
end)

T.done()
