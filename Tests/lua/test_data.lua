-- Datasets and batches: JSONL and in-memory rows in the four formats (text, completions, chat,
-- tokens) tokenize to exactly tok:encode of the same strings, with prompt masking, truncation,
-- eos, packing (segment ids, positions), padded batches, deterministic splits and shuffles, exact
-- resumption, and errors naming the file, line and problem.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local here = arg[0]:match("(.*/)") or "./"
local data = here .. "../fixtures/data/"
local tok = q.tokenizer(here .. "../fixtures/tokenizers/bytelevel.json")
local EOS = tok:eos_id()

local function same(actual, expected, where)
  T.eq(type(actual), "table", where .. " type")
  T.eq(#actual, #expected, where .. " length")
  for i = 1, #expected do T.eq(actual[i], expected[i], where .. "[" .. i .. "]") end
end

-- ids and labels the dataset should produce from segments {text, trained} (+ eos, trained);
-- the first label is always -100 (nothing predicts the first token).
local function expect(segs, opts)
  opts = opts or {}
  local ids, labels = {}, {}
  for k, s in ipairs(segs) do
    local enc = tok:encode(s[1], { special = k == 1 })
    for _, id in ipairs(enc) do
      ids[#ids + 1] = id
      labels[#labels + 1] = (s[2] or opts.nomask) and id or -100
    end
  end
  if opts.eos ~= false then ids[#ids + 1] = EOS; labels[#labels + 1] = EOS end
  labels[1] = -100
  return ids, labels
end

local function check(ds, i, segs, opts, where)
  local ex = ds:get(i)
  local ids, labels = expect(segs, opts)
  same(ex.input_ids, ids, where .. " ids")
  same(ex.labels, labels, where .. " labels")
end

T.case("text format", function()
  local ds = q.data.jsonl(data .. "text.jsonl", { format = "text", tokenizer = tok })
  T.eq(#ds, 3, "examples (blank line ignored)")
  check(ds, 1, { { "Hello world", true } }, nil, "1")
  check(ds, 2, { { "the cat sat on the mat.", true } }, nil, "2")
  check(ds, 3, { { "x=y+1; 4.5*123", true } }, nil, "3")
  T.eq(ds:format(), "text"); T.eq(ds:packed(), false); T.eq(ds:bad_lines(), 0)
  local noeos = q.data.jsonl(data .. "text.jsonl", { tokenizer = tok, add_eos = false })
  T.eq(noeos:format(), "text", "detected format")
  check(noeos, 1, { { "Hello world", true } }, { eos = false }, "no eos")
  assert(tostring(ds):find("Dataset", 1, true))
end)

T.case("completions format, masking, field names", function()
  local ds = q.data.jsonl(data .. "completions.jsonl", { format = "completions", tokenizer = tok })
  T.eq(#ds, 3)
  check(ds, 1, { { "Q: 2+2?\nA:", false }, { " 4", true } }, nil, "1")
  check(ds, 2, { { "Hello", false }, { " world", true } }, nil, "2")
  local unmasked = q.data.jsonl(data .. "completions.jsonl", { format = "completions", tokenizer = tok, mask_prompt = false })
  check(unmasked, 3, { { "the cat", true }, { " sat on the mat.", true } }, nil, "unmasked")
  local f = q.data.jsonl(data .. "completions_fields.jsonl",
    { format = "completions", tokenizer = tok, prompt_field = "question", completion_field = "answer" })
  check(f, 1, { { "Hello", false }, { " world", true } }, nil, "fields")
end)

T.case("chat format: default template and a Lua template", function()
  local ds = q.data.jsonl(data .. "chat.jsonl", { format = "chat", tokenizer = tok })
  T.eq(#ds, 2)
  check(ds, 1, { { "<|user|>\n", false }, { "Hello\n", false }, { "<|assistant|>\n", false }, { "world\n", true } }, nil, "1")
  check(ds, 2, { { "<|system|>\n", false }, { "Be brief.\n", false }, { "<|user|>\n", false }, { "the cat?\n", false },
    { "<|assistant|>\n", false }, { "sat.\n", true } }, nil, "2")
  -- template -> prompt, completion
  local seen
  local t2 = q.data.jsonl(data .. "chat.jsonl", { format = "chat", tokenizer = tok, template = function(msgs)
    seen = msgs
    local p = {}
    for i = 1, #msgs - 1 do p[#p + 1] = msgs[i].role .. ": " .. msgs[i].content .. "\n" end
    return table.concat(p) .. "assistant:", " " .. msgs[#msgs].content
  end })
  T.eq(seen[3].role, "assistant"); T.eq(seen[3].content, "sat.")
  check(t2, 1, { { "user: Hello\nassistant:", false }, { " world", true } }, nil, "template pair")
  -- template -> one text: all trained
  local t1 = q.data.from_table({ { messages = { { role = "user", content = "Hello" } } } },
    { format = "chat", tokenizer = tok, template = function(m) return m[1].content .. " world" end })
  check(t1, 1, { { "Hello world", true } }, nil, "template text")
  -- template -> segments
  local t3 = q.data.from_table({ { messages = { { role = "user", content = "Hello" } } } },
    { format = "chat", tokenizer = tok, template = function(m) return { { text = "Hello", train = false }, { text = " world", train = true } } end })
  check(t3, 1, { { "Hello", false }, { " world", true } }, nil, "template segments")
  T.errors(function() q.data.from_table({ { messages = { { role = "user", content = "x" } } } },
    { format = "chat", tokenizer = tok, template = function() error("boom") end }) end, "row 1", "template failed", "boom")
end)

T.case("tokens format", function()
  local ds = q.data.jsonl(data .. "tokens.jsonl", { format = "tokens" })
  T.eq(#ds, 3)
  same(ds:get(1).input_ids, { 5, 6, 7, 8 }, "ids"); same(ds:get(1).labels, { -100, 6, 7, 8 }, "labels")
  same(ds:get(2).labels, { -100, 10 }, "given labels")
  T.eq(ds:num_tokens(), 9)
  local tr = q.data.jsonl(data .. "tokens.jsonl", { format = "tokens", max_len = 2 })
  same(tr:get(1).input_ids, { 5, 6 }, "truncated")
  T.errors(function() q.data.from_table({ { input_ids = { 1, 400 } } }, { format = "tokens", tokenizer = tok }) end,
    "row 1", "token id 400 is out of range")
  T.errors(function() q.data.from_table({ { input_ids = { 1, 2 }, labels = { 1 } } }, { format = "tokens" }) end,
    "row 1", "\"labels\" has 1 entries")
end)

T.case("from_table and the model as tokenizer source", function()
  local ds = q.data.from_table({ { text = "Hello world" }, { prompt = "x" } }, { format = "text", tokenizer = tok, on_bad_line = "skip" })
  T.eq(#ds, 1); T.eq(ds:bad_lines(), 1)
  check(ds, 1, { { "Hello world", true } }, nil, "row")
  T.errors(function() q.data.from_table({ { text = "a" }, { text = 3 } }, { format = "text", tokenizer = tok }) end,
    "row 2", "field \"text\" is not a string")
  T.errors(function() q.data.from_table({ { text = "a" } }, { format = "text", tokenizer = q.llama { vocab = 8, hidden = 8,
    layers = 1, heads = 1, intermediate = 8 } }) end, "the model has no tokenizer")
  T.errors(function() q.data.from_table({ { text = "a" } }, { format = "text" }) end, "needs a tokenizer")
  T.errors(function() q.data.from_table({}, { format = "text", tokenizer = tok }) end, "empty")
  T.errors(function() q.data.from_table({ { text = "a" } }, { format = "text", tokenizer = tok, colour = 1 }) end, "unknown option 'colour'")
end)

T.case("truncation", function()
  local full = q.data.jsonl(data .. "text.jsonl", { format = "text", tokenizer = tok })
  local ds = q.data.jsonl(data .. "text.jsonl", { format = "text", tokenizer = tok, max_len = 4 })
  local ids = full:get(2).input_ids
  same(ds:get(2).input_ids, { ids[1], ids[2], ids[3], ids[4] }, "first 4")
  T.eq(#ds:get(1).input_ids, 3, "short example untouched")
end)

T.case("packing: segments and positions", function()
  local full = q.data.jsonl(data .. "text.jsonl", { format = "text", tokenizer = tok })
  local stream, seglen = {}, {}
  for i = 1, #full do
    local e = full:get(i).input_ids
    seglen[i] = #e
    for _, v in ipairs(e) do stream[#stream + 1] = v end
  end
  local L = 8
  local ds = q.data.jsonl(data .. "text.jsonl", { format = "text", tokenizer = tok, max_len = L, pack = true })
  T.eq(ds:packed(), true)
  T.eq(#ds, math.ceil(#stream / L), "sequences")
  -- rebuild the expected segment ids / positions / labels by walking the stream
  local ex, inex, k = 1, 0, 0
  for s = 1, #ds do
    local g = ds:get(s)
    if s < #ds then T.eq(#g.input_ids, L, "full sequence") end
    local seg, pos = 0, 0
    for t = 1, #g.input_ids do
      k = k + 1
      if inex == seglen[ex] then ex = ex + 1; inex = 0 end
      local starts = inex == 0 or t == 1
      if starts then seg = seg + 1; pos = 0 end
      T.eq(g.input_ids[t], stream[k], "id " .. k)
      T.eq(g.segment_ids[t], seg, "segment " .. k)
      T.eq(g.position_ids[t], pos, "position " .. k)
      if starts then T.eq(g.labels[t], -100, "segment start label " .. k) else T.eq(g.labels[t], stream[k], "label " .. k) end
      pos = pos + 1; inex = inex + 1
    end
  end
  T.eq(k, #stream, "all tokens")
  -- batches carry segment_ids (i32) and position_ids (i64)
  local b = ds:batches { size = 2, shuffle = false }:next()
  T.eq(b.segment_ids:dtype(), "i32"); T.eq(b.position_ids:dtype(), "i64")
  same(b.position_ids:totable()[1], ds:get(1).position_ids, "batch positions")
  same(b.segment_ids:totable()[2], ds:get(2).segment_ids, "batch segments")
  T.errors(function() q.data.jsonl(data .. "text.jsonl", { format = "text", tokenizer = tok, pack = true }) end, "pack = true needs max_len")
end)

T.case("batches: padding, labels, mask, tokens", function()
  local ds = q.data.jsonl(data .. "text.jsonl", { format = "text", tokenizer = tok })
  local it = ds:batches { size = 2, shuffle = false }
  T.eq(it:num_batches(), 2)
  local b = it:next()
  T.eq(b.input_ids:dtype(), "i64"); T.eq(b.labels:dtype(), "i64"); T.eq(b.attention_mask:dtype(), "i32")
  local a, c = ds:get(1), ds:get(2)
  local Tn = math.max(#a.input_ids, #c.input_ids)
  same(b.input_ids:shape(), { 2, Tn }, "shape")
  local ids, labels, mask = b.input_ids:totable(), b.labels:totable(), b.attention_mask:totable()
  local pad = tok:pad_id() or 0
  local want = 0
  for r, e in ipairs({ a, c }) do
    for t = 1, Tn do
      if t <= #e.input_ids then
        T.eq(ids[r][t], e.input_ids[t]); T.eq(labels[r][t], e.labels[t]); T.eq(mask[r][t], 1)
        if t > 1 and e.labels[t] ~= -100 then want = want + 1 end
      else
        T.eq(ids[r][t], pad, "pad id"); T.eq(labels[r][t], -100, "pad label"); T.eq(mask[r][t], 0, "pad mask")
      end
    end
  end
  T.eq(b.tokens, want, "tokens")
  T.eq(b.segment_ids, nil, "no segments unpacked")
  local last = it:next()
  same(last.input_ids:shape(), { 1, #ds:get(3).input_ids }, "last batch")
  T.eq(it:next(), nil, "end of epoch")
  T.eq(it:epoch(), 1); T.eq(it:position(), 0)
  local dl = ds:batches { size = 2, drop_last = true, shuffle = false }
  T.eq(dl:num_batches(), 1)
  assert(dl:next()); T.eq(dl:next(), nil)
  local n = 0
  for batch in ds:batches { size = 1 }:iter() do n = n + batch.input_ids:shape()[1] end
  T.eq(n, 3, "iter covers the epoch")
  T.errors(function() ds:batches { size = 0 } end, "batch size must be >= 1")
  T.errors(function() ds:batches {} end, "missing option 'size'")
end)

local function orderOf(it)
  local out = {}
  while true do
    local b = it:next()
    if not b then break end
    for _, i in ipairs(b.indices) do out[#out + 1] = i end
  end
  return table.concat(out, ",")
end

T.case("shuffle determinism by seed and epoch", function()
  local rows = {}
  for i = 1, 20 do rows[i] = { input_ids = { i, i + 1 } } end
  local ds = q.data.from_table(rows, { format = "tokens" })
  local a, b = ds:batches { size = 3, seed = 7 }, ds:batches { size = 3, seed = 7 }
  local a0, b0 = orderOf(a), orderOf(b)
  T.eq(a0, b0, "same seed, same order")
  local a1 = orderOf(a)
  assert(a1 ~= a0, "epoch 1 differs from epoch 0")
  T.eq(orderOf(b), a1, "epoch 1 same for same seed")
  assert(orderOf(ds:batches { size = 3, seed = 8 }) ~= a0, "another seed, another order")
  local c = ds:batches { size = 3, seed = 7 }; c:reset(1)
  T.eq(orderOf(c), a1, "epoch order depends only on (seed, epoch)")
  T.eq(orderOf(ds:batches { size = 3, shuffle = false }), "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20")
  -- every example once per epoch
  local seen = {}
  for i in a0:gmatch("%d+") do seen[#seen + 1] = tonumber(i) end
  table.sort(seen)
  T.eq(table.concat(seen, ","), "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20")
end)

T.case("set_position resumes exactly", function()
  local rows = {}
  for i = 1, 11 do rows[i] = { input_ids = { i } } end
  local ds = q.data.from_table(rows, { format = "tokens" })
  local it = ds:batches { size = 2, seed = 3 }
  orderOf(it) -- finish epoch 0
  it:next(); it:next()
  local e, p = it:epoch(), it:position()
  T.eq(e, 1); T.eq(p, 2)
  local rest = orderOf(it)
  local again = ds:batches { size = 2, seed = 3 }
  again:set_position(p, e)
  T.eq(orderOf(again), rest, "resumed order")
  T.eq(again:epoch(), 2)
  T.errors(function() again:set_position(99) end, "position must be in 0...6")
end)

T.case("split", function()
  local rows = {}
  for i = 1, 10 do rows[i] = { input_ids = { i } } end
  local ds = q.data.from_table(rows, { format = "tokens" })
  local tr, va = ds:split(0.8, { seed = 1 })
  T.eq(#tr, 8); T.eq(#va, 2)
  local function ids(d) local o = {} for i = 1, #d do o[i] = d:get(i).input_ids[1] end return table.concat(o, ",") end
  local tr2, va2 = ds:split(0.8, { seed = 1 })
  T.eq(ids(tr), ids(tr2)); T.eq(ids(va), ids(va2))
  local all = {}
  for v in (ids(tr) .. "," .. ids(va)):gmatch("%d+") do all[#all + 1] = tonumber(v) end
  table.sort(all)
  T.eq(table.concat(all, ","), "1,2,3,4,5,6,7,8,9,10", "a partition")
  T.errors(function() ds:split(1.5) end, "split fraction must be in (0, 1)")
  T.errors(function() ds:split(0.01) end, "leaves an empty part")
end)

T.case("errors name the file, line and problem", function()
  T.errors(function() q.data.jsonl(data .. "bad_json.jsonl", { format = "text", tokenizer = tok }) end,
    "bad_json.jsonl: line 3: invalid JSON at byte")
  local ds = q.data.jsonl(data .. "bad_json.jsonl", { format = "text", tokenizer = tok, on_bad_line = "skip" })
  T.eq(#ds, 3); T.eq(ds:bad_lines(), 1)
  T.errors(function() q.data.jsonl(data .. "missing_field.jsonl", { format = "completions", tokenizer = tok }) end,
    "missing_field.jsonl: line 2: missing field \"completion\"")
  T.errors(function() q.data.jsonl(data .. "not_string.jsonl", { format = "text", tokenizer = tok }) end,
    "not_string.jsonl: line 2: field \"text\" is not a string")
  T.errors(function() q.data.jsonl(data .. "bad_utf8.jsonl", { format = "text", tokenizer = tok }) end,
    "bad_utf8.jsonl: line 2: line is not valid UTF-8")
  T.eq(#q.data.jsonl(data .. "bad_utf8.jsonl", { format = "text", tokenizer = tok, on_bad_line = "skip" }), 2)
  T.errors(function() q.data.jsonl(data .. "empty.jsonl", { format = "text", tokenizer = tok }) end, "empty.jsonl", "empty")
  T.errors(function() q.data.jsonl(data .. "no_such.jsonl", { format = "text", tokenizer = tok }) end, "no_such.jsonl", "cannot open")
  local mf = q.data.jsonl(data .. "missing_field.jsonl", { format = "completions", tokenizer = tok, on_bad_line = "skip" })
  T.eq(#mf, 2); T.eq(mf:bad_lines(), 1)
  T.errors(function() q.data.jsonl(data .. "text.jsonl", { format = "nope", tokenizer = tok }) end, "unknown format \"nope\"")
  T.errors(function() q.data.jsonl(data .. "text.jsonl", { format = "text", tokenizer = tok, on_bad_line = "warn" }) end, "on_bad_line")
  T.errors(function() ds:get(0) end, "out of range")
end)

T.done()
