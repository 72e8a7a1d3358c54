-- LoRA-FA: LoRA whose A stays frozen at its random init; only B trains. Saved in PEFT's layout it
-- is a plain LoRA adapter (PEFT's LoRA-FA is a LoRA trained with A frozen).
local LoRAFA = {
  kind = "lora_fa",
  targets = { "q_proj", "v_proj" },
  options = { r = 8, alpha = 16 },
  frozen = { "A" },
  init = function(site, q)
    local r, bound = site.options.r, 1 / math.sqrt(site.in_features)
    return { A = q.rand({ r, site.in_features }, { min = -bound, max = bound }), B = q.zeros({ site.out_features, r }) }
  end,
  forward = function(x, y, p, site)
    return y + x:linear(p.A):linear(p.B) * (site.options.alpha / site.options.r)
  end,
}

function LoRAFA.peft_export(entries, info)
  local tensors, modules = {}, {}
  for _, e in ipairs(entries) do
    tensors["base_model.model." .. e.site .. ".lora_A.weight"] = e.params.A
    tensors["base_model.model." .. e.site .. ".lora_B.weight"] = e.params.B
    modules[e.site:match("([^.]+)$")] = true
  end
  local list = {}
  for m in pairs(modules) do list[#list + 1] = m end
  table.sort(list)
  return tensors, { peft_type = "LORA", task_type = "CAUSAL_LM", r = info.options.r, lora_alpha = info.options.alpha,
    target_modules = list, lora_dropout = 0.0, bias = "none", fan_in_fan_out = false, inference_mode = true }
end
-- From PEFT's LoRA files: r and alpha from the config, A and B per module
function LoRAFA.peft_import(config, tensors)
  local values, targets = {}, {}
  for k, t in pairs(tensors) do
    local site, which = k:match("^base_model%.model%.(.*)%.lora_([AB])%.weight$")
    if site then
      values[site] = values[site] or {}
      values[site][which] = t
      if which == "A" then targets[#targets + 1] = site end
    end
  end
  return { targets = targets, options = { r = config.r, alpha = config.lora_alpha } }, values
end
-- `qlora run examples/adapters/lora_fa.lua` runs check.lua on it (gradcheck, training, save and reload)
if arg and arg[0] and ("/" .. arg[0]):match("/lora_fa%.lua$") then dofile((arg[0]:match("(.*/)") or "./") .. "check.lua")(LoRAFA, "lora_fa") end
return LoRAFA
