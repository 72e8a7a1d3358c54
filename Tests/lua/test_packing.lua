-- Packed batches: several examples in one sequence give the same loss and gradients as the
-- examples run one by one (attention stays inside each example, positions restart), and the
-- trainer accepts packed datasets.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"

local examples = { { 5, 9, 200, 17, 3 }, { 7, 7, 1, 2 }, { 40, 41, 42, 43, 44, 45 } }

T.case("a packed sequence equals its examples run separately", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  model:add_lora{ r = 4, targets = { "q_proj", "v_proj" }, seed = 1 }
  for i, p in ipairs(model:parameters{ trainable = true }) do p.tensor:copy_(q.randn(p.tensor:shape(), { seed = i, std = 0.1 })) end
  -- separately: token-weighted mean of the per-example losses, and the summed gradients
  local total, count = 0, 0
  for _, ex in ipairs(examples) do count = count + #ex - 1 end
  for _, ex in ipairs(examples) do
    local n = #ex - 1
    local loss = model:loss({ ex })
    total = total + loss:item() * n;
    (loss * (n / count)):backward()
  end
  local separate = {}
  for _, p in ipairs(model:parameters{ trainable = true }) do separate[p.name] = p.tensor.grad; p.tensor:zero_grad() end
  -- packed: one row, segments 1..3, positions restarting, the first label of each segment ignored
  local ids, labels, seg, pos = {}, {}, {}, {}
  for s, ex in ipairs(examples) do
    for k, id in ipairs(ex) do
      ids[#ids + 1] = id; seg[#seg + 1] = s; pos[#pos + 1] = k - 1
      labels[#labels + 1] = k == 1 and -100 or id
    end
  end
  local packed = model:loss(q.tensor({ ids }, { dtype = "i64" }), q.tensor({ labels }, { dtype = "i64" }),
    { segment_ids = q.tensor({ seg }, { dtype = "i32" }), position_ids = q.tensor({ pos }, { dtype = "i64" }) })
  T.close(packed:item(), total / count, 1e-5)
  packed:backward()
  for _, p in ipairs(model:parameters{ trainable = true }) do
    local d = (p.tensor.grad - separate[p.name]):abs():max():item()
    assert(d <= 1e-5 * separate[p.name]:abs():max():item() + 1e-8, p.name .. " differs by " .. d)
  end
  -- without the segment mask the examples would see each other
  local leaky = model:loss(q.tensor({ ids }, { dtype = "i64" }), q.tensor({ labels }, { dtype = "i64" }))
  assert(math.abs(leaky:item() - packed:item()) > 1e-4, "the mask made no difference")
end)

T.case("the trainer trains on a packed dataset", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  model:add_lora{ r = 4, targets = "all-linear", seed = 2 }
  local rows = {}
  for i = 1, 12 do rows[i] = { input_ids = { i, i + 1, i + 2, i + 3, i + 4 } } end
  local ds = q.data.from_table(rows, { format = "tokens", pack = true, max_len = 16 })
  local r = q.trainer{ model = model, train = ds, eval = ds, steps = 3, batch_size = 2 }:run()
  assert(r.steps == 3 and r.eval_loss == r.eval_loss)
end)

T.case("bad packed inputs", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  local ids = q.tensor({ { 1, 2, 3 } }, { dtype = "i64" })
  T.errors(function() model:forward(ids, { segment_ids = q.ones({ 1, 2 }, { dtype = "i32" }) }) end, "segment_ids must be an integer tensor of shape [1,3]")
  T.errors(function() model:forward(ids, { position_ids = q.tensor({ { 0, 1, -1 } }, { dtype = "i64" }) }) end, "position_ids must be in")
  T.errors(function() model:forward(ids, { segment_ids = q.ones({ 1, 3 }) }) end, "integer tensor")
  T.errors(function() model:forward(ids, { segments = 1 }) end, "unknown option 'segments'")
end)

T.done()
