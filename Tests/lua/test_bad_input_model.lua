-- Model sizes no machine can hold, or whose products overflow, are Lua errors that name the
-- function and the field, raised before anything is allocated; the process never traps.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local function cfg(over)
  local c = { vocab = 64, hidden = 64, layers = 1, heads = 4, intermediate = 64 }
  for k, v in pairs(over) do c[k] = v end
  return c
end

T.case("q.llama: sizes whose products overflow", function()
  T.errors(function() q.llama(cfg { heads = 1 << 32, kv_heads = 1 << 32, head_dim = 1 << 32 }) end,
    "qlora.llama", "num_attention_heads 4294967296 is too large")
  T.errors(function() q.llama(cfg { heads = 1, kv_heads = 1, head_dim = 9223372036854775806 }) end,
    "qlora.llama", "head_dim 9223372036854775806 is too large")
  T.errors(function() q.llama(cfg { vocab = 1 << 40 }) end, "vocab_size 1099511627776 is too large")
end)

T.case("q.llama: the function is named once", function()
  local ok, e = pcall(q.llama, cfg { vocab = 0 })
  T.eq(ok, false)
  T.eq(select(2, tostring(e):gsub("qlora%.llama:", "")), 1, "times 'qlora.llama:' appears in: " .. tostring(e))
end)

T.case("q.llama: more weights than the machine's memory is an error before allocating", function()
  -- each tensor alone is small enough to allocate; all of them are about 1 TiB of f32
  T.errors(function() q.llama(cfg { hidden = 4096, intermediate = 16384, heads = 32, layers = 1024 }) end,
    "qlora.llama", "more than this machine's memory")
  T.errors(function() q.llama(cfg { vocab = 16777215, hidden = 16777215, intermediate = 16777215, heads = 1, head_dim = 2, layers = 1024 }) end,
    "qlora.llama", "more than this machine's memory")
end)

T.case("adapter_config.json fields of the wrong type are errors, not defaults", function()
  local dir = os.tmpname(); os.remove(dir)
  local m = q.llama(cfg {})
  m:add_lora{ r = 4, alpha = 8, targets = { "q_proj" } }
  m:save_adapter(dir)
  local f = assert(io.open(dir .. "/adapter_config.json")); local text = f:read("a"); f:close()
  for _, case in ipairs({ { "lora_alpha", '"x"' }, { "lora_dropout", '"0.1"' }, { "use_rslora", "1" }, { "use_dora", '"yes"' } }) do
    local field, value = case[1], case[2]
    local edited, n = text:gsub('"' .. field .. '"%s*:%s*[^,\n}]+', '"' .. field .. '": ' .. value)
    T.eq(n, 1, "field " .. field .. " found in the saved config")
    local g = assert(io.open(dir .. "/adapter_config.json", "w")); g:write(edited); g:close()
    T.errors(function() q.llama(cfg {}):load_adapter(dir) end, "adapter_config.json", 'field "' .. field .. '" must be a')
  end
  os.execute("rm -rf '" .. dir .. "'")
end)

T.case("generate stops at max_positions (max_tokens = maxinteger does not run forever)", function()
  local m = q.llama(cfg { max_positions = 16 })
  local t0 = q.clock()
  T.eq(#m:generate({ 1, 2, 3 }, { max_tokens = math.maxinteger }), 13, "new tokens")
  assert(q.clock() - t0 < 5, "stopped at once")
  T.errors(function() m:generate({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 }, { max_tokens = 1 }) end,
    "prompt has 16 tokens", "max_position_embeddings (16)")
  T.eq(#m:generate({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 }, { max_tokens = 0 }), 0, "nothing asked")
  T.errors(function() q.llama(cfg { max_positions = 0 }) end, "qlora.llama", "max_position_embeddings must be > 0")
end)

T.case("weights config.json does not describe are reported on stderr, and loading goes on", function()
  local dir = os.tmpname(); os.remove(dir)
  q.llama(cfg { layers = 2 }):save(dir)
  local f = assert(io.open(dir .. "/config.json")); local text = f:read("a"); f:close()
  text = text:gsub('"num_hidden_layers":%s*2', '"num_hidden_layers": 1')
  f = assert(io.open(dir .. "/config.json", "w")); f:write(text); f:close()
  local script = dir .. "/load.lua"
  f = assert(io.open(script, "w"))
  f:write('local q = require "qlora"; print("layers " .. q.load_model(arg[1]):config().num_hidden_layers)\n'); f:close()
  local p = io.popen(string.format("%q run %q %q 2>&1", arg[-1], script, dir)); local out = p:read("a"); p:close()
  assert(out:find("layers 1", 1, true), out)
  assert(out:find("warning: ", 1, true) and out:find("9 tensor(s) in the weight files are not used", 1, true)
         and out:find("model.layers.1.", 1, true), out)
  -- the directory as saved loads without a warning
  q.llama(cfg { layers = 2 }):save(dir)
  p = io.popen(string.format("%q run %q %q 2>&1", arg[-1], script, dir)); out = p:read("a"); p:close()
  assert(out:find("layers 2", 1, true) and not out:find("warning", 1, true), out)
  q.rmtree(dir)
end)

T.case("token ids outside the vocab name the model function, not an internal op", function()
  local m = q.llama(cfg {})
  T.errors(function() m:forward({ -1, 2 }) end, "qlora.Model.forward: token id -1 at position 1 is out of range for a vocab of 64")
  T.errors(function() m:forward({ { 1, 64 } }) end, "qlora.Model.forward: token id 64 at position 2")
  T.errors(function() m:loss({ 1, math.maxinteger }) end, "qlora.Model.loss: token id 9223372036854775807")
  T.errors(function() m:generate({ 3, 70 }, { max_tokens = 1 }) end, "token id 70 at position 2")
  T.eq(m:loss({ 1, 2, 3 }, { -100, 2, 3 }):dim(), 0, "labels may hold -100 (ignored)")
end)

T.done()
