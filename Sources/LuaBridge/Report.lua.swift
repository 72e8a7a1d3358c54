// q.report, written in Lua: sweep results (the list q.sweep returns, or a results.jsonl path)
// as an aligned text table on stdout and a Markdown table in summary.md. Columns are the
// config keys, then the metrics (nested metric tables flattened as "a.b"), then the error of
// failed points; rows can be sorted by any column ("-name" for descending).

let reportSource = #"""
local q, sys = ...

local allowed = { sort = true, columns = true, out = true }

-- level: 3 when called by q.report itself, 4 from a helper q.report calls (the position is then
-- the user's call, not a line in this chunk).
local function fail(msg, level) error("qlora.report: " .. msg, level or 3) end

local sorted_keys = sys.sorted_keys  -- defined by q.sweep's chunk

local function flatten(t, prefix, into, depth)
  for _, k in ipairs(sorted_keys(t)) do
    local v = t[k]
    local name = prefix == "" and tostring(k) or prefix .. "." .. tostring(k)
    if type(v) == "table" and depth < 8 then flatten(v, name, into, depth + 1) else into[name] = v end
  end
  return into
end

local function load_records(source)
  if type(source) == "table" then
    for i, r in ipairs(source) do
      if type(r) ~= "table" or r.id == nil then fail("results[" .. i .. "] is not a sweep result (a table with id, config, status, metrics)", 4) end
    end
    return source, sys.result_dirs[source]
  end
  if type(source) ~= "string" then fail("expected the results of q.sweep or a path to results.jsonl, got " .. type(source), 4) end
  local path = source
  if not path:match("%.jsonl$") then path = path .. "/results.jsonl" end
  local by_id, order
  local dir = path:match("^(.*)/results%.jsonl$") or (path == "results.jsonl" and ".") or nil
  local points = dir and io.open(dir .. "/points", "r")
  if points then
    -- A sweep's out dir: the union of results.jsonl and the per-point records (shards write
    -- only those).
    points:close()
    by_id, order = sys.read_union(dir)
  else
    local f = io.open(path, "r")
    if not f then fail(path .. ": cannot open (expected a sweep's results.jsonl or its out dir)", 4) end
    f:close()
    by_id, order = sys.read_records(path)
  end
  if not by_id then fail(order, 4) end
  local list = {}
  for i, id in ipairs(order) do list[i] = by_id[id] end
  return list, path:match("^(.*)/[^/]*$") or "."
end

local function format_number(x)
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" elseif x == -math.huge then return "-inf" end
  if math.type(x) == "integer" then return tostring(x) end
  local a = math.abs(x)
  if a == 0 then return "0" end
  if a >= 1e9 or a < 1e-3 then return string.format("%.3e", x) end
  if a >= 1000 then return string.format("%.0f", x) end
  return string.format("%.4g", x)
end

local function format_cell(v)
  if v == nil then return "" end
  if type(v) == "number" then return format_number(v) end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = type(x) == "number" and format_number(x) or tostring(x) end
    return table.concat(parts, "+")
  end
  return tostring(v)
end

local function first_line(s, width)
  s = tostring(s):match("[^\n]*")
  if #s > width then s = s:sub(1, width - 3) .. "..." end
  return s
end

-- The value of a column for a record: top-level fields, then config, then flattened metrics.
local top_level = { id = true, status = true, duration_s = true, error = true }
local function lookup(r, flat, name)
  if top_level[name] then return r[name] end
  if type(r.config) == "table" and r.config[name] ~= nil then return r.config[name] end
  return flat[name]
end

