// `qlora bench train [--json]`: QLoRA training steps of the PyTorch peer's default configuration
// (hidden 512, 8 layers, 8 heads, intermediate 1408, vocab 8192, batch 4 x 256, LoRA r 16 on all
// seven projections, AdamW) over an NF4 + double-quantized base, for f32 and bf16 compute:
// tokens/s, step time, peak RSS, and model FLOP utilisation against the sgemm rate measured in
// the same run. The steps run through the Lua API, as a researcher's script would.

import LuaBridge

extension Bench {
    static let trainScript = #"""
local q = require "qlora"
local json = ...
local function emit(fields, order)
  if json then
    local parts = {}
    for _, k in ipairs(order) do
      local v = fields[k]
      parts[#parts + 1] = string.format('"%s": %s', k, type(v) == "number" and string.format("%.6g", v) or string.format("%q", v))
    end
    print("{" .. table.concat(parts, ", ") .. "}")
  else
    local parts = {}
    for _, k in ipairs(order) do
      local v = fields[k]
      parts[#parts + 1] = k .. "=" .. (type(v) == "number" and string.format("%.4g", v) or tostring(v))
    end
    print(table.concat(parts, "  "))
  end
end

-- sgemm rate in this run (1024^3, best of 5)
local a, b = q.randn({ 1024, 1024 }, { seed = 1 }), q.randn({ 1024, 1024 }, { seed = 2 })
a:matmul(b)
local best = math.huge
for _ = 1, 5 do local t0 = q.clock(); a:matmul(b); best = math.min(best, q.clock() - t0) end
local sgemm_gflops = 2 * 1024 ^ 3 / best / 1e9
if not json then print(string.format("# qlora bench train: isa %s, %d threads, sgemm %.0f GFLOP/s", q.isa(), q.threads(), sgemm_gflops)) end

local cfg = { vocab = 8192, hidden = 512, layers = 8, heads = 8, intermediate = 1408, seed = 1 }
local B, T, steps, warmup = 4, 256, 5, 2
for _, compute in ipairs({ "f32", "bf16" }) do
  local model = q.llama(cfg)
  model:quantize{ type = "nf4", block = 64, double_quant = true, compute = compute }
  model:add_lora{ r = 16, alpha = 32, targets = "all-linear", seed = 1 }
  local params = model:parameters{ trainable = true }
  local opt = q.optim.adamw(params, { lr = 1e-4 })
  local ids = (q.rand({ B, T }, { seed = 3 }) * cfg.vocab):to("i64")
  local function step()
    local loss = model:loss(ids)
    loss:backward()
    opt:step()
    opt:zero_grad()
    return loss:item()
  end
  for _ = 1, warmup do step() end
  local times = {}
  for i = 1, steps do local t0 = q.clock(); step(); times[i] = q.clock() - t0 end
  table.sort(times)
  local median = times[(steps + 1) // 2]
  -- q, k, v, o (kv heads = heads, as in the peer) and gate, up, down per layer, plus lm_head
  local base = cfg.layers * (4 * cfg.hidden * cfg.hidden + 3 * cfg.hidden * cfg.intermediate)
    + cfg.vocab * cfg.hidden
  -- frozen weights: forward and input-gradient products (4 flops per weight per token);
  -- attention scores and values forward and backward
  local flops_per_token = 4 * base + cfg.layers * 6 * T * cfg.hidden
  local tps = B * T / median
  local _, peak = q.memory_mb()
  emit({ op = "train", quant = "nf4+dq", compute = compute, batch = B, seq = T, step_ms = median * 1e3,
    tokens_per_sec = tps, peak_rss_mb = peak, mfu = tps * flops_per_token / (sgemm_gflops * 1e9),
    sgemm_gflops = sgemm_gflops },
    { "op", "quant", "compute", "batch", "seq", "step_ms", "tokens_per_sec", "peak_rss_mb", "mfu", "sgemm_gflops" })
end
"""#

    static func trainSuite(json: Bool) throws {
        let host = try LuaHost()
        if let err = host.runChunk(trainScript, name: "=qlora.bench.train", args: [json]) { throw BenchError(err) }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
