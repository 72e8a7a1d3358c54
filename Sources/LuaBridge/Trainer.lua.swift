// The trainer, written in Lua over the Swift pieces (model:loss, backward, q.optim, q.lr_at,
// q.clip_grad_norm, datasets): q.trainer{...}:run(). It logs one JSON line per step, evaluates,
// writes checkpoints to a temporary directory renamed into place, and resumes from one exactly
// (parameters, optimizer state, data position and the random stream are all restored).
// distributed = "mpi" (or a launch by mpirun) trains data-parallel: see setup_distributed.

let trainerSource = #"""
local q = ...

local Trainer = {}
Trainer.__index = Trainer

local allowed = {
  model = true, train = true, eval = true, steps = true, epochs = true, batch_size = true,
  grad_accum = true, optimizer = true, schedule = true, max_grad_norm = true,
  grad_checkpointing = true, eval_every = true, eval_batches = true, log = true,
  checkpoint = true, seed = true, on_step = true, loss = true, resume = true, print_every = true,
  distributed = true,
}

local function fail(msg, level) error("qlora.trainer: " .. msg, level or 0) end

local function is_finite(x) return x == x and x ~= math.huge and x ~= -math.huge end
local function describe(x) if x ~= x then return "NaN" end return x > 0 and "Inf" or "-Inf" end

function q.trainer(opts)
  if type(opts) ~= "table" then fail("expected a table of options, got " .. type(opts), 2) end
  for k in pairs(opts) do
    if not allowed[k] then fail("unknown option '" .. tostring(k) .. "'", 2) end
  end
  if opts.model == nil then fail("missing option 'model'", 2) end
  if opts.train == nil then fail("missing option 'train' (a dataset)", 2) end
  for _, k in ipairs({ "steps", "epochs", "batch_size", "grad_accum", "eval_every", "eval_batches", "print_every" }) do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or math.tointeger(v) == nil or v < 1) then
      fail("option '" .. k .. "' must be an integer >= 1, got " .. tostring(v), 2)
    end
  end
  if opts.max_grad_norm ~= nil and (type(opts.max_grad_norm) ~= "number" or not (opts.max_grad_norm > 0)) then
    fail("option 'max_grad_norm' must be a number > 0", 2)
  end
  if opts.loss ~= nil and type(opts.loss) ~= "function" then fail("option 'loss' must be a function (model, batch) -> loss", 2) end
  if opts.on_step ~= nil and type(opts.on_step) ~= "function" then fail("option 'on_step' must be a function", 2) end
  if opts.distributed ~= nil and opts.distributed ~= false and opts.distributed ~= "mpi" then
    fail("option 'distributed' must be \"mpi\" or false, got " .. tostring(opts.distributed), 2)
  end
  return setmetatable({ opts = opts }, Trainer)
end

local function json_number(x)
  if x ~= x then return '"nan"' end
  if x == math.huge then return '"inf"' end
  if x == -math.huge then return '"-inf"' end
  if math.type(x) == "integer" then return tostring(x) end
  return string.format("%.17g", x)
end

