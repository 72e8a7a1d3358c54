// `qlora bench generate --model PATH [--prompt-tokens N --tokens N --quant nf4|none
// --compute f32|bf16] [--json]`: greedy generation through the KV cache, the way a user runs it:
// prompt processing tokens/s (the prompt's tokens over the time to the first new token) and
// generation tokens/s (the tokens after the first over the time they took), timed from the
// on_token callback. The prompt is the model's own token ids (a fixed pseudo-random sequence),
// so no tokenizer is needed; generation may stop early at an end-of-sequence token (the count
// is printed).

import LuaBridge

extension Bench {
    static let generateScript = emitLua + #"""
local q = require "qlora"
local json, path, prompt_tokens, new_tokens, quant, compute = ...
local emit = BENCH_EMIT(json)
local opts = { compute = compute }
if quant ~= "none" then opts.quant = { type = quant, block = 64, double_quant = true } end
local t0 = q.clock()
local model = q.load_model(path, opts)
local load_s = q.clock() - t0
local vocab = model:config().vocab_size
local prompt = {}
local x = 12345
for i = 1, prompt_tokens do x = (x * 1103515245 + 12345) % 2147483648; prompt[i] = 3 + x % (vocab - 3) end
local function run(n)
  local stamps = {}
  local start = q.clock()
  model:generate(prompt, { max_tokens = n, on_token = function() stamps[#stamps + 1] = q.clock() end })
  return start, stamps
end
run(2) -- warm-up: buffers, pages, caches
local start, stamps = run(new_tokens)
local n = #stamps
local prefill = stamps[1] - start
local gen = n > 1 and (n - 1) / (stamps[n] - stamps[1]) or 0 / 0
local _, peak = q.memory_mb()
local fields = { op = "generate", model = path, quant = quant, compute = compute, prompt_tokens = prompt_tokens,
  new_tokens = n, load_s = load_s, prompt_tokens_per_sec = prompt_tokens / prefill, gen_tokens_per_sec = gen,
  peak_rss_mb = peak }
local order = { "op", "model", "quant", "compute", "prompt_tokens", "new_tokens", "load_s", "prompt_tokens_per_sec",
  "gen_tokens_per_sec", "peak_rss_mb" }
emit(fields, order)
"""#

    /// `bench generate` options.
    struct GenerateOptions {
        var promptTokens = 128, tokens = 64
        var quant = "nf4"
    }

    static func generateSuite(json: Bool, model: String?, compute: String?, _ o: GenerateOptions) throws {
        guard let model = model else { throw BenchError("bench generate needs --model PATH") }
        let host = try LuaHost()
        let args: [LuaHost.ChunkArgument] = [.bool(json), .string(model), .int(o.promptTokens), .int(o.tokens),
                                             .string(o.quant), .string(compute ?? "f32")]
        if let err = host.runChunk(generateScript, name: "=qlora.bench.generate", values: args) { throw BenchError(err) }
    }
}
