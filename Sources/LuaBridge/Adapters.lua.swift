// Adapters written in Lua, the Lua half: model:add_adapter (resolving a definition, choosing the
// sites, running init seeded per site, attaching forward), and save_adapter / load_adapter for
// them (safetensors plus a manifest; PEFT's layout through the definition's own export and import
// functions), wrapping the LoRA versions of those two methods. AdapterBindings.swift holds the
// Swift half (sites, attaching, the protected calls into forward).

let adaptersSource = #"""
local q, methods, sys = ...

local function fail(fn, msg, level)
  error("qlora.Model." .. fn .. ": " .. msg, (level or 2) + 1)
end

-- "qlora.Model._adapter_sites: msg" -> "msg" (the public method names itself)
local function bare(msg)
  msg = tostring(msg)
  return (msg:gsub("^qlora%.Model%.[%w_]+: ", ""))
end

local spec_keys = { name = true, kind = true, targets = true, layers = true, at = true, init = true,
  forward = true, seed = true, options = true, frozen = true, peft_export = true, peft_import = true }

-- The definition behind a spec: spec.kind may be a definition table (its fields fill what the
-- spec leaves out) or a string naming the kind; a spec with init/forward is its own definition.
local function resolve(spec)
  for k in pairs(spec) do
    if not spec_keys[k] then fail("add_adapter", "unknown option '" .. tostring(k) .. "' (options: at, name, kind, targets, layers, init, forward, seed, options, frozen)", 3) end
  end
  local def, kind = spec, spec.kind
  if type(kind) == "table" then def = kind; kind = def.kind end
  if kind ~= nil and type(kind) ~= "string" then fail("add_adapter", "kind must be a string or a definition table, got " .. type(kind), 3) end
  local function get(k) if spec[k] ~= nil then return spec[k] end; if def ~= spec then return def[k] end end
  local d = { def = def, kind = kind or "lua", at = get("at") or "linear", init = get("init"), forward = get("forward"),
    targets = get("targets"), layers = get("layers"), seed = get("seed") or 0, options = get("options") or {},
    frozen = get("frozen") or {} }
  d.name = spec.name or def.name or kind or "default"
  if type(d.name) ~= "string" or d.name == "" then fail("add_adapter", "name must be a non-empty string", 3) end
  if type(d.init) ~= "function" then fail("add_adapter", "init must be a function(site, q) returning a table of tensors, got " .. type(d.init), 3) end
  if type(d.forward) ~= "function" then fail("add_adapter", "forward must be a function, got " .. type(d.forward), 3) end
  if math.type(d.seed) ~= "integer" or d.seed < 0 then fail("add_adapter", "seed must be an integer >= 0", 3) end
  if type(d.options) ~= "table" then fail("add_adapter", "options must be a table", 3) end
  if type(d.frozen) ~= "table" then fail("add_adapter", "frozen must be a list of parameter keys", 3) end
  return d
end

-- What init receives as q: the qlora module, with randn / rand seeded per site when no seed is
-- given (draw k of site i of an adapter with seed s always gives the same numbers), and
-- q.shared(key, make) for one tensor shared by every site of the adapter.
local function context(seed, i, shared, options)
  local site_seed = (seed * 1000003 + i * 7919) % 2147483647
  local counter = 0
  local function seeded(o)
    local c = {}
    if o ~= nil then
      if type(o) ~= "table" then error("options must be a table", 3) end
      for k, v in pairs(o) do c[k] = v end
    end
    if c.seed == nil then counter = counter + 1; c.seed = (site_seed * 31 + counter) % 2147483647 end
    return c
  end
  local ctx = setmetatable({ seed = site_seed, options = options }, { __index = q })
  function ctx.randn(shape, o) return q.randn(shape, seeded(o)) end
  function ctx.rand(shape, o) return q.rand(shape, seeded(o)) end
  function ctx.shared(key, make)
    local v = shared[key]
    if v == nil then v = make(); shared[key] = v end
    return v
  end
  return ctx
end

local function adapter_names(model)
  local names = {}
  for _, e in ipairs(model:_script_adapters()) do names[e.name] = e end
  return names
end

local function has_lora(model, name)
  for _, p in ipairs(model:parameters()) do
    if p.name:find(".lora_A." .. name .. ".weight", 1, true) then return true end
  end
  return false
end

local function label(name, site) return string.format("adapter %q at %s (%s)", name, site.name, site.at) end

