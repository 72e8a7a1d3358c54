-- safetensors from Lua: round trips of every dtype with metadata, a file written by the real
-- peers (the tiny Llama from transformers), and corrupted files that must be errors, not crashes.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local here = arg[0]:match("(.*/)") or "./"
local fixtures = here .. "../fixtures/"
local tmp = os.tmpname() .. ".safetensors"

local function read(path) local f = assert(io.open(path, "rb")); local s = f:read("a"); f:close(); return s end
local function write(path, s) local f = assert(io.open(path, "wb")); f:write(s); f:close() end

T.case("round trip of every dtype, 0-d and empty tensors, metadata", function()
  local src = {
    f = q.randn({ 3, 5 }, { seed = 1 }),
    b = q.randn({ 4 }, { seed = 2, dtype = "bf16" }),
    h = q.randn({ 2, 2 }, { seed = 3, dtype = "f16" }),
    i = q.tensor({ -1, 2, 2147483647 }, { dtype = "i32" }),
    l = q.tensor({ 1 << 40, -5 }, { dtype = "i64" }),
    u = q.tensor({ 0, 255 }, { dtype = "u8" }),
    s = q.tensor(3.25),
    e = q.zeros({ 0, 4 }),
  }
  q.save_tensors(tmp, src, { format = "pt", who = "qlora" })
  local back, meta = q.load_tensors(tmp)
  T.eq(meta.format, "pt"); T.eq(meta.who, "qlora")
  for name, t in pairs(src) do
    local u = back[name]
    assert(u, "missing " .. name)
    T.eq(u:dtype(), t:dtype(), name .. " dtype")
    T.close(u:shape(), t:shape(), 0, 0, name .. " shape")
    T.close(u:totable(), t:totable(), 0, 0, name .. " values")
  end
  -- header is padded to 8 bytes; tensors are laid out widest element first, by name within a width
  local bytes = read(tmp)
  local n = string.unpack("<I8", bytes)
  T.eq(n % 8, 0, "header length mod 8")
  local header = bytes:sub(9, 8 + n)
  assert(header:find('"l"') < header:find('"e"') and header:find('"e"') < header:find('"f"')
         and header:find('"f"') < header:find('"b"') and header:find('"b"') < header:find('"h"')
         and header:find('"h"') < header:find('"u"'), header)
end)

T.case("every tensor starts at a multiple of its element size (so readers can map it in place)", function()
  q.save_tensors(tmp, { a_bytes = q.ones({ 3 }, { dtype = "u8" }), b_half = q.ones({ 3 }, { dtype = "bf16" }),
                        c_float = q.ones({ 5 }), d_long = q.ones({ 1 }, { dtype = "i64" }) })
  local bytes = read(tmp)
  local n = string.unpack("<I8", bytes)
  T.eq(n % 8, 0)
  local header = bytes:sub(9, 8 + n)
  local widths = { a_bytes = 1, b_half = 2, c_float = 4, d_long = 8 }
  for name, w in pairs(widths) do
    local start = tonumber(header:match('"' .. name .. '":{[^}]*"data_offsets":%[(%d+),'))
    assert(start, name .. " missing from the header")
    T.eq(start % w, 0, name .. " offset " .. start)
  end
  local back = q.load_tensors(tmp)
  T.eq(back.c_float:sum():item(), 5)
  T.eq(back.b_half:dtype(), "bf16")
end)

T.case("a file written by transformers", function()
  local w = q.load_tensors(fixtures .. "tiny-llama/model.safetensors")
  local emb = w["model.embed_tokens.weight"]
  T.close(emb:shape(), { 256, 64 }); T.eq(emb:dtype(), "f32")
  T.close(w["model.layers.0.self_attn.k_proj.weight"]:shape(), { 32, 64 })
  T.close(w["model.layers.1.mlp.down_proj.weight"]:shape(), { 64, 192 })
  assert(emb:abs():max():item() > 0)
  -- a loaded (mapped) tensor can be changed without touching the file
  local before = read(fixtures .. "tiny-llama/model.safetensors")
  local y = emb * 2
  T.close((y / 2 - emb):abs():max():item(), 0)
  T.eq(read(fixtures .. "tiny-llama/model.safetensors"), before)
end)

T.case("corrupted files are errors", function()
  q.save_tensors(tmp, { a = q.randn({ 4, 3 }, { seed = 5 }), b = q.ones({ 7 }, { dtype = "i64" }) }, { k = "v" })
  local good = read(tmp)
  local bad = tmp .. ".bad"
  local state = 12345
  local function rnd(n) state = (state * 1103515245 + 12345) % 2147483648; return state % n end
  local errors, loaded = 0, 0
  for i = 1, 300 do
    local s
    local kind = i % 3
    if kind == 0 then
      s = good:sub(1, rnd(#good))                       -- truncation
    elseif kind == 1 then
      local p = rnd(#good) + 1                          -- a flipped byte
      s = good:sub(1, p - 1) .. string.char(rnd(256)) .. good:sub(p + 1)
    else
      local n = string.unpack("<I8", good)              -- a lying header length
      s = string.pack("<I8", (n + rnd(64) - 32) % (1 << 40)) .. good:sub(9)
    end
    write(bad, s)
    local ok, err = pcall(q.load_tensors, bad)
    if ok then loaded = loaded + 1 else
      errors = errors + 1
      assert(tostring(err):find("qlora.load_tensors", 1, true), err)
    end
  end
  assert(errors > 200, "only " .. errors .. " of 300 corruptions were rejected")
  os.remove(bad)
end)

os.remove(tmp)
T.done()
