-- Where LoRA adapters go, and what it changes.
--
--   scripts/run examples/custom_placement.lua [MODEL_DIR [OUT_DIR [BASE_DIR]]]   ("" for a default)
--
-- 1. Placement by a Lua predicate, on MODEL_DIR (default: the tiny test Llama): the MLP
--    projections of the top half of the layers get rank 16, attention's q/v projections of every
--    layer rank 4 (a second, named adapter); the first adapter is saved in PEFT's layout.
-- 2. A sweep (q.sweep) on the quickstart task (examples/quickstart.lua: fine-tune adapters on
--    `shift` over the 4-bit copy/reverse base of examples/lib/quickstart_base.lua, in BASE_DIR,
--    default runs/quickstart/base) comparing four placements at one budget of trainable
--    parameters: attention only (q, k, v, o), MLP only (gate, up, down), every linear layer, and
--    every linear layer of the top half of the layers only. A rank-r adapter on an in x out layer
--    trains r * (in + out) parameters, so each placement gets the rank that brings the sum over
--    its layers closest to the budget (that of r = 16 on every linear layer); alpha = 2r keeps the
--    scaling alpha / r the same everywhere. The quickstart's base has 2 layers, so "top half" is
--    its last layer alone: a base with 4 layers would double the pre-training (about 50 s here),
--    and one layer out of two already asks the question (do the adapters need every layer?).
--    Results go to OUT_DIR (default runs/custom_placement): results.jsonl, summary.md, each
--    point's metrics.jsonl; run again, the sweep resumes.
--
-- Example results (400 steps at learning rate 3e-3, alpha = 2r; the numbers repeat exactly):
--
--   placement    r  modules  trainable  accuracy  eval_loss
--   attention   34        8      34816     0.995     0.0036
--   all_linear  16       14      34816     0.555      0.250
--   mlp         30        6      34560     0.060      0.641
--   top_half    32        7      34816     0.050      0.633
--
-- At one budget, on this task, placement decides: spent on attention alone the adapters learn
-- `shift` almost perfectly, spread over every linear layer they get half way, and on the MLP alone
-- or on the last layer alone they barely leave the loss plateau where every run starts. The whole
-- run takes 7-17 s on two cores shared with other work when the base is already there (4 points, 2
-- at a time, 2-9 s each), plus 29-51 s when it must be pre-trained.
--
-- With QLORA_QUICK=1 (what scripts/test sets) the sweep runs 2 placements for 4 steps in a
-- directory of its own, removed at the end.
local q = require "qlora"
local here = arg[0]:match("(.*/)") or "./"
local base = dofile(here .. "lib/quickstart_base.lua")
local quick = os.getenv("QLORA_QUICK") == "1"
local started = q.clock()

--------------------------------------------------------------------------------------------
-- 1. Adapters placed by a predicate.
--------------------------------------------------------------------------------------------
local model_dir = (arg[1] ~= nil and arg[1] ~= "") and arg[1] or (here .. "../Tests/fixtures/tiny-llama")
local model = q.load_model(model_dir, { quant = { type = "nf4" } })
local layers = model:config().num_hidden_layers
local top_half = function(m)
  return m.layer ~= nil and m.layer >= layers // 2 and m.name:match("%.mlp%.") ~= nil
