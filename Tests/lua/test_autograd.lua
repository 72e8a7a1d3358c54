-- Finite-difference gradient checks of every differentiable tensor op, at every ISA level the
-- CPU supports.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local function r(shape, seed) return q.randn(shape, { seed = seed }) end
local function pos(shape, seed) return q.rand(shape, { seed = seed, min = 0.5, max = 2.0 }) end

-- name -> {fn, inputs}
local cases = {
  add = { function(a, b) return a + b end, { r({3, 4}, 1), r({3, 4}, 2) } },
  add_bcast = { function(a, b) return a + b end, { r({2, 3, 4}, 1), r({3, 1}, 2) } },
  sub_bcast = { function(a, b) return a - b end, { r({4}, 1), r({3, 4}, 2) } },
  mul_bcast = { function(a, b) return a * b end, { r({2, 1, 4}, 3), r({3, 1}, 4) } },
  div = { function(a, b) return a / b end, { r({3, 4}, 5), pos({3, 4}, 6) } },
  pow_tensor = { function(a, b) return a:pow(b) end, { pos({5}, 7), r({5}, 8) } },
  pow_scalar = { function(a) return a ^ 3 end, { r({7}, 9) } },
  maximum = { function(a, b) return a:maximum(b) end, { r({6}, 10), r({6}, 11) } },
  minimum = { function(a, b) return a:minimum(b) end, { r({6}, 12), r({6}, 13) } },
  scalar_ops = { function(a) return (2 - a) * 3 / 4 + 1 end, { r({5}, 14) } },
  neg = { function(a) return -a end, { r({5}, 15) } },
  exp = { function(a) return a:exp() end, { r({9}, 16) } },
  log = { function(a) return a:log() end, { pos({9}, 17) } },
  sqrt = { function(a) return a:sqrt() end, { pos({9}, 18) } },
  abs = { function(a) return a:abs() end, { pos({9}, 19) - 1.25 } },
  silu = { function(a) return a:silu() end, { r({17}, 20) } },
  sigmoid = { function(a) return a:sigmoid() end, { r({17}, 21) } },
  tanh = { function(a) return a:tanh() end, { r({17}, 22) } },
  relu = { function(a) return a:relu() end, { pos({9}, 23) - 1.25 } },
  square = { function(a) return a:square() end, { r({9}, 24) } },
  rsqrt = { function(a) return a:rsqrt() end, { pos({9}, 25) } },
  clamp = { function(a) return a:clamp(-0.5, 0.5) end, { r({17}, 26) } },
  sum_all = { function(a) return a:sum() end, { r({3, 5}, 27) } },
  sum_dim = { function(a) return a:sum(1) end, { r({3, 5}, 28) } },
  sum_keep = { function(a) return a:sum(-1, true) end, { r({2, 3, 5}, 29) } },
  mean_dim = { function(a) return a:mean(2) end, { r({2, 3, 5}, 30) } },
  max_dim = { function(a) return (a:max(2)) end, { r({4, 6}, 31) } },
  min_all = { function(a) return a:min() end, { r({4, 6}, 32) } },
  softmax_last = { function(a) return a:softmax() end, { r({3, 7}, 33) } },
  softmax_mid = { function(a) return a:softmax(2) end, { r({2, 5, 3}, 34) } },
  log_softmax = { function(a) return a:log_softmax(-1) end, { r({3, 33}, 35) } },
  matmul = { function(a, b) return a:matmul(b) end, { r({3, 4}, 36), r({4, 5}, 37) } },
  matmul_batched = { function(a, b) return a:matmul(b) end, { r({2, 3, 4}, 38), r({4, 2}, 39) } },
  matmul_vec = { function(a, b) return a:matmul(b) end, { r({4}, 40), r({4, 3}, 41) } },
  transpose = { function(a) return a:transpose(1, 3) * r({4, 3, 2}, 99) end, { r({2, 3, 4}, 42) } },
  t = { function(a) return a:t():matmul(a) end, { r({3, 4}, 43) } },
  permute = { function(a) return a:permute(3, 1, 2) * r({4, 2, 3}, 98) end, { r({2, 3, 4}, 44) } },
  reshape = { function(a) return a:reshape({4, 3}):matmul(r({3, 2}, 97)) end, { r({2, 6}, 45) } },
  slice = { function(a) return a:slice(2, 2, 4) end, { r({3, 5}, 46) } },
  concat = { function(a, b) return q.concat({ a, b, a }, 2) end, { r({2, 3}, 47), r({2, 2}, 48) } },
  index_select = { function(a) return a:index_select(1, q.tensor({ 2, 0, 2 }, { dtype = "i64" })) end, { r({3, 4}, 49) } },
  gather = { function(a) return a:gather(2, q.tensor({ { 1 }, { 0 }, { 3 } }, { dtype = "i64" })) end, { r({3, 4}, 50) } },
  where = { function(a, b) return q.where(a:gt(0), a, b) end, { r({8}, 51), r({8}, 52) } },
  expand = { function(a) return a:expand({ 3, 4 }) end, { r({1, 4}, 53) } },
  clone = { function(a) return a:clone() * a end, { r({5}, 55) } },
}

