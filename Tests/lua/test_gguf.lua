-- GGUF models from Lua: a tiny Llama written as llama.cpp's converter writes it (q/k rows
-- permuted, linears in Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16 and F32) loads with the logits of
-- transformers' GGUF loader; quant options apply as for Hugging Face directories; summary names
-- the source; broken files are errors naming the problem. With the real SmolLM2 GGUF present
-- (scripts/fetch_smollm2), its tokenizer, chat template and greedy answer are checked too.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/gguf/"

T.case("tiny llama GGUF matches transformers' logits", function()
  local m = q.load_model(fixtures .. "tiny-llama.gguf")
  local ref = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors")
  T.eq(m:tokenizer(), nil, "no tokenizer in the file")
  T.eq(m:config().num_hidden_layers, 2)
  T.eq(m:config().num_key_value_heads, 2)
  local logits = m:forward(ref.ids)
  local diff = (logits - ref.logits):abs():max():item()
  T.eq(diff < 1e-4, true, "max abs logits diff " .. diff)
  T.eq(m:summary():find("source: GGUF tiny-llama.gguf", 1, true) ~= nil, true, "summary names the source")
  T.eq(m:summary():find("Q4_0", 1, true) ~= nil, true, "summary names the stored types")
end)

T.case("tiny Qwen2 GGUF (biases, tied head, no permutation) matches transformers", function()
  local m = q.load_model(fixtures .. "tiny-qwen2.gguf")
  local ref = q.load_tensors(fixtures .. "tiny-qwen2-logits.safetensors")
  T.eq(m:config().tie_word_embeddings, true, "tied")
  local diff = (m:forward(ref.ids) - ref.logits):abs():max():item()
  T.eq(diff < 1e-4, true, "max abs logits diff " .. diff)
  -- exported and read back (merged f32): the same model
  local out = os.tmpname() .. ".gguf"
  m:save(out, { type = "f32" })
  local back = (q.load_model(out):forward(ref.ids) - ref.logits):abs():max():item()
  T.eq(back < 1e-4, true, "qwen2 export read back " .. back)
  os.remove(out)
end)

T.case("quant options apply to GGUF weights", function()
  local ref = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors")
  local m = q.load_model(fixtures .. "tiny-llama.gguf", { quant = { type = "nf4", block = 64 } })
  local mods = m:modules()
  T.eq(mods[1].quantized, true, "decoder linears are 4-bit")
  T.eq(m:summary():find("re-quantizing", 1, true) ~= nil, true, "summary says the source was already 4-bit")
  local logits = m:forward(ref.ids)
  local diff = (logits - ref.logits):abs():max():item()
  T.eq(diff > 1e-4 and diff < 0.5, true, "nf4 logits near the dense ones (" .. diff .. ")")
  local dense = q.load_model(fixtures .. "tiny-llama.gguf", { quant = false })
  T.eq(dense:modules()[1].quantized, false, "quant = false keeps them dense")
end)

