-- Optimizers: AdamW and SGD reproduce torch.optim (golden numbers from PyTorch 2.15, 5 steps) at
-- every ISA level; state()/load_state() continue bit for bit; clip_grad_norm; option and state
-- validation.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local N = 37 -- two AVX-512 vectors plus a tail
local function p0()
  local v = {}
  for i = 0, N - 1 do v[#v + 1] = ((i * 37) % 19 - 9) / 8 end
  return q.tensor(v, { requires_grad = true })
end
local function grad(k)
  local v = {}
  for i = 0, N - 1 do v[#v + 1] = ((i * 13 + k * 7) % 17 - 8) / 16 end
  return q.tensor(v)
end

-- Printed by torch.optim with "%.9g" after 5 steps from p0 with grad(1) .. grad(5).
local golden = {
  adamw_default = { -1.12182391, 1.15234542, 0.973766446, 0.862207651, 0.734563649, 0.645324171, 0.521848261, 0.371005833, 0.218614355, 0.136996344, 0.0156790949, -0.136625454, -0.247309223, -0.363552123, -0.490967095, -0.643884242, -0.754233718, -0.871948957, -0.971592069, -1.15017116, 1.11208272, 0.984438658, 0.895199239, 0.77172327, 0.620880842, 0.468489319, 0.386871368, 0.2655541, 0.113249563, 0.00256578508, -0.113677084, -0.241092041, -0.394009203, -0.504358649, -0.622073948, -0.72171706, -0.900296092 },
  adamw_custom = { -1.03868222, 1.32897091, 0.720453203, 0.712337494, 0.573263943, 0.781465709, 0.666491508, 0.343794912, -0.0595529526, 0.222040743, 0.126566604, -0.208992988, -0.211870387, -0.24147445, -0.417261988, -0.759090245, -0.757458627, -0.800934672, -0.691882908, -1.30040061, 0.950085044, 0.811011493, 1.01921332, 0.904238999, 0.581542373, 0.178194582, 0.459788233, 0.364314169, 0.0287544988, 0.0258771367, -0.00372697785, -0.179514498, -0.521342754, -0.519711137, -0.563187122, -0.454135329, -1.0626533 },
  adamw_nowd = { -1.11192358, 1.26457465, 0.871297598, 0.813208282, 0.674676657, 0.728212595, 0.610524833, 0.355947763, 0.0936565697, 0.185316473, 0.078425169, -0.183464497, -0.23717764, -0.31868282, -0.456060082, -0.721013486, -0.77305454, -0.861923516, -0.860425293, -1.25370252, 1.06320834, 0.924676657, 0.978212595, 0.860524833, 0.605947852, 0.34365654, 0.435316414, 0.328425199, 0.0665355027, 0.0128223589, -0.0686828122, -0.206060112, -0.471013516, -0.52305454, -0.611923516, -0.610425293, -1.0037024 },
  sgd_plain = { -1.10624993, 1.1624999, 0.949999988, 0.84375, 0.737500072, 0.631249964, 0.524999976, 0.418750018, 0.206250012, 0.100000009, -0.00625000149, -0.112499982, -0.218749985, -0.324999988, -0.537500024, -0.643749952, -0.75, -0.856250048, -0.962499976, -1.17499995, 1.09375012, 0.987500072, 0.881249964, 0.774999976, 0.668750048, 0.456249982, 0.349999994, 0.243749976, 0.137500003, 0.0312500037, -0.075000003, -0.287500024, -0.393749982, -0.5, -0.606250048, -0.712499976, -0.925000012 },
  sgd_momentum_wd = { -1.13758588, 1.30448747, 0.788139403, 0.790837765, 0.630869985, 0.729087174, 0.646020353, 0.417206079, 0.055469539, 0.153686672, 0.0706199557, -0.158194348, -0.155495986, -0.315463752, -0.504780531, -0.733594775, -0.730896473, -0.890864134, -0.792647064, -1.30899525, 1.03755963, 0.877591729, 0.975808859, 0.892742157, 0.663927794, 0.302191257, 0.400408387, 0.317341715, 0.0885273814, 0.0912257433, -0.0687420368, -0.258058757, -0.48687306, -0.484174728, -0.644142509, -0.54592526, -1.0622735 },
  sgd_dampening = { -1.12547457, 1.20570779, 0.898916245, 0.831192493, 0.722589016, 0.678771496, 0.589532137, 0.354725003, 0.195652798, 0.151835322, 0.0625959337, -0.172211245, -0.239934996, -0.348538429, -0.464340299, -0.699147522, -0.766871214, -0.875474691, -0.919292152, -1.22608364, 1.08119249, 0.972589016, 0.928771496, 0.839532137, 0.604725003, 0.445652813, 0.401835293, 0.312595934, 0.0777887627, 0.0100649996, -0.098538436, -0.214340329, -0.449147463, -0.516871214, -0.625474691, -0.669292152, -0.976083755 },
  sgd_nesterov = { -1.03643894, 1.23842287, 0.696153045, 0.70768857, 0.580905437, 0.676585615, 0.614199579, 0.431870818, 0.0190681554, 0.114748277, 0.0523622446, -0.129966512, -0.118431069, -0.24521409, -0.509475052, -0.691803873, -0.680268466, -0.80705142, -0.711371243, -1.25364125, 0.937076032, 0.810293019, 0.905973196, 0.84358716, 0.66125834, 0.248455718, 0.344135821, 0.281749785, 0.0994210392, 0.110956475, -0.0158265084, -0.280087531, -0.462416291, -0.450880826, -0.577663839, -0.481983662, -1.02425361 },
}

local makers = {
  adamw_default = function(ps) return q.optim.adamw(ps, { lr = 1e-2 }) end,
  adamw_custom = function(ps) return q.optim.adamw(ps, { lr = 0.1, betas = { 0.8, 0.99 }, eps = 1e-6, weight_decay = 0.1 }) end,
  adamw_nowd = function(ps) return q.optim.adamw(ps, { lr = 0.05, weight_decay = 0 }) end,
  sgd_plain = function(ps) return q.optim.sgd(ps, { lr = 0.1 }) end,
  sgd_momentum_wd = function(ps) return q.optim.sgd(ps, { lr = 0.1, momentum = 0.9, weight_decay = 0.01 }) end,
  sgd_dampening = function(ps) return q.optim.sgd(ps, { lr = 0.05, momentum = 0.9, dampening = 0.5 }) end,
  sgd_nesterov = function(ps) return q.optim.sgd(ps, { lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.05 }) end,
}

local function run(name, steps, opt, p)
  p = p or p0()
  opt = opt or makers[name]({ p })
  for k = 1, steps do
    p.grad = grad(k)
    opt:step()
  end
  return p, opt
end

local initial_isa = q.isa()
for _, isa in ipairs(q.supported_isas()) do
  for name in pairs(golden) do
    T.case(name .. " matches PyTorch (" .. isa .. ")", function()
      q.set_isa(isa)
      local p = run(name, 5)
      q.set_isa(initial_isa)
      T.close(p:totable(), golden[name], 1e-7, 1e-6, name)
    end)
  end
end
q.set_isa(initial_isa)

T.case("every ISA level gives the same bits", function()
  local ref = {}
  for _, isa in ipairs(q.supported_isas()) do
    q.set_isa(isa)
    for _, name in ipairs({ "adamw_custom", "sgd_nesterov" }) do
      local t = run(name, 5):totable()
      if ref[name] then for i = 1, N do T.eq(t[i], ref[name][i], name .. " " .. isa .. " [" .. i .. "]") end else ref[name] = t end
    end
  end
  q.set_isa(initial_isa)
end)

T.case("a large parameter (threaded, several chunks) agrees with the small case per element", function()
  local n = 200003
  local v = {}
  for i = 0, n - 1 do v[#v + 1] = ((i * 37) % 19 - 9) / 8 end
  local p = q.tensor(v, { requires_grad = true })
  local opt = q.optim.adamw({ p }, { lr = 0.1, betas = { 0.8, 0.99 }, eps = 1e-6, weight_decay = 0.1 })
  for k = 1, 5 do
    local g = {}
    for i = 0, n - 1 do g[#g + 1] = ((i * 13 + k * 7) % 17 - 8) / 16 end
    p.grad = q.tensor(g)
    opt:step()
  end
  -- element i depends on i mod lcm(19, 17) = 323 only; spot-check against a 37-element run's pattern
  local t = p:totable()
  for _, i in ipairs({ 1, 2, 37, 65537, 131071, n }) do
    local j = (i - 1) % 323 + 1
    T.eq(t[i], t[j], "element " .. i)
  end
  T.close({ t[1], t[37] }, { golden.adamw_custom[1], golden.adamw_custom[37] }, 1e-7, 1e-6)
end)

T.case("methods: lr, set_lr, steps, zero_grad, skipped params", function()
  local a, b = p0(), p0()
  local opt = q.optim.sgd({ a, b }, { lr = 0.5 })
  T.eq(opt:lr(), 0.5)
  opt:set_lr(0.1)
  T.eq(opt:lr(), 0.1)
  a.grad = grad(1)
  opt:step() -- b has no grad: untouched
  T.eq(opt:steps(), 1)
  T.close(b:totable(), p0():totable(), 0)
  opt:zero_grad()
  T.eq(a.grad, nil)
  opt:step()
  T.eq(opt:steps(), 2)
  T.errors(function() opt:set_lr(-1) end, "lr must be")
  assert(tostring(opt):find("sgd", 1, true))
end)

for _, name in ipairs({ "adamw_custom", "sgd_nesterov", "sgd_dampening" }) do
  T.case("state()/load_state() continue bit for bit (" .. name .. ")", function()
    local full = run(name, 5)
    local p1, o1 = run(name, 2)
    local st = o1:state()
    T.eq(st.step, 2)
    -- a fresh optimizer over a copy of the params, restored mid-way
    local p2 = p1:detach():clone(); p2.requires_grad = true
    local o2 = makers[name]({ p2 })
    o2:load_state(st)
    T.eq(o2:steps(), 2)
    for k = 3, 5 do
      p1.grad = grad(k); o1:step()
      p2.grad = grad(k); o2:step()
    end
    local a, b, c = p1:totable(), p2:totable(), full:totable()
    for i = 1, N do T.eq(b[i], a[i], "restored [" .. i .. "]"); T.eq(a[i], c[i], "interrupted [" .. i .. "]") end
    -- the state is a copy: stepping does not change it
    local st2 = o1:state()
    T.eq(st2.step, 5)
  end)
end

T.case("state keys use parameter names from model:parameters-style lists", function()
  local w = p0()
  local opt = q.optim.adamw({ { name = "layer.w", tensor = w } }, { lr = 0.01 })
  T.eq(opt:state().step, 0)
  w.grad = grad(1); opt:step()
  local st = opt:state()
  assert(st["layer.w.exp_avg"] and st["layer.w.exp_avg_sq"], "state lacks layer.w moments")
  local sgd = q.optim.sgd({ w }, { lr = 0.1, momentum = 0.5 })
  w.grad = grad(2); sgd:step()
  assert(sgd:state()["1.momentum_buffer"], "plain tensors are named 1, 2, ...")
end)

T.case("load_state rejects mismatched names and shapes", function()
  local w = p0()
  local opt = q.optim.adamw({ { name = "w", tensor = w } }, { lr = 0.01 })
  w.grad = grad(1); opt:step()
  local st = opt:state()
  local fresh = q.optim.adamw({ { name = "w", tensor = p0() } }, { lr = 0.01 })
  T.errors(function() fresh:load_state({ step = 1, ["v.exp_avg"] = st["w.exp_avg"], ["v.exp_avg_sq"] = st["w.exp_avg_sq"] }) end, "v.exp_avg", "names no parameter")
  T.errors(function() fresh:load_state({ step = 1, ["w.exp_avg"] = q.zeros(3), ["w.exp_avg_sq"] = st["w.exp_avg_sq"] }) end, "w.exp_avg", "shape [3]")
  T.errors(function() fresh:load_state({ step = 1, ["w.exp_avg"] = st["w.exp_avg"] }) end, "missing", "w.exp_avg_sq")
  T.errors(function() fresh:load_state({ step = 1, ["w.momentum_buffer"] = st["w.exp_avg"] }) end, "unexpected state entry", "w.momentum_buffer")
  T.errors(function() fresh:load_state({ ["w.exp_avg"] = st["w.exp_avg"], ["w.exp_avg_sq"] = st["w.exp_avg_sq"] }) end, "step")
  T.errors(function() fresh:load_state({ step = 1, ["w.exp_avg"] = 3 }) end, "must be a tensor")
  local sgd = q.optim.sgd({ { name = "w", tensor = p0() } }, { lr = 0.1 })
  T.errors(function() sgd:load_state({ step = 1, ["w.momentum_buffer"] = q.zeros(N) }) end, "no momentum")
  fresh:load_state(st) -- the good one still loads
  T.eq(fresh:steps(), 1)
end)

T.case("clip_grad_norm: PyTorch's norm and scaling", function()
  local a, b = q.zeros(3), q.zeros(2, 2)
  a.requires_grad = true; b.requires_grad = true
  a.grad = q.tensor({ 3, 4, 12 }); b.grad = q.tensor({ { 1, 2 }, { 2, 4 } })
  local n = q.clip_grad_norm({ a, b }, 5)
  T.close(n, math.sqrt(194), 1e-12)
  -- torch.nn.utils.clip_grad_norm_ gives 13.9283886 and these gradients
  T.close(a.grad:totable(), { 1.076937198638916, 1.4359161853790283, 4.307748794555664 }, 1e-7, 1e-6)
  T.close(b.grad:totable(), { { 0.3589790463447571, 0.7179580926895142 }, { 0.7179580926895142, 1.4359161853790283 } }, 1e-7, 1e-6)
  -- below the limit: untouched; params without a grad are skipped
  local c = q.zeros(2); c.requires_grad = true
  c.grad = q.tensor({ 0.375, 0.5 })
  T.close(q.clip_grad_norm({ c, q.zeros(1) }, 1), 0.625, 0)
  T.close(c.grad:totable(), { 0.375, 0.5 }, 0)
  -- a non-finite norm is returned and the grads are left alone
  c.grad = q.tensor({ 1 / 0, 1 })
  T.eq(q.clip_grad_norm({ c }, 1), 1 / 0)
  T.eq(c.grad:totable()[2], 1)
  c.grad = q.tensor({ 0 / 0, 1 })
  local nn = q.clip_grad_norm({ { name = "c", tensor = c } }, 1)
  assert(nn ~= nn, "expected NaN")
  T.eq(c.grad:totable()[2], 1)
  T.errors(function() q.clip_grad_norm({ c }, -1) end, "max_norm")
end)

T.case("a quadratic minimised by a hand loop with adamw", function()
  local target = q.tensor({ 1.5, -2, 0.25, 3 })
  local x = q.zeros(4); x.requires_grad = true
  local opt = q.optim.adamw({ { name = "x", tensor = x } }, { lr = 0.1, weight_decay = 0 })
  local first
  for i = 1, 300 do
    opt:zero_grad()
    local loss = ((x - target) ^ 2):sum()
    first = first or loss:item()
    loss:backward()
    opt:step()
  end
  local loss = ((x - target) ^ 2):sum():item()
  assert(loss < 1e-4 and loss < first, "loss " .. loss .. " from " .. first)
  T.close(x:totable(), target:totable(), 1e-2)
  T.eq(opt:steps(), 300)
end)

T.case("bad options are rejected", function()
  local function ps() return { p0() } end
  T.errors(function() q.optim.adamw(ps(), { lr = -1 }) end, "lr must be")
  T.errors(function() q.optim.adamw(ps(), { betas = { 1, 0.9 } }) end, "betas[1]", "[0, 1)")
  T.errors(function() q.optim.adamw(ps(), { betas = { 0.9, -0.1 } }) end, "betas[2]")
  T.errors(function() q.optim.adamw(ps(), { betas = { 0.9 } }) end, "2 numbers")
  T.errors(function() q.optim.adamw(ps(), { eps = 0 }) end, "eps must be")
  T.errors(function() q.optim.adamw(ps(), { weight_decay = -0.1 }) end, "weight_decay")
  T.errors(function() q.optim.adamw(ps(), { momentum = 0.9 }) end, "unknown option 'momentum'")
  T.errors(function() q.optim.sgd(ps(), {}) end, "'lr' is required")
  T.errors(function() q.optim.sgd(ps(), { lr = 0.1, momentum = -1 }) end, "momentum must be")
  T.errors(function() q.optim.sgd(ps(), { lr = 0.1, nesterov = true }) end, "nesterov", "momentum > 0")
  T.errors(function() q.optim.sgd(ps(), { lr = 0.1, momentum = 0.9, dampening = 0.1, nesterov = true }) end, "dampening = 0")
  T.errors(function() q.optim.sgd(ps(), { lr = 0.1, weight_decay = -1 }) end, "weight_decay")
end)

T.case("parameters must be f32 leaf tensors that require grad", function()
  T.errors(function() q.optim.adamw({ q.zeros(3) }, {}) end, "parameter \"1\"", "requires_grad")
  local h = q.zeros(3, { dtype = "bf16" }); h.requires_grad = true
  T.errors(function() q.optim.adamw({ h }, {}) end, "f32", "bf16")
  local leaf = p0()
  T.errors(function() q.optim.sgd({ { name = "y", tensor = leaf * 2 } }, { lr = 1 }) end, "\"y\"", "not a leaf")
  T.errors(function() q.optim.sgd({ leaf, { name = "1", tensor = p0() } }, { lr = 1 }) end, "appears twice")
  T.errors(function() q.optim.sgd({ 42 }, { lr = 1 }) end, "parameter 1 must be a tensor")
  T.errors(function() q.optim.sgd(leaf, { lr = 1 }) end, "list of parameters")
end)

T.done()
