-- Hostile input to q.sweep and q.report: options out of any sane range, a results.jsonl that is
-- corrupt or deeply nested, paths that are files or directories where the other is expected.
-- Each is a clear qlora.sweep / qlora.report error (or, for damaged lines, a skipped line); the
-- process never traps or hangs. Nothing here starts a worker.
local q = require "qlora"
local T = dofile((arg[0]:match("(.*/)") or "./") .. "harness.lua")

local function tmpdir() local d = os.tmpname(); os.remove(d); q.mkdir(d); return d end
local function write(p, s) local f = assert(io.open(p, "wb")); f:write(s); f:close() end
local run = function() return {} end
-- (never created: every call below fails before making anything)
local O = os.tmpname()
os.remove(O)
O = O .. "-never"

T.case("parallel and seed that are not integers a sweep can use", function()
  for _, p in ipairs({ 2.0 ^ 63, 1e300, math.huge, 1e6 }) do
    T.errors(function() q.sweep{ out = O, run = run, grid = { a = { 1 } }, parallel = p } end,
      "qlora.sweep: option 'parallel' must be an integer in 1...1024")
  end
  for _, s in ipairs({ math.huge, 1e300, 2.0 ^ 63 }) do
    T.errors(function() q.sweep{ out = O, run = run, grid = { a = { 1 } }, seed = s } end,
      "qlora.sweep: option 'seed' must be an integer >= 0")
  end
end)

T.case("a grid with too many points is an error before it is built", function()
  local g = {}
  for i = 1, 12 do g["k" .. i] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 } end
  local t0 = q.clock()
  T.errors(function() q.sweep{ out = O, run = run, grid = g } end,
    "qlora.sweep: the grid has 1000000000000 points (at most 100000)")
  assert(q.clock() - t0 < 1, "the error came at once")
end)

T.case("random integer ranges without an integer, or beyond exact integers", function()
  T.errors(function() q.sweep{ out = O, run = run, random = { n = 2, space = { a = { min = 1.2, max = 1.7, integer = true } } } } end,
    "qlora.sweep: random.space.a: no integer between min (1.2) and max (1.7)")
  T.errors(function() q.sweep{ out = O, run = run, random = { n = 2, space = { a = { min = -1e300, max = 1e300, integer = true } } } } end,
    "qlora.sweep: random.space.a: integer = true needs min and max within")
end)

T.case("out that is a file", function()
  local d = tmpdir()
  write(d .. "/file", "x")
  T.errors(function() q.sweep{ out = d .. "/file", run = run, grid = { a = { 1 } } } end,
    "qlora.sweep: out '" .. d .. "/file' is not a directory")
  T.errors(function() q.sweep{ out = d .. "/file/sub", run = run, grid = { a = { 1 } } } end,
    "qlora.sweep: out '" .. d .. "/file/sub' is not a directory")
  os.execute("rm -rf '" .. d .. "'")
end)

T.case("q.report: deeply nested lines of results.jsonl do not overflow the Lua stack", function()
  local d = tmpdir()
  for _, n in ipairs({ 100, 500 }) do
    write(d .. "/results.jsonl",
      '{"id":"a","status":"ok","config":{},"metrics":{"x":' .. string.rep("[", n) .. "1" .. string.rep("]", n) .. "}}\n" ..
      '{"id":"b","status":"ok","config":{},"metrics":{"x":' .. string.rep('{"k":', n) .. "1" .. string.rep("}", n) .. "}}\n")
    local records = q.report(d)
    T.eq(#records, 2, "records of depth " .. n)
  end
  os.execute("rm -rf '" .. d .. "'")
end)

T.case("q.report: a results path that is a directory, and errors without internal positions", function()
  local d = tmpdir()
  q.mkdir(d .. "/x.jsonl")
  local e = T.errors(function() q.report(d .. "/x.jsonl") end, "qlora.report: " .. d .. "/x.jsonl: cannot read")
  assert(not e:find("qlora%.sweep"), e)
  e = T.errors(function() q.report(d .. "/none") end, "qlora.report: " .. d .. "/none/results.jsonl: cannot open")
  assert(not e:find("qlora%.report:%d"), e)
  e = T.errors(function() q.report({}, { out = d .. "/nodir/x.md" }) end, "qlora.report: " .. d .. "/nodir/x.md: cannot write")
  assert(e:find("No such file or directory", 1, true), e)
  os.execute("rm -rf '" .. d .. "'")
end)

T.done()
