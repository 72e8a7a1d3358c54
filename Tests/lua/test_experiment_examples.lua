-- examples/sweep_rank_alpha.lua and examples/custom_placement.lua in their QLORA_QUICK size, run
-- as a user would (`qlora run`, `qlora sweep --parallel 1`): their tables print, their files are
-- written, the shared quickstart base is pre-trained once by the parent and only reused by sweep
-- workers and by the other example, and a second run resumes instead of training again.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")
local here = arg[0]:match("(.*/)") or "./"
local examples = here .. "../../examples/"

local root = os.tmpname(); os.remove(root)
local base_dir = root .. "/base"
local function exists(p) local f = io.open(p, "rb"); if f then f:close() end return f ~= nil end
local function read(p) local f = assert(io.open(p, "rb")); local s = f:read("a"); f:close(); return s end
local function count(text, s) local n, i = 0, 1
  while true do local j = text:find(s, i, true); if not j then return n end n, i = n + 1, j + 1 end
end
local function run(command, ...)
  local args = { string.format("QLORA_QUICK=1 %q %s", arg[-1], command) }
  for _, a in ipairs({ ... }) do args[#args + 1] = string.format("%q", a) end
  local p = io.popen(table.concat(args, " ") .. " 2>&1")
  local text = p:read("a")
  local ok = p:close()
  assert(ok, command .. " failed:\n" .. text)
  return text
end
-- The table's data rows: lines after the "---" rule up to the first line that is not a row.
local function table_rows(text)
  local rows, inside = {}, false
  for line in text:gmatch("[^\n]+") do
    if line:match("^%-+  %-") then inside = true
    elseif inside then
      if line:match("^%S+ +%S") and not line:find(":", 1, true) then rows[#rows + 1] = line else break end
    end
  end
  return rows
end

T.case("sweep_rank_alpha: 4 points, table and plots; the parent pre-trains, workers only reuse", function()
  local out = root .. "/rank_alpha"
  local text = run("run " .. examples .. "sweep_rank_alpha.lua", out, base_dir)
  T.eq(count(text, "pre-training a 2-layer Llama"), 1, "the parent pre-trains the base once")
  assert(text:find("\n *r +alpha +scale +accuracy +eval_loss +train_loss +trainable +tokens_per_sec +seconds\n"), text)
  local rows = table_rows(text)
  T.eq(#rows, 4, "table rows")
  for _, row in ipairs(rows) do assert(row:match("^ ?[48]  2r"), "unexpected row: " .. row) end
  assert(text:find("total time: ", 1, true), text)
  for _, f in ipairs({ "results.jsonl", "summary.md", "accuracy.svg", "eval_loss.svg", "loss.svg" }) do
    assert(exists(out .. "/" .. f), "missing " .. f)
  end
  local ids = q.listdir(out .. "/points")
  T.eq(#ids, 4, "point directories")
  for _, id in ipairs(ids) do
    local log = read(out .. "/points/" .. id .. "/log.txt")
    assert(log:find("base model: reusing " .. base_dir, 1, true), "worker " .. id .. " did not reuse the base:\n" .. log)
    assert(not log:find("pre-training", 1, true), "worker " .. id .. " pre-trained:\n" .. log)
    assert(exists(out .. "/points/" .. id .. "/metrics.jsonl"), "metrics of " .. id)
  end
  -- trainable = r * sum(in + out) over the 14 linear layers of the 2-layer base (2176 per unit of rank)
  assert(text:find(" 8704 ", 1, true) and text:find(" 17408 ", 1, true), "trainable counts:\n" .. text)
  -- run again: every point is done, nothing trains, the table is printed again
  local again = run("run " .. examples .. "sweep_rank_alpha.lua", out, base_dir)
  assert(again:find("4 points, 4 done earlier, 0 to run", 1, true), again)
  assert(not again:find("pre-training", 1, true), again)
  T.eq(#table_rows(again), 4, "rows on resume")
end)

T.case("qlora sweep examples/sweep_rank_alpha.lua --parallel 1", function()
  local out = root .. "/rank_alpha_p1"
  local text = run("sweep " .. examples .. "sweep_rank_alpha.lua --parallel 1", out, base_dir)
  assert(text:find("4 points, 0 done earlier, 4 to run, 1 at a time", 1, true), text)
  assert(text:find("(4 points, 1 at a time)", 1, true), text)
  assert(not text:find("pre-training", 1, true), "the base was there: " .. text)
  T.eq(#table_rows(text), 4, "table rows")
end)

T.case("custom_placement: predicate placement, then placements at one budget in a sweep", function()
  local out = root .. "/placement"
  local text = run("run " .. examples .. "custom_placement.lua", "", out, base_dir)
  assert(text:find("mlp adapters:\t3", 1, true) and text:find("attention adapters:\t4", 1, true), text)
  assert(text:find("base model: reusing " .. base_dir, 1, true), "the other example's base is reused:\n" .. text)
  assert(text:find("budget: 34816 trainable parameters (r = 16 on every linear layer)", 1, true), text)
  assert(text:find("attention   8 linear layers, 1024 parameters per unit of rank -> r = 34 (34816 parameters)", 1, true), text)
  assert(text:find("top_half    7 linear layers, 1088 parameters per unit of rank -> r = 32 (34816 parameters)", 1, true), text)
  local rows = table_rows(text)
  T.eq(#rows, 2, "table rows")
  -- the trainable count each point measured equals the planned r * (in + out) sum
  for _, row in ipairs(rows) do
    local name, r, modules, trainable = row:match("^(%S+) +(%d+) +(%d+) +(%d+)")
    T.eq(tonumber(trainable), ({ attention = 34 * 1024, top_half = 32 * 1088 })[name], "trainable of " .. tostring(name))
    T.eq(tonumber(modules), ({ attention = 8, top_half = 7 })[name], "modules of " .. name)
    T.eq(tonumber(r), ({ attention = 34, top_half = 32 })[name], "rank of " .. name)
  end
  assert(exists(out .. "/summary.md"), "summary.md")
end)

q.rmtree(root)
T.done()
