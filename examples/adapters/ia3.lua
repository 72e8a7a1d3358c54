-- IA3: learned rescaling vectors, initialised to ones. The attention keys and values are scaled
-- after their projection (y * l, l [out]); the MLP's down projection is scaled on its input
-- (down(x * l), l [in]), as PEFT's IA3 does for its feedforward modules.
local IA3 = {
  kind = "ia3",
  targets = { "k_proj", "v_proj", "down_proj" },
  at = function(site) return site.kind == "down_proj" and "linear_input" or "linear" end,
  init = function(site, q)
    return { l = q.ones({ site.at == "linear_input" and site.in_features or site.out_features }) }
  end,
  -- linear sites call forward(x, y, params, site), linear_input sites forward(x, params, site)
  forward = function(x, a, b, c)
    if c == nil then return x * a.l end   -- linear_input: a = params
    return a * b.l                        -- linear: a = y, b = params
  end,
}

-- PEFT's layout: base_model.model.<module>.ia3_l [out, 1], or [1, in] for feedforward modules
function IA3.peft_export(entries, info)
  local tensors, modules, ff = {}, {}, {}
  for _, e in ipairs(entries) do
    local n = e.params.l:numel()
    tensors["base_model.model." .. e.site .. ".ia3_l"] = e.params.l:reshape(e.at == "linear_input" and { 1, n } or { n, 1 })
    local kind = e.site:match("([^.]+)$")
    modules[#modules + 1] = kind
    if e.at == "linear_input" then ff[#ff + 1] = kind end
  end
  local function uniq(t) local s, o = {}, {}; for _, v in ipairs(t) do if not s[v] then s[v] = true; o[#o + 1] = v end end; table.sort(o); return o end
  return tensors, { peft_type = "IA3", task_type = "CAUSAL_LM", target_modules = uniq(modules),
    feedforward_modules = uniq(ff), init_ia3_weights = true, fan_in_fan_out = false, inference_mode = true }
end

-- From PEFT's files: the spec for add_adapter and {site = {l = tensor}}
function IA3.peft_import(config, tensors)
  local values, targets = {}, {}
  for k, t in pairs(tensors) do
    local site = k:match("^base_model%.model%.(.*)%.ia3_l$")
    if site then values[site] = { l = t:reshape({ t:numel() }) }; targets[#targets + 1] = site end
  end
  local ff = {}
  for _, m in ipairs(config.feedforward_modules or {}) do ff[m] = true end
  return { targets = targets, at = function(site) return ff[site.kind] and "linear_input" or "linear" end }, values
end
-- `qlora run examples/adapters/ia3.lua` runs check.lua on it (gradcheck, training, save and reload)
if arg and arg[0] and ("/" .. arg[0]):match("/ia3%.lua$") then dofile((arg[0]:match("(.*/)") or "./") .. "check.lua")(IA3, "ia3") end
return IA3
