-- Memory that is freed for good leaves the process: quantizing a model built in memory gives its
-- f32 weights' memory back, and loading a dense checkpoint with 4-bit quantization keeps only the
-- 4-bit weights resident (each quantized tensor's mapped pages are dropped once it is read).
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local function rss() return (q.memory_mb()) end
local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); return d end

-- 4 layers of hidden 1024, intermediate 2816: 50.6M linear weights, 202 MB in f32
local cfg = { vocab = 1000, hidden = 1024, layers = 4, heads = 8, intermediate = 2816, seed = 1 }
local linear_mb = 4 * (4 * 1024 * 1024 + 3 * 1024 * 2816) * 4 / 2 ^ 20

T.case("model:quantize returns the f32 weights' memory", function()
  local m = q.llama(cfg)
  collectgarbage(); collectgarbage()
  local before = rss()
  m:quantize{ type = "nf4", double_quant = true }
  collectgarbage(); collectgarbage()
  local after = rss()
  assert(before - after > 0.6 * linear_mb,
    string.format("RSS %.0f MB before quantizing, %.0f MB after: expected about %.0f MB back", before, after, linear_mb))
end)

T.case("loading a dense checkpoint in 4-bit keeps only the 4-bit weights resident", function()
  local dir = tmpdir()
  do
    local m = q.llama(cfg)
    m:save(dir)
  end
  collectgarbage(); collectgarbage()
  local before = rss()
  local m = q.load_model(dir, { quant = { type = "nf4", double_quant = true } })
  collectgarbage(); collectgarbage()
  local grown = rss() - before
  -- 4-bit weights are about linear_mb / 7.7; the f32 file pages read to quantize them must not stay
  assert(grown < 0.35 * linear_mb, string.format("RSS grew by %.0f MB loading %.0f MB of f32 linears in 4-bit", grown, linear_mb))
  -- the model still works after its pages were dropped (embedding and norms read from the file)
  local logits = m:forward(q.tensor({ { 1, 2, 3 } }, { dtype = "i64" }))
  T.eq(logits:shape()[3], cfg.vocab)
  q.rmtree(dir)
end)

T.done()
