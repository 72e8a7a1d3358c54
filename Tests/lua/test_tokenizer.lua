-- Tokenizers from Lua: both shared fixtures (byte-level GPT-2 / Llama 3 style and SentencePiece
-- style with byte fallback) give the ids and text of the Hugging Face `tokenizers` library
-- (fixtures/tokenizers/expected.json), a Llama 3 style pipeline adds its bos, ids decode from
-- tables and integer tensors, and bad files or arguments are errors naming the problem.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/tokenizers/"
local tmp = os.tmpname() .. ".json"

local function read(path) local f = assert(io.open(path, "rb")); local s = f:read("a"); f:close(); return s end
local function write(path, s) local f = assert(io.open(path, "wb")); f:write(s); f:close() end

local function same(actual, expected, where)
  T.eq(type(actual), "table", where .. " type")
  T.eq(#actual, #expected, where .. " length")
  for i = 1, #expected do T.eq(actual[i], expected[i], where .. "[" .. i .. "]") end
end

T.case("byte-level fixture", function()
  local tok = q.tokenizer(fixtures .. "bytelevel.json")
  T.eq(tok:vocab_size(), 350, "vocab size")
  same(tok:encode("Hello world"), { 280, 338 }, "Hello world")
  same(tok:encode("the cat sat on the mat."), { 84, 302, 333, 336, 221, 324, 272, 302, 221, 326, 14 }, "cat")
  same(tok:encode("über naïve café 日本語 🙂"), { 278, 348, 334, 335, 282, 340 }, "unicode")
  same(tok:encode("x=y+1; 4.5*123"), { 88, 29, 89, 11, 17, 27, 221, 20, 14, 21, 10, 315 }, "symbols")
  same(tok:encode(""), {}, "empty")
  T.eq(tok:decode({ 280, 338 }), "Hello world")
  T.eq(tok:decode({ 278, 348, 334, 335, 282, 340 }), "über naïve café 日本語 🙂")
  local s = "  leading spaces and\ttabs\n newline"
  T.eq(tok:decode(tok:encode(s)), s, "round trip")
  -- added tokens are never split; skip_special drops them
  same(tok:encode("<|endoftext|><|endoftext|>"), { 0, 0 }, "added tokens")
  T.eq(tok:decode(tok:encode("a<|endoftext|>b"), { skip_special = true }), "ab")
  T.eq(tok:decode(tok:encode("a<|endoftext|>b")), "a<|endoftext|>b")
  T.eq(tok:bos_id(), nil, "bos"); T.eq(tok:eos_id(), 0, "eos")
  T.eq(tok:id_to_token(221), "Ġ"); T.eq(tok:token_to_id("Ġ"), 221)
  T.eq(tok:id_to_token(350), nil); T.eq(tok:token_to_id("no such token"), nil)
  T.eq(tok:is_special(0), true); T.eq(tok:is_special(221), false)
  -- ids from an integer tensor of any shape
  T.eq(tok:decode(q.tensor({ { 280 }, { 338 } }, { dtype = "i64" })), "Hello world")
  T.eq(tok:decode(q.tensor({ 280, 338 }, { dtype = "i32" })), "Hello world")
  assert(tostring(tok):find("Tokenizer", 1, true), tostring(tok))
end)

T.case("sentencepiece fixture with byte fallback", function()
  local tok = q.tokenizer(fixtures .. "sentencepiece_bpe.json")
  T.eq(tok:vocab_size(), 500, "vocab size")
  same(tok:encode("Hello world"), { 409, 431 }, "Hello world")
  same(tok:encode("unseen wörds like zyxwvut"),
    { 297, 288, 281, 286, 273, 339, 297, 290, 198, 185, 285, 272, 317, 279, 277, 278, 305, 293, 292, 291, 290, 289, 288, 287 }, "unseen")
  same(tok:encode("Tab\tTab"), { 297, 87, 269, 270, 12, 87, 269, 270 }, "tab")
  same(tok:encode("emoji 🙂🙂 end"), { 297, 273, 280, 282, 109, 277, 297, 301, 379, 339, 272 }, "emoji")
  T.eq(tok:decode({ 297, 288, 281, 286, 273, 339, 297, 290, 198, 185, 285, 272, 317, 279, 277, 278, 305, 293, 292, 291, 290, 289, 288, 287 }),
    "unseen wörds like zyxwvut")
  T.eq(tok:decode(tok:encode("  leading spaces and\ttabs\n newline")), "  leading spaces and\ttabs\n newline")
  T.eq(tok:bos_id(), 1); T.eq(tok:eos_id(), 2)
  same(tok:eos_ids(), { 2 }, "eos ids")
  T.eq(tok:id_to_token(198), "<0xC3>")
end)

T.case("llama 3 style pipeline adds bos", function()
  local tok = q.tokenizer(fixtures .. "pipelines/llama3_style.json")
  local bos = tok:token_to_id("<|begin_of_text|>")
  T.eq(tok:bos_id(), bos)
  local ids = tok:encode("Hello world")
  T.eq(ids[1], bos, "first id")
  local plain = tok:encode("Hello world", { special = false })
  T.eq(#ids, #plain + 1)
  T.eq(tok:decode(ids, { skip_special = true }), "Hello world")
  T.eq(tok:decode(ids), "<|begin_of_text|>Hello world")
end)

T.case("bad input", function()
  T.errors(function() q.tokenizer(fixtures .. "missing.json") end, "qlora.tokenizer", "missing.json", "cannot open")
  local text = read(fixtures .. "sentencepiece_bpe.json")
  write(tmp, (text:gsub('"type": *"BPE"', '"type": "Unigram"', 1)))
  T.errors(function() q.tokenizer(tmp) end, "qlora.tokenizer: " .. tmp, 'unsupported model type "Unigram" (qlora supports BPE)')
  write(tmp, text:sub(1, 1000))
  T.errors(function() q.tokenizer(tmp) end, "qlora.tokenizer", tmp, "invalid JSON")
  write(tmp, (text:gsub('"merges": %[%s*%[%s*"a",%s*"n"%s*%]', '"merges": [["a", "zzz"]', 1)))
  T.errors(function() q.tokenizer(tmp) end, "model.merges[0]", '"zzz" is not in the vocab')
  os.remove(tmp)
  local tok = q.tokenizer(fixtures .. "bytelevel.json")
  T.errors(function() tok:decode({ 99999 }) end, "id 99999", "vocab size 350")
  T.errors(function() tok:decode({ 1, "x" }) end, "ids entry 2 must be an integer")
  T.errors(function() tok:decode(q.ones(2)) end, "integer tensor")
  T.errors(function() tok:decode("abc") end, "a table of ids or an integer tensor")
  T.errors(function() tok:encode(5) end, "expected a string as argument 2")
  T.errors(function() tok:encode("\xff\xfe") end, "not valid UTF-8")
  T.errors(function() tok:encode("x", { specal = true }) end, "unknown option 'specal'")
end)

T.done()
