-- Quickstart: the whole QLoRA workflow on a fresh machine, with nothing downloaded, in about a
-- minute or two on two cores.
--
--   scripts/run examples/quickstart.lua [OUT_DIR]        (default OUT_DIR: runs/quickstart)
--
-- 1. Pre-train a small Llama-architecture base model, in full precision, on a synthetic language
--    of string operations ("copy: abc > abc", "reverse: abc > cba"), and save it as a Hugging
--    Face directory (config.json, model.safetensors, a character-level tokenizer.json). A second
--    run finds the saved base and skips this step.
-- 2. Load that base back quantized to 4-bit NF4 with double quantization, add LoRA adapters, and
--    fine-tune only the adapters on an operation the base has never seen ("shift: abc > bcd",
--    each letter to the next).
-- 3. Measure exact-match accuracy on held-out examples before and after, show generations and
--    memory, and save the adapter (PEFT layout), the metrics (JSONL) and a loss plot (SVG).
--
-- With QLORA_QUICK=1 (what scripts/test sets) everything shrinks to a few seconds and writes to a
-- temporary directory; the accuracy is then meaningless and not checked.
local q = require "qlora"

local quick = os.getenv("QLORA_QUICK") == "1"
local function temp_dir() local t = os.tmpname(); os.remove(t); return t .. "-quickstart" end
local out = arg[1] or (quick and temp_dir() or "runs/quickstart")
local started = q.clock()

-- The base model (its shape, pre-training and reuse) lives in examples/lib/quickstart_base.lua,
-- shared with the experiments built on this task (examples/sweep_rank_alpha.lua,
-- examples/custom_placement.lua). Every fine-tuning setting is here. The full run must finish in
-- well under three minutes on two cores. A model this small (86k parameters) wants a far larger
-- learning rate than the 2e-4 usual for billions of parameters; with r = 16 the adapters are a
-- large share of it, unlike a real model.
local base = dofile((arg[0]:match("(.*/)") or "./") .. "lib/quickstart_base.lua")
local S = {
  finetune = { examples = 2000, steps = 600, batch_size = 16, lr = 3e-3, warmup = 10,
               lora = { r = 16, alpha = 32, targets = "all-linear", seed = 1 } },
  eval_examples = 200,
  required_accuracy = 0.8,
}
if quick then
  S.finetune.examples, S.finetune.steps, S.finetune.batch_size = 64, 4, 8
  S.eval_examples = 8
end

-- The synthetic tasks (docs/lua-api.md, "Synthetic tasks"): every example is the text
-- "<op>: <word> > <answer>" with words of 3 to 6 letters from "abcdefghij", drawn from a seed.
-- Held-out sets exclude every (op, word) pair of the training sets.
local _, base_eval = base.base_data(quick, S.eval_examples)
local new_train, new_eval = base.finetune_data(S.finetune.examples, S.eval_examples)

local function percent(x) return string.format("%.0f%%", 100 * x) end
local function show(results, n)
  for i = 1, math.min(n, #results) do
    local r = results[i]
    print(string.format("    %-20s ->%-9s %s", r.prompt, r.got, r.ok and "ok" or ("(expected" .. r.expected .. ")")))
  end
end
local function read(path) local f = io.open(path, "rb"); if not f then return nil end local s = f:read("a"); f:close(); return s end

--------------------------------------------------------------------------------------------
-- 1. The base model: pre-trained here once, then reused from OUT_DIR/base.
--------------------------------------------------------------------------------------------
local base_dir = out .. "/base"
local pretrain_s = base.ensure{ dir = base_dir, quick = quick, log = out .. "/pretrain/metrics.jsonl",
  label = "1. ", eval_examples = S.eval_examples }.seconds

--------------------------------------------------------------------------------------------
-- 2. QLoRA: the base in 4-bit NF4 (double quantization), LoRA adapters on every linear layer.
--------------------------------------------------------------------------------------------
local t1 = q.clock()
local model = q.load_model(base_dir, { quant = { type = "nf4", double_quant = true } })
local before, before_results = q.tasks.accuracy(model, new_eval)
print(string.format("2. 4-bit base: accuracy on held-out '%s' before fine-tuning: %s", base.new_op, percent(before)))
show(before_results, 2)

model:add_lora(S.finetune.lora)
local trainable, total = model:trainable_parameters()
print(string.format("   LoRA r=%d on all linear layers: %d trainable parameters of %d (%.1f%%); fine-tuning %d steps",
  S.finetune.lora.r, trainable, total, 100 * trainable / total, S.finetune.steps))
local result = q.trainer{ model = model, train = q.tasks.dataset(new_train, model),
  eval = q.tasks.dataset(new_eval, model), eval_every = math.max(1, S.finetune.steps // 3),
  steps = S.finetune.steps, batch_size = S.finetune.batch_size,
  optimizer = { "adamw", lr = S.finetune.lr, weight_decay = 0 }, schedule = { "cosine", warmup = S.finetune.warmup },
  log = out .. "/finetune/metrics.jsonl", seed = 1 }:run()
local finetune_s = q.clock() - t1

--------------------------------------------------------------------------------------------
-- 3. Results.
--------------------------------------------------------------------------------------------
local after, after_results = q.tasks.accuracy(model, new_eval)
print(string.format("3. accuracy on held-out '%s': %s before, %s after (%d examples; eval loss %.3f)",
  base.new_op, percent(before), percent(after), #new_eval, result.eval_loss))
show(after_results, 4)
-- The adapter is separate from the base: switched off, the base's own skills are back.
model:disable_adapters()
local base_acc = q.tasks.accuracy(model, base_eval)
model:enable_adapters()
print(string.format("   with the adapter disabled, the 4-bit base still does %s: %s",
  table.concat(base.base_ops, " / "), percent(base_acc)))

model:save_adapter(out .. "/adapter")             -- PEFT layout (adapter_config.json + safetensors)
local logs = { out .. "/finetune/metrics.jsonl" }
if read(out .. "/pretrain/metrics.jsonl") then table.insert(logs, 1, out .. "/pretrain/metrics.jsonl") end
local plot = q.plot{ files = logs,
  x = "step", y = "loss", out = out .. "/loss.svg", title = "quickstart: training loss",
  y_label = "loss (nats per answer token)", log_y = true }
local _, peak_mb = q.memory_mb()
print(string.format("   time: %.1f s pre-training%s, %.1f s fine-tuning + evaluation, %.1f s in all",
  pretrain_s, pretrain_s == 0 and " (reused)" or "", finetune_s, q.clock() - started))
print(string.format("   peak memory (RSS): %.0f MB", peak_mb))
print("   adapter: " .. out .. "/adapter")
print("   metrics: " .. table.concat(logs, ", "))
print("   loss plot: " .. plot)

if quick then
  if not arg[1] then q.rmtree(out) end             -- a test run leaves nothing behind
elseif after < S.required_accuracy then
  error(string.format("quickstart: accuracy after fine-tuning is %s, below %s", percent(after), percent(S.required_accuracy)))
end
