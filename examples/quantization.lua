-- Quantization error and storage of NF4 and FP4, with and without double quantization, at
-- several block sizes, for a weight matrix (a random normal one, or a tensor from a file).
--   scripts/run examples/quantization.lua [model.safetensors tensor_name]
local q = require "qlora"

local w
if arg[1] then
  local tensors = q.load_tensors(arg[1])
  w = assert(tensors[arg[2] or ""], "usage: quantization.lua [file.safetensors tensor_name]")
else
  w = q.randn({ 1024, 1024 }, { seed = 1, std = 0.02 })  -- like a freshly initialised layer
end
print(string.format("weight %s, %d parameters, %.1f MiB as f32", table.concat(w:shape(), "x"),
  w:numel(), w:numel() * 4 / 2 ^ 20))
print(string.format("%-5s %-6s %6s %11s %11s %8s %10s", "type", "dquant", "block", "rmse", "max_abs", "snr_dB", "bits/param"))
for _, qt in ipairs({ "nf4", "fp4" }) do
  for _, dq in ipairs({ false, true }) do
    for _, block in ipairs({ 32, 64, 128, 256, 1024 }) do
      local opts = { type = qt, block = block, double_quant = dq }
      local e = q.quant_error(w, opts)
      local qw = q.quantize(w, opts)
      print(string.format("%-5s %-6s %6d %11.3e %11.3e %8.2f %10.3f", qt, tostring(dq), block,
        e.rmse, e.max_abs, e.snr_db, qw:bits_per_param()))
    end
  end
end

-- The 4-bit layer computes with the packed weight directly.
local qw = q.quantize(w, { type = "nf4", block = 64, double_quant = true })
local layer = q.quant_linear(qw)
local x = q.randn({ 4, w:shape(2) }, { seed = 2 })
local y = layer:forward(x)
local dense = x:matmul(qw:dequantize():t())
print(string.format("4-bit layer vs dense product of the dequantized weight: max |diff| = %.2e",
  (y - dense):abs():max():item()))
