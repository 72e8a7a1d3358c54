-- Gated LoRA: y + tanh(g) * s * B A x with a learned gate g per layer, starting at 0 (closed), so
-- the model is unchanged at init while B is random and both learn from the first step.
local def = {
  kind = "gated_lora",
  targets = { "q_proj", "v_proj" },
  options = { r = 8, alpha = 16 },
  init = function(site, q)
    local r, bound = site.options.r, 1 / math.sqrt(site.in_features)
    return { A = q.rand({ r, site.in_features }, { min = -bound, max = bound }),
             B = q.randn({ site.out_features, r }, { std = 0.02 }), gate = q.zeros({ 1 }) }
  end,
  forward = function(x, y, p, site)
    return y + x:linear(p.A):linear(p.B) * (p.gate:tanh() * (site.options.alpha / site.options.r))
  end,
}

-- `qlora run examples/adapters/gated_lora.lua` runs check.lua on it (gradcheck, training, save and reload)
if arg and arg[0] and ("/" .. arg[0]):match("/gated_lora%.lua$") then dofile((arg[0]:match("(.*/)") or "./") .. "check.lua")(def, "gated_lora") end
return def
