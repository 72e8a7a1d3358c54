// The Swift half of adapters written in Lua (model:add_adapter, see Adapters.lua.swift for the
// logic): the sites a placement and its selectors give, attaching an adapter whose forward is a
// Lua function (kept in the registry and called under lua_pcall on the running thread, so an
// error inside it becomes a Swift error naming the adapter and the site, never a longjmp through
// Swift frames), and listing the adapters for saving.

import CLua
import NN
import Quant
import Tensor

enum AdapterBindings {
    /// Runs the Lua half (Adapters.lua.swift) with (q, the model's method table, sys helpers);
    /// after ModelBindings.install.
    static func install(_ L: LuaState, moduleIndex q: Int32) throws {
        let q = luaAbs(L, q)
        luaRawGetField(L, LUA_REGISTRY, ModelBindings.modelName)
        guard lua_type(L, -1) == LUA_TTABLE else { throw LuaError("qlora: the model metatable is missing") }
        luaRawGetField(L, -1, "__index")
        let methods = lua_gettop(L)
        luaNewTable(L)
        let sys = lua_gettop(L)
        for (key, body) in SweepBindings.helpers() where ["encode", "decode", "write_atomic"].contains(key) {
            Bindings.push(L, "qlora.Model.save_adapter", body)
            luaRawSetField(L, sys, key)
        }
        let status = adaptersSource.withCString { luaL_loadbufferx(L, $0, adaptersSource.utf8.count, "=qlora.adapters", "t") }
        if status != 0 { throw LuaError("qlora: qlora.adapters does not compile: \(luaString(L, -1) ?? "")") }
        lua_pushvalue(L, q)
        lua_pushvalue(L, methods)
        lua_pushvalue(L, sys)
        if luaPcall(L, 3, 0) != 0 { throw LuaError("qlora: qlora.adapters failed: \(luaString(L, -1) ?? "")") }
        luaPop(L, 3)
    }

