-- The fused kernel ops (RMSNorm, RoPE, causal GQA attention, SwiGLU, cross-entropy, a 4-bit
-- layer with its LoRA adapters as one node) against the
-- composed tensor-op versions: the script reruns itself with QLORA_FUSED=0 (the composed path),
-- which saves its logits, losses and LoRA gradients, and compares them with the fused ones
-- (bf16 compute within bf16 rounding: the fused node computes x A^T and dh A in bf16).
-- Linux: finds the qlora binary through /proc.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local function max_abs_diff(a, b) return (a - b):abs():max():item() end

-- A GQA model (8 heads sharing 2 kv heads) with LoRA on every linear layer, random adapters.
local function model_and_data()
  local model = q.llama{ vocab = 97, hidden = 64, layers = 2, heads = 8, kv_heads = 2, intermediate = 96, seed = 7 }
  model:add_lora{ r = 4, alpha = 8, targets = "all-linear", seed = 3 }
  for i, p in ipairs(model:parameters{ trainable = true }) do
    p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 50 + i, std = 0.1 }))
  end
  local ids = q.tensor({ { 1, 5, 9, 20, 17, 3, 64, 0, 11, 12 }, { 7, 7, 7, 1, 2, 3, 4, 5, 96, 40 } }, { dtype = "i64" })
  local labels = q.tensor({ { 1, 5, -100, 20, 17, 3, -100, 0, 11, 12 }, { 7, 7, 7, 1, 2, -100, 4, 5, 96, 40 } }, { dtype = "i64" })
  return model, ids, labels
end

-- The same with an NF4 base (f32 or bf16 compute) and two plain adapters on the attention
-- projections: each 4-bit layer with its adapters is one fused node. With dropout (training
-- mode) both runs draw the same masks, in the same order.
local function quant_results(out, compute, dropout, few_rows)
  local model = q.llama{ vocab = 97, hidden = 64, layers = 2, heads = 8, kv_heads = 2, intermediate = 96, seed = 7 }
  model:quantize{ type = "nf4", block = 64, double_quant = true, compute = compute }
  model:add_lora{ r = 4, alpha = 8, targets = "all-linear", seed = 3, dropout = dropout or 0 }
  model:add_lora{ name = "second", r = 2, alpha = 4, targets = { "q_proj", "v_proj" }, seed = 4, dropout = dropout or 0 }
  for i, p in ipairs(model:parameters{ trainable = true }) do
    p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 80 + i, std = 0.1 }))
  end
  if dropout then model:train(true); compute = compute .. ".dropout" end
  local _, ids, labels = model_and_data()
  if few_rows then -- 3 rows: the adapters' own sgemms (no shared pass) in the fused node
    ids, labels = q.tensor({ { 1, 5, 9 } }, { dtype = "i64" }), nil
    compute = compute .. ".few_rows"
  end
  out[compute .. ".logits"] = model:forward(ids)
  local loss = model:loss(ids, labels)
  out[compute .. ".loss"] = q.tensor({ loss:item() })
  loss:backward()
  for _, p in ipairs(model:parameters{ trainable = true }) do out[compute .. ".grad." .. p.name] = p.tensor.grad end
  return #model:parameters{ trainable = true }
end

