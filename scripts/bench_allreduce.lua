-- Times the gradient all-reduce data-parallel training does each step (docs/scaling.md):
--   mpirun -np 2 [--oversubscribe --allow-run-as-root] .build/release/qlora run scripts/bench_allreduce.lua [FLOATS] [REPS]
-- One trainable tensor of FLOATS values (default 40M: the LoRA parameters of a 7B model at r 16
-- on all linear layers) with a gradient; q.mpi.allreduce_grads (copy into a flat buffer,
-- MPI_Allreduce, copy back) timed REPS times after a barrier. Rank 0 prints min and median.
local q = require "qlora"
local n = math.tointeger(tonumber(arg[1] or "40000000"))
local reps = math.tointeger(tonumber(arg[2] or "5"))
local rank, size = q.mpi.init()
local p = q.zeros({ n })
p.requires_grad = true
p:sum():backward()
local times = {}
for i = 1, reps do
  q.mpi.barrier()
  local t0 = q.clock()
  q.mpi.allreduce_grads({ p })
  times[i] = q.clock() - t0
end
table.sort(times)
local check = p.grad:max():item()
if rank == 0 then
  print(string.format("allreduce_grads ranks=%d floats=%d bytes=%.0fMB min_s=%.3f median_s=%.3f (gradient %g, expected %d)",
    size, n, n * 4 / 1e6, times[1], times[(reps + 1) // 2], check, size ^ reps))
end
