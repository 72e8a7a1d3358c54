-- Full-parameter training of a dense model (model:set_trainable, q.llama{trainable = true}):
-- finite-difference checks of every base weight's gradient (embedding, RMSNorm weights, each
-- linear, the untied head or the tied embedding) through the fused and the composed ops, the
-- parameter list and counts, the trainer with checkpoints and resume, model:save of the trained
-- weights, and the 4-bit error.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local made = {}
local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); made[#made + 1] = d; return d end

local function tiny(opts)
  local spec = { vocab = 13, hidden = 8, layers = 2, heads = 2, kv_heads = 1, intermediate = 12, seed = 5,
    trainable = true, tie_word_embeddings = opts and opts.tied or false }
  local model = q.llama(spec)
  -- larger, varied weights than the 0.02 init (and norms away from one), so every gradient is sizeable
  for i, p in ipairs(model:parameters{ trainable = true }) do
    local std = p.name:find("norm") and 0.3 or 0.5
    local base = p.name:find("norm") and 1 or 0
    p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 100 + i, std = std }) + base)
  end
  return model
end

local ids = q.tensor({ { 1, 5, 9, 2, 12, 3, 7 }, { 4, 4, 0, 11, 6, 8, 10 } }, { dtype = "i64" })
local labels = q.tensor({ { 1, 5, -100, 2, 12, 3, 7 }, { 4, 4, 0, 11, -100, 8, 10 } }, { dtype = "i64" })

-- A tensor of `shape` that is zero but `value` at flat position k (1-based).
local function one_hot(shape, k, value)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local flat = {}
  for i = 1, n do flat[i] = 0 end
  flat[k] = value
  return q.tensor(flat):reshape(shape)
end

