// `qlora bench train [--model DIR] [--seq N --batch N --r N --steps N --compute f32|bf16|f32,bf16
// --checkpointing] [--json]`: QLoRA training steps over an NF4 + double-quantized base (LoRA on
// all seven projections, alpha 2r, AdamW) of a real model, or by default of the PyTorch peer's
// default configuration (hidden 512, 8 layers, 8 heads, intermediate 1408, vocab 8192, batch
// 4 x 256, r 16): load time and RSS after loading, tokens/s, step time, peak RSS, and model FLOP
// utilisation against the sgemm rate measured in the same run. The steps run through the Lua API,
// as a researcher's script would. Peak RSS is the process's: run one compute per process to
// compare peaks.

import LuaBridge

extension Bench {
    /// Lua that prints one measurement: `emit(fields, order)` as a JSON object (strings escaped
    /// as JSON) or as `key=value` text. Both bench scripts begin with it.
    static let emitLua = #"""
local function BENCH_EMIT(json)
  -- a JSON string: quotes, backslashes and control characters as \u escapes
  local function jstr(s) return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"' end
  return function(fields, order)
    local parts = {}
    for _, k in ipairs(order) do
      local v = fields[k]
      if json then
        parts[#parts + 1] = string.format('"%s": %s', k, type(v) == "number" and string.format("%.6g", v) or jstr(tostring(v)))
      else
        parts[#parts + 1] = k .. "=" .. (type(v) == "number" and string.format("%.4g", v) or tostring(v))
      end
    end
    print(json and ("{" .. table.concat(parts, ", ") .. "}") or table.concat(parts, "  "))
  end
end

"""#

    static let trainScript = emitLua + #"""
local q = require "qlora"
local json = ...
local emit = BENCH_EMIT(json)

-- sgemm rate in this run (1024^3, best of 5)
local a, b = q.randn({ 1024, 1024 }, { seed = 1 }), q.randn({ 1024, 1024 }, { seed = 2 })
a:matmul(b)
local best = math.huge
for _ = 1, 5 do local t0 = q.clock(); a:matmul(b); best = math.min(best, q.clock() - t0) end
local sgemm_gflops = 2 * 1024 ^ 3 / best / 1e9
if not json then print(string.format("# qlora bench train: isa %s, %d threads, sgemm %.0f GFLOP/s", q.isa(), q.threads(), sgemm_gflops)) end

-- options from the command line (nil: the defaults below)
local model_path, opt_seq, opt_batch, opt_r, opt_computes, checkpointing, opt_steps = select(2, ...)
local B, T, steps, warmup = opt_batch or 4, opt_seq or 256, opt_steps or 5, 2
local r = opt_r or 16
local computes = {}
for c in (opt_computes or "f32,bf16"):gmatch("[^,]+") do computes[#computes + 1] = c end

local cfg = { vocab = 8192, hidden = 512, layers = 8, heads = 8, intermediate = 1408, seed = 1 }
for _, compute in ipairs(computes) do
  local t_load = q.clock()
  local model
  if model_path then
    model = q.load_model(model_path, { quant = { type = "nf4", block = 64, double_quant = true }, compute = compute })
    local c = model:config()
    cfg = { vocab = c.vocab_size, hidden = c.hidden_size, layers = c.num_hidden_layers, heads = c.num_attention_heads,
      kv_heads = c.num_key_value_heads, head_dim = c.head_dim, intermediate = c.intermediate_size }
  else
    model = q.llama(cfg)
    model:quantize{ type = "nf4", block = 64, double_quant = true, compute = compute }
  end
  t_load = q.clock() - t_load
  local rss_loaded = q.memory_mb()
  model:add_lora{ r = r, alpha = 2 * r, targets = "all-linear", seed = 1 }
  if checkpointing then model:gradient_checkpointing(true) end
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
  -- q, k, v, o and gate, up, down per layer, plus the head
  local hd = cfg.head_dim or cfg.hidden // cfg.heads
  local kv = cfg.kv_heads or cfg.heads
  local base = cfg.layers * (2 * cfg.hidden * cfg.heads * hd + 2 * cfg.hidden * kv * hd + 3 * cfg.hidden * cfg.intermediate)
    + cfg.vocab * cfg.hidden
  -- frozen weights: forward and input-gradient products (4 flops per weight per token);
  -- attention scores and values forward and backward
  local flops_per_token = 4 * base + cfg.layers * 6 * T * cfg.heads * hd
  local tps = B * T / median
  local _, peak = q.memory_mb()
  emit({ op = "train", model = model_path or "bench-config", quant = "nf4+dq", compute = compute, r = r, batch = B,
    seq = T, checkpointing = checkpointing and "on" or "off", load_s = t_load, rss_loaded_mb = rss_loaded,
    step_ms = median * 1e3, tokens_per_sec = tps, peak_rss_mb = peak,
    mfu = tps * flops_per_token / (sgemm_gflops * 1e9), sgemm_gflops = sgemm_gflops },
    { "op", "model", "quant", "compute", "r", "batch", "seq", "checkpointing", "load_s", "rss_loaded_mb", "step_ms",
      "tokens_per_sec", "peak_rss_mb", "mfu", "sgemm_gflops" })
  model = nil; params = nil; opt = nil
  collectgarbage(); collectgarbage()
end
"""#

    /// `bench train` options; nil fields take the script's defaults (the peer's configuration).
    struct TrainOptions {
        var model: String? = nil
        var seq: Int? = nil, batch: Int? = nil, r: Int? = nil, steps: Int? = nil
        var compute: String? = nil
        var checkpointing = false
    }

    static func trainSuite(json: Bool, _ o: TrainOptions = TrainOptions()) throws {
        let host = try LuaHost()
        func str(_ s: String?) -> LuaHost.ChunkArgument { s.map { .string($0) } ?? .none }
        func int(_ n: Int?) -> LuaHost.ChunkArgument { n.map { .int($0) } ?? .none }
        let args: [LuaHost.ChunkArgument] = [.bool(json), str(o.model), int(o.seq), int(o.batch), int(o.r), str(o.compute),
                                             .bool(o.checkpointing), int(o.steps)]
        if let err = host.runChunk(trainScript, name: "=qlora.bench.train", values: args) { throw BenchError(err) }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
