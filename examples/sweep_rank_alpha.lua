-- LoRA rank and alpha, with and without rsLoRA, on the quickstart task: 16 fine-tuning runs in one
-- resumable sweep (q.sweep), a table of the results (q.report) and plots (q.plot).
--
--   scripts/run examples/sweep_rank_alpha.lua [OUT_DIR [BASE_DIR]]
--   qlora sweep examples/sweep_rank_alpha.lua --parallel 1      (another number of workers)
--
-- OUT_DIR (default runs/sweep_rank_alpha) receives points/<id>/ (each run's metrics.jsonl and
-- log.txt), results.jsonl, summary.md and the plots. BASE_DIR (default runs/quickstart/base, the
-- quickstart's) holds the base model, pre-trained by examples/lib/quickstart_base.lua unless it
-- is already there. Stopped part way, the sweep resumes where it was when run again; delete
-- OUT_DIR to run every point again.
--
-- The grid: r in {4, 8, 16, 32} x alpha in {r, 2r} x rsLoRA {off, on}. Every point loads the
-- base in 4-bit NF4 with double quantization, puts adapters on every linear layer and fine-tunes
-- them on `shift` (each letter to the next), which the base (copy / reverse) never saw, with the
-- same data, seed, learning rate and a deliberately short budget of steps, so that the points
-- differ in how far they get rather than all reaching 100%. The adapter's output is scaled by
-- alpha / r, or alpha / sqrt(r) with rsLoRA: the `scale` column.
--
-- Example results (300 steps at learning rate 3e-3; the numbers repeat exactly from run to run):
--
--    r  alpha        scale  accuracy  eval_loss        r  alpha        scale  accuracy  eval_loss
--   16  r (rsLoRA)       4     1.000     0.0030        8  2r               2     0.000      1.491
--   32  2r               2     1.000     0.0062        4  2r (rsLoRA)      4     0.000      1.502
--   32  r (rsLoRA)   5.657     0.855     0.0783        8  r                1     0.000      1.511
--   32  2r (rsLoRA)  11.31     0.280      0.585        8  r (rsLoRA)   2.828     0.000      1.564
--   16  2r (rsLoRA)      8     0.225      0.611        4  2r               2     0.000      1.586
--    8  2r (rsLoRA)  5.657     0.105      0.759        4  r (rsLoRA)       2     0.000      1.586
--   16  2r               2     0.100      0.900        4  r                1     0.000      1.588
--   32  r                1     0.050      0.978
--   16  r                1     0.000      1.455
--
-- What it says about this task: every run first falls to a plateau near 1.5 nats per answer token
-- (a uniform guess among the 10 letters would be ln 10 = 2.3) and the question is whether and when
-- it leaves it (loss.svg). Both rank and scale matter: at the same scale 2 (alpha = 2r), r = 32
-- learns the task and r = 4 and 8 never leave the plateau, and at r = 16 scale 4 (rsLoRA, alpha =
-- r) beats scale 2 and 8. rsLoRA helps most where it raises a small scale (alpha = r at r >= 16),
-- but alpha / sqrt(r) grows with r and at r = 32, alpha = 2r its scale of 11.3 overshoots (28%).
-- Equal scale means equal runs: r = 4 with alpha = 2r and with rsLoRA and alpha = r (both scale 2)
-- match to the last digit. Time on two cores shared with other work: 27-41 s for the 16 points (2
-- at a time, 2-10 s each), plus 29-51 s to pre-train the base when runs/quickstart/base is not
-- there yet.
--
-- With QLORA_QUICK=1 (what scripts/test sets) the sweep shrinks to 4 points of 4 steps in a
-- directory of their own, removed at the end.
local q = require "qlora"
local here = arg[0]:match("(.*/)") or "./"
local base = dofile(here .. "lib/quickstart_base.lua")

local quick = os.getenv("QLORA_QUICK") == "1"
-- Each sweep worker runs this script again from the top and must find the same OUT_DIR, so the
-- quick run's directory is a fixed one under runs/ (not a fresh temporary name), removed at the end.
local out = arg[1] or (quick and "runs/quick/sweep_rank_alpha" or "runs/sweep_rank_alpha")
local base_dir = arg[2] or (quick and out .. "/base" or "runs/quickstart/base")
local started = q.clock()

local S = {
  grid = { r = { 4, 8, 16, 32 }, alpha_over_r = { 1, 2 }, rslora = { false, true } },
  parallel = 2,
  steps = 300, batch_size = 16, lr = 3e-3, warmup = 10,
  train_examples = 2000, eval_examples = 200,
}
if quick then
  S.grid = { r = { 4, 8 }, alpha_over_r = { 2 }, rslora = { false, true } }
  S.steps, S.batch_size, S.train_examples, S.eval_examples = 4, 8, 64, 8
end

-- Before q.sweep, in the parent: pre-train the base unless it is there. In a worker the base is
-- always there by now (ensure only checks its marker), so workers never pre-train.
base.ensure{ dir = base_dir, quick = quick }
local train, held_out = base.finetune_data(S.train_examples, S.eval_examples)

local results = q.sweep{ grid = S.grid, parallel = S.parallel, out = out, run = function(cfg)
  local t0 = q.clock()
  local alpha = cfg.alpha_over_r * cfg.r
  local model = q.load_model(base_dir, { quant = { type = "nf4", double_quant = true } })
  -- The same init and data order in every point (seed 1): only r, alpha and rsLoRA differ.
  model:add_lora{ r = cfg.r, alpha = alpha, rslora = cfg.rslora, targets = "all-linear", seed = 1 }
  local trainable = model:trainable_parameters()
  local m = q.trainer{ model = model, train = q.tasks.dataset(train, model), eval = q.tasks.dataset(held_out, model),
    eval_every = math.max(1, S.steps // 4), steps = S.steps, batch_size = S.batch_size,
    optimizer = { "adamw", lr = S.lr, weight_decay = 0 }, schedule = { "cosine", warmup = S.warmup },
    log = cfg.out .. "/metrics.jsonl", seed = 1 }:run()
  local accuracy = q.tasks.accuracy(model, held_out)
  -- alpha as text ("2r (rsLoRA)"): a column of the table and the name of a line in the plots.
  return { alpha = (cfg.alpha_over_r == 1 and "r" or cfg.alpha_over_r .. "r") .. (cfg.rslora and " (rsLoRA)" or ""),
    scale = cfg.rslora and alpha / math.sqrt(cfg.r) or alpha / cfg.r, accuracy = accuracy,
    eval_loss = m.eval_loss, train_loss = m.train_loss, trainable = trainable,
    tokens_per_sec = m.tokens_per_sec, seconds = q.clock() - t0 }
end }

base.sort_best_first(results)                  -- accuracy descending, then eval loss
local _, _, summary = q.report(results, { columns = { "r", "alpha", "scale", "accuracy", "eval_loss",
  "train_loss", "trainable", "tokens_per_sec", "seconds" } })
base.check_all_ok(results, "sweep_rank_alpha")

-- Plots: the final accuracy and eval loss against r, one line per alpha (with or without rsLoRA),
-- and every point's training loss over the steps.
local plots = {}
plots[1] = q.plot{ files = out .. "/results.jsonl", x = "config.r", y = "metrics.accuracy", group = "metrics.alpha",
  out = out .. "/accuracy.svg", title = string.format("shift accuracy after %d steps", S.steps),
  x_label = "LoRA rank r", y_label = "held-out exact-match accuracy" }
plots[2] = q.plot{ files = out .. "/results.jsonl", x = "config.r", y = "metrics.eval_loss", group = "metrics.alpha",
  out = out .. "/eval_loss.svg", title = string.format("eval loss after %d steps", S.steps),
  x_label = "LoRA rank r", y_label = "held-out loss (nats per answer token)", log_y = true }
local logs, labels = {}, {}
for _, r in ipairs(results) do
  if r.status == "ok" then
    logs[#logs + 1] = out .. "/points/" .. r.id .. "/metrics.jsonl"
    labels[#labels + 1] = string.format("r=%d alpha=%s", r.config.r, r.metrics.alpha)
  end
end
plots[3] = q.plot{ files = logs, labels = labels, x = "step", y = "loss", out = out .. "/loss.svg",
  title = "training loss of every point", y_label = "loss (nats per answer token)", log_y = true }
print("summary: " .. summary)
print("plots: " .. table.concat(plots, ", "))
print(string.format("total time: %.1f s (%d points, %d at a time)", q.clock() - started, #results,
  tonumber(os.getenv("QLORA_SWEEP_PARALLEL")) or S.parallel))

if quick and not arg[1] then q.rmtree(out); os.remove("runs/quick") end   -- a test run leaves nothing behind (runs/quick if empty)
