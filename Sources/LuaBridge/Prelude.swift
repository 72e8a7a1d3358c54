// The Lua half of the `qlora` module: the tensor __index (methods, then properties), no_grad,
// and module-level aliases of tensor methods (q.exp(t) == t:exp()). Thin on purpose.

let preludeSource = """
local q, mt, methods, property = ...

mt.__index = function(t, k)
  local m = methods[k]
  if m ~= nil then return m end
  return property(t, k)
end

-- The one rule for coroutines: a function qlora runs on the script's behalf (a no_grad body,
-- the trainer's loss and on_step callbacks, and every callback Swift calls) may not yield.
-- Running it as a coroutine of its own catches a yield: the run ends with an error naming the
-- callback, and whatever the caller set up is restored on that path as on every other.
local co_create, co_resume, co_status, co_close = coroutine.create, coroutine.resume, coroutine.status, coroutine.close
function q._call_no_yield(what, fn, ...)
  local co = co_create(fn)
  local results = table.pack(co_resume(co, ...))
  if co_status(co) ~= "dead" then
    co_close(co)
    error(what .. " yielded; callbacks qlora runs may not yield (run coroutines around qlora calls, not through them)", 0)
  end
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

-- Runs fn(...) with gradient recording off; restores the previous mode on every exit (return,
-- error, or a yield, which is an error).
function q.no_grad(fn, ...)
  if type(fn) ~= "function" then
    error("qlora.no_grad: expected a function as argument 1, got " .. type(fn), 2)
  end
  local previous = q.set_grad_enabled(false)
  local results = table.pack(pcall(q._call_no_yield, "qlora.no_grad: the body", fn, ...))
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
