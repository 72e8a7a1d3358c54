-- Inspect a Hugging Face model: its module tree, a summary of parameters and storage, and the
-- quantization error of every linear layer in NF4 and FP4.
--   scripts/run examples/inspect_model.lua [MODEL_DIR]     (default: the tiny test Llama)
local q = require "qlora"
local dir = arg[1] or ((arg[0]:match("(.*/)") or "./") .. "../Tests/fixtures/tiny-llama")

local model = q.load_model(dir)
print(model:summary())
print()
print(string.format("%-40s %5s %6s %6s %9s %9s", "module", "layer", "in", "out", "nf4 dB", "fp4 dB"))
local weights = q.load_tensors(dir .. "/model.safetensors")
for _, m in ipairs(model:modules()) do
  local w = weights[m.name .. ".weight"]
  local nf4 = w and q.quant_error(w, { type = "nf4" }).snr_db or 0 / 0
  local fp4 = w and q.quant_error(w, { type = "fp4" }).snr_db or 0 / 0
  print(string.format("%-40s %5s %6d %6d %9.2f %9.2f", m.name, tostring(m.layer), m.in_features,
    m.out_features, nf4, fp4))
end
print()
local quantized = q.load_model(dir, { quant = { type = "nf4", block = 64, double_quant = true } })
print(quantized:summary())
