-- The training run test_mpi.lua compares across a single process and 2 MPI ranks:
--   [mpirun -np K] qlora run train_mpi.lua OUT STEPS MODE ACCUM [STOP_AT] [RESUME]
-- MODE: "single" (distributed = false), "mpi" (distributed = "mpi"), "auto" (option unset: a
-- launch by mpirun is detected). The global batch is 2 rows x ACCUM micro-batches per step.
-- DROPOUT (environment): the adapters' dropout (default 0).
-- STOP_AT: stop after that step (on_step returns "stop"); RESUME: "resume" continues from OUT/ckpt.
-- Every rank writes its final trainable parameters to OUT/final-rank-R.safetensors; rank 0
-- alone writes the adapter (the trainer alone writes OUT/metrics.jsonl and OUT/ckpt).
local q = require "qlora"
local out, steps, mode, accum = arg[1], tonumber(arg[2]), arg[3], tonumber(arg[4])
local stop_at, resume = tonumber(arg[5] or "-"), arg[6]
local here = arg[0]:match("(.*/)") or "./"

local model = q.load_model(here .. "../../fixtures/tiny-llama", { quant = { type = "nf4" } })
model:add_lora{ r = 4, alpha = 8, targets = "all-linear", seed = 1, dropout = tonumber(os.getenv("DROPOUT") or "0") }
local rows = {}
for i = 1, 40 do
  local ids = {}
  for k = 1, 6 + i % 7 do ids[k] = ((i % 5 + 2) * k + i) % 40 + 10 end  -- ragged: padding differs per batch
  rows[i] = { input_ids = ids }
end
local distributed = nil
if mode == "single" then distributed = false elseif mode == "mpi" then distributed = "mpi" end
local result = q.trainer{ model = model, train = q.data.from_table(rows, { format = "tokens" }), steps = steps,
  batch_size = 2, grad_accum = accum, optimizer = { "adamw", lr = 5e-3 }, schedule = { "cosine", warmup = 1 },
  max_grad_norm = 1.0, seed = 3, log = out .. "/metrics.jsonl", checkpoint = { dir = out .. "/ckpt", every = 2 },
  distributed = distributed, resume = resume == "resume" and (out .. "/ckpt") or nil, print_every = 1,
  on_step = function(s) if stop_at and s.step == stop_at then return "stop" end end }:run()
local tensors = {}
for _, p in ipairs(model:parameters{ trainable = true }) do tensors[p.name] = p.tensor end
q.save_tensors(string.format("%s/final-rank-%d.safetensors", out, result.rank), tensors)
if result.rank == 0 then model:save_adapter(out .. "/adapter") end
print(string.format("rank %d of %d: %d steps, loss %.9g", result.rank, result.ranks, result.steps, result.train_loss))
