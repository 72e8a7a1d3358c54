-- LoRA written in Lua: y + (alpha / r) * B A x, A [r, in] random, B [out, r] zero (as add_lora
-- with its kaiming init). A definition table: model:add_adapter{kind = require_this, ...}.
local def = {
  kind = "lora",
  at = "linear",
  options = { r = 8, alpha = 8 },
  init = function(site, q)
    local r = site.options.r
    local bound = 1 / math.sqrt(site.in_features)
    return { A = q.rand({ r, site.in_features }, { min = -bound, max = bound }),
             B = q.zeros({ site.out_features, r }) }
  end,
  forward = function(x, y, p, site)
    return y + x:linear(p.A):linear(p.B) * (site.options.alpha / site.options.r)
  end,
}

-- `qlora run examples/adapters/lora.lua` runs check.lua on it (gradcheck, training, save and reload)
if arg and arg[0] and ("/" .. arg[0]):match("/lora%.lua$") then dofile((arg[0]:match("(.*/)") or "./") .. "check.lua")(def, "lora") end
return def
