-- The data-parallel scaling model of docs/scaling.md, from measured inputs:
--   .build/release/qlora run scripts/scaling_model.lua STEP_S STEP_TOKENS HOST_S [CORES_MEASURED]
-- STEP_S: seconds of one training step of the bench model (scripts/bench_step.lua: 8 layers,
-- hidden 512, MLP 1408, vocabulary 8192, 4 x 256 tokens, LoRA r 16 on all linear layers) on a
-- machine with CORES_MEASURED cores (default 2); STEP_TOKENS: its tokens (1024); HOST_S: a
-- 2-rank MPI_Allreduce of the 7B LoRA gradients (40M floats) over loopback (bench_allreduce.lua),
-- the cost of the all-reduce on the hosts themselves (copies and additions), added to the network
-- time. Prints the per-token FLOPs of both models, the 7B step time by scaling, and the tables.
local step_s, step_tokens, host_s = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
local cores_measured = tonumber(arg[4] or "2")
assert(step_s and step_tokens and host_s, "usage: scaling_model.lua STEP_S STEP_TOKENS HOST_S [CORES_MEASURED]")

-- Training FLOPs per token of a QLoRA step: the frozen 4-bit linear layers cost a forward
-- product (2N) and the product for the input gradient (2N), no weight gradient; attention
-- scores and values cost 4 L T d forward and twice that backward (12 L T d); the LoRA products
-- (r 16) are under 1% and left out.
local function flops_per_token(m)
  local per_layer = 4 * m.d * m.d + 3 * m.d * m.ff   -- q, k, v, o (no GQA in either) + gate, up, down
  local linear = m.layers * per_layer + m.d * m.vocab -- + the head
  return 4 * linear + 12 * m.layers * m.seq * m.d, linear
end
local bench = { d = 512, ff = 1408, layers = 8, vocab = 8192, seq = 256 }
local llama7b = { d = 4096, ff = 11008, layers = 32, vocab = 32000, seq = 512 }
local fb, nb = flops_per_token(bench)
local f7, n7 = flops_per_token(llama7b)
local lora_floats = 32 * (4 * 16 * (4096 + 4096) + 3 * 16 * (4096 + 11008))
local ratio = f7 / fb
local tok_s_bench = step_s / step_tokens * cores_measured      -- core-seconds per token
local core_s_7b = tok_s_bench * ratio                           -- core-seconds per 7B token
print(string.format("bench model: %.1fM linear params, %.1f MFLOP/token; 7B: %.2fB linear params, %.2f GFLOP/token (x%.0f)",
  nb / 1e6, fb / 1e6, n7 / 1e9, f7 / 1e9, ratio))
print(string.format("measured: %.3f s per %d-token step on %d cores = %.3f core-ms/token; 7B: %.1f core-ms/token",
  step_s, step_tokens, cores_measured, tok_s_bench * 1e3, core_s_7b * 1e3))
print(string.format("LoRA r16 all-linear of the 7B: %.2fM floats = %.0f MB per all-reduce; host cost %.3f s (measured, 2 ranks)",
  lora_floats / 1e6, lora_floats * 4 / 1e6, host_s))

-- Ring all-reduce: each node sends and receives 2 (K-1)/K of the buffer; plus 2 (K-1) message
-- latencies (50 us each on TCP) and the measured host cost.
local bytes = lora_floats * 4
local function allreduce_s(K, gbit)
  if K == 1 then return 0 end
  return 2 * (K - 1) / K * bytes / (gbit * 1e9 / 8) + 2 * (K - 1) * 50e-6 + host_s
end

local function table_for(cores, node_tokens_fn, title)
  local t_tok = core_s_7b / cores
  print("")
  print(title)
  print("| nodes | tokens per node per step | compute s | all-reduce s (10 / 100 Gbit/s) | tokens/s at 10 Gbit/s | tokens/s at 100 Gbit/s | communication share (10 / 100) |")
  print("|---:|---:|---:|---:|---:|---:|---:|")
  for _, K in ipairs({ 1, 2, 8, 32 }) do
    local b = node_tokens_fn(K)
    local comp = b * t_tok
    local a10, a100 = allreduce_s(K, 10), allreduce_s(K, 100)
    print(string.format("| %d | %d | %.2f | %.3f / %.3f | %.1f | %.1f | %.1f%% / %.1f%% |", K, b, comp, a10, a100,
      K * b / (comp + a10), K * b / (comp + a100), 100 * a10 / (comp + a10), 100 * a100 / (comp + a100)))
  end
  -- where communication starts to dominate: the per-node tokens at which it equals compute
  print(string.format("communication equals compute at %.0f tokens per node per step (10 Gbit/s, 32 nodes) and %.0f (100 Gbit/s)",
    allreduce_s(32, 10) / t_tok, allreduce_s(32, 100) / t_tok))
end

for _, cores in ipairs({ cores_measured, 32 }) do
  table_for(cores, function() return 2048 end,
    string.format("%d-core nodes, each rank one micro-batch of 4 x 512 tokens per step (global batch grows with the nodes):", cores))
  table_for(cores, function(K) return 16384 // K end,
    string.format("%d-core nodes, a fixed global batch of 32 x 512 = 16384 tokens split over the nodes:", cores))
end