local function add(model, spec)
  if type(spec) ~= "table" then fail("add_adapter", "expected a table {at, init, forward, ...}, got " .. type(spec), 3) end
  local d = resolve(spec)
  if adapter_names(model)[d.name] or has_lora(model, d.name) then
    fail("add_adapter", "the model already has an adapter named \"" .. d.name .. "\"", 3)
  end
  local sel = { layers = d.layers }
  -- at may be a function(site) choosing "linear" or "linear_input" per linear layer (IA3 scales
  -- the output of some layers and the input of others)
  local per_site = type(d.at) == "function"
  if not per_site and type(d.at) ~= "string" then fail("add_adapter", "at must be a placement name or a function(site), got " .. type(d.at), 3) end
  local enum_at = per_site and "linear" or d.at
  local linear = enum_at == "linear" or enum_at == "linear_input"
  if linear then sel.targets = d.targets end
  local ok, sites = pcall(model._adapter_sites, model, enum_at, sel)
  if not ok then fail("add_adapter", bare(sites), 3) end
  if not linear and d.targets ~= nil then
    if type(d.targets) ~= "function" then fail("add_adapter", "targets at \"" .. d.at .. "\" must be a function(site) (or use layers)", 3) end
    local kept = {}
    for _, s in ipairs(sites) do
      local ok2, keep = pcall(d.targets, s)
      if not ok2 then fail("add_adapter", "the targets function raised an error for " .. s.name .. ": " .. tostring(keep), 3) end
      if keep then kept[#kept + 1] = s end
    end
    if #kept == 0 then fail("add_adapter", "targets select no site", 3) end
    sites = kept
  end
  -- the widest input and output over the chosen sites (for tensors shared by all of them)
  local max_in, max_out = 0, 0
  for _, s in ipairs(sites) do max_in = math.max(max_in, s.in_features); max_out = math.max(max_out, s.out_features) end
  for _, s in ipairs(sites) do s.max_in_features = max_in; s.max_out_features = max_out end
  local frozen = {}
  for _, k in ipairs(d.frozen) do frozen[k] = true end
  local info = { def = d.def, kind = d.kind, seed = d.seed, options = d.options, frozen = d.frozen, at = enum_at }
  local shared, attached = {}, 0
  local function undo() if attached > 0 then pcall(model.remove_adapter, model, d.name) end end
  for i, site in ipairs(sites) do
    if per_site then
      local ok6, where = pcall(d.at, site)
      if not ok6 then undo(); fail("add_adapter", "the at function raised an error for " .. site.name .. ": " .. tostring(where), 3) end
      if where ~= "linear" and where ~= "linear_input" then undo(); fail("add_adapter", "the at function must return \"linear\" or \"linear_input\" for " .. site.name .. ", got " .. tostring(where), 3) end
      site.at = where
    end
    site.adapter = d.name
    site.options = d.options
    local ok3, params = pcall(q.no_grad, d.init, site, context(d.seed, i, shared, d.options))
    if not ok3 then undo(); fail("add_adapter", label(d.name, site) .. ": init raised an error: " .. tostring(params), 3) end
    if type(params) ~= "table" then undo(); fail("add_adapter", label(d.name, site) .. ": init must return a table, got " .. type(params), 3) end
    local tensors = {}
    for k, v in pairs(params) do
      if q.is_tensor(v) then
        if type(k) ~= "string" then undo(); fail("add_adapter", label(d.name, site) .. ": parameter keys must be strings", 3) end
        if v:dtype() ~= "f32" then undo(); fail("add_adapter", label(d.name, site) .. ": parameter '" .. k .. "' must be f32, got " .. v:dtype(), 3) end
        if not frozen[k] and not v.requires_grad then
          local ok4, err = pcall(function() v.requires_grad = true end)
          if not ok4 then undo(); fail("add_adapter", label(d.name, site) .. ": parameter '" .. k .. "': " .. bare(err), 3) end
        end
        tensors[k] = v
      end
    end
    local forward = d.forward
    local call
    if site.at == "linear" then
      call = function(x, y) return forward(x, y, params, site) end
    else
      call = function(h) return forward(h, params, site) end
    end
    local ok5, err = pcall(model._attach_adapter, model, d.name, d.kind, site.at, site.name, site.layer, tensors, call, info)
    if not ok5 then undo(); fail("add_adapter", bare(err), 3) end
    attached = attached + 1
  end
  return #sites
end

-- model:add_adapter{name, kind, at = "linear", targets, layers, init, forward, seed = 0, options, frozen}
function methods.add_adapter(model, spec) return add(model, spec) end

-- The script adapters named `name`, in model order (nil when there are none).
local function entries(model, name)
  local out = {}
  for _, e in ipairs(model:_script_adapters()) do if e.name == name then out[#out + 1] = e end end
  return #out > 0 and out or nil
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a"); f:close()
  return s
end

local lora_save, lora_load = methods.save_adapter, methods.load_adapter

local function save_script(model, dir, name, es, format)
  local info = es[1].info
  if not os.rename(dir, dir) then
    local ok = os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'")
    if not ok then fail("save_adapter", "cannot create " .. dir, 3) end
  end
  if format == "peft" then
    local export = info.def.peft_export
    if type(export) ~= "function" then fail("save_adapter", "the definition of \"" .. name .. "\" (" .. info.kind .. ") has no peft_export function", 3) end
    local ok, tensors, config = pcall(export, es, info)
    if not ok then fail("save_adapter", "peft_export raised an error: " .. tostring(tensors), 3) end
    if type(tensors) ~= "table" or type(config) ~= "table" then fail("save_adapter", "peft_export must return tensors, config", 3) end
    local ok2, err = pcall(q.save_tensors, dir .. "/adapter_model.safetensors", tensors, { format = "pt" })
    if not ok2 then fail("save_adapter", bare(err), 3) end
    local ok3, text = pcall(sys.encode, config, "adapter_config")
    if not ok3 then fail("save_adapter", bare(text), 3) end
    sys.write_atomic(dir .. "/adapter_config.json", text)
    return
  end
  local tensors, sites = {}, {}
  for _, e in ipairs(es) do
    local keys = {}
    for k, t in pairs(e.params) do
      local file_key = e.aliases[k]
      if file_key then
        file_key = file_key:gsub("%." .. name:gsub("%p", "%%%0") .. "%.", ".", 1)
      else
        file_key = e.site .. "." .. k
        tensors[file_key] = t
      end
      keys[k] = { tensor = file_key, shape = t:shape(), trainable = t.requires_grad }
    end
    sites[#sites + 1] = { name = e.site, layer = e.layer, at = e.at, params = keys }
  end
  local ok, err = pcall(q.save_tensors, dir .. "/adapter_model.safetensors", tensors, { format = "qlora.adapter" })
  if not ok then fail("save_adapter", bare(err), 3) end
  local manifest = { format = "qlora.adapter", version = 1, name = name, kind = info.kind, at = info.at,
    seed = info.seed, options = info.options, frozen = info.frozen, sites = sites }
  local ok2, text = pcall(sys.encode, manifest, "manifest")
  if not ok2 then fail("save_adapter", "the adapter's options cannot be written as JSON: " .. bare(text), 3) end
  sys.write_atomic(dir .. "/adapter_manifest.json", text)
end

-- model:save_adapter(dir [, {name =, format = "qlora"|"peft"|"gguf"}]): "gguf" (a file path,
-- llama.cpp's LoRA adapter) holds built-in LoRA adapters only
function methods.save_adapter(model, dir, opts)
  if opts ~= nil and type(opts) ~= "table" then fail("save_adapter", "options must be a table", 2) end
  opts = opts or {}
  local name, format = opts.name, opts.format or "qlora"
  if format ~= "qlora" and format ~= "peft" and format ~= "gguf" then
    fail("save_adapter", "format must be \"qlora\", \"peft\" or \"gguf\", got " .. tostring(format), 2)
  end
  if type(dir) ~= "string" then fail("save_adapter", "expected a directory path as argument 1, got " .. type(dir), 2) end
  local es = name and entries(model, name)
  if name == nil then
    -- no name: a LoRA adapter when there is one (as before), else the first script adapter
    local list = model:_script_adapters()
    local lora = false
    for _, p in ipairs(model:parameters()) do if p.name:find(".lora_A.", 1, true) then lora = true; break end end
    if not lora and #list > 0 then name = list[1].name; es = entries(model, name) end
  end
  if es then
    if format == "gguf" then
      fail("save_adapter", "adapter \"" .. name .. "\" is written in Lua: format \"gguf\" (llama.cpp) holds LoRA adapters only", 2)
    end
    return save_script(model, dir, name, es, format)
  end
  -- built-in LoRA: PEFT's layout (what "qlora" means for it), or llama.cpp's GGUF adapter
  local ok, err = pcall(lora_save, model, dir, { name = name, format = format == "gguf" and "gguf" or "peft" })
  if not ok then error(err, 2) end
end

local function load_script(model, dir, opts)
  local def = opts.kind
  if type(def) ~= "table" then fail("load_adapter", dir .. " holds an adapter written in Lua: pass its definition, load_adapter(dir, {kind = <definition>})", 3) end
  local text = read_file(dir .. "/adapter_manifest.json")
  local peft = text == nil
  local manifest
  if peft then
    if type(def.peft_import) ~= "function" then fail("load_adapter", dir .. " has no adapter_manifest.json, and the definition has no peft_import function", 3) end
    local ctext = read_file(dir .. "/adapter_config.json")
    if not ctext then fail("load_adapter", dir .. " has neither adapter_manifest.json nor adapter_config.json", 3) end
    local config, err = sys.decode(ctext)
    if config == nil then fail("load_adapter", dir .. "/adapter_config.json: " .. tostring(err), 3) end
    local ok, tensors = pcall(q.load_tensors, dir .. "/adapter_model.safetensors")
    if not ok then fail("load_adapter", bare(tensors), 3) end
    local ok2, spec, values = pcall(def.peft_import, config, tensors, model)
    if not ok2 then fail("load_adapter", "peft_import raised an error: " .. tostring(spec), 3) end
    spec.kind = def
    spec.name = opts.name or spec.name
    local ok3, err3 = pcall(add, model, spec)
    if not ok3 then fail("load_adapter", bare(err3), 3) end
    local name = spec.name or def.kind or "default"
    for _, e in ipairs(entries(model, name) or {}) do
      local vs = values[e.site] or {}
      for k, t in pairs(e.params) do
        local v = vs[k]
        if v ~= nil then
          if not q.is_tensor(v) then fail("load_adapter", "peft_import gave a non-tensor for " .. e.site .. "." .. k, 3) end
          local ok4, err4 = pcall(function() q.no_grad(function() t:copy_(v:to("f32"):reshape(t:shape())) end) end)
          if not ok4 then fail("load_adapter", e.site .. "." .. k .. ": " .. bare(err4), 3) end
        end
      end
    end
    return
  end
  local m, err = sys.decode(text)
  if type(m) ~= "table" or m.format ~= "qlora.adapter" then fail("load_adapter", dir .. "/adapter_manifest.json is not a qlora adapter manifest" .. (err and (": " .. tostring(err)) or ""), 3) end
  if def.kind ~= nil and m.kind ~= def.kind then
    fail("load_adapter", string.format("%s holds a \"%s\" adapter, the definition given is \"%s\"", dir, tostring(m.kind), tostring(def.kind)), 3)
  end
  if type(m.sites) ~= "table" or #m.sites == 0 then fail("load_adapter", "the manifest lists no sites", 3) end
  local ok, tensors = pcall(q.load_tensors, dir .. "/adapter_model.safetensors")
  if not ok then fail("load_adapter", bare(tensors), 3) end
  local name = opts.name or m.name
  local at = m.at
  if type(def.at) == "function" and (at == "linear" or at == "linear_input") then at = def.at end
  local spec = { name = name, kind = def, at = at, seed = math.tointeger(m.seed) or 0, options = m.options, frozen = m.frozen }
  local linear = m.at == "linear" or m.at == "linear_input"
  local want = {}
  for i, s in ipairs(m.sites) do
    if type(s) ~= "table" or type(s.name) ~= "string" then fail("load_adapter", "manifest site " .. i .. " has no name", 3) end
    want[s.name] = s
  end
  if linear then
    spec.targets = function(mod) return want[mod.name] ~= nil end
  elseif m.at == "mlp_act" or m.at == "mlp_out" or m.at == "block_out" then
    spec.targets = function(site) return want[site.name] ~= nil end
  end
  local ok2, err2 = pcall(add, model, spec)
  if not ok2 then fail("load_adapter", bare(err2), 3) end
  local es = entries(model, name) or {}
  if #es ~= #m.sites then
    pcall(model.remove_adapter, model, name)
    fail("load_adapter", string.format("the manifest lists %d sites, this model has %d of them", #m.sites, #es), 3)
  end
  for _, e in ipairs(es) do
    local s = want[e.site]
    for k, t in pairs(e.params) do
      local p = type(s.params) == "table" and s.params[k]
      local src = p and type(p.tensor) == "string" and tensors[p.tensor]
      if not src then
        pcall(model.remove_adapter, model, name)
        fail("load_adapter", string.format("%s: no tensor for %s.%s", dir, e.site, k), 3)
      end
      local ok3, err3 = pcall(function()
        if table.concat(src:shape(), ",") ~= table.concat(t:shape(), ",") then
          error(string.format("%s.%s is [%s] in the file, [%s] in the adapter", e.site, k, table.concat(src:shape(), ", "), table.concat(t:shape(), ", ")), 0)
        end
        q.no_grad(function() t:copy_(src:to("f32")) end)
      end)
      if not ok3 then pcall(model.remove_adapter, model, name); fail("load_adapter", bare(err3), 3) end
    end
  end
end

-- model:load_adapter(dir [, {name =, kind = <definition>}])
function methods.load_adapter(model, dir, opts)
  if opts ~= nil and type(opts) ~= "table" then fail("load_adapter", "options must be a table", 2) end
  opts = opts or {}
  if type(dir) ~= "string" then fail("load_adapter", "expected a directory path as argument 1, got " .. type(dir), 2) end
  if opts.kind ~= nil or read_file(dir .. "/adapter_manifest.json") ~= nil then
    return load_script(model, dir, opts)
  end
  for k in pairs(opts) do if k ~= "name" then fail("load_adapter", "unknown option '" .. tostring(k) .. "'", 2) end end
  local ok, err = pcall(lora_load, model, dir, opts)
  if not ok then error(err, 2) end
end
"""#