-- Everything compared: logits, the loss, every LoRA gradient, greedy tokens through the KV cache.
local function results()
  local model, ids, labels = model_and_data()
  local out = { logits = model:forward(ids) }
  quant_results(out, "f32")
  quant_results(out, "bf16")
  quant_results(out, "f32", 0.25)
  quant_results(out, "f32", nil, true)
  local loss = model:loss(ids, labels)
  out.loss = q.tensor({ loss:item() })
  out.fused = q.tensor({ loss.grad_fn == "linear_cross_entropy" and 1 or 0 })
  loss:backward()
  for _, p in ipairs(model:parameters{ trainable = true }) do out["grad." .. p.name] = p.tensor.grad end
  local gen = model:generate({ 3, 1, 4, 1, 5 }, { max_tokens = 6 })
  out.generated = q.tensor(gen)
  -- the head and the tied embedding trained too (full training), and a vocabulary large enough
  -- that the fused head + loss runs its rows in several chunks (20000 words: 416 rows a chunk,
  -- 508 counted rows); every gradient, the embedding's through both of its uses
  local full = q.llama{ vocab = 20000, hidden = 32, layers = 1, heads = 4, kv_heads = 2, intermediate = 48, seed = 9,
    tie_word_embeddings = true, trainable = true }
  local rows = {}
  for i = 1, 4 do rows[i] = {} for j = 1, 128 do rows[i][j] = (i * 7919 + j * j * 104729) % 20000 end end
  local big = q.tensor(rows, { dtype = "i64" })
  local l2 = full:loss(big, big)
  out["full.loss"] = q.tensor({ l2:item() })
  l2:backward()
  for _, p in ipairs(full:parameters{ trainable = true }) do out["full.grad." .. p.name] = p.tensor.grad end
  return out
end

if arg[1] == "--dump" then
  q.save_tensors(arg[2], results())
  return
end

T.case("fused ops give the composed ops' logits, loss, LoRA gradients and generations", function()
  local p = io.popen("readlink /proc/$PPID/exe"); local exe = p:read("l"); p:close()
  assert(exe and #exe > 0, "cannot find the qlora binary")
  local path = os.tmpname()
  local ok = os.execute("QLORA_FUSED=0 '" .. exe .. "' run '" .. arg[0] .. "' --dump '" .. path .. "'")
  assert(ok, "the composed run failed")
  local ref = q.load_tensors(path)
  os.remove(path)
  local got = results()
  T.eq(ref.fused:item(), 0, "the reference run composes the ops")
  T.eq(got.fused:item(), 1, "this run fuses them")
  ref.fused = nil
  local n = 0
  for name, want in pairs(ref) do
    local have = assert(got[name], "missing " .. name)
    local scale = want:abs():max():item()
    local d = max_abs_diff(have, want)
    -- bf16 compute: the fused node multiplies x by A (and dh by A) in bf16 like W, the composed
    -- LoRA in f32; with these large random adapters that moves logits by about 0.7% and the
    -- smallest LoRA gradients by up to about 2% of their largest entry (f32 stays at 1e-5)
    local tol = name:match("^bf16%.") and 5e-2 or 1e-5
    if name == "generated" then T.eq(d, 0, "greedy tokens")
    else assert(d <= tol * scale + 1e-7, name .. " differs by " .. d .. " (scale " .. scale .. ")") end
    n = n + 1
  end
  -- dense: logits, loss, generated, 28 LoRA grads; per NF4 model (4): logits, loss, 28 + 8 grads;
  -- the full model: loss and 11 gradients (embedding, 2 norms, 7 linears, final norm; head tied)
  T.eq(n, 3 + 2 * 7 * 2 + 4 * (2 + 2 * 7 * 2 + 2 * 2 * 2) + 1 + 11, "values compared")
end)

T.case("the loss ignores -100 labels and keeps its errors", function()
  local model, ids = model_and_data()
  T.errors(function() model:loss(ids, q.tensor({ { 1, 2 } }, { dtype = "i64" })) end, "does not match input ids")
  T.errors(function() model:loss(ids, q.tensor({ { 1, 200, 3, 4, 5, 6, 7, 8, 9, 10 }, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 } }, { dtype = "i64" })) end, "out of range")
  local short = q.tensor({ { 1 } }, { dtype = "i64" })
  T.errors(function() model:loss(short, short) end, "at least 2 tokens")
  local all = q.full({ 2, 10 }, -100, { dtype = "i64" })
  local l = model:loss(ids, all):item()
  assert(l ~= l, "a loss with no counted labels is NaN, got " .. l)
end)

T.done()
