-- A bottleneck adapter after each MLP (Houlsby / Pfeiffer style): m + up(relu(down(m))) on the
-- MLP's output m before the residual addition; up starts at zero, so the model starts unchanged.
local def = {
  kind = "bottleneck",
  at = "mlp_out",
  options = { size = 16 },
  init = function(site, q)
    local h, n = site.hidden_size, site.options.size
    local bound = 1 / math.sqrt(h)
    return { down = q.rand({ n, h }, { min = -bound, max = bound }), down_bias = q.zeros({ n }),
             up = q.zeros({ h, n }) }
  end,
  forward = function(m, p) return m + m:linear(p.down, p.down_bias):relu():linear(p.up) end,
}

-- `qlora run examples/adapters/bottleneck.lua` runs check.lua on it (gradcheck, training, save and reload)
if arg and arg[0] and ("/" .. arg[0]):match("/bottleneck%.lua$") then dofile((arg[0]:match("(.*/)") or "./") .. "check.lua")(def, "bottleneck") end
return def