local function json_line(t, keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if v ~= nil then
      parts[#parts + 1] = string.format('"%s": %s', k, type(v) == "number" and json_number(v) or string.format("%q", tostring(v)))
    end
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function make_optimizer(spec, params)
  if spec == nil then spec = { "adamw", lr = 2e-4 } end
  if type(spec) == "table" and type(spec[1]) == "string" then
    local ctor = q.optim[spec[1]]
    if ctor == nil then fail("unknown optimizer '" .. spec[1] .. "' (expected adamw or sgd)") end
    local args = {}
    for k, v in pairs(spec) do if k ~= 1 then args[k] = v end end
    return ctor(params, args)
  end
  if type(spec) == "userdata" then return spec end
  fail("option 'optimizer' must be {\"adamw\"|\"sgd\", lr = ..., ...} or an optimizer")
end

-- Mean loss over (up to max_batches) batches of a dataset, without gradients.
local function evaluate(model, ds, opts)
  local it = ds:batches{ size = opts.batch_size or 4, shuffle = false }
  local total, count, n = 0, 0, 0
  local was = model:train(false)
  q.no_grad(function()
    while true do
      local b = it:next()
      if b == nil or (opts.eval_batches and n >= opts.eval_batches) then break end
      if b.tokens > 0 then -- a batch with no trained token weighs nothing (and its loss is 0/0)
        local loss = opts.loss and q._call_no_yield("qlora.trainer: the loss callback", opts.loss, model, b) or model:loss(b.input_ids, b.labels, b.segment_ids and
          { segment_ids = b.segment_ids, position_ids = b.position_ids } or nil)
        total = total + loss:item() * b.tokens
        count = count + b.tokens
      end
      n = n + 1
    end
  end)
  model:train(was)
  if count == 0 then return 0 / 0 end
  return total / count
end

-- Checkpoints: DIR/step-N holding params.safetensors (trainable tensors by name),
-- optimizer.safetensors (its state), trainer.safetensors (metadata: step, data position,
-- random stream) and adapter/ (PEFT layout, for use outside training).
-- The metadata of a complete checkpoint directory (its trainer.safetensors, written last before
-- the directory is renamed into place), or nil.
local function checkpoint_meta(dir)
  local ok, _, meta = pcall(q.load_tensors, dir .. "/trainer.safetensors")
  if ok and type(meta) == "table" and tonumber(meta.step) then return meta end
  return nil
end

-- `path` is one checkpoint (DIR/step-N) or the checkpoint root DIR: the newest complete step-N
-- in it. Half-written checkpoints (.tmp-step-N, left by a kill during a write) are never taken.
local function latest_checkpoint(path)
  if checkpoint_meta(path) then return path end
  local ok, names = pcall(q.listdir, path)
  if not ok then return nil end
  local best, best_step = nil, -1
  for _, name in ipairs(names) do
    local n = tonumber(name:match("^step%-(%d+)$"))
    if n and n > best_step and checkpoint_meta(path .. "/" .. name) then
      best, best_step = path .. "/" .. name, n
    end
  end
  return best
end

function Trainer:_save(step, params, opt, batches, loss)
  local c = self.opts.checkpoint
  local dir = c.dir
  q.mkdir(dir)
  local tmp = dir .. "/.tmp-step-" .. step
  q.rmtree(tmp)
  q.mkdir(tmp)
  local tensors = {}
  for _, p in ipairs(params) do tensors[p.name] = p.tensor end
  q.save_tensors(tmp .. "/params.safetensors", tensors)
  local st = opt:state()
  local ost = { ["."] = q.zeros(0) }
  for k, v in pairs(st) do if k ~= "step" then ost[k] = v end end
  q.save_tensors(tmp .. "/optimizer.safetensors", ost, { step = tostring(st.step) })
  pcall(function() self.opts.model:save_adapter(tmp .. "/adapter") end)
  local seed, offset = q.random_state()
  q.save_tensors(tmp .. "/trainer.safetensors", { ["."] = q.zeros(0) }, {
    step = tostring(step), epoch = tostring(batches:epoch()), position = tostring(batches:position()),
    random_seed = tostring(seed), random_offset = tostring(offset), loss = string.format("%.17g", loss),
  })
  local final = dir .. "/step-" .. step
  q.rmtree(final)
  local ok, err = os.rename(tmp, final)
  if not ok then fail("cannot move the checkpoint into place: " .. tostring(err)) end
  if c.keep then
    local steps = {}
    for _, name in ipairs(q.listdir(dir)) do
      local n = tonumber(name:match("^step%-(%d+)$"))
      if n then steps[#steps + 1] = n end
    end
    table.sort(steps)
    for i = 1, #steps - c.keep do q.rmtree(dir .. "/step-" .. steps[i]) end
  end
  return final
end

function Trainer:_load(path, params, opt, batches)
  local dir = latest_checkpoint(path)
  if dir == nil then fail("no complete checkpoint in " .. path) end
  local _, meta = q.load_tensors(dir .. "/trainer.safetensors")
  local saved = q.load_tensors(dir .. "/params.safetensors")
  for _, p in ipairs(params) do
    local t = saved[p.name]
    if t == nil then fail(dir .. ": the checkpoint has no tensor \"" .. p.name .. "\" (was it made with another adapter set-up?)") end
    p.tensor:copy_(t)
  end
  local ost, ometa = q.load_tensors(dir .. "/optimizer.safetensors")
  ost["."] = nil
  ost.step = tonumber(ometa.step)
  opt:load_state(ost)
  batches:set_position(tonumber(meta.position), tonumber(meta.epoch))
  q.set_random_state(math.tointeger(tonumber(meta.random_seed)), math.tointeger(tonumber(meta.random_offset)))
  self.resumed_from = dir
  self.resumed_loss = tonumber(meta.loss)
  return math.tointeger(tonumber(meta.step))
end

-- Data-parallel training over MPI: nil for a single process, else {rank =, size =}. With
-- distributed = "mpi", or unset in a job mpirun launched with more than one rank (said on rank
-- 0's output), every rank runs the same script: each reads the same batch stream and computes
-- grad_accum / size of every step's micro-batches (rank r the r-th run of them), the gradients are
-- summed over ranks (q.mpi.allreduce_grads: one MPI_Allreduce of a flat buffer in parameter
-- order), and every rank applies the same update. Only rank 0 prints, logs and checkpoints.
local function setup_distributed(o, accum)
  local d, launch = o.distributed, nil
  if d == false then return nil end
  if d == nil then
    local n, var = q.mpi.launched()
    if not n or n < 2 then return nil end
    launch = var .. "=" .. n
  end
  local rank, size = q.mpi.init()
  if launch and rank == 0 then
    print(string.format("qlora.trainer: launched by mpirun (%s): training data-parallel over %d ranks", launch, size))
  end
  if accum % size ~= 0 then
    fail(string.format("grad_accum (%d) must be a multiple of the %d MPI ranks (each rank takes grad_accum / ranks micro-batches of every step)", accum, size))
  end
  return { rank = rank, size = size, per_rank = accum // size }
end

function Trainer:run()
  local o = self.opts
  local model = o.model
  local params = model:parameters{ trainable = true }
  if #params == 0 then fail("the model has no trainable parameters (call model:add_lora, or model:set_trainable(true) for a dense model)") end
  local accum = o.grad_accum or 1
  local dist = setup_distributed(o, accum)
  local lead = dist == nil or dist.rank == 0  -- prints, logs and writes checkpoints
  local seed = o.seed or 0
  local batches = o.train:batches{ size = o.batch_size or 4, shuffle = true, seed = seed }
  local per_epoch = batches:num_batches()
  if per_epoch == 0 then fail("the training set gives no batches") end
  local total = o.steps or math.max(1, math.ceil((o.epochs or 1) * per_epoch / accum))
  local opt = make_optimizer(o.optimizer, params)
  local peak = opt:lr()
  local sched = o.schedule or { "constant" }
  if type(sched) ~= "table" then fail("option 'schedule' must be a table like {\"cosine\", warmup = 20}") end
  local kind = sched[1] or "constant"
  local sopts = { lr = peak, warmup = sched.warmup or 0, total = total, min_lr = sched.min_lr or 0 }
  q.lr_at(kind, 1, sopts) -- validates the schedule now
  q.manual_seed(seed)
  if dist then dist.stream = q.random_state() end
  local step = 0
  if o.resume then step = self:_load(o.resume, params, opt, batches) end
  local first_step = step
  if step >= total and lead then
    print(string.format("qlora.trainer: the run is already complete (step %d of %d in %s); no steps to run",
      step, total, self.resumed_from))
  end
  -- The metrics log (rank 0 alone writes it): a regular file (or a character device such as
  -- /dev/null); every line is flushed and a failed write stops the run naming the option, so no
  -- metric is lost silently.
  local log, log_path
  if o.log and lead then
    log_path = o.log
    if type(log_path) ~= "string" or log_path == "" then fail("option 'log' must be a file path, got " .. tostring(log_path)) end
    local d = log_path:match("(.*)/[^/]*$")
    if d and d ~= "" then
      local ok, e = pcall(q.mkdir, d)
      if not ok then fail("option 'log' (" .. log_path .. "): " .. tostring(e):gsub("^qlora%.mkdir: ", "")) end
    end
    local kind = q.path_kind(log_path)
    if kind ~= nil and kind ~= "file" and kind ~= "device" then
      fail("option 'log' (" .. log_path .. ") is a " .. kind .. "; the log is written to a regular file or a device")
    end
    local f, err = io.open(log_path, step > 0 and "a" or "w")
    if not f then fail("option 'log': cannot open " .. tostring(err)) end
    log = f
  end
  local function log_line(text)
    local ok, err = log:write(text, "\n")
    if ok then ok, err = log:flush() end
    if not ok then
      pcall(log.close, log)
      fail("option 'log': cannot write " .. log_path .. ": " .. tostring(err))
    end
  end
  local started = q.clock()
  local tokens_total, loss_sum, loss_n = 0, 0, 0
  -- a resumed run that has no steps left reports the loss its checkpoint saved
  local last_loss, eval_loss = self.resumed_loss or 0 / 0, nil
  local print_every = o.print_every or math.max(1, total // 20)
  local tty = q.isatty()
  local was_training = model:train(true)
  local was_checkpointing = model:gradient_checkpointing(o.grad_checkpointing and true or false)
  local stopped = false
  while step < total and not stopped do
    local step_start = q.clock()
    local step_loss, step_tokens = 0, 0
    for i = 1, accum do
      local b = batches:next() or batches:next()
      step_tokens = step_tokens + b.tokens
      if dist and (i - 1) // dist.per_rank ~= dist.rank then goto other_rank end
      -- Each micro-batch's random draws (dropout) come from its own place in the stream, fixed by
      -- the step and its index: the same on whichever rank computes it, and after a resume.
      if dist then q.set_random_state(dist.stream, (step * accum + i - 1) << 40) end
      -- A batch with no trained token (every label -100: packed pieces of a long masked
      -- prompt) has no loss to learn from; the built-in loss skips it instead of giving 0/0.
      if o.loss or b.tokens > 0 then
        local loss = o.loss and q._call_no_yield("qlora.trainer: the loss callback", o.loss, model, b) or model:loss(b.input_ids, b.labels, b.segment_ids and
          { segment_ids = b.segment_ids, position_ids = b.position_ids } or nil)
        local l = loss:item()
        if not is_finite(l) then
          fail(string.format("step %d: the loss is %s; stopping (the last checkpoint is intact)", step + 1, describe(l)))
        end
        loss:backward(q.tensor(1 / accum))
        step_loss = step_loss + l / accum
      end
      ::other_rank::
    end
    if dist then
      step_loss = q.mpi.allreduce({ step_loss })[1]
      q.mpi.allreduce_grads(params)
    end
    step = step + 1
    local lr = q.lr_at(kind, step, sopts)
    opt:set_lr(lr)
    local norm = q.clip_grad_norm(params, o.max_grad_norm or math.huge)
    if not is_finite(norm) then
      fail(string.format("step %d: the gradient norm is %s; stopping (the last checkpoint is intact)", step, describe(norm)))
    end
    opt:step()
    opt:zero_grad()
    local now = q.clock()
    tokens_total = tokens_total + step_tokens
    loss_sum, loss_n, last_loss = loss_sum + step_loss, loss_n + 1, step_loss
    local rss = q.memory_mb()
    local state = { step = step, loss = step_loss, lr = lr, grad_norm = norm, tokens = step_tokens,
      tokens_per_sec = step_tokens / math.max(now - step_start, 1e-9), elapsed_s = now - started, rss_mb = rss }
    if log then
      log_line(json_line(state, { "step", "loss", "lr", "grad_norm", "tokens", "tokens_per_sec", "elapsed_s", "rss_mb" }))
    end
    if o.eval and o.eval_every and step % o.eval_every == 0 then
      eval_loss = evaluate(model, o.eval, o)
      state.eval_loss = eval_loss
      if log then log_line(json_line({ step = step, eval_loss = eval_loss }, { "step", "eval_loss" })) end
    end
    if o.checkpoint and o.checkpoint.every and step % o.checkpoint.every == 0 and lead then
      self:_save(step, params, opt, batches, step_loss)
    end
    if lead and (step % print_every == 0 or step == total) then
      local rate = tokens_total / math.max(now - started, 1e-9)
      local eta = (total - step) * (now - started) / math.max(step - first_step, 1)
      local line = string.format("step %d/%d  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  eta %.0fs",
        step, total, step_loss, lr, norm, rate, eta)
      if tty then io.write("\r", line, "   ") if step == total then io.write("\n") end io.flush() else print(line) end
    end
    if o.on_step and q._call_no_yield("qlora.trainer: the on_step callback", o.on_step, state) == "stop" then stopped = true end
    -- every rank stops at the same step when any rank's on_step says so
    if dist and o.on_step then stopped = q.mpi.allreduce({ stopped and 1 or 0 })[1] > 0 end
  end
  model:train(was_training)
  model:gradient_checkpointing(was_checkpointing)
  if o.eval then
    eval_loss = evaluate(model, o.eval, o)
    if log then log_line(json_line({ step = step, eval_loss = eval_loss }, { "step", "eval_loss" })) end
  end
  if lead and o.checkpoint and o.checkpoint.dir and step > first_step and not (o.checkpoint.every and step % o.checkpoint.every == 0) then
    self:_save(step, params, opt, batches, last_loss)
  end
  if log then
    local ok, err = log:close()
    if not ok then fail("option 'log': cannot write " .. log_path .. ": " .. tostring(err)) end
  end
  local elapsed = q.clock() - started
  local _, peak_rss = q.memory_mb()
  return {
    steps = step, steps_run = step - first_step, train_loss = last_loss,
    mean_train_loss = loss_n > 0 and loss_sum / loss_n or last_loss,
    eval_loss = eval_loss, eval_ppl = eval_loss and math.exp(eval_loss) or nil,
    tokens_per_sec = tokens_total / math.max(elapsed, 1e-9), elapsed_s = elapsed, peak_rss_mb = peak_rss,
    stopped = stopped, resumed_from = self.resumed_from,
    rank = dist and dist.rank or 0, ranks = dist and dist.size or 1,
  }
end

return q
"""#