for _, isa in ipairs(q.supported_isas()) do
  q.set_isa(isa)
  for name, c in pairs(cases) do
    T.case(isa .. "/" .. name, function()
      local ok, report = q.gradcheck(c[1], c[2], { eps = 1e-3, atol = 2e-3, rtol = 2e-2 })
      assert(ok, name .. ": " .. report.worst)
      assert(report.checked > 0)
    end)
  end
end

T.case("gradcheck catches a wrong gradient", function()
  -- relu's gradient is wrong for a function that is not relu: x * (x > 0) treated as constant
  -- mask is right; a detached factor gives a wrong gradient, which gradcheck must report.
  local ok = q.gradcheck(function(a) return a * a:detach() end, { r({6}, 60) })
  assert(not ok, "gradcheck accepted a wrong gradient")
end)

T.case("gradients accumulate until zero_grad", function()
  local x = q.tensor({ 1, 2, 3 })
  x.requires_grad = true
  for _ = 1, 2 do (x * x):sum():backward() end
  T.close(x.grad:totable(), { 4, 8, 12 })
  x:zero_grad()
  assert(x.grad == nil);
  (x * 3):sum():backward()
  T.close(x.grad:totable(), { 3, 3, 3 })
end)

T.case("gradients pass through dtype conversions", function()
  local x = q.tensor({ 1, 2, 3 }); x.requires_grad = true
  ((x:to("bf16") * 2):to("f32")):sum():backward()
  T.close(x.grad:totable(), { 2, 2, 2 })
  T.eq(x.grad:dtype(), "f32", "grad dtype")
end)

T.case("no_grad records nothing", function()
  local x = q.tensor({ 1, 2 }); x.requires_grad = true
  local y = q.no_grad(function() return x * 2 end)
  assert(y.grad_fn == nil and not y.requires_grad)
  T.errors(function() y:sum():backward() end, "does not require gradients")
  assert(q.is_grad_enabled())
end)

T.case("backward of a non-scalar needs a gradient", function()
  local x = q.tensor({ 1, 2 }); x.requires_grad = true
  local y = x * 3
  T.errors(function() y:backward() end, "qlora.backward", "scalar")
  y:backward{ gradient = q.tensor({ 1, 10 }), retain_graph = true }
  T.close(x.grad:totable(), { 3, 30 })
  x:zero_grad()
  y:backward{ gradient = q.tensor({ 2, 2 }) }
  T.close(x.grad:totable(), { 6, 6 })
  -- without retain_graph the graph is freed: a third pass is an error, not silent zeros
  T.errors(function() y:backward(q.tensor({ 1, 1 })) end, "already used by a backward pass", "retain_graph")
end)

T.done()
