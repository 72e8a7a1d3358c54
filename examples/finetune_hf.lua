-- Fine-tune a Hugging Face model with QLoRA on your own JSONL data and save the adapter in PEFT's
-- layout (it loads with PeftModel.from_pretrained).
--   scripts/run examples/finetune_hf.lua MODEL_DIR DATA.jsonl [OUT_DIR] [STEPS]
-- DATA.jsonl: one JSON object per line: {"prompt": ..., "completion": ...} (or {"text": ...},
-- {"messages": [...]}, {"input_ids": [...]}). Without arguments it runs on the tiny test model.
local q = require "qlora"
local here = arg[0]:match("(.*/)") or "./"
local model_dir = arg[1] or (here .. "../Tests/fixtures/tiny-llama")
local data_path = arg[2] or (here .. "../Tests/fixtures/data/tokens.jsonl")
local out = arg[3] or os.tmpname() .. "-finetune"
local steps = tonumber(arg[4] or "") or 20

local model = q.load_model(model_dir, { quant = { type = "nf4", block = 64, double_quant = true }, compute = "f32" })
print(model:summary())
model:add_lora{ r = 16, alpha = 32, dropout = 0.05, targets = "all-linear", seed = 1 }
local trainable, total = model:trainable_parameters()
print(string.format("LoRA: %d trainable parameters of %d (%.2f%%)", trainable, total, 100 * trainable / total))

local ds = q.data.jsonl(data_path, { tokenizer = model:tokenizer(), max_len = 256, mask_prompt = true })
local train, eval = ds, nil
if #ds >= 10 then train, eval = ds:split(0.9, { seed = 1 }) end
print(string.format("%d training examples%s", #train, eval and (", " .. #eval .. " for evaluation") or ""))

local result = q.trainer{ model = model, train = train, eval = eval, steps = steps, batch_size = 4,
  grad_accum = 2, optimizer = { "adamw", lr = 2e-4 }, schedule = { "cosine", warmup = math.max(1, steps // 10) },
  max_grad_norm = 0.3, log = out .. "/metrics.jsonl", checkpoint = { dir = out .. "/ckpt", every = math.max(1, steps // 2), keep = 1 },
  seed = 1 }:run()
model:save_adapter(out .. "/adapter")
print(string.format("done: %d steps, train loss %.4f%s, %.0f tokens/s, peak memory %.0f MB",
  result.steps, result.train_loss, result.eval_loss and string.format(", eval loss %.4f", result.eval_loss) or "",
  result.tokens_per_sec, result.peak_rss_mb))
print("adapter (PEFT layout): " .. out .. "/adapter")
print("metrics: " .. out .. "/metrics.jsonl")
if not arg[3] then q.rmtree(out) end
