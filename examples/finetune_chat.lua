-- Fine-tune an instruct model on chat data in its own chat template, training only the
-- assistant's replies, then ask it a question with model:chat.
--   scripts/run examples/finetune_chat.lua [MODEL_DIR [CHAT.jsonl [STEPS]]]
-- MODEL_DIR must hold tokenizer.json and a chat template (tokenizer_config.json's chat_template
-- or chat_template.jinja), e.g. SmolLM2-135M-Instruct. CHAT.jsonl: one {"messages": [...]} per
-- line. Without arguments it runs on the tiny test model (random weights, a SmolLM2 template)
-- and a few built-in conversations; QLORA_QUICK=1 makes it a few steps long.
local q = require "qlora"
local here = arg[0]:match("(.*/)") or "./"
local model_dir = arg[1] or (here .. "../Tests/fixtures/tiny-chat")
local quick = os.getenv("QLORA_QUICK") == "1"
local steps = tonumber(arg[3] or "") or (quick and 4 or 40)

local model = q.load_model(model_dir, { quant = { type = "nf4", block = 32, double_quant = true } })
local tok = model:tokenizer()
assert(tok and tok:chat_template(), model_dir .. " has no chat template")

-- What the model sees for a conversation: its template, exactly as transformers renders it.
local hello = { { role = "user", content = "What does QLoRA train?" } }
print(tok:apply_chat_template(hello, { add_generation_prompt = true }))

local rows
if arg[2] and arg[2] ~= "" then
  rows = q.data.jsonl(arg[2], { tokenizer = tok, format = "chat", max_len = 512 })
else
  local facts = {
    { "What does QLoRA train?", "Small low-rank adapters on top of a frozen 4-bit model." },
    { "What is NF4?", "A 4-bit data type for normally distributed weights." },
    { "Why freeze the base model?", "Its weights stay 4-bit, so memory stays small." },
    { "What is a LoRA rank?", "The inner size of the two adapter matrices." },
  }
  local conversations = {}
  for i, f in ipairs(facts) do
    conversations[i] = { messages = {
      { role = "system", content = "Answer in one sentence." },
      { role = "user", content = f[1] },
      { role = "assistant", content = f[2] },
    } }
  end
  rows = q.data.from_table(conversations, { tokenizer = tok, format = "chat", max_len = 512 })
end

-- Only the assistant's reply (and its end-of-turn token) is trained.
local ex = rows:get(1)
local trained = {}
for i, l in ipairs(ex.labels) do if l ~= -100 then trained[#trained + 1] = ex.input_ids[i] end end
print(string.format("example 1: %d tokens, %d trained: %q", #ex.input_ids, #trained, tok:decode(trained)))

model:add_lora{ r = 8, alpha = 16, targets = "all-linear", seed = 1 }
local result = q.trainer{ model = model, train = rows, steps = steps, batch_size = 2,
  optimizer = { "adamw", lr = 1e-3 }, schedule = { "constant" }, seed = 1 }:run()
print(string.format("trained %d steps, loss %.4f", result.steps, result.train_loss))

local answer = model:chat(hello, { system = "Answer in one sentence.", max_tokens = 24 })
print("model:chat -> " .. answer)