    static func methods() -> [(String, LuaFunction)] {
        func this(_ a: LuaArgs) throws -> LlamaModel { try ModelBindings.model(a) }
        return [
            // model:_adapter_sites(at, {targets =, layers =}) -> list of site tables
            ("_adapter_sites", { a in
                let m = try this(a)
                let atName = try a.string(2)
                guard let at = AdapterPlacement(rawValue: atName) else {
                    throw a.fail("at = \"\(atName)\" is not a placement (\(AdapterPlacement.allCases.map { $0.rawValue }.joined(separator: ", ")))")
                }
                let c = m.config
                var sites: [(name: String, kind: String, layer: Int?, inF: Int, outF: Int, dtype: String)] = []
                switch at {
                case .linear, .linearInput:
                    let cfg = try LoRABindings.loraConfig(a, 3)
                    let selected = try ModelBindings.modelErrors(a) { try LoRAPlacement.select(m.linears, cfg) }
                    for l in selected {
                        var dtype = "f32"
                        switch l.base {
                        case .dense(let w, _): dtype = w.dtype.name
                        case .quantized(let q): dtype = q.weight.options.type.rawValue
                        }
                        sites.append((l.name, l.kind, l.layer, l.inFeatures, l.outFeatures, dtype))
                    }
                case .mlpAct, .mlpOut, .blockOut:
                    let opts = try a.options(3, allowed: ["targets", "layers"])
                    var keep: [Int]? = nil
                    if let o = opts, a.optField(o, "layers") != nil {
                        defer { luaPop(a.L, 1) }
                        keep = lua_type(a.L, -1) == LUA_TNUMBER ? [try a.integer(-1)] : try a.intList(-1, what: "layers")
                    }
                    for layer in m.layers where keep?.contains(layer.index) ?? true {
                        if at == .mlpAct {
                            sites.append(("model.layers.\(layer.index).mlp.act_fn", "act_fn", layer.index, c.intermediateSize, c.intermediateSize, "f32"))
                        } else if at == .mlpOut {
                            sites.append(("model.layers.\(layer.index).mlp", "mlp", layer.index, c.hiddenSize, c.hiddenSize, "f32"))
                        } else {
                            sites.append(("model.layers.\(layer.index)", "block", layer.index, c.hiddenSize, c.hiddenSize, "f32"))
                        }
                    }
                    if sites.isEmpty { throw a.fail("layers select no decoder layer (the model has \(m.layers.count))") }
                case .embed:
                    sites.append(("model.embed_tokens", "embed_tokens", nil, c.hiddenSize, c.hiddenSize, "f32"))
                case .prefix:
                    sites.append(("model.prefix", "prefix", nil, c.hiddenSize, c.hiddenSize, "f32"))
                }
                lua_createtable(a.L, Int32(sites.count), 0)
                for (i, s) in sites.enumerated() {
                    lua_createtable(a.L, 0, 10)
                    luaPushString(a.L, s.name); luaRawSetField(a.L, -2, "name")
                    luaPushString(a.L, s.kind); luaRawSetField(a.L, -2, "kind")
                    if let li = s.layer { lua_pushinteger(a.L, lua_Integer(li)); luaRawSetField(a.L, -2, "layer") }
                    lua_pushinteger(a.L, lua_Integer(s.inF)); luaRawSetField(a.L, -2, "in_features")
                    lua_pushinteger(a.L, lua_Integer(s.outF)); luaRawSetField(a.L, -2, "out_features")
                    luaPushString(a.L, s.dtype); luaRawSetField(a.L, -2, "dtype")
                    luaPushString(a.L, at.rawValue); luaRawSetField(a.L, -2, "at")
                    lua_pushinteger(a.L, lua_Integer(c.hiddenSize)); luaRawSetField(a.L, -2, "hidden_size")
                    lua_pushinteger(a.L, lua_Integer(c.intermediateSize)); luaRawSetField(a.L, -2, "intermediate_size")
                    lua_pushinteger(a.L, lua_Integer(i + 1)); luaRawSetField(a.L, -2, "index")
                    lua_rawseti(a.L, -2, lua_Integer(i + 1))
                }
                return 1
            }),
            // model:_attach_adapter(name, kind, at, site, layer|nil, params {key = tensor}, call, info)
            // (info: a table kept for the adapter, returned by _script_adapters)
            ("_attach_adapter", { a in
                let m = try this(a)
                let name = try a.string(2), kind = try a.string(3), atName = try a.string(4), site = try a.string(5)
                guard let at = AdapterPlacement(rawValue: atName) else { throw a.fail("unknown placement \"\(atName)\"") }
                let layer = a.isNil(6) ? nil : try a.integer(6)
                let pt = try a.table(7)
                var params: [(key: String, tensor: Tensor)] = []
                lua_pushnil(a.L)
                while lua_next(a.L, pt) != 0 {
                    defer { luaPop(a.L, 1) }
                    guard let k = luaString(a.L, -2) else { continue }
                    if let t = TensorUserdata.tensor(a.L, -1) { params.append((k, t)) }
                }
                params.sort { $0.key < $1.key }
                _ = try a.function(8)
                lua_pushvalue(a.L, 8)
                let ref = luaL_ref(a.L, LUA_REGISTRY)
                _ = try a.table(9)
                lua_pushvalue(a.L, 9)
                let infoRef = luaL_ref(a.L, LUA_REGISTRY)
                let label = "adapter \"\(name)\" at \(site) (\(atName))"
                let adapter = ScriptAdapter(name: name, kind: kind, placement: at, site: site, layer: layer, params: params,
                                            handle: Int(infoRef)) { inputs in
                    try callForward(ref, inputs, label: label)
                }
                // the registry entries go when the adapter does (removed, or its model collected);
                // through the main thread, which lives as long as the state
                lua_rawgeti(a.L, LUA_REGISTRY, lua_Integer(LUA_RIDX_MAINTHREAD))
                let main = lua_tothread(a.L, -1)
                luaPop(a.L, 1)
                adapter.onRelease = {
                    guard let main = main else { return }
                    luaL_unref(main, LUA_REGISTRY, ref)
                    luaL_unref(main, LUA_REGISTRY, infoRef)
                }
                try ModelBindings.modelErrors(a) { try m.attach(adapter) }
                return 0
            }),
            // model:_script_adapters() -> list of {name, kind, at, site, layer, params = {key = tensor}}
            ("_script_adapters", { a in
                let list = try this(a).scriptAdapters
                var seen: [ObjectIdentifier: String] = [:]
                lua_createtable(a.L, Int32(list.count), 0)
                for (i, s) in list.enumerated() {
                    lua_createtable(a.L, 0, 8)
                    lua_rawgeti(a.L, LUA_REGISTRY, lua_Integer(s.handle)); luaRawSetField(a.L, -2, "info")
                    // a tensor shared by several sites (or keys) is named once: later ones alias it
                    lua_createtable(a.L, 0, 0)
                    for (k, t) in s.params {
                        let id = ObjectIdentifier(t)
                        if let first = seen[id] { luaPushString(a.L, first); luaRawSetField(a.L, -2, k) } else { seen[id] = "\(s.site).\(k)" }
                    }
                    luaRawSetField(a.L, -2, "aliases")
                    luaPushString(a.L, s.name); luaRawSetField(a.L, -2, "name")
                    luaPushString(a.L, s.kind); luaRawSetField(a.L, -2, "kind")
                    luaPushString(a.L, s.placement.rawValue); luaRawSetField(a.L, -2, "at")
                    luaPushString(a.L, s.site); luaRawSetField(a.L, -2, "site")
                    if let li = s.layer { lua_pushinteger(a.L, lua_Integer(li)); luaRawSetField(a.L, -2, "layer") }
                    lua_createtable(a.L, 0, Int32(s.params.count))
                    for (k, t) in s.params { TensorUserdata.push(a.L, t); luaRawSetField(a.L, -2, k) }
                    luaRawSetField(a.L, -2, "params")
                    lua_rawseti(a.L, -2, lua_Integer(i + 1))
                }
                return 1
            }),
            // model:remove_adapter(name) -> sites it was removed from (script adapters and LoRA)
            ("remove_adapter", { a in
                let m = try this(a)
                let name = try a.string(2)
                var n = m.detachScriptAdapter(name)
                for l in m.linears where l.adapter(named: name) != nil {
                    if l.adapter(named: name)?.merged == true { throw a.fail("adapter \"\(name)\" is merged into \(l.name); unmerge it first") }
                    l.removeAdapter(name); n += 1
                }
                m.adapterConfigs[name] = nil
                if n == 0 { throw a.fail("the model has no adapter named \"\(name)\"") }
                lua_pushinteger(a.L, lua_Integer(n))
                return 1
            }),
        ]
    }

