-- Hostile but realistic inputs, round two: numbers no option can take, writers aimed at full
-- disks and at paths that are not regular files, runaway regexes and sizes, coroutines that
-- yield where they may not, error objects that are tables, adapter configs that say more than
-- the weights. Each is a clear Lua error (or a documented warning), never a trap or a silent loss.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local here = arg[0]:match("(.*/)") or "./"
local fixtures = here .. "../fixtures/"
local tmp = os.tmpname()
os.remove(tmp)
q.mkdir(tmp)

local function sh(cmd) return os.execute(cmd) == true end
-- Device nodes of our own (never /dev's: should a writer regress, it replaces only these copies).
-- Making them needs root; without it the device targets are left out and a note says so.
local devnull, devfull = tmp .. "/null", tmp .. "/full"
local have_devices = sh("mknod -m 666 " .. devnull .. " c 1 3 2>/dev/null && mknod -m 666 " .. devfull .. " c 1 7 2>/dev/null")
if not have_devices then print("note: cannot make device nodes here (not root): device targets are left out") end
local function read(path) local f = assert(io.open(path, "rb")); local s = f:read("a"); f:close(); return s end
local function write(path, s) local f = assert(io.open(path, "wb")); f:write(s); f:close() end
local function leftovers(dir)
  local n = 0
  for _, name in ipairs(q.listdir(dir)) do if name:find("%.tmp%-") then n = n + 1 end end
  return n
end

-- A character-level tokenizer (q.tasks') with a pre-tokenizer spliced in.
local function tokenizer_json(pre_tokenizer)
  q.tasks.save_tokenizer(tmp .. "/tok")
  local json = read(tmp .. "/tok/tokenizer.json")
  return (json:gsub('"pre_tokenizer": null', '"pre_tokenizer": ' .. pre_tokenizer))
end

T.case("JSONL: a huge line costs what max_len needs, not what the line holds", function()
  -- Runs first, while the process is small: the peak RSS must not grow by tens of times the line.
  q.tasks.save_tokenizer(tmp .. "/chars")
  local tok = q.tokenizer(tmp .. "/chars/tokenizer.json")
  local line = string.rep("abc ", 5 * 1024 * 1024) -- 20 MB
  write(tmp .. "/huge.jsonl", '{"text": "' .. line .. '"}\n{"text": "abc abc"}\n')
  line = nil
  collectgarbage()
  local _, peak0 = q.memory_mb()
  local t0 = q.clock()
  local ds = q.data.jsonl(tmp .. "/huge.jsonl", { tokenizer = tok, max_len = 64 })
  local elapsed = q.clock() - t0
  local _, peak1 = q.memory_mb()
  T.eq(#ds, 2)
  T.eq(#ds:get(1).input_ids, 64, "tokens kept")
  -- the first 64 tokens are those of the whole line
  local ids = tok:encode(string.rep("abc ", 40))
  for i = 1, 63 do T.eq(ds:get(1).input_ids[i], ids[i], "token " .. i) end
  -- tokenizing all 20 M characters took 29x the line in memory: here the line, its JSON copy and
  -- a prefix are all that is held
  assert(peak1 - peak0 < 300, string.format("peak RSS grew by %.0f MB for a 20 MB line", peak1 - peak0))
  assert(elapsed < 20, string.format("took %.1f s", elapsed))
end)

T.case("arange: a count no integer holds is an error, not a trap", function()
  T.errors(function() q.arange(0, 1, 1e-300) end, "qlora.arange", "too many elements")
  T.errors(function() q.arange(1e300) end, "qlora.arange", "too many elements")
  T.errors(function() q.arange(-1e300, 1e300, 1) end, "too many elements")
  T.errors(function() q.arange(0, 2 ^ 62) end, "too many elements")
  T.eq(#q.arange(1e300, 0):totable(), 0, "an empty range")
end)

T.case("integer dtypes saturate", function()
  local t = q.full({ 2 }, 1e300, { dtype = "i32" }):totable()
  T.eq(t[1], 2147483647); T.eq(t[2], 2147483647)
  T.eq(q.full({ 1 }, -1e300, { dtype = "i32" }):totable()[1], -2147483648)
  T.eq(q.full({ 1 }, 0 / 0, { dtype = "i32" }):totable()[1], 0)
  T.eq(q.full({ 1 }, 1e10, { dtype = "u8" }):totable()[1], 255)
  T.eq(q.full({ 1 }, -5, { dtype = "u8" }):totable()[1], 0)
  T.eq(q.tensor({ 3e9, -3e9 }):to("i32"):totable()[1], 2147483647)
  T.eq(q.tensor({ 3e9, -3e9 }):to("i32"):totable()[2], -2147483648)
  -- a huge exponent is a huge exponent, not "-1"
  local ok, e = pcall(function() return q.full({ 2 }, 1, { dtype = "i32" }):pow(1e300) end)
  assert(ok, tostring(e))
  T.eq(e:totable()[1], 1)
end)

-- Every numeric option of every binding, given NaN, infinities, negatives and overflowing
-- values: an error naming the function, or a result; never a trap. Options marked `finite` must
-- refuse NaN and infinities, `positive` also refuse negatives.
T.case("property: every numeric option against NaN, inf, negatives and overflow", function()
  local model = q.llama { vocab = 32, hidden = 16, layers = 1, heads = 2, intermediate = 32, seed = 1 }
  local x = q.ones({ 2, 2 }); x.requires_grad = true
  local params = { { name = "x", tensor = x } }
  local ds = q.data.from_table({ { input_ids = { 1, 2, 3 } }, { input_ids = { 4, 5, 6 } }, { input_ids = { 7, 8, 9 } } }, {})
  local hostile = { 0 / 0, math.huge, -math.huge, -1, -1e300, 1e300, 2 ^ 63, 2 ^ 64, math.maxinteger, math.mininteger, -0.5 }
  -- name, function of v, rule ("finite": NaN/inf refused; "positive": also negatives refused)
  local cases = {
    { "q.arange(v)", function(v) return q.arange(v) end, "finite" },
    { "q.arange(0, v)", function(v) return q.arange(0, v) end, "finite" },
    { "q.arange(0, 1, v)", function(v) return q.arange(0, 1, v) end, "finite" },
    { "q.full value", function(v) return q.full({ 2 }, v) end },
    { "q.full i32 value", function(v) return q.full({ 2 }, v, { dtype = "i32" }) end },
    { "q.zeros({v})", function(v) return q.zeros({ v }) end, "positive" },
    { "q.rand min", function(v) return q.rand({ 2 }, { min = v, max = 1e301 }) end, "finite" },
    { "q.rand max", function(v) return q.rand({ 2 }, { min = -1e301, max = v }) end, "finite" },
    { "q.randn mean", function(v) return q.randn({ 2 }, { mean = v }) end, "finite" },
    { "q.randn std", function(v) return q.randn({ 2 }, { std = v }) end, "positive" },
    { "q.rand seed", function(v) return q.rand({ 2 }, { seed = v }) end, "positive" },
    { "q.manual_seed", function(v) return q.manual_seed(v) end, "positive" },
    { "t:pow f32", function(v) return q.ones(2):pow(v) end },
    { "t:pow i32", function(v) return q.full({ 2 }, 2, { dtype = "i32" }):pow(v) end },
    { "t:clamp", function(v) return q.ones(2):clamp(v, nil) end },
    { "t:mul_", function(v) return q.ones(2):mul_(v) end },
    { "t:sum(dim)", function(v) return q.ones(2):sum(v) end, "finite" },
    { "q.lr_at step", function(v) return q.lr_at("cosine", v, { lr = 1, total = 10 }) end, "positive" },
    { "q.lr_at lr", function(v) return q.lr_at("cosine", 1, { lr = v, total = 10 }) end, "positive" },
    { "q.lr_at warmup", function(v) return q.lr_at("cosine", 1, { lr = 1, total = 10, warmup = v }) end, "positive" },
    { "q.lr_at total", function(v) return q.lr_at("cosine", 1, { lr = 1, total = v }) end, "positive" },
    { "q.lr_at min_lr", function(v) return q.lr_at("cosine", 1, { lr = 1, total = 10, min_lr = v }) end, "positive" },
    { "adamw lr", function(v) return q.optim.adamw(params, { lr = v }) end, "positive" },
    { "adamw eps", function(v) return q.optim.adamw(params, { eps = v }) end, "positive" },
    { "adamw weight_decay", function(v) return q.optim.adamw(params, { weight_decay = v }) end, "positive" },
    { "adamw betas", function(v) return q.optim.adamw(params, { betas = { v, 0.999 } }) end, "positive" },
    { "sgd lr", function(v) return q.optim.sgd(params, { lr = v }) end, "positive" },
    { "sgd momentum", function(v) return q.optim.sgd(params, { lr = 1, momentum = v }) end, "positive" },
    { "sgd dampening", function(v) return q.optim.sgd(params, { lr = 1, momentum = 0.5, dampening = v }) end, "finite" },
    { "opt:set_lr", function(v) return q.optim.sgd(params, { lr = 1 }):set_lr(v) end, "positive" },
    { "q.clip_grad_norm", function(v) return q.clip_grad_norm(params, v ~= math.huge and v or 0 / 0) end, "positive" },
    { "add_lora r", function(v) return model:add_lora { name = "r" .. tostring(v), r = v, targets = { "q_proj" } } end, "positive" },
    { "add_lora alpha", function(v) return model:add_lora { name = "a" .. tostring(v), alpha = v, targets = { "q_proj" } } end, "finite" },
    { "add_lora dropout", function(v) return model:add_lora { name = "d" .. tostring(v), dropout = v, targets = { "q_proj" } } end, "positive" },
    { "add_lora alpha_pattern", function(v) return model:add_lora { name = "p" .. tostring(v), alpha_pattern = { q_proj = v }, targets = { "q_proj" } } end, "finite" },
    { "add_lora rank_pattern", function(v) return model:add_lora { name = "k" .. tostring(v), rank_pattern = { q_proj = v }, targets = { "q_proj" } } end, "positive" },
    { "add_lora seed", function(v) return model:add_lora { name = "s" .. tostring(v), seed = v, targets = { "q_proj" } } end, "positive" },
    { "q.llama rope_theta", function(v) return q.llama { vocab = 8, hidden = 8, layers = 1, heads = 1, intermediate = 8, rope_theta = v } end, "positive" },
    { "q.llama rms_norm_eps", function(v) return q.llama { vocab = 8, hidden = 8, layers = 1, heads = 1, intermediate = 8, rms_norm_eps = v } end, "positive" },
    { "q.llama vocab", function(v) return q.llama { vocab = v, hidden = 8, layers = 1, heads = 1, intermediate = 8 } end, "positive" },
    { "q.llama max_positions", function(v) return q.llama { vocab = 8, hidden = 8, layers = 1, heads = 1, intermediate = 8, max_positions = v } end, "positive" },
    { "generate temperature", function(v) return model:generate({ 1 }, { max_tokens = 1, temperature = v }) end, "positive" },
    { "generate top_p", function(v) return model:generate({ 1 }, { max_tokens = 1, temperature = 1, top_p = v }) end, "positive" },
    { "generate top_k", function(v) return model:generate({ 1 }, { max_tokens = 1, temperature = 1, top_k = v }) end, "positive" },
    { "generate max_tokens", function(v) return model:generate({ 1 }, { max_tokens = v }) end, "positive" },
    { "q.quantize block", function(v) return q.quantize(q.ones({ 64 }), { block = v }) end, "positive" },
    { "ds:split", function(v) return ds:split(v) end, "positive" },
    { "ds:batches size", function(v) return ds:batches { size = v } end, "positive" },
    { "q.tasks.examples n", function(v) return q.tasks.examples { ops = "copy", n = v } end, "positive" },
    { "q.tasks.examples max_len", function(v) return q.tasks.examples { ops = "copy", n = 1, max_len = v } end, "positive" },
    { "q.tasks.examples min_len", function(v) return q.tasks.examples { ops = "copy", n = 1, min_len = v, max_len = v } end, "positive" },
    { "q.set_threads", function(v) return q.set_threads(v) end, "positive" },
    { "q.trainer steps", function(v) return q.trainer { model = model, train = ds, steps = v } end, "positive" },
    { "q.trainer max_grad_norm", function(v) return q.trainer { model = model, train = ds, max_grad_norm = v ~= math.huge and v or 0 / 0 } end, "positive" },
    { "q.gradcheck eps", function(v) return q.gradcheck(function(a) return a * 2 end, { x }, { eps = v }) end, "positive" },
    { "q.gradcheck atol", function(v) return q.gradcheck(function(a) return a * 2 end, { x }, { atol = v }) end, "positive" },
    { "q.gradcheck rtol", function(v) return q.gradcheck(function(a) return a * 2 end, { x }, { rtol = v }) end, "positive" },
    { "t:slice", function(v) return q.ones({ 4 }):slice(1, v, 2) end, "finite" },
    { "t:index_select", function(v) return q.ones({ 4 }):index_select(1, { v }) end, "positive" },
    { "t:reshape", function(v) return q.ones({ 4 }):reshape({ v, 2 }) end, "finite" },
    { "q.quant_linear", function(v) return q.tensor({ v }):to("bf16") end },
    { "ds:get", function(v) return ds:get(v) end, "positive" },
    { "model:forward id", function(v) return model:forward({ { v } }) end, "positive" },
    { "model:loss label", function(v) return model:loss({ { 1, 2 } }, { { 1, v } }) end, "finite" },
  }
  local threads = q.threads()
  for _, c in ipairs(cases) do
    local name, fn, rule = c[1], c[2], c[3]
    for _, v in ipairs(hostile) do
      local ok, e = pcall(fn, v)
      local nonfinite = v ~= v or v == math.huge or v == -math.huge
      if not ok then
        assert(type(e) == "string" and e:find("qlora", 1, true),
          string.format("%s(%s): the error does not name the function: %s", name, tostring(v), tostring(e)))
        assert(not e:find("NSCocoaErrorDomain", 1, true) and not e:find("attempt to", 1, true),
          string.format("%s(%s): an internal error leaked: %s", name, tostring(v), e))
      elseif rule and (nonfinite or (rule == "positive" and v < 0)) then
        error(string.format("%s accepted %s", name, tostring(v)))
      end
    end
  end
  q.set_threads(threads)
  q.manual_seed(0)
end)

T.case("accepted silently before: alpha = NaN, rand min > max, randn std < 0", function()
  local model = q.llama { vocab = 32, hidden = 16, layers = 1, heads = 2, intermediate = 32 }
  T.errors(function() model:add_lora { alpha = 0 / 0 } end, "qlora.Model.add_lora", "alpha must be a finite number")
  T.errors(function() q.rand({ 2 }, { min = 1, max = 0 }) end, "qlora.rand", "min <= max")
  T.errors(function() q.randn({ 2 }, { std = -1 }) end, "qlora.randn", "std a finite number >= 0")
end)

-- Writers: each writes a whole file (atomically) or appends lines. A target that exists and is
-- not a regular file is refused by the whole-file writers (the node stays what it was); a full
-- disk is an error naming the file, with nothing left behind.
local function writers(model, tok_dir)
  return {
    { "q.save_tensors", function(p) q.save_tensors(p, { a = q.ones(4096) }) end },
    { "q.write_file", function(p) q.write_file(p, string.rep("x", 100000)) end },
    { "q.plot", function(p)
        write(tmp .. "/m.jsonl", '{"step": 1, "loss": 2}\n{"step": 2, "loss": 1}\n')
        q.plot { files = tmp .. "/m.jsonl", x = "step", y = "loss", out = p }
      end },
  }
end

local function dir_writers(model)
  -- writers that take a directory and write files into it
  return {
    { "model:save", function(d) model:save(d) end, "model.safetensors" },
    { "model:save_adapter", function(d) model:save_adapter(d) end, "adapter_model.safetensors" },
    { "q.tasks.save_tokenizer", function(d) q.tasks.save_tokenizer(d) end, "tokenizer.json" },
  }
end

T.case("writers: an existing path that is not a regular file is refused and left as it was", function()
  assert(sh("mkfifo " .. tmp .. "/fifo"), "mkfifo")
  q.mkdir(tmp .. "/adir")
  local targets = { tmp .. "/fifo", tmp .. "/adir" }
  local kinds = { "fifo", "directory" }
  if have_devices then
    table.insert(targets, 1, devnull); table.insert(kinds, 1, "device")
    table.insert(targets, 1, devfull); table.insert(kinds, 1, "device")
  end
  for _, w in ipairs(writers()) do
    for i, target in ipairs(targets) do
      local e = T.errors(function() w[2](target) end, target, "saving replaces only regular files")
      assert(e:find("qlora." .. w[1]:gsub("^q%.", ""), 1, true), w[1] .. ": the error does not name the function: " .. e)
      T.eq(q.path_kind(target), kinds[i], w[1] .. " onto " .. target)
    end
  end
  T.eq(leftovers(tmp), 0, "temporary files left in " .. tmp)
  -- the directory writers, pointed at a directory whose files are devices/FIFOs
  local model = q.llama { vocab = 32, hidden = 16, layers = 1, heads = 2, intermediate = 32 }
  model:add_lora { r = 2, targets = { "q_proj" } }
  for _, w in ipairs(dir_writers(model)) do
    local d = tmp .. "/dw-" .. w[3]
    q.mkdir(d)
    assert(sh("mkfifo " .. d .. "/" .. w[3]))
    T.errors(function() w[2](d) end, w[3], "is a FIFO", "saving replaces only regular files")
    T.eq(q.path_kind(d .. "/" .. w[3]), "fifo")
    T.eq(leftovers(d), 0, "temporary files left in " .. d)
  end
end)

T.case("writers: a symbolic link is followed; the link stays and its target is replaced", function()
  q.mkdir(tmp .. "/real")
  q.save_tensors(tmp .. "/real/t.safetensors", { a = q.zeros(2) })
  assert(sh("ln -s " .. tmp .. "/real/t.safetensors " .. tmp .. "/link.safetensors"))
  q.save_tensors(tmp .. "/link.safetensors", { a = q.ones(2) })
  assert(sh("test -L " .. tmp .. "/link.safetensors"), "the link was replaced by a file")
  T.eq(q.load_tensors(tmp .. "/real/t.safetensors").a:totable()[1], 1, "the target's new contents")
  T.eq(leftovers(tmp), 0); T.eq(leftovers(tmp .. "/real"), 0)
  -- a link to a device is refused like the device; a dangling link is refused
  if have_devices then
    assert(sh("ln -s " .. devnull .. " " .. tmp .. "/devlink"))
    T.errors(function() q.save_tensors(tmp .. "/devlink", { a = q.ones(2) }) end, "is a character device", "the link points to " .. devnull)
    assert(sh("test -L " .. tmp .. "/devlink"))
    T.eq(q.path_kind(devnull), "device")
  end
  assert(sh("ln -s " .. tmp .. "/nowhere/x " .. tmp .. "/dangling"))
  T.errors(function() q.save_tensors(tmp .. "/dangling", { a = q.ones(2) }) end, "symbolic link to a missing file")
end)

T.case("writers: a parent that is a file is named, in words", function()
  write(tmp .. "/plainfile", "x")
  local model = q.llama { vocab = 32, hidden = 16, layers = 1, heads = 2, intermediate = 32 }
  for _, f in ipairs({
    function() q.save_tensors(tmp .. "/plainfile/x.safetensors", { a = q.ones(2) }) end,
    function() q.mkdir(tmp .. "/plainfile/sub") end,
    function() model:save(tmp .. "/plainfile/model") end,
    function() q.write_file(tmp .. "/plainfile/a/b", "x") end,
  }) do
    local e = T.errors(f, tmp .. "/plainfile is a file, not a directory")
    assert(not e:find("NSCocoaErrorDomain", 1, true), e)
  end
end)

T.case("writers: a full disk is an error naming the file; nothing is left behind", function()
  local disk = tmp .. "/small"
  q.mkdir(disk)
  if not sh("mount -t tmpfs -o size=256k tmpfs " .. disk .. " 2>/dev/null") then
    print("note: cannot mount a tmpfs here (not root): the full-disk writer checks ran against /dev/full only")
    return
  end
  local ok, err = pcall(function()
    write(disk .. "/filler", string.rep("z", 200 * 1024))
    local model = q.llama { vocab = 256, hidden = 64, layers = 1, heads = 2, intermediate = 128 }
    model:add_lora { r = 64, targets = "all-linear" }
    local big = q.ones(64 * 1024)
    local cases = {
      { "q.save_tensors", function() q.save_tensors(disk .. "/t.safetensors", { a = big }) end },
      { "q.write_file", function() q.write_file(disk .. "/w.txt", string.rep("x", 100 * 1024)) end },
      { "model:save", function() model:save(disk .. "/model") end },
      { "model:save_adapter", function() model:save_adapter(disk .. "/adapter") end },
    }
    for _, c in ipairs(cases) do
      T.errors(c[2], disk, "No space left on device")
      for _, d in ipairs({ disk, disk .. "/model", disk .. "/adapter" }) do
        if q.path_kind(d) == "directory" then T.eq(leftovers(d), 0, c[1] .. ": temporary files in " .. d) end
      end
    end
    -- the trainer's metrics log on the full disk stops the run and names the option
    local ds = q.data.from_table({ { input_ids = { 1, 2, 3, 4 } }, { input_ids = { 5, 6, 7, 8 } } }, {})
    write(disk .. "/more", string.rep("z", 56 * 1024 - 1))
    local tr = q.trainer { model = model, train = ds, steps = 200, batch_size = 2, log = disk .. "/metrics.jsonl", print_every = 1000 }
    T.errors(function() tr:run() end, "option 'log'", disk .. "/metrics.jsonl", "No space left on device")
  end)
  collectgarbage(); collectgarbage()
  assert(sh("umount " .. disk), "umount: something still holds a file on the small disk open")
  if not ok then error(err, 0) end
end)

T.case("trainer log: /dev/full, a directory and a FIFO are errors that name the option", function()
  local model = q.llama { vocab = 32, hidden = 16, layers = 1, heads = 2, intermediate = 32 }
  model:add_lora { r = 2, targets = { "q_proj" } }
  local ds = q.data.from_table({ { input_ids = { 1, 2, 3, 4 } }, { input_ids = { 5, 6, 7, 8 } } }, {})
  local function run(log) return q.trainer { model = model, train = ds, steps = 2, batch_size = 2, log = log, print_every = 100 }:run() end
  if have_devices then
    T.errors(function() run(devfull) end, "qlora.trainer", "option 'log'", devfull, "No space left on device")
    T.eq(q.path_kind(devfull), "device")
  end
  q.mkdir(tmp .. "/logdir")
  T.errors(function() run(tmp .. "/logdir") end, "qlora.trainer", "option 'log'", "directory")
  if q.path_kind(tmp .. "/fifo") ~= "fifo" then assert(sh("mkfifo " .. tmp .. "/fifo")) end
  T.errors(function() run(tmp .. "/fifo") end, "option 'log'", "fifo")
  write(tmp .. "/logparent", "x")
  local e = T.errors(function() run(tmp .. "/logparent/metrics.jsonl") end, "option 'log'", "is a file, not a directory")
  assert(not e:find("NSCocoaErrorDomain", 1, true), e)
  -- a null device is a fine sink
  if have_devices then
    run(devnull)
    T.eq(q.path_kind(devnull), "device")
  end
end)

T.case("tokenizer regex: catastrophic backtracking is a quick, clear error", function()
  local json = tokenizer_json('{"type": "Split", "pattern": {"Regex": "(((((a*)*)*)*)*)*b"}, "behavior": "Isolated", "invert": false}')
  write(tmp .. "/evil.json", json)
  local tok = q.tokenizer(tmp .. "/evil.json")
  T.eq(#tok:encode("aab", { special = false }), 3, "a short input still works")
  local t0 = q.clock()
  T.errors(function() tok:encode(string.rep("a", 40)) end, "catastrophic backtracking", "(((((a*)*)*)*)*)*b")
  local dt = q.clock() - t0
  assert(dt < 10, string.format("the error took %.1f s", dt))
  -- a long input under a linear pattern is not cut short by the step limit
  local ok_json = tokenizer_json('{"type": "Split", "pattern": {"Regex": "[a-j]+"}, "behavior": "Isolated", "invert": false}')
  write(tmp .. "/fine.json", ok_json)
  local fine = q.tokenizer(tmp .. "/fine.json")
  T.eq(#fine:encode(string.rep("abc ", 100000), { special = false }), 400000)
end)

T.case("q.tasks: sizes bounded up front; internal errors do not leak", function()
  local t0 = q.clock()
  T.errors(function() q.tasks.examples { ops = "copy", n = 1, min_len = 1 << 40, max_len = 1 << 40 } end,
    "qlora.tasks.examples", "max_len", "at most")
  T.errors(function() q.tasks.examples { ops = "copy", n = 1 << 40 } end, "qlora.tasks.examples", "option 'n'", "at most")
  T.errors(function() q.tasks.examples { ops = "copy", n = 1 << 20, max_len = 4096 } end, "tasks.max_letters")
  assert(q.clock() - t0 < 2, "the bounds were not checked up front")
  local e = T.errors(function() q.tasks.text("shift", "xyz", "abc") end, "qlora.tasks.text", "'x'", "not in the alphabet")
  assert(not e:find("attempt to", 1, true), e)
  T.errors(function() q.tasks.text("copy", 5) end, "qlora.tasks.text", "the word must be a non-empty string")
  T.errors(function() q.tasks.text("copy", "ab", "a") end, "qlora.tasks.text", "at least two letters")
  T.errors(function() q.tasks.examples { ops = "copy", n = 2, exclude = { 5 } } end, "qlora.tasks.examples", "exclude[1] must be an example")
  T.errors(function() q.tasks.examples { ops = "copy", n = 2, exclude = "x" } end, "qlora.tasks.examples", "option 'exclude'")
end)

T.case("mask_prompt: a prompt that fills max_len is left out when the dataset is built; training never sees 0/0", function()
  q.tasks.save_tokenizer(tmp .. "/chars2")
  local tok = q.tokenizer(tmp .. "/chars2/tokenizer.json")
  local rows = {
    { prompt = string.rep("a", 40), completion = " b" },
    { prompt = "ab", completion = " cd" },
    { prompt = "ba", completion = " dc" },
  }
  local ds = q.data.from_table(rows, { tokenizer = tok, format = "completions", max_len = 16, mask_prompt = true })
  T.eq(#ds, 2, "examples kept")
  T.eq(ds:untrained(), 1, "examples with no trained token")
  for i = 1, #ds do
    local n = 0
    for _, l in ipairs(ds:get(i).labels) do if l ~= -100 then n = n + 1 end end
    assert(n > 0, "example " .. i .. " has no trained token")
  end
  -- every example untrained: an error that says why
  T.errors(function() q.data.from_table({ rows[1] }, { tokenizer = tok, format = "completions", max_len = 16 }) end,
    "no example has a trained token", "max_len = 16")
  -- a packed dataset whose pieces can be all prompt: batches with no trained token are skipped
  local model = q.llama { vocab = 32, hidden = 16, layers = 1, heads = 2, intermediate = 32 }
  model:add_lora { r = 2, targets = { "q_proj" } }
  local packed = q.data.from_table(rows, { tokenizer = tok, format = "completions", max_len = 8, pack = true })
  local r = q.trainer { model = model, train = packed, steps = 12, batch_size = 1, print_every = 100, eval = packed }:run()
  assert(r.train_loss == r.train_loss and r.eval_loss == r.eval_loss, "a NaN loss was reported")
end)

T.case("coroutines: no_grad bodies and trainer callbacks may not yield; state is restored", function()
  local co = coroutine.wrap(function()
    return q.no_grad(function() coroutine.yield("inside") end)
  end)
  T.errors(co, "qlora.no_grad", "yielded", "may not yield")
  T.eq(q.is_grad_enabled(), true, "gradient recording after the yield")
  -- an error inside no_grad also restores
  pcall(q.no_grad, function() error("x") end)
  T.eq(q.is_grad_enabled(), true)
  -- results and errors pass through
  T.eq(q.no_grad(function(a, b) return a + b end, 2, 3), 5)
  local ok, e = pcall(q.no_grad, function() error({ code = 7 }) end)
  T.eq(ok, false); T.eq(type(e), "table"); T.eq(e.code, 7)
  -- nested coroutines that finish inside the body are fine
  T.eq(q.no_grad(function()
    local c = coroutine.wrap(function() coroutine.yield(1); return 2 end)
    return c() + c()
  end), 3)
  local model = q.llama { vocab = 32, hidden = 16, layers = 1, heads = 2, intermediate = 32 }
  model:add_lora { r = 2, targets = { "q_proj" } }
  local ds = q.data.from_table({ { input_ids = { 1, 2, 3, 4 } }, { input_ids = { 5, 6, 7, 8 } } }, {})
  for _, which in ipairs({ "on_step", "loss" }) do
    local opts = { model = model, train = ds, steps = 3, batch_size = 2, print_every = 100 }
    if which == "on_step" then opts.on_step = function() coroutine.yield("pause") end
    else opts.loss = function(m, b) coroutine.yield("pause"); return m:loss(b.input_ids, b.labels) end end
    local runner = coroutine.create(function() return q.trainer(opts):run() end)
    local ok2, msg = coroutine.resume(runner)
    T.eq(ok2, false, which .. ": the trainer was suspended mid-run")
    assert(tostring(msg):find("the " .. which .. " callback yielded", 1, true), tostring(msg))
    T.eq(q.is_grad_enabled(), true)
  end
  -- callbacks Swift calls: the same rule, said plainly
  local c2 = coroutine.wrap(function()
    return q.gradcheck(function(a) coroutine.yield(1); return a * 2 end, { q.ones(2) })
  end)
  T.errors(c2, "qlora.gradcheck", "may not yield")
end)

T.case("error objects that are tables are shown through __tostring or their fields", function()
  T.errors(function() q.gradcheck(function() error({ message = "boom in a table" }) end, { q.ones(2) }) end, "boom in a table")
  T.errors(function() q.gradcheck(function() error(setmetatable({}, { __tostring = function() return "via tostring" end })) end, { q.ones(2) }) end, "via tostring")
  T.errors(function() q.gradcheck(function() error({ code = 5 }) end, { q.ones(2) }) end, "{code = 5}")
  T.eq(q.error_text({ msg = "m" }), "m")
  T.eq(q.error_text("plain"), "plain")
  T.eq(q.error_text(nil), "(error object is a nil value)")
  local model = q.llama { vocab = 32, hidden = 16, layers = 1, heads = 2, intermediate = 32 }
  T.errors(function() model:add_lora { targets = function() error({ reason = "no thanks" }) end } end, "no thanks")
  T.errors(function() model:generate({ 1 }, { max_tokens = 2, on_token = function() error({ message = "stop it" }) end }) end, "stop it")
end)

T.case("adapter_config.json: every field checked against the weights and the model", function()
  local model = q.llama { vocab = 32, hidden = 16, layers = 2, heads = 2, intermediate = 32, seed = 3 }
  model:add_lora { r = 4, targets = { "q_proj", "v_proj" } }
  local dir = tmp .. "/adapter"
  model:save_adapter(dir)
  local fields = { peft_type = '"LORA"', r = "4", lora_alpha = "4", lora_dropout = "0", target_modules = '["q_proj", "v_proj"]',
    bias = '"none"', fan_in_fan_out = "false", modules_to_save = "null", layers_to_transform = "null", rank_pattern = "{}",
    alpha_pattern = "{}", use_dora = "false", use_rslora = "false" }
  local function config(field, value)
    local parts = {}
    for k, v in pairs(fields) do parts[#parts + 1] = string.format('"%s": %s', k, k == field and value or v) end
    return "{" .. table.concat(parts, ", ") .. "}\n"
  end
  local function with(field, value) write(dir .. "/adapter_config.json", config(field, value)) end
  with("r", "4")
  local function load() local m = q.llama { vocab = 32, hidden = 16, layers = 2, heads = 2, intermediate = 32 }; m:load_adapter(dir) end
  load() -- as saved
  local cases = {
    { "r", "8", "the weights have rank 4 but field \"r\" says 8" },
    { "target_modules", '["q_proj"]', "v_proj, which target_modules do not select" },
    { "target_modules", '["q_proj", "v_proj", "k_proj"]', "target_modules selects model.layers.0.self_attn.k_proj" },
    { "target_modules", '["nonexistent"]', "target_modules / layers_to_transform do not fit this model" },
    { "layers_to_transform", "[0]", "layers.1", "do not select" },
    { "rank_pattern", '{"q_proj": 2}', "rank_pattern \"q_proj\" says 2" },
    { "fan_in_fan_out", "true", "field \"fan_in_fan_out\"", "supports only false" },
    { "bias", '"all"', "field \"bias\"", "supports only \"none\"" },
    { "modules_to_save", '["lm_head"]', "field \"modules_to_save\"" },
    { "lora_dropout", "1.5", "lora_dropout", "[0, 1)" },
    { "target_modules", '["q_proj", 3]', "field \"target_modules\" must be a string or a list of strings" },
    { "layers_to_transform", '[0, "one"]', "field \"layers_to_transform\" must be an integer or a list of integers" },
  }
  for _, c in ipairs(cases) do
    with(c[1], c[2])
    local e = T.errors(load, "adapter_config.json", table.unpack(c, 3))
  end
  with("r", "4")
  load()
  -- a file with only lora_B says lora_A is missing
  local tensors = q.load_tensors(dir .. "/adapter_model.safetensors")
  local only_b = {}
  for k, v in pairs(tensors) do if k:find("lora_B") then only_b[k] = v end end
  q.save_tensors(dir .. "/adapter_model.safetensors", only_b)
  T.errors(load, "missing", "lora_A.weight")
end)

T.case("4-bit checkpoints: quant_state and quant_map must agree with config.json", function()
  local model = q.llama { vocab = 32, hidden = 64, layers = 1, heads = 2, intermediate = 128, seed = 4 }
  local dir = tmp .. "/q4"
  model:save(dir, { quantized = { type = "nf4", block = 64, double_quant = false } })
  q.load_model(dir)
  local config = read(dir .. "/config.json")
  write(dir .. "/config.json", (config:gsub('"bnb_4bit_quant_type": "nf4"', '"bnb_4bit_quant_type": "fp4"')))
  T.errors(function() q.load_model(dir) end, "says nf4", "bnb_4bit_quant_type says fp4")
  write(dir .. "/config.json", config)
  local tensors, meta = q.load_tensors(dir .. "/model.safetensors")
  local name
  for k in pairs(tensors) do if k:find("%.quant_map$") then name = k; break end end
  assert(name, "no quant_map saved")
  tensors[name] = q.tensor({ 1, 2, 3 })
  q.save_tensors(dir .. "/model.safetensors", tensors, meta)
  T.errors(function() q.load_model(dir) end, "quant_map", "not the 16-entry nf4 code table")
end)

T.case("JSONL: a UTF-8 byte order mark is skipped", function()
  write(tmp .. "/bom.jsonl", "\239\187\191" .. '{"input_ids": [1, 2, 3]}\n{"input_ids": [4, 5]}\n')
  local ds = q.data.jsonl(tmp .. "/bom.jsonl", {})
  T.eq(#ds, 2)
  T.eq(ds:format(), "tokens")
end)

q.rmtree(tmp)
T.done()