T.case("broken GGUF files are errors", function()
  local tmp = os.tmpname() .. ".gguf"
  local f = assert(io.open(fixtures .. "tiny-llama.gguf", "rb")); local bytes = f:read("a"); f:close()
  local function try(data, ...)
    local o = assert(io.open(tmp, "wb")); o:write(data); o:close()
    T.errors(function() q.load_model(tmp) end, "qlora.load_model", ...)
  end
  try(bytes:sub(1, 1000), "truncated file reading")
  try(bytes:sub(1, #bytes - 1000), "lies past the end of the file")
  try("GGUF" .. string.pack("<I4", 7) .. bytes:sub(9), "unsupported GGUF version 7")
  try(bytes:gsub("general.architecture\8\0\0\0\5\0\0\0\0\0\0\0llama", "general.architecture\8\0\0\0\5\0\0\0\0\0\0\0gemma", 1),
      "unsupported general.architecture \"gemma\"")
  try(bytes:gsub("llama.block_count", "llama.block_cnt__", 1), "missing metadata llama.block_count")
  T.errors(function() q.load_model(fixtures .. "tok-qwen2_style.gguf") end, "missing tensor token_embd.weight")
  os.remove(tmp)
end)

-- B non-zero so the adapter changes the output
local function randomize_lora(m, seed)
  for i, p in ipairs(m:parameters({ trainable = true })) do
    local t = p.tensor or p[2]
    t:copy_(q.randn(t:shape(), { seed = seed + i, std = 0.05 }))
  end
end

T.case("merged GGUF export reads back with the adapter folded in", function()
  local ref = q.load_tensors(fixtures .. "tiny-llama-logits.safetensors")
  local m = q.load_model(fixtures .. "tiny-llama.gguf")
  local base = m:forward(ref.ids)
  m:add_lora({ r = 4, alpha = 8, targets = "all-linear", seed = 3 })
  randomize_lora(m, 10)
  local want = m:forward(ref.ids)
  local change = (want - base):abs():max():item()
  T.eq(change > 1e-2, true, "the adapter changes the logits (" .. change .. ")")
  local out = os.tmpname() .. ".gguf"
  m:save(out, { type = "f32" })
  local back = q.load_model(out)
  local diff = (back:forward(ref.ids) - want):abs():max():item()
  T.eq(diff < 1e-4, true, "f32 export logits diff " .. diff)
  m:save(out, { type = "q8_0" })
  local d8 = (q.load_model(out):forward(ref.ids) - want):abs():max():item()
  T.eq(d8 < 0.05 and d8 < change, true, "q8_0 export logits diff " .. d8)
  for _, ty in ipairs({ "f16", "bf16", "q4_0" }) do m:save(out, { type = ty }); T.eq(q.load_model(out):config().num_hidden_layers, 2, ty) end
  T.errors(function() m:save(out, { type = "q5_k" }) end, "option 'type' must be one of")
  os.remove(out)
  local ad = os.tmpname() .. ".gguf"
  m:save_adapter(ad, { format = "gguf" })
  -- llama.cpp's layout: names, [r, in] / [out, r], alpha, B of q/k rows in llama.cpp's order
  local t, meta = q.load_tensors(ad)
  T.eq(meta["general.type"], "adapter"); T.eq(meta["adapter.type"], "lora"); T.eq(meta["adapter.lora.alpha"], "8.0")
  T.eq(meta["general.architecture"], "llama")
  local peft = {}
  for _, p in ipairs(m:parameters({ trainable = true })) do peft[p.name or p[1]] = p.tensor or p[2] end
  local qa, qb = t["blk.1.attn_q.weight.lora_a"], t["blk.1.attn_q.weight.lora_b"]
  T.eq(table.concat(qa:shape(), ","), "4,64"); T.eq(table.concat(qb:shape(), ","), "64,4")
  local pa = peft["model.layers.1.self_attn.q_proj.lora_A.default.weight"]
  local pb = peft["model.layers.1.self_attn.q_proj.lora_B.default.weight"]
  T.eq((qa - pa):abs():max():item(), 0, "A as is")
  -- head 0, head_dim 16: GGUF row 2i + s is HF row s*8 + i
  local qbt, pbt = qb:totable(), pb:totable()
  T.eq(qbt[1 + 2 * 3 + 1][2], pbt[1 + 8 + 3][2], "B row permuted (q)")
  T.eq(qbt[1 + 2 * 5][1], pbt[1 + 5][1], "B row permuted (q, s = 0)")
  local vb = t["blk.0.attn_v.weight.lora_b"]
  local pv = peft["model.layers.0.self_attn.v_proj.lora_B.default.weight"]
  T.eq((vb - pv):abs():max():item(), 0, "v's B as is")
  local n = 0; for _ in pairs(t) do n = n + 1 end
  T.eq(n, 2 * 2 * 7, "A and B of 7 modules in 2 layers")
  T.errors(function() q.load_model(ad) end, "general.type is \"adapter\"")
  T.errors(function() m:save_adapter(ad, { format = "onnx" }) end, "format must be", "gguf", "onnx")
  os.remove(ad)
end)

T.case("GGUF tokenizers", function()
  local tok = q.tokenizer(fixtures .. "tok-llama3_style.gguf")
  T.eq(tok:bos_id(), 600)
  T.eq(tok:encode("Hello world")[1], 600, "llama-bpe adds its bos")
  T.eq(tok:decode(tok:encode("Hello world"), { skip_special = true }), "Hello world")
  T.eq(tok:chat_template(), nil)
end)

local smol = os.getenv("QLORA_SMOLLM2_GGUF") or ((os.getenv("HOME") or "") .. "/.cache/qlora/models/SmolLM2-135M-Instruct.Q4_1.gguf")
if smol and io.open(smol, "rb") then
  T.case("SmolLM2-135M-Instruct GGUF", function()
    local m = q.load_model(smol)
    local tok = m:tokenizer()
    T.eq(tok:encode("The capital of France is")[1], 504)
    T.eq(#tok:encode("The capital of France is"), 5)
    T.eq(tok:chat_template():source():find("<|im_start|>", 1, true) ~= nil, true, "chat template")
    local prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    T.eq(m:generate(prompt, { max_tokens = 12 }), "The capital of France is Paris.")
  end)
else
  print("SmolLM2 GGUF not found (QLORA_SMOLLM2_GGUF): its case is not run")
end

T.done()
