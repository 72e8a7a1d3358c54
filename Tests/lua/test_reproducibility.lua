-- What is bit-identical, each claim of docs/architecture.md "What is bit-identical" tested:
-- - across thread counts (1, 2, 3): a training run's losses, gradient norms and adapter bytes,
--   and a forward's logits, in f32 and bf16 compute, on a model large enough that every product
--   is cut into tiles (ql_sgemm) and every kernel runs in parallel;
-- - across ISA levels (every level this CPU has): quantization (packed codes, absmax, double
--   quantization), dequantization and the random streams are bit-identical; arithmetic that
--   sums (products, norms, softmax, the loss) differs in the last bits and stays within 1e-4;
-- - a level the CPU lacks cannot be chosen.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); return d end
local function read(p) local f = assert(io.open(p, "rb")); local s = f:read("a"); f:close(); return s end
-- the exact bytes of tensors (safetensors, keys sorted)
local function bytes_of(tensors)
  local d = tmpdir()
  q.save_tensors(d .. "/t.safetensors", tensors)
  local s = read(d .. "/t.safetensors")
  q.rmtree(d)
  return s
end

local function model(compute)
  local m = q.llama{ vocab = 512, hidden = 256, layers = 2, heads = 4, kv_heads = 2, intermediate = 704, seed = 5 }
  m:quantize{ type = "nf4", double_quant = true, compute = compute }
  m:add_lora{ r = 8, alpha = 16, targets = "all-linear", dropout = 0.05, seed = 3 }
  return m
end

local rows = {}
for i = 1, 16 do
  local ids = {}
  for k = 1, 64 do ids[k] = (i * 37 + k * k * 11) % 512 end
  rows[i] = { input_ids = ids }
end
local ds = q.data.from_table(rows, { format = "tokens" })

-- three training steps and one forward: every loss and norm to 17 digits, the logits' and the
-- adapter's bytes
local function fingerprint(compute)
  local m = model(compute)
  local trace = {}
  q.trainer{ model = m, train = ds, steps = 3, batch_size = 4, optimizer = { "adamw", lr = 1e-3 }, seed = 9,
    print_every = 1000,
    on_step = function(s) trace[#trace + 1] = string.format("%.17g %.17g", s.loss, s.grad_norm) end }:run()
  local logits = m:forward(q.tensor({ rows[1].input_ids, rows[2].input_ids }, { dtype = "i32" }))
  local d = tmpdir()
  m:save_adapter(d)
  local adapter = read(d .. "/adapter_model.safetensors")
  q.rmtree(d)
  return { trace = table.concat(trace, "\n"), logits = bytes_of({ logits = logits }), adapter = adapter,
    losses = trace }
end

T.case("training and logits are bit-identical across 1, 2 and 3 threads (f32 and bf16 compute)", function()
  local saved = q.threads()
  for _, compute in ipairs({ "f32", "bf16" }) do
    q.set_threads(1)
    local one = fingerprint(compute)
    assert(#one.trace > 0)
    for _, n in ipairs({ 2, 3 }) do
      q.set_threads(n)
      local other = fingerprint(compute)
      T.eq(other.trace, one.trace, compute .. ": losses and norms, 1 vs " .. n .. " threads")
      assert(other.logits == one.logits, compute .. ": logits differ in bits, 1 vs " .. n .. " threads")
      assert(other.adapter == one.adapter, compute .. ": adapter bytes differ, 1 vs " .. n .. " threads")
    end
  end
  q.set_threads(saved)
end)

T.case("quantization, dequantization and random streams are bit-identical across ISA levels", function()
  local saved = q.isa()
  local levels = q.supported_isas()
  local function at_level(level)
    q.set_isa(level)
    local w = q.randn({ 96, 640 }, { seed = 11, std = 0.05 })
    local out = { randn = bytes_of({ w = w }), rand = bytes_of({ u = q.rand({ 1000 }, { seed = 12 }) }) }
    for _, opts in ipairs({ { type = "nf4", double_quant = true }, { type = "nf4", double_quant = false, block = 128 },
                            { type = "fp4", double_quant = true } }) do
      local qt = q.quantize(w, opts)
      local parts = {}
      for k, v in pairs(qt:export()) do if type(v) ~= "string" and type(v) ~= "number" and k ~= "shape" then parts[k] = v end end
      parts.dequantized = qt:dequantize()
      out[opts.type .. tostring(opts.double_quant) .. tostring(opts.block)] = bytes_of(parts)
    end
    return out
  end
  local ref = at_level("scalar")
  for _, level in ipairs(levels) do
    local got = at_level(level)
    for k, v in pairs(ref) do assert(got[k] == v, k .. " differs in bits between scalar and " .. level) end
  end
  q.set_isa(saved)
end)

T.case("training across ISA levels agrees within 1e-4 (sums differ in the last bits)", function()
  local saved = q.isa()
  q.set_isa("scalar")
  local ref = fingerprint("f32").losses
  for _, level in ipairs(q.supported_isas()) do
    q.set_isa(level)
    local got = fingerprint("f32").losses
    T.eq(#got, #ref, level .. ": steps")
    for i = 1, #ref do
      local l0, g0 = ref[i]:match("(%S+) (%S+)")
      local l1, g1 = got[i]:match("(%S+) (%S+)")
      T.close(tonumber(l1), tonumber(l0), 0, 1e-4, level .. " loss at step " .. i)
      T.close(tonumber(g1), tonumber(g0), 0, 1e-3, level .. " gradient norm at step " .. i)
    end
  end
  q.set_isa(saved)
end)

T.case("a level this CPU lacks cannot be chosen", function()
  local have = {}
  for _, l in ipairs(q.supported_isas()) do have[l] = true end
  for _, l in ipairs({ "scalar", "avx2", "avx512", "avx512bf16" }) do
    if not have[l] then T.errors(function() q.set_isa(l) end, l) end
  end
  T.errors(function() q.set_isa("avx1024") end, "avx1024")
end)

T.done()
