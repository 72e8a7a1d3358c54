-- A tour of qlora tensors: creation, arithmetic with broadcasting, autograd, a tiny gradient
-- descent, and safetensors files.   Run: scripts/run examples/tensors.lua
local q = require "qlora"

print("qlora " .. q.version .. ", isa " .. q.isa() .. ", " .. q.threads() .. " threads")

-- Creation: from tables, filled, ranges, seeded random draws.
local a = q.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
local b = q.arange(3):to("f32")              -- {0, 1, 2}
print(a)
print("a + b (broadcast):", (a + b))
print("a @ a^T:", a:matmul(a:t()))
print("row sums:", a:sum(2), "softmax of row 1:", a:slice(1, 1, 1):softmax())

-- Autograd: fit w in y = x w to data made with w* = {2, -1}.
local x = q.randn({ 64, 2 }, { seed = 1 })
local y = x:matmul(q.tensor({ { 2 }, { -1 } }))
local w = q.zeros({ 2, 1 })
w.requires_grad = true
for step = 1, 200 do
  local loss = ((x:matmul(w) - y) ^ 2):mean()
  loss:backward()
  q.no_grad(function() w = w - w.grad * 0.1 end)   -- a new leaf tensor each step
  w.requires_grad = true
  if step % 50 == 0 then print(string.format("step %3d  loss %.3e", step, loss:item())) end
end
print("learned w:", w)

-- Gradient checking, available to scripts for their own functions.
local ok, report = q.gradcheck(function(t) return (t:tanh() * t):sum(1) end, { q.randn({ 3, 4 }, { seed = 2 }) })
print("gradcheck:", ok, report.max_abs_error)

-- safetensors: write atomically, read back (memory-mapped).
local path = os.tmpname() .. ".safetensors"
q.save_tensors(path, { weight = w, ids = q.tensor({ 1, 2, 3 }, { dtype = "i64" }) }, { note = "from examples/tensors.lua" })
local loaded, meta = q.load_tensors(path)
print("loaded:", loaded.weight, loaded.ids, "metadata note:", meta.note)
os.remove(path)
