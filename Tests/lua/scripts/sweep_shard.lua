-- The sweep used by test_sweep_shard.lua: six points whose metrics depend only on their config.
--   qlora sweep [--shard I/N] sweep_shard.lua OUT [SLOW_ID]
-- The point whose id is SLOW_ID sleeps 30 s after marking that it started (the test kills its
-- shard then). Each point touches cfg.out/started; the script reports what q.sweep returned.
local q = require "qlora"
local out, slow = arg[1], arg[2]
local results = q.sweep{ grid = { a = { 1, 2, 3 }, b = { "x", "yy" } }, out = out,
  run = function(cfg)
    local id = "a=" .. cfg.a .. ",b=" .. cfg.b
    local f = assert(io.open(cfg.out .. "/started", "w"))
    f:close()
    if id == slow then os.execute("sleep 30") end
    if cfg.a == 2 and cfg.b == "yy" then error("this point fails on purpose") end
    return { value = cfg.a * 10 + #cfg.b + (cfg.seed % 1000) / 1000, seed = cfg.seed }
  end }
q.report(results)
