// The Lua half of the `qlora` module: the tensor __index (methods, then properties), no_grad,
// and module-level aliases of tensor methods (q.exp(t) == t:exp()). Thin on purpose.

let preludeSource = """
local q, mt, methods, property = ...

mt.__index = function(t, k)
  local m = methods[k]
  if m ~= nil then return m end
  return property(t, k)
end

-- Runs fn(...) with gradient recording off; restores the previous mode even on error.
function q.no_grad(fn, ...)
  if type(fn) ~= "function" then
    error("qlora.no_grad: expected a function as argument 1, got " .. type(fn), 2)
  end
  local previous = q.set_grad_enabled(false)
  local results = table.pack(pcall(fn, ...))
  q.set_grad_enabled(previous)
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

for name, f in pairs(methods) do
  if q[name] == nil then q[name] = f end
end
q.Tensor = methods
return q
"""
