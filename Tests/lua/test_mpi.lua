-- Data-parallel training over MPI (2 ranks on loopback, mpirun from OpenMPI, which scripts/setup
-- installs): the trained parameters and logged losses equal a single process's with the same
-- global batch, bit for bit when each rank takes one micro-batch per step and within 1e-6 when
-- it takes several; every rank ends with the same parameters; rank 0 alone writes the log and
-- checkpoints; a run stopped at step 2 and resumed under mpirun ends where the uninterrupted
-- single-process run does (and, with dropout, where an uninterrupted 2-rank run does; 4 ranks
-- agree with 2); asking for MPI where libmpi cannot be loaded is a clear error.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local here = arg[0]:match("(.*/)") or "./"
local qlora = arg[-1]
local script = here .. "scripts/train_mpi.lua"

local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); return d end
local function read(p) local f = io.open(p, "rb"); if not f then return nil end local s = f:read("a"); f:close(); return s end
local function sh(cmd) local ok, _, code = os.execute(cmd); return ok and 0 or code end
local function lines(p)
  local out = {}
  for line in (read(p) or ""):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

local mpirun = (io.popen("command -v mpirun"):read("l"))
local root = (io.popen("id -u"):read("l")) == "0"
-- --oversubscribe: 2 ranks on however few cores; one kernel thread each. Shared-memory transfers
-- without the single-copy mechanism (cross-process memory reads, which containers often forbid).
local launcher = string.format("mpirun --oversubscribe %s --mca btl_vader_single_copy_mechanism none -np 2 -x QLORA_THREADS=1",
  root and "--allow-run-as-root" or "")

local function single(out, steps, accum, stop, resume)
  local cmd = string.format("QLORA_THREADS=1 %q run %q %q %d single %d %s %s > %q 2>&1", qlora, script, out, steps, accum,
    stop or "-", resume or "", out .. ".log")
  return sh(cmd), read(out .. ".log") or ""
end
local function ranks(out, steps, mode, accum, stop, resume)
  local cmd = string.format("%s %q run %q %q %d %s %d %s %s > %q 2>&1", launcher, qlora, script, out, steps, mode, accum,
    stop or "-", resume or "", out .. ".log")
  return sh(cmd), read(out .. ".log") or ""
end

-- Largest |a - b| over the trainable tensors of two final-rank files (and that they hold the same names).
local function max_diff(a, b)
  local ta, tb = q.load_tensors(a), q.load_tensors(b)
  local worst, n = 0, 0
  for name, x in pairs(ta) do
    assert(tb[name], b .. " lacks " .. name)
    worst = math.max(worst, (x - tb[name]):abs():max():item())
    n = n + 1
  end
  for name in pairs(tb) do assert(ta[name], a .. " lacks " .. name) end
  assert(n > 0, "no tensors")
  return worst
