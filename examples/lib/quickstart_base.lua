-- The quickstart's base model and task, shared by examples/quickstart.lua and the experiments
-- built on it (examples/sweep_rank_alpha.lua, examples/custom_placement.lua). Load it with
--   local base = dofile((arg[0]:match("(.*/)") or "./") .. "lib/quickstart_base.lua")
-- (scripts/test runs examples/*.lua only, so this file is not run on its own).
--
-- The base is a small Llama-architecture model pre-trained in full precision on a synthetic
-- language of string operations (copy, reverse; q.tasks) and saved as a Hugging Face directory.
-- It is built once and reused: base.ensure{dir} pre-trains only when dir lacks a marker file
-- recording the exact recipe (model shape, pre-training settings, operations), which is written
-- last, so an interrupted or differently-made base is built again. The new directory is assembled
-- under a temporary name and renamed into place, so a reader never sees half a base.
--
-- Sweeps: a sweep's workers run the script again from the top, so base.ensure runs in each of
-- them too. The script calls it before q.sweep: the parent has built the base (and written its
-- marker) before it starts any worker, so in a worker ensure only reads the marker and never
-- pre-trains. (Were the base deleted while a sweep runs, a worker would build it again; the
-- rename keeps even that consistent: the first complete base to land is the one everyone uses.)
local q = require "qlora"

local M = {}

M.base_ops = { "copy", "reverse" }   -- what the base learns in pre-training
M.new_op = "shift"                   -- what only adapters learn, in the examples

-- The model and its pre-training. A model this small (86k parameters) wants a far larger learning
-- rate than the 2e-4 usual for billions of parameters.
M.model = { vocab = #q.tasks.vocab, hidden = 64, layers = 2, heads = 4, intermediate = 128,
            max_positions = 64, bos_id = 1, eos_id = 2, seed = 1 }
M.pretrain = { examples = 4000, steps = 1500, batch_size = 32, lr = 3e-3, warmup = 30 }
M.quick_pretrain = { examples = 64, steps = 4, batch_size = 8, lr = 3e-3, warmup = 30 }   -- QLORA_QUICK

-- The pre-training data (copy / reverse) and n_eval held-out examples of it.
function M.base_data(quick, n_eval)
  local train = q.tasks.examples{ ops = M.base_ops, n = (quick and M.quick_pretrain or M.pretrain).examples, seed = 1 }
  local held_out = q.tasks.examples{ ops = M.base_ops, n = n_eval, seed = 2, exclude = train }
  return train, held_out
end

-- The fine-tuning task: n_train examples of the new operation and n_eval held-out ones (no word
-- of the training set), the same seeds in every example so their numbers compare.
function M.finetune_data(n_train, n_eval)
  local train = q.tasks.examples{ ops = M.new_op, n = n_train, seed = 3 }
  local held_out = q.tasks.examples{ ops = M.new_op, n = n_eval, seed = 4, exclude = train }
  return train, held_out
end

-- Sorts a sweep's results in place, best first: accuracy descending, then eval loss ascending;
-- failed points last. In place, the list stays the one q.sweep returned, so q.report still writes
-- summary.md next to the sweep's results.jsonl.
function M.sort_best_first(results)
  table.sort(results, function(a, b)
    local ma, mb = a.metrics or {}, b.metrics or {}
    local acc_a, acc_b = ma.accuracy or -1, mb.accuracy or -1
    if acc_a ~= acc_b then return acc_a > acc_b end
    return (ma.eval_loss or math.huge) < (mb.eval_loss or math.huge)
  end)
  return results
end

-- Raises an error naming the failed points of a sweep (their log.txt says why), so a run with
-- failures ends with a non-zero exit status after its table is printed.
function M.check_all_ok(results, what)
  local failed = {}
  for _, r in ipairs(results) do if r.status ~= "ok" then failed[#failed + 1] = r.id end end
  if #failed > 0 then
    error(string.format("%s: %d of %d points failed: %s (see points/<id>/log.txt)", what, #failed, #results,
      table.concat(failed, "; ")))
  end
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a"); f:close(); return s
end

local function recipe(p)
  local m = M.model
  return string.format('{"model": "%d/%d/%d/%d", "pretrain": "%d/%d/%d/%g", "ops": "%s"}',
    m.hidden, m.layers, m.heads, m.intermediate, p.examples, p.steps, p.batch_size, p.lr,
    table.concat(M.base_ops, ","))
end

local function percent(x) return string.format("%.0f%%", 100 * x) end

-- base.ensure{dir, quick = false, log = nil, label = "", eval_examples = 200}: makes sure dir holds
-- the base (pre-training it when needed) and returns {dir, reused, seconds, accuracy}. `log` is
-- the pre-training metrics.jsonl; `label` prefixes the first line printed; accuracy (on held-out
-- copy/reverse examples) is measured only when pre-training.
function M.ensure(o)
  local dir = assert(o.dir, "quickstart_base.ensure: dir is required")
  local p = o.quick and M.quick_pretrain or M.pretrain
  local label = o.label or ""
  local marker = dir .. "/quickstart.json"
  local want = recipe(p) .. "\n"
  if read(marker) == want then
    print(label .. "base model: reusing " .. dir .. " (delete it to pre-train again)")
    return { dir = dir, reused = true, seconds = 0 }
  end
  print(string.format("%spre-training a %d-layer Llama (hidden %d) on %s, %d steps, full precision",
    label, M.model.layers, M.model.hidden, table.concat(M.base_ops, " / "), p.steps))
  local t0 = q.clock()
  local train, held_out = M.base_data(o.quick, o.eval_examples or 200)
  local scratch = os.tmpname(); os.remove(scratch)
  local building = dir .. ".partial-" .. scratch:match("[^/]*$")   -- unique, on dir's file system
  q.tasks.save_tokenizer(building)                  -- tokenizer.json: one token per character
  local tok = q.tokenizer(building)
  local spec = {}
  for k, v in pairs(M.model) do spec[k] = v end
  spec.trainable = true                             -- every weight trains (not only adapters)
  local model = q.llama(spec)
  q.trainer{ model = model, train = q.tasks.dataset(train, tok), steps = p.steps,
    batch_size = p.batch_size, optimizer = { "adamw", lr = p.lr, weight_decay = 0 },
    schedule = { "cosine", warmup = p.warmup }, log = o.log, seed = 1 }:run()
  local acc, results = q.tasks.accuracy(model, held_out, { tokenizer = tok })
  print(string.format("   base accuracy on held-out %s: %s", table.concat(M.base_ops, " / "), percent(acc)))
  for i = 1, math.min(2, #results) do
    local r = results[i]
    print(string.format("    %-20s ->%-9s %s", r.prompt, r.got, r.ok and "ok" or ("(expected" .. r.expected .. ")")))
  end
  model:save(building)                              -- config.json + model.safetensors (f32)
  local f = assert(io.open(building .. "/quickstart.json", "wb")); f:write(want); f:close()
  q.rmtree(dir)
  if not os.rename(building, dir) then             -- another process put a base there meanwhile
    q.rmtree(building)
    if read(marker) ~= want then error("quickstart_base: could not move the new base into " .. dir) end
  end
  local seconds = q.clock() - t0
  print(string.format("   saved %s in %.1f s", dir, seconds))
  return { dir = dir, reused = false, seconds = seconds, accuracy = acc }
end

return M
