-- examples/quickstart.lua in its QLORA_QUICK size: what it writes (a Hugging Face base directory,
-- the PEFT adapter, metrics, the loss plot), that a second run reuses the saved base, and that a
-- base directory without its completion marker is pre-trained again.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local here = arg[0]:match("(.*/)") or "./"
local script = here .. "../../examples/quickstart.lua"

local out = os.tmpname(); os.remove(out)
local function exists(p) local f = io.open(p, "rb"); if f then f:close() end return f ~= nil end
local function run()
  local p = io.popen(string.format("QLORA_QUICK=1 %q run %q %q 2>&1", arg[-1], script, out))
  local text = p:read("a")
  local ok = p:close()
  assert(ok, "the quickstart failed:\n" .. text)
  return text
end

T.case("a first run pre-trains and writes the base, adapter, metrics and plot", function()
  local text = run()
  assert(text:find("1. pre-training", 1, true), text)
  for _, f in ipairs({ "base/config.json", "base/model.safetensors", "base/tokenizer.json", "base/quickstart.json",
                       "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                       "pretrain/metrics.jsonl", "finetune/metrics.jsonl", "loss.svg" }) do
    assert(exists(out .. "/" .. f), "missing " .. f)
  end
  for _, frag in ipairs({ "accuracy on held-out 'shift'", "peak memory (RSS)", "adapter: " .. out .. "/adapter",
                          "loss plot: " .. out .. "/loss.svg" }) do
    assert(text:find(frag, 1, true), "the output lacks " .. frag)
  end
  -- the base is a Hugging Face directory: it loads with its tokenizer, and the adapter onto it
  local model = q.load_model(out .. "/base", { quant = { type = "nf4", double_quant = true } })
  T.eq(model:config().vocab_size, 32, "vocab")
  T.eq(model:tokenizer():decode(model:tokenizer():encode("copy: ab > ab")), "copy: ab > ab", "tokenizer")
  model:load_adapter(out .. "/adapter")
  T.eq(select(2, q.plot{ files = { out .. "/pretrain/metrics.jsonl" }, out = out .. "/check.svg" }), 1, "metrics plot")
end)

T.case("a second run reuses the saved base; without its marker the base is pre-trained again", function()
  local text = run()
  assert(text:find("reusing " .. out .. "/base", 1, true), "second run:\n" .. text)
  assert(not text:find("1. pre-training", 1, true), "the second run pre-trained again")
  os.remove(out .. "/base/quickstart.json")
  text = run()
  assert(text:find("1. pre-training", 1, true), "an incomplete base must be rebuilt:\n" .. text)
end)

q.rmtree(out)
T.done()
