-- Saving models in Hugging Face layout (f32, bf16, bitsandbytes 4-bit) and loading them back;
-- new seeded models; finite-difference checks of LoRA gradients through a whole model.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/"

local function max_abs_diff(a, b) return (a - b):abs():max():item() end
local function tmpdir() local d = os.tmpname(); os.remove(d); return d end
local ids = q.tensor({ { 1, 5, 9, 200, 17, 3, 64, 0 }, { 7, 7, 7, 1, 2, 3, 4, 5 } }, { dtype = "i64" })

T.case("f32 and bf16 round trips", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  local ref = model:forward(ids)
  local dir = tmpdir()
  model:save(dir)
  T.eq(max_abs_diff(q.load_model(dir):forward(ids), ref), 0, "f32 round trip")
  model:save(dir, { dtype = "bf16" })
  local w = q.load_tensors(dir .. "/model.safetensors")
  T.eq(w["model.layers.0.mlp.up_proj.weight"]:dtype(), "bf16")
  assert(max_abs_diff(q.load_model(dir):forward(ids), ref) < 5e-2, "bf16 logits too far")
  os.execute("rm -rf " .. dir)
end)

T.case("4-bit models save in bitsandbytes' layout and load back exactly", function()
  local opts = { type = "nf4", block = 64, double_quant = true }
  local model = q.load_model(fixtures .. "tiny-llama", { quant = opts })
  local ref = model:forward(ids)
  local dir = tmpdir()
  model:save(dir, { quantized = true })
  local w = q.load_tensors(dir .. "/model.safetensors")
  local p = "model.layers.1.mlp.down_proj.weight"
  T.close(w[p]:shape(), { 64 * 192 / 2, 1 }); T.eq(w[p]:dtype(), "u8")
  T.eq(w[p .. ".absmax"]:dtype(), "u8"); T.close(w[p .. ".nested_quant_map"]:shape(), { 256 })
  assert(w[p .. ".quant_state.bitsandbytes__nf4"], "no quant_state")
  local f = io.open(dir .. "/config.json"); local cfg = f:read("a"); f:close()
  assert(cfg:find('"quant_method": "bitsandbytes"', 1, true) and cfg:find('"bnb_4bit_use_double_quant": true', 1, true), cfg)
  local back = q.load_model(dir)
  T.eq(max_abs_diff(back:forward(ids), ref), 0, "4-bit round trip")
  -- a dense model saved quantized equals quantizing on load
  local dense = q.load_model(fixtures .. "tiny-llama")
  dense:save(dir, { quantized = opts })
  T.eq(max_abs_diff(q.load_model(dir):forward(ids), ref), 0, "quantized on save")
  os.execute("rm -rf " .. dir)
end)

T.case("q.llama builds seeded models that save and load", function()
  local spec = { vocab = 64, hidden = 32, layers = 2, heads = 4, kv_heads = 2, intermediate = 48, seed = 3 }
  local a, b = q.llama(spec), q.llama(spec)
  local x = q.tensor({ { 1, 2, 3, 4 } }, { dtype = "i64" })
  T.eq(max_abs_diff(a:forward(x), b:forward(x)), 0, "same seed, same model")
  spec.seed = 4
  assert(max_abs_diff(a:forward(x), q.llama(spec):forward(x)) > 0, "another seed gives another model")
  local dir = tmpdir()
  a:save(dir)
  T.eq(max_abs_diff(q.load_model(dir):forward(x), a:forward(x)), 0, "saved new model")
  os.execute("rm -rf " .. dir)
  T.errors(function() q.llama{ vocab = 8, hidden = 8, layers = 1, intermediate = 8 } end, "missing option 'heads'")
  T.errors(function() q.llama{ vocab = 8, hidden = 8, layers = 1, heads = 3, kv_heads = 2, intermediate = 8 } end, "must divide")
end)

T.case("LoRA gradients through the whole model match finite differences", function()
  for _, quant in ipairs({ false, true }) do
    local model = q.load_model(fixtures .. "tiny-llama", { quant = quant and { type = "nf4" } or false })
    model:add_lora{ r = 4, alpha = 8, targets = { "q_proj", "v_proj", "down_proj" }, seed = 2 }
    for i, p in ipairs(model:parameters{ trainable = true }) do
      p.tensor:copy_(q.randn(p.tensor:shape(), { seed = 100 + i, std = 0.1 }))
    end
    local loss = model:loss(ids)
    loss:backward()
    local eps = 1e-2
    for i, p in ipairs(model:parameters{ trainable = true }) do
      if i % 3 == 1 then   -- a sample of the matrices, a few elements each
        local orig = p.tensor:clone()
        local flat = orig:totable()
        local g = p.tensor.grad:totable()
        for k = 1, 3 do
          local r = (k * 7 + i) % #flat + 1
          local c = (k * 13 + i) % #flat[1] + 1
          local function at(delta)
            local v = orig:totable(); v[r][c] = v[r][c] + delta
            p.tensor:copy_(q.tensor(v))
            return model:loss(ids):item()
          end
          local numeric = (at(eps) - at(-eps)) / (2 * eps)
          p.tensor:copy_(orig)
          local analytic = g[r][c]
          assert(math.abs(numeric - analytic) <= 2e-3 + 2e-2 * math.abs(numeric),
            string.format("%s [%d,%d]: analytic %g numeric %g (4-bit %s)", p.name, r, c, analytic, numeric, tostring(quant)))
        end
      end
    end
  end
end)

T.case("bad save options", function()
  local model = q.load_model(fixtures .. "tiny-llama")
  T.errors(function() model:save("/proc/nope/x") end, "qlora.Model.save")
  T.errors(function() model:save(tmpdir(), { dtype = "i32" }) end, "dtype must be")
  T.errors(function() model:save(tmpdir(), { quantized = "yes" }) end, "option 'quantized'")
  T.errors(function() model:save(tmpdir(), { quantized = { type = "int4" } }) end, "unknown quantization type")
end)

T.done()
