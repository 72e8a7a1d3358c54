-- VeRA: one pair of frozen random matrices shared by every layer (A [r, max in], B [max out, r],
-- kaiming-uniform), sliced to each layer's size, and per layer two trainable vectors:
-- y + lambda_b * B (lambda_d * A x). lambda_d starts at 0.1, lambda_b at 0.
local VeRA = {
  kind = "vera",
  targets = { "q_proj", "v_proj" },
  options = { r = 16, d_init = 0.1 },
  frozen = { "A", "B" },
  init = function(site, q)
    local r = site.options.r
    local function kaiming(shape) local b = 1 / math.sqrt(shape[2]); return q.rand(shape, { min = -b, max = b }) end
    -- the shared pair is sized for the widest of the adapted layers
    return {
      A = q.shared("A", function() return kaiming({ r, site.options.max_in or site.max_in_features }) end),
      B = q.shared("B", function() return kaiming({ site.options.max_out or site.max_out_features, r }) end),
      lambda_d = q.full({ r }, site.options.d_init),
      lambda_b = q.zeros({ site.out_features }),
    }
  end,
  forward = function(x, y, p, site)
    local A = p.A:slice(2, 1, site.in_features)
    local B = p.B:slice(1, 1, site.out_features)
    return y + x:linear(A):mul(p.lambda_d):linear(B):mul(p.lambda_b)
  end,
}

-- PEFT's layout: base_model.vera_A / vera_B (the shared pair) and per module
-- base_model.model.<module>.vera_lambda_d [r], vera_lambda_b [out]
function VeRA.peft_export(entries, info)
  local tensors, modules = { ["base_model.vera_A"] = entries[1].params.A, ["base_model.vera_B"] = entries[1].params.B }, {}
  for _, e in ipairs(entries) do
    tensors["base_model.model." .. e.site .. ".vera_lambda_d"] = e.params.lambda_d
    tensors["base_model.model." .. e.site .. ".vera_lambda_b"] = e.params.lambda_b
    modules[e.site:match("([^.]+)$")] = true
  end
  local list = {}
  for m in pairs(modules) do list[#list + 1] = m end
  table.sort(list)
  return tensors, { peft_type = "VERA", task_type = "CAUSAL_LM", r = info.options.r, target_modules = list,
    save_projection = true, projection_prng_key = 0, vera_dropout = 0.0, d_initial = info.options.d_init,
    fan_in_fan_out = false, bias = "none", inference_mode = true }
end

function VeRA.peft_import(config, tensors)
  local A, B = tensors["base_model.vera_A"], tensors["base_model.vera_B"]
  if not (A and B) then error("the file has no base_model.vera_A / vera_B (saved with save_projection = false?)") end
  local values, targets = {}, {}
  for k, t in pairs(tensors) do
    local site, key = k:match("^base_model%.model%.(.*)%.(vera_lambda_[bd])$")
    if site then
      values[site] = values[site] or { A = A, B = B }
      values[site][key:sub(6)] = t
      if key == "vera_lambda_d" then targets[#targets + 1] = site end
    end
  end
  return { targets = targets, options = { r = config.r, d_init = config.d_initial or 0.1,
    max_in = A:shape(2), max_out = B:shape(1) } }, values
end
-- `qlora run examples/adapters/vera.lua` runs check.lua on it (gradcheck, training, save and reload)
if arg and arg[0] and ("/" .. arg[0]):match("/vera%.lua$") then dofile((arg[0]:match("(.*/)") or "./") .. "check.lua")(VeRA, "vera") end
return VeRA
