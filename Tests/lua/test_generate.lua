-- Generation with a KV cache: greedy decoding equals a full recomputation at every step; a model
-- trained (LoRA, a hand-written Adam loop with in-place updates) to repeat a pattern repeats it;
-- sampling is seeded; bad options are errors.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"

T.case("greedy with the KV cache equals recomputing the whole sequence", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  local prompt = { 3, 141, 59, 26 }
  local out = model:generate(prompt, { max_tokens = 8 })
  T.eq(#out, 8)
  local seq = { table.unpack(prompt) }
  for i = 1, #out do
    local logits = model:forward({ seq })
    local next_id = logits:slice(2, -1):reshape({ -1 }):argmax():item()
    T.eq(out[i], next_id, "token " .. i)
    seq[#seq + 1] = next_id
  end
end)

T.case("a model trained to repeat a pattern repeats it", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  model:add_lora{ r = 8, alpha = 16, targets = "all-linear", seed = 1 }
  local pattern = {}
  for i = 1, 24 do pattern[i] = ({ 10, 20, 30, 40 })[(i - 1) % 4 + 1] end
  local ids = q.tensor({ pattern }, { dtype = "i64" })
  local params = model:parameters{ trainable = true }
  local m, v = {}, {}
  for i, p in ipairs(params) do m[i] = q.zeros(p.tensor:shape()); v[i] = q.zeros(p.tensor:shape()) end
  local first, last
  for step = 1, 40 do
    local loss = model:loss(ids)
    loss:backward()
    first = first or loss:item(); last = loss:item()
    for i, p in ipairs(params) do
      local g = p.tensor.grad
      m[i]:mul_(0.9):add_(g, 0.1)
      v[i]:mul_(0.999):add_(g * g, 0.001)
      local mh, vh = m[i] / (1 - 0.9 ^ step), v[i] / (1 - 0.999 ^ step)
      p.tensor:add_(mh / (vh:sqrt() + 1e-8), -1e-2)
      p.tensor:zero_grad()
    end
  end
  assert(last < first - 1, string.format("loss went from %g to %g", first, last))
  T.close(model:generate({ 10, 20, 30, 40, 10 }, { max_tokens = 8 }), { 20, 30, 40, 10, 20, 30, 40, 10 }, 0)
end)

T.case("sampling is seeded", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  local a = model:generate({ 1, 2, 3 }, { max_tokens = 10, temperature = 1.0, top_k = 50, top_p = 0.9, seed = 5 })
  local b = model:generate({ 1, 2, 3 }, { max_tokens = 10, temperature = 1.0, top_k = 50, top_p = 0.9, seed = 5 })
  T.close(a, b, 0)
  local stopped = 0
  model:generate({ 1, 2, 3 }, { max_tokens = 10, on_token = function(id) stopped = stopped + 1; return stopped < 3 end })
  T.eq(stopped, 3)
end)

T.case("bad generation options", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  T.errors(function() model:generate("hello") end, "no tokenizer")
  T.errors(function() model:generate({}, {}) end, "no tokens")
  T.errors(function() model:generate({ 1 }, { top_p = 0 }) end, "top_p")
  T.errors(function() model:generate({ 1 }, { temperature = -1 }) end, "temperature")
  T.errors(function() model:generate({ 1 }, { max_tokenz = 3 }) end, "unknown option 'max_tokenz'")
  T.errors(function() model:generate({ 1 }, { on_token = function() error("cb") end }) end, "cb")
  T.errors(function() model:generate({ { 1 }, { 2 } }) end, "one sequence")
  local x = q.tensor({ 1 }, { dtype = "i32" })
  T.errors(function() x:add_(q.ones(1)) end, "f32")
  local y = q.ones(2); y.requires_grad = true
  T.errors(function() (y * 2):add_(q.ones(2)) end, "detach")
end)

T.done()
