-- Runs the adapters of this directory (each written with model:add_adapter alone) through
-- check.lua: gradcheck, training, save and reload, PEFT's layout where there is one.
--   qlora run examples/adapters/run.lua [name ...]     (default: all; QLORA_QUICK=1 shortens)
local here = arg[0]:match("(.*/)") or "./"
local check = dofile(here .. "check.lua")
local names = { "lora", "ia3", "vera", "lora_fa", "gated_lora", "bottleneck", "prompt_tuning" }
if #arg > 0 then names = arg end
for _, name in ipairs(names) do check(dofile(here .. name .. ".lua"), name) end
