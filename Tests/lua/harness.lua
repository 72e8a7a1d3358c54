-- A small test harness for Lua test scripts: named cases, approximate comparisons, expected
-- errors. A script ends with `T.done()`, which raises (exit status 1) if any case failed.
local T = { passed = 0, failed = 0 }

function T.case(name, fn)
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    T.passed = T.passed + 1
  else
    T.failed = T.failed + 1
    io.stderr:write("FAIL ", name, "\n", tostring(err), "\n")
  end
end

-- Numbers, or nested tables of numbers, equal within atol + rtol * |expected|.
function T.close(actual, expected, atol, rtol, where)
  atol = atol or 1e-6; rtol = rtol or 0
  where = where or "value"
  if type(expected) == "table" then
    assert(type(actual) == "table", where .. ": expected a table, got " .. type(actual))
    assert(#actual == #expected, string.format("%s: length %d, expected %d", where, #actual, #expected))
    for i = 1, #expected do T.close(actual[i], expected[i], atol, rtol, where .. "[" .. i .. "]") end
    return
  end
  assert(type(actual) == "number", where .. ": expected a number, got " .. type(actual))
  local bad = (expected ~= expected) ~= (actual ~= actual)
  if expected == expected then bad = bad or math.abs(actual - expected) > atol + rtol * math.abs(expected) end
  if bad then error(string.format("%s: got %.9g, expected %.9g", where, actual, expected), 2) end
end

function T.eq(actual, expected, where)
  if actual ~= expected then
    error(string.format("%s: got %s, expected %s", where or "value", tostring(actual), tostring(expected)), 2)
  end
end

-- fn must raise an error whose message contains every given plain-text fragment.
function T.errors(fn, ...)
  local ok, err = pcall(fn)
  if ok then error("expected an error, got none", 2) end
  err = tostring(err)
  for _, frag in ipairs({ ... }) do
    if not err:find(frag, 1, true) then
      error(string.format("error %q does not mention %q", err, frag), 2)
    end
  end
  return err
end

function T.done()
  print(string.format("%d passed, %d failed", T.passed, T.failed))
  if T.failed > 0 then error(T.failed .. " case(s) failed", 0) end
end

return T
