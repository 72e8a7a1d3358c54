-- q.plot: SVG line charts from JSONL files. The SVG text is read back: how many series, their
-- legend names, points per path, axis labels and ticks; and the errors for bad input.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local made = {}
local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); made[#made + 1] = d; return d end
local function read(p) local f = assert(io.open(p, "rb")); local s = f:read("a"); f:close(); return s end
local function write(p, s) local f = assert(io.open(p, "wb")); f:write(s); f:close() end

-- The parts of a chart the tests look at.
local function parse(svg)
  local c = { series = {}, legend = {}, xticks = {}, yticks = {} }
  for name, n, d in svg:gmatch('<path class="series" data%-name="([^"]*)" data%-points="(%d+)" d="([^"]*)"') do
    local _, commands = d:gsub("[ML]", "")
    c.series[#c.series + 1] = { name = name, points = tonumber(n), commands = commands }
  end
  for s in svg:gmatch('<text class="legend"[^>]*>([^<]*)</text>') do c.legend[#c.legend + 1] = s end
  for s in svg:gmatch('<text class="tick x%-tick"[^>]*>([^<]*)</text>') do c.xticks[#c.xticks + 1] = s end
  for s in svg:gmatch('<text class="tick y%-tick"[^>]*>([^<]*)</text>') do c.yticks[#c.yticks + 1] = s end
  c.xlabel = svg:match('<text class="x%-label"[^>]*>([^<]*)</text>')
  c.ylabel = svg:match('<text class="y%-label"[^>]*>([^<]*)</text>')
  c.title = svg:match('<text class="title"[^>]*>([^<]*)</text>')
  c.markers = select(2, svg:gsub('class="marker"', ""))
  return c
end

-- A trainer-like log: steps 1..n with a loss, an eval line every 10 steps, a "nan" loss line.
local function log_file(path, n, scale)
  local lines = {}
  for s = 1, n do
    lines[#lines + 1] = string.format('{"step": %d, "loss": %.6f, "lr": 0.001}', s, scale * 3 / (1 + s))
    if s % 10 == 0 then lines[#lines + 1] = string.format('{"step": %d, "eval_loss": %.4f}', s, scale * 2 / s) end
  end
  lines[#lines + 1] = '{"step": 999, "loss": "nan"}'
  write(path, table.concat(lines, "\n") .. "\n")
end

T.case("one series per file, named by the directory when the files share a name", function()
  local d = tmpdir()
  q.mkdir(d .. "/r4"); q.mkdir(d .. "/r16")
  log_file(d .. "/r4/metrics.jsonl", 50, 1)
  log_file(d .. "/r16/metrics.jsonl", 30, 2)
  local out, n = q.plot{ files = { d .. "/r4/metrics.jsonl", d .. "/r16/metrics.jsonl" }, x = "step", y = "loss",
    out = d .. "/loss.svg", title = "Loss & rank" }
  T.eq(out, d .. "/loss.svg", "returned path")
  T.eq(n, 2, "series returned")
  local c = parse(read(out))
  T.eq(#c.series, 2, "series drawn")
  T.eq(c.series[1].name, "r4", "first series"); T.eq(c.series[2].name, "r16", "second series")
  -- eval lines have no "loss" and the "nan" line is not a number: both skipped
  T.eq(c.series[1].points, 50, "points of r4"); T.eq(c.series[1].commands, 50, "path commands of r4")
  T.eq(c.series[2].points, 30, "points of r16")
  T.eq(#c.legend, 2, "legend entries"); T.eq(c.legend[1], "r4", "legend 1"); T.eq(c.legend[2], "r16", "legend 2")
  T.eq(c.xlabel, "step", "x label"); T.eq(c.ylabel, "loss", "y label")
  T.eq(c.title, "Loss &amp; rank", "title escaped")
  T.eq(c.markers, 30, "markers only on the series with at most 40 points")
  -- x ticks are whole steps from 0 to 50, y ticks cover 0 .. 3 (loss 2*3/2 = 3 at step 1)
  T.eq(c.xticks[1], "0", "first x tick"); T.eq(c.xticks[#c.xticks], "50", "last x tick")
  for _, s in ipairs(c.xticks) do assert(not s:find("%."), "x ticks are integers: " .. s) end
  assert(tonumber(c.yticks[#c.yticks]) >= 3, "y ticks reach the largest loss")
  assert(#c.yticks >= 4 and #c.yticks <= 9, "a readable number of y ticks: " .. #c.yticks)
end)

T.case("labels, other fields, units and a log scale", function()
  local d = tmpdir()
  log_file(d .. "/a.jsonl", 40, 1)
  log_file(d .. "/b.jsonl", 40, 1)
  q.plot{ files = { d .. "/a.jsonl", d .. "/b.jsonl" }, y = "eval_loss", out = d .. "/eval.svg",
    labels = { "baseline", "wide" }, x_label = "optimizer step", y_label = "eval loss (nats)", log_y = true }
  local c = parse(read(d .. "/eval.svg"))
  T.eq(#c.series, 2, "series"); T.eq(c.legend[1], "baseline", "label 1"); T.eq(c.legend[2], "wide", "label 2")
  T.eq(c.series[1].points, 4, "eval points (every 10 steps)")
  T.eq(c.xlabel, "optimizer step", "x label"); T.eq(c.ylabel, "eval loss (nats)", "y label")
  -- eval_loss runs from 0.05 to 0.2: log ticks 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1
  T.eq(table.concat(c.yticks, " "), "0.01 0.02 0.05 0.1 0.2 0.5 1", "log ticks")
end)

T.case("group splits a results file into series by a field's value, in numeric order", function()
  local d = tmpdir()
  local lines = {}
  for _, r in ipairs({ 16, 4, 8 }) do
    for _, alpha in ipairs({ 32, 8, 16 }) do
      lines[#lines + 1] = string.format('{"r": %d, "alpha": %d, "eval_loss": %.3f, "tokens_per_sec": 12000}', r, alpha, 1 + 1 / r + alpha / 100)
    end
  end
  lines[#lines + 1] = '{"alpha": 8, "eval_loss": 1}'   -- no group field: skipped
  write(d .. "/results.jsonl", table.concat(lines, "\n") .. "\n")
  local _, n = q.plot{ files = d .. "/results.jsonl", x = "alpha", y = "eval_loss", group = "r", out = d .. "/sweep.svg" }
  T.eq(n, 3, "three ranks")
  local c = parse(read(d .. "/sweep.svg"))
  T.eq(table.concat(c.legend, ","), "r=4,r=8,r=16", "legend in numeric order")
  for _, s in ipairs(c.series) do T.eq(s.points, 3, s.name .. " points") end
  -- points sorted by x: the path's x coordinates increase
  local svg = read(d .. "/sweep.svg")
  local d1 = svg:match('data%-name="r=4" data%-points="3" d="([^"]*)"')
  local xs = {}
  for x in d1:gmatch("[ML]([%d%.]+),") do xs[#xs + 1] = tonumber(x) end
  assert(xs[1] < xs[2] and xs[2] < xs[3], "x sorted: " .. d1)
  -- big numbers get k / M
  q.plot{ files = d .. "/results.jsonl", x = "alpha", y = "tokens_per_sec", out = d .. "/tps.svg" }
  local t = parse(read(d .. "/tps.svg"))
  assert(table.concat(t.yticks, " "):find("12k", 1, true) or table.concat(t.yticks, " "):find("12.", 1, true), table.concat(t.yticks, " "))
end)

T.case("dotted fields reach into nested objects, as in sweep results", function()
  local d = tmpdir()
  local lines = {}
  for _, r in ipairs({ 8, 4 }) do
    for _, lr in ipairs({ 1e-3, 3e-4, 1e-4 }) do
      lines[#lines + 1] = string.format('{"id": "x", "config": {"r": %d, "lr": %g, "seed": 1}, "status": "ok", ' ..
        '"metrics": {"eval_loss": %.3f, "steps": 10}, "duration_s": 2.5}', r, lr, 2 - r / 10 + lr * 100)
    end
  end
  lines[#lines + 1] = '{"id": "y", "config": {"r": 16, "lr": 0.001, "seed": 1}, "status": "error", "metrics": {}, "error": "boom"}'
  write(d .. "/results.jsonl", table.concat(lines, "\n") .. "\n")
  local _, n = q.plot{ files = d .. "/results.jsonl", x = "config.lr", y = "metrics.eval_loss", group = "config.r",
    out = d .. "/sweep.svg" }
  T.eq(n, 2, "the failed point has no eval_loss: its series is empty and not drawn")
  local c = parse(read(d .. "/sweep.svg"))
  T.eq(table.concat(c.legend, ","), "r=4,r=8", "legend names the last part of a dotted group")
  T.eq(c.series[1].points, 3, "points"); T.eq(c.xlabel, "config.lr", "x label")
end)

T.case("a log still being written: the cut-off last line is skipped", function()
  local d = tmpdir()
  write(d .. "/live.jsonl", '{"step": 1, "loss": 2}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
  q.plot{ files = { d .. "/live.jsonl" }, out = d .. "/live.svg" }
  T.eq(parse(read(d .. "/live.svg")).series[1].points, 2, "points")
end)

T.case("errors name q.plot and the problem", function()
  local d = tmpdir()
  write(d .. "/m.jsonl", '{"step": 1, "loss": 2}\n{"step": 2, "loss": 1}\n')
  write(d .. "/bad.jsonl", '{"step": 1, "loss": 2}\nnot json\n{"step": 3, "loss": 1}\n')
  write(d .. "/text.jsonl", '{"step": "one", "loss": "two"}\n')
  T.errors(function() q.plot{ files = { d .. "/missing.jsonl" }, out = d .. "/x.svg" } end, "qlora.plot", "missing.jsonl")
  T.errors(function() q.plot{ files = { d .. "/bad.jsonl" }, out = d .. "/x.svg" } end, "qlora.plot", "bad.jsonl:2", "invalid JSON")
  T.errors(function() q.plot{ files = { d .. "/text.jsonl" }, out = d .. "/x.svg" } end, "qlora.plot", "no line", "numeric")
  T.errors(function() q.plot{ files = { d .. "/m.jsonl" } } end, "qlora.plot", "missing option 'out'")
  T.errors(function() q.plot{ files = {}, out = d .. "/x.svg" } end, "qlora.plot", "at least one")
  T.errors(function() q.plot{ files = { d .. "/m.jsonl" }, out = d .. "/x.svg", colour = "red" } end, "qlora.plot", "unknown option 'colour'")
  T.errors(function() q.plot{ files = { d .. "/m.jsonl" }, out = d .. "/x.svg", labels = { "a", "b" } } end, "qlora.plot", "2 names for 1 files")
  T.errors(function() q.plot{ files = { d .. "/m.jsonl" }, out = d .. "/x.svg", x = 3 } end, "qlora.plot", "option 'x' must be a string")
  T.errors(function() q.plot{ files = { d .. "/m.jsonl" }, out = d .. "/x.svg", width = 10 } end, "qlora.plot", "width")
  write(d .. "/neg.jsonl", '{"step": 1, "loss": -2}\n')
  T.errors(function() q.plot{ files = { d .. "/neg.jsonl" }, out = d .. "/x.svg", log_y = true } end, "qlora.plot", "log_y needs y > 0")
  T.errors(function() q.plot() end, "qlora.plot", "expected a table")
end)

for _, d in ipairs(made) do q.rmtree(d) end
T.done()