-- Central differences of the loss against backward's gradient, for a few elements of every
-- trainable tensor. Returns the number of elements checked; raises on a mismatch.
local function check_gradients(model, eps)
  local params = model:parameters{ trainable = true }
  for _, p in ipairs(params) do p.tensor:zero_grad() end
  model:loss(ids, labels):backward()
  local checked = 0
  for _, p in ipairs(params) do
    local shape, n = p.tensor:shape(), p.tensor:numel()
    local grad = p.tensor.grad
    assert(grad ~= nil, p.name .. " got no gradient")
    local g = grad:reshape({ n }):totable()
    local nonzero = 0
    for _, v in ipairs(g) do if v ~= 0 then nonzero = nonzero + 1 end end
    assert(nonzero > 0, p.name .. ": the gradient is all zero")
    for _, k in ipairs({ 1, n // 3 + 1, (2 * n) // 3 + 1, n }) do
      local numeric = q.no_grad(function()
        p.tensor:add_(one_hot(shape, k, eps))
        local plus = model:loss(ids, labels):item()
        p.tensor:add_(one_hot(shape, k, -2 * eps))
        local minus = model:loss(ids, labels):item()
        p.tensor:add_(one_hot(shape, k, eps))
        return (plus - minus) / (2 * eps)
      end)
      local analytic = g[k]
      if math.abs(analytic - numeric) > 3e-4 + 3e-2 * math.abs(numeric) then
        error(string.format("%s element %d: backward %.6g, finite differences %.6g", p.name, k, analytic, numeric))
      end
      checked = checked + 1
    end
  end
  return checked, #params
end

if arg[1] == "--composed" then
  -- run by the test below with QLORA_FUSED=0: the same checks through the composed ops
  local checked = check_gradients(tiny(), 1e-2)
  check_gradients(tiny{ tied = true }, 1e-2)
  print("composed ok " .. checked)
  return
end

T.case("every base weight's gradient matches finite differences (fused ops, untied and tied head)", function()
  local model = tiny()
  local checked, tensors = check_gradients(model, 1e-2)
  -- embedding + per layer (2 norms + 7 linears) + final norm + lm_head
  T.eq(tensors, 1 + 2 * 9 + 1 + 1, "trainable tensors")
  T.eq(checked, 4 * tensors, "elements checked")
  local tied = tiny{ tied = true }
  local _, n = check_gradients(tied, 1e-2)
  T.eq(n, 1 + 2 * 9 + 1, "a tied head is the embedding")
end)

T.case("the composed ops (QLORA_FUSED=0) give the same finite-difference agreement", function()
  local p = io.popen("readlink /proc/$PPID/exe"); local exe = p:read("l"); p:close()
  local out = io.popen("QLORA_FUSED=0 '" .. exe .. "' run '" .. arg[0] .. "' --composed 2>&1")
  local text = out:read("a"); out:close()
  assert(text:find("composed ok 84", 1, true), "the composed run failed:\n" .. text)
end)

T.case("gradient checkpointing gives the same dense gradients", function()
  local function grads(ckpt)
    local model = tiny()
    model:gradient_checkpointing(ckpt)
    model:loss(ids, labels):backward()
    local out = {}
    for _, p in ipairs(model:parameters{ trainable = true }) do out[p.name] = p.tensor.grad end
    return out
  end
  local a, b = grads(false), grads(true)
  for name, g in pairs(a) do T.eq((g - b[name]):abs():max():item(), 0, name) end
end)

T.case("names, counts, set_trainable(false) and LoRA beside trainable base weights", function()
  local model = q.llama{ vocab = 13, hidden = 8, layers = 1, heads = 2, intermediate = 12, seed = 1 }
  T.eq(#model:parameters{ trainable = true }, 0, "a new model is frozen")
  local trainable, total = model:trainable_parameters()
  T.eq(trainable, 0, "nothing trains")
  T.eq(model:set_trainable(true), 12, "tensors made trainable")
  local names = {}
  for _, p in ipairs(model:parameters{ trainable = true }) do names[#names + 1] = p.name end
  T.eq(names[1], "model.embed_tokens.weight", "first")
  T.eq(names[2], "model.layers.0.input_layernorm.weight", "second")
  T.eq(names[4], "model.layers.0.self_attn.q_proj.weight", "a linear")
  T.eq(names[#names], "lm_head.weight", "last")
  local t2, total2 = model:trainable_parameters()
  T.eq(t2, total, "every weight trains"); T.eq(total2, total, "the total does not double count")
  T.eq(model:set_trainable(true), 0, "already trainable")
  model:add_lora{ r = 2, targets = { "q_proj" } }
  T.eq(#model:parameters{ trainable = true }, 14, "base weights and the adapter")
  T.eq(model:set_trainable(false), 12, "frozen again")
  T.eq(#model:parameters{ trainable = true }, 2, "only the adapter")
end)

T.case("4-bit weights cannot be trained", function()
  local model = q.llama{ vocab = 13, hidden = 64, layers = 1, heads = 2, intermediate = 64, seed = 1 }
  model:quantize{ type = "nf4" }
  T.errors(function() model:set_trainable(true) end, "qlora.Model.set_trainable", "model.layers.0.self_attn.q_proj",
    "4-bit", "cannot be trained")
  T.errors(function() q.trainer{ model = model, train = q.data.from_table({ { input_ids = { 1, 2, 3 } } }) }:run() end,
    "no trainable parameters", "set_trainable")
end)

T.case("the trainer pre-trains a dense model, resumes from its checkpoint exactly, and save writes the weights", function()
  local rows = {}
  for i = 1, 24 do
    local r = {}
    for k = 1, 10 do r[k] = (i + 3 * k) % 13 end
    rows[i] = { input_ids = r }
  end
  local ds = q.data.from_table(rows, { format = "tokens" })
  local function train(dir, steps, resume)
    local model = q.llama{ vocab = 13, hidden = 16, layers = 1, heads = 2, intermediate = 24, seed = 3, trainable = true }
    local r = q.trainer{ model = model, train = ds, steps = steps, batch_size = 4, optimizer = { "adamw", lr = 1e-2 },
      checkpoint = { dir = dir, every = 10 }, resume = resume, print_every = 100, log = dir .. "/metrics.jsonl" }:run()
    return model, r
  end
  local d = tmpdir()
  local model, r = train(d .. "/a", 20)
  local first = io.open(d .. "/a/metrics.jsonl"):read("l")
  local loss1 = tonumber(first:match('"loss": ([%d%.e%-]+)'))
  assert(r.train_loss < 0.5 * loss1, string.format("loss %.3f -> %.3f", loss1, r.train_loss))
  local saved = q.load_tensors(d .. "/a/step-20/params.safetensors")
  assert(saved["model.layers.0.mlp.down_proj.weight"], "the checkpoint holds the dense weights")
  -- resume from step 10 of a second run and end where the first did
  train(d .. "/b", 10)
  local resumed, r2 = train(d .. "/b", 20, d .. "/b")
  T.eq(r2.train_loss, r.train_loss, "resumed loss")
  -- save writes the trained weights; the directory loads back to the same logits
  model:save(d .. "/model")
  local back = q.load_model(d .. "/model")
  local x = q.tensor({ { 1, 2, 3, 4 } }, { dtype = "i64" })
  T.eq((back:forward(x) - model:forward(x)):abs():max():item(), 0, "saved logits")
  T.eq((resumed:forward(x) - model:forward(x)):abs():max():item(), 0, "resumed weights")
  -- a loaded dense model trains too (its weights become f32 copies; the file is untouched)
  T.eq(back:set_trainable(true), 12, "loaded model")
end)

for _, d in ipairs(made) do q.rmtree(d) end
T.done()