    /// Calls the Lua function kept at `ref` with the tensors, on the running Lua thread, under
    /// lua_pcall; returns the tensor it returns.
    static func callForward(_ ref: Int32, _ inputs: [Tensor], label: String) throws -> Tensor {
        guard let L = Bindings.current else { throw ModelError("\(label): a Lua adapter runs only when the model is called from Lua") }
        guard lua_checkstack(L, Int32(inputs.count) + 4) != 0 else { throw ModelError("\(label): Lua stack overflow") }
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        lua_rawgeti(L, LUA_REGISTRY, lua_Integer(ref))
        for t in inputs { TensorUserdata.push(L, t) }
        if luaPcall(L, Int32(inputs.count), 1) != 0 {
            let msg = luaString(L, -1) ?? "(error object is a \(luaTypeName(L, -1)))"
            throw ModelError("\(label): forward raised an error: \(msg)")
        }
        guard let t = TensorUserdata.tensor(L, -1) else {
            throw ModelError("\(label): forward must return a tensor, got \(luaTypeName(L, -1))")
        }
        return t
    }

    /// The script adapters' tensors for model:parameters(), by "<site>.<adapter>.<key>"; a tensor
    /// shared by several sites is listed once (under its first name), so optimizers step it once.
    static func parameters(_ m: LlamaModel) -> [(String, Tensor)] {
        var seen = Set<ObjectIdentifier>()
        var out: [(String, Tensor)] = []
        for s in m.scriptAdapters {
            for (k, t) in s.params where seen.insert(ObjectIdentifier(t)).inserted {
                out.append((s.parameterName(k), t))
            }
        }
        return out
    }

    /// True when some script adapter has this name.
    static func has(_ m: LlamaModel, _ name: String) -> Bool { m.scriptAdapters.contains { $0.name == name } }
}
