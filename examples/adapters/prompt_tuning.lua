-- Prompt tuning: P trainable virtual token embeddings put in front of every sequence; the model
-- drops their logits, and generation keeps them in the KV cache.
local q = require "qlora"
local Prompt = {
  kind = "prompt_tuning",
  at = "prefix",
  options = { tokens = 8 },
  init = function(site, q)
    return { prompt = q.randn({ site.options.tokens, site.hidden_size }) }
  end,
  forward = function(h, p)
    local b, n = h:shape(1), p.prompt:shape(1)
    return q.concat({ p.prompt:reshape({ 1, n, -1 }):expand({ b, n, h:shape(3) }), h }, 2)
  end,
}

-- PEFT's layout: prompt_embeddings [P, hidden]
function Prompt.peft_export(entries, info)
  local p = entries[1].params.prompt
  return { prompt_embeddings = p }, { peft_type = "PROMPT_TUNING", task_type = "CAUSAL_LM",
    num_virtual_tokens = p:shape(1), token_dim = p:shape(2), num_transformer_submodules = 1,
    prompt_tuning_init = "RANDOM", inference_mode = true }
end

function Prompt.peft_import(config, tensors)
  local p = tensors.prompt_embeddings
  if not p then error("the file has no prompt_embeddings") end
  return { options = { tokens = p:shape(1) } }, { ["model.prefix"] = { prompt = p } }
end
-- `qlora run examples/adapters/prompt_tuning.lua` runs check.lua on it (gradcheck, training, save and reload)
if arg and arg[0] and ("/" .. arg[0]):match("/prompt_tuning%.lua$") then dofile((arg[0]:match("(.*/)") or "./") .. "check.lua")(Prompt, "prompt_tuning") end
return Prompt