local function default_columns(records, flats)
  local config_keys, metric_keys, any_error = {}, {}, false
  for i, r in ipairs(records) do
    if type(r.config) == "table" then
      local swept_seed = type(r.id) == "string" and (r.id:find("^seed=") or r.id:find(",seed="))
      for k in pairs(r.config) do
        if k ~= "out" and (k ~= "seed" or swept_seed) then config_keys[k] = true end
      end
    end
    for k in pairs(flats[i]) do metric_keys[k] = true end
    if r.status ~= "ok" then any_error = true end
  end
  local cols = sorted_keys(config_keys)
  for _, k in ipairs(sorted_keys(metric_keys)) do
    if not config_keys[k] then cols[#cols + 1] = k end
  end
  if any_error then cols[#cols + 1] = "error" end
  return cols
end

local function compare_values(a, b)
  local ta, tb = type(a), type(b)
  if ta == "number" and tb == "number" then return a < b end
  if ta == "number" then return true end
  if tb == "number" then return false end
  return tostring(a) < tostring(b)
end

local function escape_md(s) return (s:gsub("|", "\\|")) end

function q.report(source, opts)
  if opts ~= nil and type(opts) ~= "table" then fail("expected a table of options as argument 2, got " .. type(opts)) end
  opts = opts or {}
  for k in pairs(opts) do
    if not allowed[k] then fail("unknown option '" .. tostring(k) .. "' (expected sort, columns, out)") end
  end
  if opts.sort ~= nil and (type(opts.sort) ~= "string" or opts.sort == "" or opts.sort == "-") then
    fail("option 'sort' must be a column name (\"-name\" for descending)")
  end
  if opts.out ~= nil and (type(opts.out) ~= "string" or opts.out == "") then fail("option 'out' must be a file path") end
  if opts.columns ~= nil then
    if type(opts.columns) ~= "table" or #opts.columns == 0 then fail("option 'columns' must be a non-empty list of column names") end
    for i, c in ipairs(opts.columns) do
      if type(c) ~= "string" then fail("columns[" .. i .. "] must be a string, got " .. type(c)) end
    end
  end

  local records, dir = load_records(source)
  local rows = {}
  for i, r in ipairs(records) do rows[i] = { record = r, flat = flatten(type(r.metrics) == "table" and r.metrics or {}, "", {}, 0), index = i } end

  if opts.sort then
    local name, descending = opts.sort, false
    if name:sub(1, 1) == "-" then name, descending = name:sub(2), true end
    for _, row in ipairs(rows) do
      local v = row.record.status == "ok" and lookup(row.record, row.flat, name) or nil
      if type(v) == "number" and v ~= v then v = nil end
      row.key = v
    end
    table.sort(rows, function(a, b)
      if a.key == nil or b.key == nil then
        if a.key == nil and b.key == nil then return a.index < b.index end
        return b.key == nil
      end
      if a.key == b.key then return a.index < b.index end
      if descending then return compare_values(b.key, a.key) end
      return compare_values(a.key, b.key)
    end)
  end

  local flats = {}
  for i, row in ipairs(rows) do flats[i] = row.flat end
  local sorted_records = {}
  for i, row in ipairs(rows) do sorted_records[i] = row.record end
  local columns = opts.columns or default_columns(sorted_records, flats)

  -- Cells as text; a column is numeric (right-aligned) when every filled cell holds a number.
  local cells, numeric = {}, {}
  for j, c in ipairs(columns) do numeric[j] = true end
  for i, row in ipairs(rows) do
    cells[i] = {}
    for j, c in ipairs(columns) do
      local v = lookup(row.record, row.flat, c)
      if c == "error" and v ~= nil then v = first_line(v, 70) end
      cells[i][j] = format_cell(v)
      if v ~= nil and type(v) ~= "number" then numeric[j] = false end
    end
  end

  local widths = {}
  for j, c in ipairs(columns) do
    widths[j] = #c
    for i = 1, #rows do widths[j] = math.max(widths[j], #cells[i][j]) end
  end
  local function pad(s, j)
    local fill = string.rep(" ", widths[j] - #s)
    return numeric[j] and fill .. s or s .. fill
  end
  local lines = {}
  local header, rule = {}, {}
  for j, c in ipairs(columns) do header[j] = pad(c, j); rule[j] = string.rep("-", widths[j]) end
  lines[1] = (table.concat(header, "  "):gsub("%s+$", ""))
  lines[2] = table.concat(rule, "  ")
  for i = 1, #rows do
    local parts = {}
    for j = 1, #columns do parts[j] = pad(cells[i][j], j) end
    lines[#lines + 1] = (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  local text = #rows == 0 and "(no sweep results)" or table.concat(lines, "\n")
  print(text)

  -- A shard names its summary after itself (shards share the out dir); a sweep worker running the
  -- script's other lines writes none.
  local shard = sys.shard_setting()
  local summary = opts.out or (dir and not sys.assignment()
    and dir .. (shard and ("/summary." .. sys.shard_tag(shard) .. ".md") or "/summary.md")) or nil
  if summary then
    local ok_count = 0
    for _, r in ipairs(sorted_records) do if r.status == "ok" then ok_count = ok_count + 1 end end
    local md = { "# Sweep summary", "",
      string.format("%d points: %d ok, %d failed.%s", #rows, ok_count, #rows - ok_count,
        opts.sort and (" Sorted by " .. opts.sort:gsub("^%-", "") .. (opts.sort:sub(1, 1) == "-" and " (descending)." or " (ascending).")) or ""),
      "" }
    local h, r = {}, {}
    for j, c in ipairs(columns) do h[j] = escape_md(c); r[j] = numeric[j] and "---:" or "---" end
    md[#md + 1] = "| " .. table.concat(h, " | ") .. " |"
    md[#md + 1] = "|" .. table.concat(r, "|") .. "|"
    for i = 1, #rows do
      local parts = {}
      for j = 1, #columns do parts[j] = escape_md(cells[i][j]) end
      md[#md + 1] = "| " .. table.concat(parts, " | ") .. " |"
    end
    local ok, err = pcall(sys.write_atomic, summary, table.concat(md, "\n") .. "\n")
    if not ok then fail((tostring(err):gsub("^qlora%.sweep: ", ""))) end
  end
  return sorted_records, text, summary
end
"""#
