// q.tasks, written in Lua and embedded: seeded synthetic string tasks for experiments that must
// run anywhere without downloads (the quickstart pre-trains a base on some operations and
// fine-tunes LoRA on another). An example is the text "<op>: <word> > <answer>" over a small
// alphabet; a character-level tokenizer for it is written as a Hugging Face tokenizer.json.
// Exact-match accuracy is measured by greedy generation.

let tasksSource = #"""
local q = ...

local tasks = {}
q.tasks = tasks

-- Errors point at the first caller outside this chunk (the user's script), however deep inside
-- q.tasks they are raised; the level argument of older call sites is ignored.
local here = debug.getinfo(1, "S").source
local function fail(fn, msg)
  local k = 2  -- levels as error() counts them: 1 is fail itself, 2 its caller, ...
  while true do
    local info = debug.getinfo(k, "S")
    if info == nil then k = 0; break end
    if info.source ~= here then break end
    k = k + 1
  end
  error("qlora.tasks." .. fn .. ": " .. msg, k)
end

-- The token list of the character-level tokenizer, in id order (ids are 0-based):
-- 0 "<unk>", 1 "<s>", 2 "</s>" (special), 3 " ", 4 ":", 5 ">", 6.. "a" to "z".
tasks.vocab = { "<unk>", "<s>", "</s>", " ", ":", ">" }
for c in ("abcdefghijklmnopqrstuvwxyz"):gmatch(".") do tasks.vocab[#tasks.vocab + 1] = c end

tasks.defaults = { alphabet = "abcdefghij", min_len = 3, max_len = 6 }
-- The limits tasks.examples checks before drawing: examples, a word's length, letters over all.
tasks.max_examples = 1 << 22
tasks.max_word_len = 4096
tasks.max_letters = 1 << 26

-- The operations, word -> answer (the alphabet is passed for those that need its order). Add
-- your own: tasks.ops.double = function(w) return w .. w end.
tasks.ops = {
  copy = function(w) return w end,
  reverse = function(w) return w:reverse() end,
  -- each letter to the next one in the alphabet, the last wrapping to the first: "aj" -> "ba"
  shift = function(w, alphabet)
    return (w:gsub(".", function(c)
      local i = alphabet:find(c, 1, true)
      return alphabet:sub(i % #alphabet + 1, i % #alphabet + 1)
    end))
  end,
  sort = function(w) local t = {} for c in w:gmatch(".") do t[#t + 1] = c end table.sort(t) return table.concat(t) end,
  -- neighbours swapped in pairs: "abcde" -> "badce"
  swap = function(w) return (w:gsub("(.)(.)", "%2%1")) end,
  first = function(w) return w:sub(1, 1) end,
  last = function(w) return w:sub(-1) end,
}

-- A seeded stream (splitmix64 on Lua's wrapping 64-bit integers): the same seed gives the same
-- examples on every machine, and math.random is left alone.
local function stream(seed)
  local state = seed
  return function(n) -- an integer in [1, n]
    state = state + 0x9E3779B97F4A7C15
    local z = state
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return (z >> 11) % n + 1
  end
end

local function check_options(fn, o, allowed)
  if type(o) ~= "table" then fail(fn, "expected a table of options, got " .. type(o), 3) end
  for k in pairs(o) do
    if not allowed[k] then fail(fn, "unknown option '" .. tostring(k) .. "'", 3) end
  end
end

local function int_option(fn, o, k, default, min)
  local v = o[k]
  if v == nil then return default end
  if math.type(v) ~= "integer" or v < min then fail(fn, "option '" .. k .. "' must be an integer >= " .. min .. ", got " .. tostring(v), 3) end
  return v
end

-- tasks.text(op, word [, alphabet]) -> prompt, completion: "copy: abc >", " abc".
function tasks.text(op, word, alphabet)
  local f = tasks.ops[op]
  if f == nil then fail("text", "unknown op '" .. tostring(op) .. "'", 2) end
  alphabet = alphabet or tasks.defaults.alphabet
  if type(alphabet) ~= "string" or not alphabet:match("^[a-z][a-z]+$") then
    fail("text", "the alphabet must be at least two letters a-z, got " .. tostring(alphabet), 2)
  end
  if type(word) ~= "string" or word == "" then fail("text", "the word must be a non-empty string, got " .. tostring(word), 2) end
  local bad = word:match("[^" .. alphabet .. "]")
  if bad then fail("text", "the word '" .. word .. "' has '" .. bad .. "', which is not in the alphabet '" .. alphabet .. "'", 2) end
  return op .. ": " .. word .. " >", " " .. f(word, alphabet)
end

-- tasks.examples{ops, n, seed, alphabet, min_len, max_len, exclude} -> a list of
-- {prompt, completion, op, word}: each example draws an op uniformly from `ops`, a length
-- uniformly in [min_len, max_len] and each letter uniformly from the alphabet. `exclude` (a list
-- of examples) keeps held-out sets apart: no (op, word) of it is drawn.
local example_options = { ops = true, n = true, seed = true, alphabet = true, min_len = true, max_len = true, exclude = true }
function tasks.examples(o)
  check_options("examples", o, example_options)
  local ops = o.ops
  if type(ops) == "string" then ops = { ops } end
  if type(ops) ~= "table" or #ops == 0 then fail("examples", "option 'ops' must be an op name or a non-empty list of them", 2) end
  for _, name in ipairs(ops) do
    if type(name) ~= "string" or not name:match("^[a-z]+$") then
      fail("examples", "op names must be lowercase letters a-z (they are part of the text), got " .. tostring(name), 2)
    end
    if tasks.ops[name] == nil then
      local known = {}
      for k in pairs(tasks.ops) do known[#known + 1] = k end
      table.sort(known)
      fail("examples", "unknown op '" .. tostring(name) .. "' (known: " .. table.concat(known, ", ") .. ")", 2)
    end
  end
  local n = int_option("examples", o, "n", 1000, 1)
  local seed = int_option("examples", o, "seed", 0, 0)
  local alphabet = o.alphabet or tasks.defaults.alphabet
  if type(alphabet) ~= "string" or #alphabet < 2 or not alphabet:match("^[a-z]+$") then
    fail("examples", "option 'alphabet' must be at least two letters a-z, got " .. tostring(alphabet), 2)
  end
  for i = 1, #alphabet do
    if alphabet:find(alphabet:sub(i, i), i + 1, true) then fail("examples", "the alphabet repeats '" .. alphabet:sub(i, i) .. "'", 2) end
  end
  local min_len = int_option("examples", o, "min_len", tasks.defaults.min_len, 1)
  local max_len = int_option("examples", o, "max_len", tasks.defaults.max_len, min_len)
  -- Bounded up front, before anything is drawn: words of at most tasks.max_word_len letters and
  -- at most tasks.max_letters letters over all examples.
  if max_len > tasks.max_word_len then
    fail("examples", "option 'max_len' must be at most " .. tasks.max_word_len .. " (tasks.max_word_len), got " .. max_len, 2)
  end
  if n > tasks.max_examples then
    fail("examples", "option 'n' must be at most " .. tasks.max_examples .. " (tasks.max_examples), got " .. n, 2)
  end
  if n > tasks.max_letters // max_len then
    fail("examples", n .. " examples of up to " .. max_len .. " letters are more than tasks.max_letters (" ..
      tasks.max_letters .. ") letters", 2)
  end
  local excluded = {}
  if o.exclude ~= nil and type(o.exclude) ~= "table" then fail("examples", "option 'exclude' must be a list of examples", 2) end
  for i, e in ipairs(o.exclude or {}) do
    if type(e) ~= "table" or type(e.op) ~= "string" or type(e.word) ~= "string" then
      fail("examples", "exclude[" .. i .. "] must be an example {op =, word =, ...}, got " .. tostring(e), 2)
    end
    excluded[e.op .. ":" .. e.word] = true
  end
  local draw = stream(seed)
  local out, attempts = {}, 0
  while #out < n do
    attempts = attempts + 1
    if attempts > 100 * n + 1000 then
      fail("examples", "cannot draw " .. n .. " examples outside 'exclude' (the alphabet and lengths allow too few words)", 2)
    end
    local op = ops[draw(#ops)]
    local len = min_len + draw(max_len - min_len + 1) - 1
    local letters = {}
    for i = 1, len do local k = draw(#alphabet); letters[i] = alphabet:sub(k, k) end
    local word = table.concat(letters)
    if not excluded[op .. ":" .. word] then
      local prompt, completion = tasks.text(op, word, alphabet)
      out[#out + 1] = { prompt = prompt, completion = completion, op = op, word = word }
    end
  end
  return out
end

-- tasks.save_tokenizer(dir): the character-level tokenizer as dir/tokenizer.json (a BPE with no
-- merges over tasks.vocab, a Fuse decoder, no bos added) and dir/tokenizer_config.json.
-- Returns the vocabulary size.
function tasks.save_tokenizer(dir)
  if type(dir) ~= "string" then fail("save_tokenizer", "expected a directory path", 2) end
  local vocab, added = {}, {}
  for i, t in ipairs(tasks.vocab) do vocab[#vocab + 1] = string.format('"%s": %d', t, i - 1) end
  for i = 1, 3 do
    added[#added + 1] = string.format('{"id": %d, "content": "%s", "single_word": false, "lstrip": false, ' ..
      '"rstrip": false, "normalized": false, "special": true}', i - 1, tasks.vocab[i])
  end
  local json = '{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [' .. table.concat(added, ", ") ..
    '], "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": {"type": "Fuse"}, ' ..
    '"model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "fuse_unk": false, "byte_fallback": false, ' ..
    '"vocab": {' .. table.concat(vocab, ", ") .. '}, "merges": []}}\n'
  local ok, err = pcall(q.mkdir, dir)
  if not ok then fail("save_tokenizer", tostring(err):gsub(" %(qlora%.tasks:%d+%)$", "")) end
  local function write(name, text)
    local ok, err = pcall(q.write_file, dir .. "/" .. name, text)
    if not ok then fail("save_tokenizer", tostring(err):gsub("^qlora%.write_file: ", ""):gsub(" %(qlora%.tasks:%d+%)$", "")) end
  end
  write("tokenizer.json", json)
  write("tokenizer_config.json", '{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"}\n')
  return #tasks.vocab
end

-- tasks.dataset(examples, tokenizer [, data options]): q.data.from_table in the completions
-- format, the prompt masked (only the answer and eos are trained) unless the options say otherwise.
function tasks.dataset(examples, tokenizer, opts)
  local o = { format = "completions", mask_prompt = true }
  for k, v in pairs(opts or {}) do o[k] = v end
  o.tokenizer = tokenizer
  return q.data.from_table(examples, o)
end

-- tasks.accuracy(model, examples [, {tokenizer, max_tokens}]) -> fraction, results: the share of
-- examples whose greedy generation (cut at the first eos) equals the completion exactly, and
-- per example {prompt, expected, got, ok}. The tokenizer defaults to the model's own.
function tasks.accuracy(model, examples, opts)
  opts = opts or {}
  check_options("accuracy", opts, { tokenizer = true, max_tokens = true })
  local tok = opts.tokenizer or model:tokenizer()
  if tok == nil then fail("accuracy", "the model has no tokenizer: pass {tokenizer = ...}", 2) end
  if type(examples) ~= "table" or #examples == 0 then fail("accuracy", "expected a non-empty list of examples", 2) end
  local eos = {}
  for _, id in ipairs(tok:eos_ids()) do eos[id] = true end
  local was = model:train(false)
  local right, results = 0, {}
  for i, e in ipairs(examples) do
    local ids = model:generate(tok:encode(e.prompt), { max_tokens = opts.max_tokens or (#e.completion + 2), temperature = 0 })
    local kept = {}
    for _, id in ipairs(ids) do if eos[id] then break end kept[#kept + 1] = id end
    local got = tok:decode(kept)
    local ok = got == e.completion
    if ok then right = right + 1 end
    results[i] = { prompt = e.prompt, expected = e.completion, got = got, ok = ok }
  end
  model:train(was)
  return right / #examples, results
end

return q
"""#