end
print("mlp adapters:", model:add_lora{ name = "mlp_top", r = 16, alpha = 32, targets = top_half, seed = 1 })
print("attention adapters:", model:add_lora{ name = "attn", r = 4, alpha = 8, targets = { "q_proj", "v_proj" }, seed = 2 })
local trainable, total = model:trainable_parameters()
print(string.format("trainable %d of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total))
for _, p in ipairs(model:parameters{ trainable = true }) do
  print(string.format("  %-60s %s", p.name, table.concat(p.tensor:shape(), "x")))
end
local adapter_dir = os.tmpname()
os.remove(adapter_dir)
model:save_adapter(adapter_dir, { name = "mlp_top" })
print("saved the mlp_top adapter in PEFT's layout to " .. adapter_dir)
q.rmtree(adapter_dir)

--------------------------------------------------------------------------------------------
-- 2. Four placements at one parameter budget, in one sweep.
--------------------------------------------------------------------------------------------
-- Each sweep worker runs this script again from the top and must find the same OUT_DIR, so the
-- quick run's directory is a fixed one under runs/ (not a fresh temporary name).
local out = arg[2] or (quick and "runs/quick/custom_placement" or "runs/custom_placement")
local base_dir = arg[3] or (quick and out .. "/base" or "runs/quickstart/base")
local S = {
  placements = { "attention", "mlp", "all_linear", "top_half" },
  budget_rank = 16,                  -- the budget: r = 16 on every linear layer (the quickstart's)
  parallel = 2,
  steps = 400, batch_size = 16, lr = 3e-3, warmup = 10,
  train_examples = 2000, eval_examples = 200,
}
if quick then
  S.placements = { "attention", "top_half" }
  S.steps, S.batch_size, S.train_examples, S.eval_examples = 4, 8, 64, 8
end

-- Built before q.sweep, in the parent; in a worker it is already there and only checked.
base.ensure{ dir = base_dir, quick = quick }
local train, held_out = base.finetune_data(S.train_examples, S.eval_examples)

-- The base's linear layers, read once (in full precision: only their shapes are needed here).
local probe = q.load_model(base_dir)
local base_layers, modules = probe:config().num_hidden_layers, probe:modules()
-- placement name -> predicate over model:modules() entries ({name, layer, in_features, ...})
local placements = {
  attention = function(m) return m.name:match("%.self_attn%.[qkvo]_proj$") ~= nil end,
  mlp = function(m) return m.name:match("%.mlp%.[a-z]+_proj$") ~= nil end,
  all_linear = function(m) return m.layer ~= nil end,                  -- every linear but lm_head
  top_half = function(m) return m.layer ~= nil and m.layer >= base_layers // 2 end,
}

-- The rank for a placement: the one whose r * sum(in + out) over its layers is nearest the budget.
local function plan(list, placement)
  local per_rank, count = 0, 0
  for _, m in ipairs(list) do
    if placements[placement](m) then per_rank, count = per_rank + m.in_features + m.out_features, count + 1 end
  end
  return per_rank, count
end
local budget = S.budget_rank * plan(modules, "all_linear")
local rank = {}
print(string.format("budget: %d trainable parameters (r = %d on every linear layer)", budget, S.budget_rank))
for _, name in ipairs(S.placements) do
  local per_rank, count = plan(modules, name)
  rank[name] = math.max(1, math.floor(budget / per_rank + 0.5))
  print(string.format("  %-10s %2d linear layers, %4d parameters per unit of rank -> r = %d (%d parameters)",
    name, count, per_rank, rank[name], rank[name] * per_rank))
end

local results = q.sweep{ grid = { placement = S.placements }, parallel = S.parallel, out = out, run = function(cfg)
  local t0 = q.clock()
  local r = rank[cfg.placement]
  local m = q.load_model(base_dir, { quant = { type = "nf4", double_quant = true } })
  -- the placement's predicate is the targets: add_lora calls it on every linear layer
  local n = m:add_lora{ r = r, alpha = 2 * r, targets = placements[cfg.placement], seed = 1 }
  local trainable = m:trainable_parameters()
  local res = q.trainer{ model = m, train = q.tasks.dataset(train, m), eval = q.tasks.dataset(held_out, m),
    eval_every = math.max(1, S.steps // 4), steps = S.steps, batch_size = S.batch_size,
    optimizer = { "adamw", lr = S.lr, weight_decay = 0 }, schedule = { "cosine", warmup = S.warmup },
    log = cfg.out .. "/metrics.jsonl", seed = 1 }:run()
  return { r = r, modules = n, trainable = trainable, accuracy = q.tasks.accuracy(m, held_out),
    eval_loss = res.eval_loss, train_loss = res.train_loss, tokens_per_sec = res.tokens_per_sec,
    seconds = q.clock() - t0 }
end }

base.sort_best_first(results)                  -- accuracy descending, then eval loss
q.report(results, { columns = { "placement", "r", "modules", "trainable", "accuracy",
  "eval_loss", "train_loss", "tokens_per_sec", "seconds" } })
print(string.format("total time: %.1f s", q.clock() - started))
base.check_all_ok(results, "custom_placement")
if quick and not arg[2] then q.rmtree(out); os.remove("runs/quick") end   -- (runs/quick only if empty)
