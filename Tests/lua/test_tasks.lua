-- q.tasks: seeded synthetic examples (exact text of known seeds, the grammar, held-out sets kept
-- apart), every op, the character-level tokenizer round trip, datasets with the prompt masked,
-- exact-match accuracy by greedy generation, and errors.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local made = {}
local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); made[#made + 1] = d; return d end

T.case("the same seed gives the same examples; the text follows the grammar", function()
  local a = q.tasks.examples{ ops = { "copy", "reverse" }, n = 200, seed = 5 }
  local b = q.tasks.examples{ ops = { "copy", "reverse" }, n = 200, seed = 5 }
  local c = q.tasks.examples{ ops = { "copy", "reverse" }, n = 200, seed = 6 }
  T.eq(#a, 200, "count")
  local same, differ = true, 0
  local ops, lengths = {}, {}
  for i = 1, 200 do
    if a[i].prompt ~= b[i].prompt then same = false end
    if a[i].prompt ~= c[i].prompt then differ = differ + 1 end
    local op, word = a[i].prompt:match("^(%a+): ([a-j]+) >$")
    assert(op and word, "prompt grammar: " .. a[i].prompt)
    T.eq(op, a[i].op, "op field"); T.eq(word, a[i].word, "word field")
    T.eq(a[i].completion, " " .. (op == "copy" and word or word:reverse()), "completion of " .. a[i].prompt)
    ops[op] = (ops[op] or 0) + 1
    lengths[#word] = true
  end
  assert(same, "same seed, same examples")
  assert(differ > 150, "another seed gives other examples")
  assert(ops.copy > 60 and ops.reverse > 60, "both ops drawn")
  for len = 3, 6 do assert(lengths[len], "length " .. len .. " drawn") end
  assert(not lengths[2] and not lengths[7], "lengths stay in 3..6")
  -- the stream is fixed across machines and versions: the first examples of seed 1
  local first = q.tasks.examples{ ops = { "copy", "reverse" }, n = 3, seed = 1 }
  local text = {}
  for _, e in ipairs(first) do text[#text + 1] = e.prompt .. e.completion end
  T.eq(table.concat(text, " | "), "reverse: cbcg > gcbc | reverse: jgb > bgj | reverse: ecbbbf > fbbbce", "fixed stream")
end)

T.case("every op, options, and held-out sets without training pairs", function()
  local o = q.tasks.ops
  T.eq(o.copy("abc"), "abc", "copy"); T.eq(o.reverse("abc"), "cba", "reverse")
  T.eq(o.shift("aje", "abcdefghij"), "baf", "shift wraps"); T.eq(o.sort("cab"), "abc", "sort")
  T.eq(o.swap("abcde"), "badce", "swap"); T.eq(o.first("xyz"), "x", "first"); T.eq(o.last("xyz"), "z", "last")
  local p, c = q.tasks.text("shift", "abj")
  T.eq(p, "shift: abj >", "prompt"); T.eq(c, " bca", "completion")
  local ex = q.tasks.examples{ ops = "sort", n = 50, seed = 2, alphabet = "xyz", min_len = 2, max_len = 2 }
  for _, e in ipairs(ex) do assert(e.word:match("^[xyz][xyz]$"), e.word) end
  -- only 9 two-letter words over "xyz": a held-out set of 3 must avoid the 6 it may not use
  local train = q.tasks.examples{ ops = "copy", n = 6, seed = 3, alphabet = "xyz", min_len = 2, max_len = 2 }
  local used = {}
  for _, e in ipairs(train) do used[e.word] = true end
  local held = q.tasks.examples{ ops = "copy", n = 3, seed = 4, alphabet = "xyz", min_len = 2, max_len = 2, exclude = train }
  for _, e in ipairs(held) do assert(not used[e.word], "held-out " .. e.word .. " is in the training set") end
  -- custom ops
  q.tasks.ops.double = function(w) return w .. w end
  T.eq(q.tasks.examples{ ops = "double", n = 1, seed = 1 }[1].completion:sub(2, 4), q.tasks.examples{ ops = "double", n = 1, seed = 1 }[1].word:sub(1, 3), "custom op")
  q.tasks.ops.double = nil
end)

T.case("the character tokenizer round-trips the task text; datasets mask the prompt", function()
  local d = tmpdir()
  T.eq(q.tasks.save_tokenizer(d), 32, "vocab size")
  local tok = q.tokenizer(d)
  T.eq(tok:vocab_size(), 32, "loaded vocab"); T.eq(tok:eos_id(), 2, "eos"); T.eq(tok:bos_id(), 1, "bos")
  local s = "reverse: abcxyz > zyxcba"
  local ids = tok:encode(s)
  T.eq(#ids, #s, "one token per character, nothing added")
  T.eq(ids[1], 6 + 17, "'r' id"); T.eq(ids[8], 4, "':' id"); T.eq(ids[9], 3, "' ' id")
  T.eq(tok:decode(ids), s, "decode")
  local ex = q.tasks.examples{ ops = "copy", n = 4, seed = 1 }
  local ds = q.tasks.dataset(ex, tok)
  T.eq(#ds, 4, "rows")
  local row = ds:get(1)
  local n_prompt, n_all = #ex[1].prompt, #ex[1].prompt + #ex[1].completion + 1
  T.eq(#row.input_ids, n_all, "prompt + completion + eos")
  for i = 1, n_prompt do T.eq(row.labels[i], -100, "prompt label " .. i) end
  T.eq(row.labels[n_all], 2, "eos trained")
  T.eq(row.labels[n_prompt + 2], tok:encode(ex[1].word:sub(1, 1))[1], "first answer letter trained")
end)

T.case("accuracy: exact match of greedy generations, with a model that learned copy", function()
  local d = tmpdir()
  q.tasks.save_tokenizer(d)
  local tok = q.tokenizer(d)
  local model = q.llama{ vocab = 32, hidden = 32, layers = 1, heads = 2, intermediate = 64, seed = 1, eos_id = 2, trainable = true }
  local ex = q.tasks.examples{ ops = "copy", n = 6, seed = 1, min_len = 1, max_len = 1, alphabet = "ab" }
  local acc, results = q.tasks.accuracy(model, ex, { tokenizer = tok })
  T.eq(#results, 6, "one result per example")
  assert(acc < 0.5, "an untrained model does not copy: " .. acc)
  -- train on the two possible examples until it copies them
  local rows = { { prompt = "copy: a >", completion = " a" }, { prompt = "copy: b >", completion = " b" } }
  q.trainer{ model = model, train = q.tasks.dataset(rows, tok), steps = 60, batch_size = 2, print_every = 1000,
    optimizer = { "adamw", lr = 1e-2 } }:run()
  acc, results = q.tasks.accuracy(model, ex, { tokenizer = tok })
  T.eq(acc, 1, "copies after training")
  T.eq(results[1].got, results[1].expected, "got")
  assert(results[1].ok, "ok flag")
end)

T.case("errors name the function and the problem", function()
  T.errors(function() q.tasks.examples{ ops = { "transpose" } } end, "qlora.tasks.examples", "unknown op 'transpose'", "copy")
  T.errors(function() q.tasks.examples{ ops = {} } end, "qlora.tasks.examples", "ops")
  q.tasks.ops.Up = function(w) return w:upper() end
  T.errors(function() q.tasks.examples{ ops = "Up" } end, "op names must be lowercase letters")
  q.tasks.ops.Up = nil
  T.errors(function() q.tasks.examples{ ops = "copy", n = 0 } end, "option 'n'")
  T.errors(function() q.tasks.examples{ ops = "copy", alphabet = "aB" } end, "option 'alphabet'")
  T.errors(function() q.tasks.examples{ ops = "copy", alphabet = "aba" } end, "repeats 'a'")
  T.errors(function() q.tasks.examples{ ops = "copy", min_len = 4, max_len = 3 } end, "option 'max_len'")
  T.errors(function() q.tasks.examples{ ops = "copy", size = 3 } end, "unknown option 'size'")
  local train = q.tasks.examples{ ops = "copy", n = 20, seed = 1, alphabet = "ab", min_len = 1, max_len = 1 }
  T.errors(function() q.tasks.examples{ ops = "copy", n = 2, alphabet = "ab", min_len = 1, max_len = 1, exclude = train } end,
    "cannot draw 2 examples")
  local model = q.llama{ vocab = 32, hidden = 8, layers = 1, heads = 1, intermediate = 8 }
  T.errors(function() q.tasks.accuracy(model, train) end, "qlora.tasks.accuracy", "no tokenizer")
  T.errors(function() q.tasks.text("nope", "ab") end, "qlora.tasks.text", "unknown op")
end)

for _, d in ipairs(made) do q.rmtree(d) end
T.done()
