-- Chat templates: q.chat_template renders as Jinja does; a model directory's template
-- (tokenizer_config.json) applies exactly as transformers' apply_chat_template (text and ids,
-- from a golden made by scripts/fixtures/make_tiny_chat.py); chat datasets use it by default and
-- train only the assistant's tokens; model:chat answers with the template and stops at the end
-- of the turn; errors name the template line and column.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local here = arg[0]:match("(.*/)") or "./"
local dir = here .. "../fixtures/tiny-chat"
local golden = dofile(dir .. "/apply_chat_template.lua")

local function same(actual, expected, where)
  T.eq(#actual, #expected, where .. " length")
  for i = 1, math.min(#actual, #expected) do T.eq(actual[i], expected[i], where .. "[" .. i .. "]") end
end

T.case("q.chat_template renders a template", function()
  local t = q.chat_template("{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}\n{% endfor %}" ..
    "{% if add_generation_prompt %}<|assistant|>{% endif %}{{ extra }}")
  T.eq(t:render({ { role = "user", content = "  hi  " } }), "<|user|>hi\n", "no generation prompt")
  T.eq(t:render({ { role = "user", content = "hi" } }, { add_generation_prompt = true, extra = "!" }), "<|user|>hi\n<|assistant|>!")
  T.eq(t:render('[{"role": "system", "content": "s"}, {"role": "user", "content": "{{ x }}"}]'), "<|system|>s\n<|user|>{{ x }}\n", "JSON messages")
  T.eq(t:render("just a question"), "<|user|>just a question\n", "a string is one user message")
  local tools = q.chat_template("{{ tools | tojson }}")
  T.eq(tools:render({}, { tools = '[{"name": "f", "args": {"b": 1, "a": 2}}]' }), '[{"name": "f", "args": {"b": 1, "a": 2}}]', "JSON keeps key order")
  T.eq(tools:render({}, { tools = { { name = "f", args = { b = 1, a = 2 } } } }), '[{"args": {"a": 2, "b": 1}, "name": "f"}]', "Lua tables: sorted keys")
  local dated = q.chat_template("{{ strftime_now('%d %B %Y') }}")
  T.eq(dated:render({}, { date = "2024-07-26" }), "26 July 2024", "strftime_now reads the given date")
end)

T.case("template errors name the line and column", function()
  T.errors(function() q.chat_template("line one\n{% if x %}\nnever closed") end, "qlora.chat_template", "line 3", "never closed")
  T.errors(function() q.chat_template("{{ x +* 2 }}") end, "line 1, column")
  local t = q.chat_template("a\n{{ raise_exception('roles must alternate') }}")
  T.errors(function() t:render({}) end, "line 2", "roles must alternate")
  local deep = q.chat_template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
  T.errors(function() deep:render({}) end, "macro calls nested deeper")
  T.errors(function() t:render(42) end, "messages")
  T.errors(function() t:render({ { content = "no role" } }) end, "message 1 has no string 'role'")
  local cyc = {}; cyc.self = cyc
  T.errors(function() q.chat_template("{{ x }}"):render({}, { x = cyc }) end, "nested deeper than 64")
end)

T.case("the model's template applies exactly as transformers does", function()
  local tok = q.tokenizer(dir)
  local t = tok:chat_template()
  T.eq(type(t), "userdata", "tok:chat_template()")
  local f = assert(io.open(here .. "../fixtures/chat_templates/HuggingFaceTB-SmolLM2-135M-Instruct.jinja"))
  T.eq(t:source(), f:read("a"), "the template text from tokenizer_config.json"); f:close()
  for _, c in ipairs(golden) do
    local where = c.name .. (c.add_generation_prompt and " +gen" or "")
    T.eq(tok:apply_chat_template(c.messages, { add_generation_prompt = c.add_generation_prompt }), c.text, where .. " text")
    same(tok:apply_chat_template(c.messages, { add_generation_prompt = c.add_generation_prompt, tokenize = true }), c.ids, where .. " ids")
    T.eq(t:render(c.messages, { add_generation_prompt = c.add_generation_prompt }), c.text, where .. " via the template")
  end
  T.eq(tok:apply_chat_template({ { role = "user", content = "What is the licence?" } }, { add_generation_prompt = true }),
    golden[1].text, "Lua table messages")
  local plain = q.tokenizer(here .. "../fixtures/tokenizers/bytelevel.json")
  T.eq(plain:chat_template(), nil, "no template")
  T.errors(function() plain:apply_chat_template({ { role = "user", content = "x" } }) end, "has no chat template")
  T.errors(function() tok:chat_template("tool_use") end, "no chat template named \"tool_use\"")
end)

T.case("chat data trains only the assistant's tokens", function()
  local tok = q.tokenizer(dir)
  local conv = { { role = "system", content = "Answer briefly." }, { role = "user", content = "Who may copy it?" },
    { role = "assistant", content = "Anyone." }, { role = "user", content = "And change it?" },
    { role = "assistant", content = "Yes, under the same terms." } }
  local ds = q.data.from_table({ { messages = conv } }, { format = "chat", tokenizer = tok })
  local ex = ds:get(1)
  local want = tok:apply_chat_template(conv, { tokenize = true })
  same(ex.input_ids, want, "ids are apply_chat_template's (no eos added, no bos)")
  -- Expected labels: the tokens each assistant message adds after the prompt that asks for it.
  local labels = {}
  for i = 1, #want do labels[i] = -100 end
  for i, m in ipairs(conv) do
    if m.role == "assistant" then
      local before = { table.unpack(conv, 1, i - 1) }
      local upto = { table.unpack(conv, 1, i) }
      local p = #tok:apply_chat_template(before, { add_generation_prompt = true, tokenize = true })
      local r = #tok:apply_chat_template(upto, { tokenize = true })
      for k = p + 1, r do labels[k] = want[k] end
    end
  end
  same(ex.labels, labels, "labels")
  local trained = {}
  for k = 1, #ex.labels do if ex.labels[k] ~= -100 then trained[#trained + 1] = ex.labels[k] end end
  T.eq(tok:decode(trained), "Anyone.<|im_end|>\nYes, under the same terms.<|im_end|>\n", "the trained text")
  -- A JSONL file goes the same way.
  local file = q.data.jsonl(here .. "../fixtures/data/chat.jsonl", { format = "chat", tokenizer = tok })
  local f2 = file:get(2)
  local t2 = {}
  for k = 1, #f2.labels do if f2.labels[k] ~= -100 then t2[#t2 + 1] = f2.labels[k] end end
  T.eq(tok:decode(t2), "sat.<|im_end|>\n", "JSONL row 2: only the assistant's reply is trained")
  same(f2.input_ids, tok:apply_chat_template('[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat?"}, {"role": "assistant", "content": "sat."}]', { tokenize = true }), "JSONL row 2 ids")
  -- mask_prompt = false trains everything (but the first token).
  local all = q.data.from_table({ { messages = conv } }, { format = "chat", tokenizer = tok, mask_prompt = false }):get(1)
  T.eq(all.labels[2], all.input_ids[2], "unmasked")
  -- The old format only when asked for.
  local role = q.data.from_table({ { messages = conv } }, { format = "chat", tokenizer = tok, template = "role" }):get(1)
  T.eq(tok:decode(role.input_ids):sub(1, 11), "<|system|>\n", "template = \"role\"")
  -- Another template, as text or a q.chat_template, with variables.
  local other = q.chat_template("{% for m in messages %}{{ m.role }}: {% if m.role == 'assistant' %}{% generation %}{{ m.content }}{{ eos_token }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n{% endfor %}")
  local g = q.data.from_table({ { messages = conv } }, { format = "chat", tokenizer = tok, template = other }):get(1)
  local gt = {}
  for k = 1, #g.labels do if g.labels[k] ~= -100 then gt[#gt + 1] = g.labels[k] end end
  T.eq(tok:decode(gt), "Anyone.<|im_end|>Yes, under the same terms.<|im_end|>", "generation blocks")
  -- Rows the template rejects, or without an assistant turn, are bad rows.
  local strict = q.chat_template("{% if messages[0].role != 'user' %}{{ raise_exception('must start with user') }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}")
  T.errors(function() q.data.from_table({ { messages = conv } }, { format = "chat", tokenizer = tok, template = strict }) end,
    "row 1", "must start with user")
  T.errors(function() q.data.from_table({ { messages = { { role = "user", content = "q" } } } }, { format = "chat", tokenizer = tok }) end,
    "no assistant message")
  T.errors(function() q.data.from_table({ { messages = conv } }, { format = "chat", tokenizer = tok, template = "{% if %}" }) end,
    "option 'template'", "line 1")
  local vars = q.data.from_table({ { messages = conv } }, { format = "chat", tokenizer = tok,
    template = q.chat_template("{{ prefix }}{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"),
    chat_vars = { prefix = "P:" } }):get(1)
  T.eq(tok:decode(vars.input_ids):sub(1, 2), "P:", "chat_vars")
end)

T.case("model:chat answers through the template and stops at the end of the turn", function()
  local m = q.load_model(dir)
  local tok = m:tokenizer()
  local msgs = { { role = "user", content = "What is the licence?" } }
  local answer = m:chat(msgs, { max_tokens = 8 })
  T.eq(type(answer), "string", "an answer")
  local prompt = tok:apply_chat_template(msgs, { add_generation_prompt = true, tokenize = true })
  local ids = m:generate(prompt, { max_tokens = 8 })
  local kept = {}
  for _, id in ipairs(ids) do if id ~= tok:eos_id() then kept[#kept + 1] = id end end
  T.eq(answer, tok:decode(kept, { skip_special = true }), "the same as generate on apply_chat_template's ids")
  local sys = m:chat("What is the licence?", { system = "Answer briefly.", max_tokens = 4 })
  T.eq(type(sys), "string", "with a system message")
  T.errors(function() m:chat(msgs, { colour = 1 }) end, "unknown option 'colour'")
end)

T.done()
