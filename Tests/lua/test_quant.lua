-- 4-bit quantization from Lua: bitsandbytes' own outputs reproduced (packed bytes, absmax, double
-- quantization codes, dequantized values), sizes, export/import, the 4-bit linear layer against a
-- dense product of the dequantized weight (values and gradients), and bad input.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local fixtures = (arg[0]:match("(.*/)") or "./") .. "../fixtures/quant/"

local function max_abs_diff(a, b) return (a:to("f32") - b:to("f32")):abs():max():item() end

for _, qt in ipairs({ "nf4", "fp4" }) do
  for _, dq in ipairs({ 0, 1 }) do
    for _, block in ipairs({ 64, 256 }) do
      for _, shape in ipairs({ "48x80", "64x128" }) do
        local name = string.format("%s_dq%d_b%d_%s", qt, dq, block, shape)
        T.case("bitsandbytes fixture " .. name, function()
          local f = q.load_tensors(fixtures .. name .. ".safetensors")
          local qw = q.quantize(f.input, { type = qt, block = block, double_quant = dq == 1 })
          local e = qw:export()
          T.eq(max_abs_diff(e.packed, f.packed), 0, "packed bytes")
          T.eq(max_abs_diff(e.code, f.code), 0, "code table")
          local absmax
          if dq == 1 then
            T.eq(max_abs_diff(e.absmax_q, f.absmax_q), 0, "8-bit absmax codes")
            T.eq(max_abs_diff(e.nested_code, f.nested_code), 0, "nested code")
            T.close(e.offset:item(), f.offset:item(), 0, 1e-6, "offset")
            T.close(max_abs_diff(e.nested_absmax, f.nested_absmax), 0, 1e-6 * f.nested_absmax:abs():max():item(), 0, "nested absmax")
            -- bitsandbytes' own restored absmax: code[q] * nested_absmax[b / 256] + offset
            local nb = f.absmax_q:numel()
            local nested = f.nested_absmax:index_select(1, q.arange(nb) / 256)
            absmax = f.nested_code:index_select(1, f.absmax_q:to("i64")) * nested + f.offset
          else
            T.eq(max_abs_diff(e.absmax, f.absmax), 0, "absmax")
            absmax = f.absmax
          end
          -- Dequantized values within 1e-6 of the block's absmax. bitsandbytes' CPU dequantization
          -- reads absmax[r * (cols // block) + c // block] for element (r, c), which is the block
          -- quantization used only when cols is a multiple of block; so compare where the two
          -- indices agree (everywhere for 64x128 at block 64; at least the first block elsewhere).
          local rows, cols = f.input:shape(1), f.input:shape(2)
          local deq = qw:dequantize():totable()
          local ref = f.dequantized:totable()
          local am = absmax:totable()
          local compared = 0
          for r = 0, rows - 1 do
            for c = 0, cols - 1 do
              local b = (r * cols + c) // block
              if r * (cols // block) + c // block == b then
                compared = compared + 1
                local err = math.abs(deq[r + 1][c + 1] - ref[r + 1][c + 1])
                assert(err <= 1e-6 * am[b + 1], string.format("(%d,%d): error %g", r, c, err))
              end
            end
          end
          if cols % block == 0 then T.eq(compared, rows * cols, "all elements compared") end
          assert(compared >= block, "too few comparable elements: " .. compared)
        end)
      end
    end
  end
end

T.case("sizes: 4.5 and 4.127 bits per parameter at block 64", function()
  local w = q.randn({ 512, 512 }, { seed = 1 })
  local plain = q.quantize(w, { type = "nf4", block = 64, double_quant = false })
  T.close(plain:bits_per_param(), 4.5, 1e-9)
  T.eq(plain:bytes(), 512 * 512 / 2 + 512 * 512 / 64 * 4)
  local dq = q.quantize(w, { type = "nf4", block = 64, double_quant = true })
  T.close(dq:bits_per_param(), 4 + 8 / 64 + 32 / (64 * 256), 1e-9)
  T.close(dq:shape(), { 512, 512 }); T.eq(dq:type(), "nf4"); T.eq(dq:block(), 64); T.eq(dq:double_quant(), true)
end)

T.case("export and q.quantized round trip", function()
  for _, dq in ipairs({ false, true }) do
    local w = q.randn({ 33, 17 }, { seed = 2 })
    local a = q.quantize(w, { type = "fp4", block = 32, double_quant = dq })
    local b = q.quantized(a:export())
    T.eq(max_abs_diff(a:dequantize(), b:dequantize()), 0, "round trip")
    T.eq(b:double_quant(), dq)
  end
end)

T.case("error bounds per format and block size", function()
  local w = q.randn({ 64, 256 }, { seed = 3 })
  local last = {}
  for _, qt in ipairs({ "nf4", "fp4" }) do
    for _, block in ipairs({ 32, 64, 256, 1024, 4096 }) do
      local e = q.quant_error(w, { type = qt, block = block, double_quant = false })
      assert(e.rmse > 0 and e.max_abs > 0 and e.snr_db > 0)
      -- NF4 on normal data: SNR around 20 dB; FP4 a little lower. Larger blocks lose a little.
      assert(e.snr_db > (qt == "nf4" and 17 or 14), qt .. " block " .. block .. " snr " .. e.snr_db)
      if last[qt] then assert(e.snr_db <= last[qt] + 0.5, "larger blocks should not be more accurate") end
      last[qt] = e.snr_db
    end
  end
  local exact = q.quant_error(q.zeros({ 4, 64 }), { type = "nf4" })
  T.eq(exact.max_abs, 0)
end)

for _, isa in ipairs(q.supported_isas()) do
  q.set_isa(isa)
  T.case(isa .. "/quant_linear matches a dense product of the dequantized weight", function()
    for _, shp in ipairs({ { 1, 48, 33 }, { 3, 80, 17 }, { 17, 64, 96 } }) do
      local m, k, n = shp[1], shp[2], shp[3]
      local w = q.randn({ n, k }, { seed = 4 })
      local bias = q.randn({ n }, { seed = 5 })
      local x = q.randn({ m, k }, { seed = 6 })
      for _, dq in ipairs({ false, true }) do
        local qw = q.quantize(w, { type = "nf4", block = 64, double_quant = dq })
        local dense = x:matmul(qw:dequantize():t()) + bias
        local scale = dense:abs():max():item()
        local y = q.quant_linear(qw, bias):forward(x)
        T.close(max_abs_diff(y, dense), 0, 1e-5 * scale, 0, "f32 " .. m .. "x" .. k .. "x" .. n)
        local yb = q.quant_linear(qw, bias, { compute = "bf16" }):forward(x)
        T.close(max_abs_diff(yb, dense), 0, 1e-2 * scale, 0, "bf16")
        -- leading dims are kept
        T.close(q.quant_linear(qw):forward(x:reshape({ 1, m, k })):shape(), { 1, m, n })
      end
    end
  end)

  T.case(isa .. "/gradients flow through quant_linear to the input and bias", function()
    local qw = q.quantize(q.randn({ 9, 40 }, { seed = 7 }), { type = "fp4", block = 32 })
    local bias = q.randn({ 9 }, { seed = 8 })
    local layer = q.quant_linear(qw, bias)
    local ok, r = q.gradcheck(function(x, b) return q.quant_linear(qw, b):forward(x:tanh()) end,
      { q.randn({ 3, 40 }, { seed = 9 }), bias }, { eps = 1e-2 }) -- a wider step keeps f32 rounding noise out of the differences
    assert(ok, r.worst)
    -- dx equals dy W for the dequantized W
    local x = q.randn({ 2, 40 }, { seed = 10 }); x.requires_grad = true
    local dy = q.randn({ 2, 9 }, { seed = 11 })
    layer:forward(x):backward(dy)
    T.close(max_abs_diff(x.grad, dy:matmul(qw:dequantize())), 0, 1e-5)
  end)
end
q.set_isa(q.supported_isas()[#q.supported_isas()])

T.case("compute bnb_bf16: bitsandbytes' CPU arithmetic, written out by hand", function()
  -- y = bf16( bf16(x) . (bf16(code) * bf16(absmax))^T ) + b, with an odd number of columns so a
  -- block crosses a row boundary; dx = dy W for the same W.
  local n, k = 5, 37
  local qw = q.quantize(q.randn({ n, k }, { seed = 21 }), { type = "nf4", block = 32, double_quant = true })
  local e = qw:export()
  local function bf(t) return t:to("bf16"):to("f32") end
  local code = bf(e.code):totable()
  local blocks = math.ceil(n * k / 32)
  local amax = {}
  do -- each block's absmax is its largest |dequantized value| (NF4's code holds -1 and 1)
    local full = qw:dequantize():reshape({ n * k }):abs():totable()
    for b = 1, blocks do
      local m = 0
      for i = (b - 1) * 32 + 1, math.min(b * 32, n * k) do m = math.max(m, full[i]) end
      amax[b] = m
    end
  end
  local packed = e.packed:totable()
  local w = {}
  for i = 0, n * k - 1 do
    local byte = packed[i // 2 + 1]
    local nib = (i % 2 == 0) and (byte // 16) or (byte % 16)
    w[i + 1] = code[nib + 1] * bf(q.tensor({ amax[i // 32 + 1] })):item()
  end
  local W = q.tensor(w):reshape({ n, k })
  local x = q.randn({ 3, k }, { seed = 22 })
  local bias = q.randn({ n }, { seed = 23 })
  local expected = bf(bf(x):matmul(W:t())) + bias
  local layer = q.quant_linear(qw, bias, { compute = "bnb_bf16" })
  T.eq(layer:compute(), "bnb_bf16")
  local xr = x:clone(); xr.requires_grad = true
  local y = layer:forward(xr)
  T.close(max_abs_diff(y, expected), 0, 1e-6)
  local dy = q.randn({ 3, n }, { seed = 24 })
  y:backward(dy)
  T.close(max_abs_diff(xr.grad, dy:matmul(W)), 0, 1e-5)
  T.errors(function() q.quant_linear(qw, bias, { compute = "bf8" }) end, "compute must be one of", "bnb_bf16")
end)

T.case("bad input", function()
  local w = q.randn({ 8, 64 }, { seed = 12 })
  T.errors(function() q.quantize(w, { type = "int4" }) end, "qlora.quantize", "unknown quantization type \"int4\"")
  T.errors(function() q.quantize(w, { block = 48 }) end, "power of two", "48")
  T.errors(function() q.quantize(w, { block = 8192 }) end, "power of two")
  T.errors(function() q.quantize(w, { block = 16 }) end, "power of two")
  T.errors(function() q.quantize(w, { blok = 64 }) end, "unknown option 'blok'")
  T.errors(function() q.quantize(q.ones({ 4 }, { dtype = "i32" })) end, "floating tensor")
  T.errors(function() q.quantize("w") end, "expected a tensor as argument 1")
  local e = q.quantize(w):export()
  e.packed = q.zeros({ 3 }, { dtype = "u8" })
  T.errors(function() q.quantized(e) end, "qlora.quantized", "'packed' must have 256 elements")
  local e2 = q.quantize(w, { double_quant = false }):export(); e2.absmax = nil
  T.errors(function() q.quantized(e2) end, "missing 'absmax'")
  local e3 = q.quantize(w):export(); e3.shape = nil
  T.errors(function() q.quantized(e3) end, "missing 'shape'")
  local e4 = q.quantize(w):export(); e4.nested_code = q.zeros({ 256 }, { dtype = "i32" })
  T.errors(function() q.quantized(e4) end, "'nested_code' must be f32")
  local layer = q.quant_linear(q.quantize(w))
  T.errors(function() layer:forward(q.ones({ 2, 63 })) end, "last dim is 63", "expects 64")
  T.errors(function() layer:forward(q.tensor(1)) end, "0-d")
  T.errors(function() q.quant_linear(q.quantize(w), q.ones(7)) end, "bias must be")
  T.errors(function() q.quant_linear(w) end, "expected a QuantizedTensor as argument 1, got tensor")
  T.errors(function() q.quant_linear(q.quantize(w), nil, { compute = "f16" }) end, "compute must be")
  T.errors(function() q.quantize(q.randn({ 3, 4 })):dequantize():item() end, "one element")
  -- NaN and Inf never crash: the block holding them is affected, others are not
  local bad = q.randn({ 2, 64 }, { seed = 13 })
  local vals = bad:totable(); vals[1][5] = 0 / 0; vals[2][7] = math.huge
  local qb = q.quantize(q.tensor(vals), { double_quant = false })
  local d = qb:dequantize():totable()
  assert(#d == 2 and #d[1] == 64)
end)

T.done()