end
local function losses(path)
  local out = {}
  for _, line in ipairs(lines(path)) do
    local step, loss = line:match('^{"step": (%d+), "loss": ([^,]+),')
    if step then out[#out + 1] = step .. ":" .. loss end
  end
  return out
end

T.case("mpirun is installed (scripts/setup installs OpenMPI)", function()
  assert(mpirun, "mpirun not found: run scripts/setup (it installs openmpi-bin and libopenmpi-dev)")
end)

if mpirun then
  T.case("2 ranks, one micro-batch each per step: bit-identical to one process with the same global batch", function()
    local dir = tmpdir()
    local code, text = single(dir .. "/single", 4, 2)
    T.eq(code, 0, text)
    code, text = ranks(dir .. "/mpi", 4, "auto", 2)
    T.eq(code, 0, text)
    assert(text:find("qlora.trainer: launched by mpirun (OMPI_COMM_WORLD_SIZE=2): training data-parallel over 2 ranks", 1, true), text)
    assert(text:find("rank 0 of 2: 4 steps", 1, true) and text:find("rank 1 of 2: 4 steps", 1, true), text)
    T.eq(max_diff(dir .. "/mpi/final-rank-0.safetensors", dir .. "/single/final-rank-0.safetensors"), 0, "rank 0 vs one process")
    T.eq(read(dir .. "/mpi/final-rank-0.safetensors"), read(dir .. "/single/final-rank-0.safetensors"), "the same bytes")
    T.eq(read(dir .. "/mpi/final-rank-1.safetensors"), read(dir .. "/mpi/final-rank-0.safetensors"), "rank 1 ends as rank 0")
    local want, got = losses(dir .. "/single/metrics.jsonl"), losses(dir .. "/mpi/metrics.jsonl")
    T.eq(#want, 4)
    T.eq(table.concat(got, " "), table.concat(want, " "), "logged losses (one line per step: rank 0 alone writes the log)")
    T.eq(#lines(dir .. "/mpi/metrics.jsonl"), #lines(dir .. "/single/metrics.jsonl"), "no second writer in the log")
    T.eq(table.concat(q.listdir(dir .. "/mpi/ckpt"), " "), "step-2 step-4", "checkpoints")
    -- only one step line per step on the output: rank 0 prints
    local _, printed = text:gsub("step 3/4 ", "")
    T.eq(printed, 1, "progress printed once")
  end)

  T.case("2 ranks, two micro-batches each: within 1e-6 of one process (another summation order)", function()
    local dir = tmpdir()
    local code, text = single(dir .. "/single", 3, 4)
    T.eq(code, 0, text)
    code, text = ranks(dir .. "/mpi", 3, "mpi", 4)
    T.eq(code, 0, text)
    assert(not text:find("launched by mpirun", 1, true), "distributed = \"mpi\" given: nothing to detect")
    local d = max_diff(dir .. "/mpi/final-rank-0.safetensors", dir .. "/single/final-rank-0.safetensors")
    assert(d <= 1e-6, "max |difference| " .. d)
    T.eq(max_diff(dir .. "/mpi/final-rank-1.safetensors", dir .. "/mpi/final-rank-0.safetensors"), 0, "ranks agree exactly")
  end)

  T.case("a 2-rank run stopped at step 2 and resumed ends where one uninterrupted process does", function()
    local dir = tmpdir()
    local code, text = single(dir .. "/single", 4, 2)
    T.eq(code, 0, text)
    code, text = ranks(dir .. "/mpi", 4, "mpi", 2, "2")
    T.eq(code, 0, text)
    assert(text:find("rank 0 of 2: 2 steps", 1, true), text)
    code, text = ranks(dir .. "/mpi", 4, "mpi", 2, "-", "resume")
    T.eq(code, 0, text)
    assert(text:find("rank 1 of 2: 4 steps", 1, true), text)
    T.eq(read(dir .. "/mpi/final-rank-0.safetensors"), read(dir .. "/single/final-rank-0.safetensors"), "resumed = uninterrupted")
    T.eq(read(dir .. "/mpi/final-rank-1.safetensors"), read(dir .. "/single/final-rank-0.safetensors"), "on both ranks")
    T.eq(table.concat(losses(dir .. "/mpi/metrics.jsonl"), " "), table.concat(losses(dir .. "/single/metrics.jsonl"), " "), "the log continues")
  end)

  T.case("with dropout, 2 ranks stopped and resumed end where 2 ranks never stopped do, and 4 ranks where 2 do", function()
    local dir = tmpdir()
    local function dropout(cmd) return "DROPOUT=0.2 " .. cmd end
    local function run4(out)
      local cmd = string.format("DROPOUT=0.2 %s %q run %q %q 3 mpi 4 > %q 2>&1", (launcher:gsub("%-np 2", "-np 4")), qlora, script, out, out .. ".log")
      return sh(cmd), read(out .. ".log") or ""
    end
    local code, text = sh(dropout(string.format("%s %q run %q %q 3 mpi 4 > %q 2>&1", launcher, qlora, script, dir .. "/a", dir .. "/a.log")))
    T.eq(code, 0, read(dir .. "/a.log"))
    code = sh(dropout(string.format("%s %q run %q %q 3 mpi 4 2 > %q 2>&1", launcher, qlora, script, dir .. "/b", dir .. "/b.log")))
    T.eq(code, 0, read(dir .. "/b.log"))
    code = sh(dropout(string.format("%s %q run %q %q 3 mpi 4 - resume > %q 2>&1", launcher, qlora, script, dir .. "/b", dir .. "/b.log")))
    T.eq(code, 0, read(dir .. "/b.log"))
    T.eq(read(dir .. "/b/final-rank-0.safetensors"), read(dir .. "/a/final-rank-0.safetensors"), "resumed = uninterrupted, bit for bit")
    code, text = run4(dir .. "/c")
    T.eq(code, 0, text)
    assert(text:find("rank 3 of 4: 3 steps", 1, true), text)
    local d = max_diff(dir .. "/c/final-rank-0.safetensors", dir .. "/a/final-rank-0.safetensors")
    assert(d <= 1e-6, "4 ranks vs 2: max |difference| " .. d)
    -- the masks matter: without dropout the result is another one
    code = sh(string.format("%s %q run %q %q 3 mpi 4 > %q 2>&1", launcher, qlora, script, dir .. "/n", dir .. "/n.log"))
    T.eq(code, 0)
    assert(max_diff(dir .. "/n/final-rank-0.safetensors", dir .. "/a/final-rank-0.safetensors") > 1e-4, "dropout changes the run")
  end)

  T.case("grad_accum not a multiple of the ranks fails on every rank and ends the job", function()
    local dir = tmpdir()
    local code, text = ranks(dir .. "/mpi", 2, "mpi", 3)
    assert(code ~= 0, "exit status")
    assert(text:find("grad_accum (3) must be a multiple of the 2 MPI ranks", 1, true), text)
  end)
end

T.case("distributed = \"mpi\" without a loadable libmpi is a clear error; training without it still runs", function()
  local dir = tmpdir()
  local cmd = string.format("QLORA_LIBMPI=/nonexistent/libmpi.so.40 %q run %q %q 1 mpi 2 > %q 2>&1", qlora, script, dir .. "/x", dir .. "/log")
  T.eq(sh(cmd), 1)
  local text = read(dir .. "/log")
  assert(text:find("MPI is not available: cannot load OpenMPI's libmpi", 1, true), text)
  assert(text:find("apt-get install openmpi-bin libopenmpi-dev", 1, true), text)
  cmd = string.format("QLORA_LIBMPI=/nonexistent/libmpi.so.40 %q run %q %q 1 auto 2 > %q 2>&1", qlora, script, dir .. "/y", dir .. "/log")
  T.eq(sh(cmd), 0, read(dir .. "/log"))
  T.errors(function() q.trainer{ model = {}, train = {}, distributed = "nccl" } end, "option 'distributed' must be \"mpi\" or false")
end)

T.done()
