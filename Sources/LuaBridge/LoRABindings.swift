// LoRA methods of a model: add_lora (targets as names, a regex, "all-linear" or a Lua
// predicate; DoRA; kaiming / gaussian / PiSSA / LoftQ init), save_adapter / load_adapter in
// PEFT's layout, merge_adapter / unmerge_adapter, base_weight, parameters, set_adapter and
// enabling or disabling adapters.

import CLua
import Foundation
import IO
import NN
import Tensor

enum LoRABindings {
    static func methods() -> [(String, LuaFunction)] {
        func this(_ a: LuaArgs) throws -> LlamaModel { try ModelBindings.model(a) }
        return [
            ("add_lora", { a in
                let m = try this(a)
                let cfg = try loraConfig(a, 2)
                let added = try ModelBindings.modelErrors(a) { try LoRAPlacement.add(m, cfg, checkpoint: checkpointWeights(m)) }
                m.adapterConfigs[cfg.name] = cfg
                lua_pushinteger(a.L, lua_Integer(added.count))
                return 1
            }),
            ("save_adapter", { a in
                let m = try this(a)
                let dir = try a.string(2)
                let opts = try a.options(3, allowed: ["name", "format"])
                let name = try a.optionString(opts, "name") ?? m.adapterConfigs.keys.sorted().first ?? "default"
                switch try a.optionString(opts, "format") ?? "peft" {
                case "peft": try ModelBindings.modelErrors(a) { try PEFTAdapter.save(m, adapter: name, to: dir) }
                case "gguf": try ModelBindings.modelErrors(a) { try GGUFExport.saveAdapter(m, adapter: name, to: dir) }
                case let other: throw a.fail("option 'format' must be \"peft\" or \"gguf\", got '\(other)'")
                }
                return 0
            }),
            ("load_adapter", { a in
                let m = try this(a)
                let dir = try a.string(2)
                let opts = try a.options(3, allowed: ["name"])
                let name = try a.optionString(opts, "name") ?? "default"
                try ModelBindings.modelErrors(a) { try PEFTAdapter.load(m, from: dir, as: name) }
                return 0
            }),
            ("set_adapter", { a in
                let m = try this(a)
                let name = try a.string(2)
                if m.linears.allSatisfy({ $0.adapter(named: name) == nil }) && !AdapterBindings.has(m, name) {
                    throw a.fail("the model has no adapter named \"\(name)\"")
                }
                for l in m.linears { l.activeAdapters = [name]; l.adaptersEnabled = true }
                m.scriptActive = [name]; m.scriptEnabled = true
                return 0
            }),
            // model:merge_adapter([name]) -> modules changed (default: the active adapters not merged yet)
            ("merge_adapter", { a in
                let m = try this(a)
                let name = a.isNil(2) ? nil : try a.string(2)
                let n = try ModelBindings.modelErrors(a) { try LoRAMerge.merge(m, adapter: name) }
                lua_pushinteger(a.L, lua_Integer(n))
                return 1
            }),
            // model:unmerge_adapter([name]) -> modules changed (default: every merged adapter)
            ("unmerge_adapter", { a in
                let m = try this(a)
                let name = a.isNil(2) ? nil : try a.string(2)
                let n = try ModelBindings.modelErrors(a) { try LoRAMerge.unmerge(m, adapter: name) }
                lua_pushinteger(a.L, lua_Integer(n))
                return 1
            }),
            // model:base_weight(module) -> f32 copy of the base weight [out, in] (4-bit: dequantized)
            ("base_weight", { a in
                let m = try this(a)
                let name = try a.string(2)
                guard let l = m.linears.first(where: { $0.name == name }) else {
                    throw a.fail("the model has no linear layer named \"\(name)\" (see model:modules())")
                }
                let w = try ModelBindings.modelErrors(a) { try l.baseWeightF32().copy() }
                TensorUserdata.push(a.L, w)
                return 1
            }),
            ("disable_adapters", { a in let m = try this(a); for l in m.linears { l.adaptersEnabled = false }; m.scriptEnabled = false; return 0 }),
            ("enable_adapters", { a in let m = try this(a); for l in m.linears { l.adaptersEnabled = true }; m.scriptEnabled = true; return 0 }),
            // model:parameters{trainable = true} -> list of {name, tensor}
            ("parameters", { a in
                let m = try this(a)
                let opts = try a.options(2, allowed: ["trainable"])
                let onlyTrainable = try a.optionBool(opts, "trainable") ?? false
                let list = parameters(m, trainableOnly: onlyTrainable)
                lua_createtable(a.L, Int32(list.count), 0)
                for (i, (n, t)) in list.enumerated() {
                    lua_createtable(a.L, 0, 2)
                    luaPushString(a.L, n); luaRawSetField(a.L, -2, "name")
                    TensorUserdata.push(a.L, t); luaRawSetField(a.L, -2, "tensor")
                    lua_rawseti(a.L, -2, lua_Integer(i + 1))
                }
                return 1
            }),
            // trainable, total parameter counts (the base's weights are counted once, trained or not)
            ("trainable_parameters", { a in
                let m = try this(a)
                let trainable = parameters(m, trainableOnly: true).reduce(0) { $0 + $1.1.count }
                let trainableBase = m.baseParameters().filter { $0.tensor.requiresGrad }.reduce(0) { $0 + $1.tensor.count }
                lua_pushinteger(a.L, lua_Integer(trainable))
                lua_pushinteger(a.L, lua_Integer(m.config.parameterCount + trainable - trainableBase))
                return 2
            }),
            // model:set_trainable(true|false) -> tensors changed: full-parameter training of a dense base
            ("set_trainable", { a in
                let m = try this(a)
                let on = a.isNil(2) ? true : try a.bool(2)
                let n = try ModelBindings.modelErrors(a) { try m.setBaseTrainable(on) }
                lua_pushinteger(a.L, lua_Integer(n))
                return 1
            }),
        ]
    }

    /// The tensors that can train: base weights made trainable by set_trainable (by Hugging Face
    /// name), then LoRA tensors (A, B and DoRA magnitudes) by PEFT name, then the tensors of
    /// adapters written in Lua ("<site>.<adapter>.<key>"). Frozen base weights are not listed.
    static func parameters(_ m: LlamaModel, trainableOnly: Bool) -> [(String, Tensor)] {
        var out: [(String, Tensor)] = m.baseParameters().filter { $0.tensor.requiresGrad }.map { ($0.name, $0.tensor) }
        for l in m.linears {
            for (n, ad) in l.adapters {
                out.append(("\(l.name).lora_A.\(n).weight", ad.a))
                out.append(("\(l.name).lora_B.\(n).weight", ad.b))
                if let mag = ad.magnitude { out.append(("\(l.name).lora_magnitude_vector.\(n).weight", mag)) }
            }
        }
        out += AdapterBindings.parameters(m)
        if trainableOnly { return out.filter { $0.1.requiresGrad } }
        return out
    }

    static func loraConfig(_ a: LuaArgs, _ i: Int32) throws -> LoRAConfig {
        let L = a.L
        let t = try a.options(i, allowed: ["name", "r", "alpha", "dropout", "targets", "layers", "rank_pattern",
                                           "alpha_pattern", "rslora", "dora", "init", "seed", "loftq_iter"])
        var c = LoRAConfig()
        c.name = try a.optionString(t, "name") ?? "default"
        c.r = try a.optionInteger(t, "r") ?? 8
        if c.r < 1 { throw a.fail("r must be >= 1, got \(c.r)") }
        c.alpha = try a.optionNumber(t, "alpha") ?? Double(c.r)
        c.dropout = try a.optionNumber(t, "dropout") ?? 0
        c.rslora = try a.optionBool(t, "rslora") ?? false
        c.dora = try a.optionBool(t, "dora") ?? false
        c.initMethod = try a.optionString(t, "init") ?? "kaiming"
        if let it = try a.optionInteger(t, "loftq_iter") {
            if c.initMethod != "loftq" { throw a.fail("loftq_iter applies to init = \"loftq\" only") }
            if it < 1 { throw a.fail("loftq_iter must be >= 1, got \(it)") }
            c.loftqIter = it
        }
        if let s = try a.optionInteger(t, "seed") {
            if s < 0 { throw a.fail("seed must be >= 0") }
            c.seed = UInt64(s)
        }
        if let t = t, let ty = a.optField(t, "targets") {
            defer { luaPop(L, 1) }
            let idx = lua_gettop(L)
            switch ty {
            case LUA_TSTRING:
                let s = luaString(L, idx) ?? ""
                c.targets = s == "all-linear" ? .allLinear : .regex(s)
            case LUA_TTABLE:
                var names: [String] = []
                for k in 1...max(luaRawLen(L, idx), 1) where k <= luaRawLen(L, idx) {
                    lua_rawgeti(L, idx, lua_Integer(k))
                    defer { luaPop(L, 1) }
                    guard let s = luaString(L, -1) else { throw a.fail("targets entry \(k) must be a string") }
                    names.append(s)
                }
                if names.isEmpty { throw a.fail("targets must not be empty") }
                c.targets = .names(names)
            case LUA_TFUNCTION:
                // The function stays reachable in the options table for the whole add_lora call,
                // which is the only time the predicate runs.
                let optionsTable = t
                c.targets = .predicate { m in try callPredicate(L, optionsTable, m) }
            default:
                throw a.fail("targets must be a list of names, a regular expression, \"all-linear\" or a function")
            }
        }
        if let t = t, a.optField(t, "layers") != nil {
            defer { luaPop(L, 1) }
            if lua_type(L, -1) == LUA_TNUMBER { c.layers = [try a.integer(-1)] } else { c.layers = try a.intList(-1, what: "layers") }
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            guard let t = t, a.optField(t, key) != nil else { continue }
            defer { luaPop(L, 1) }
            let p = try a.table(-1)
            lua_pushnil(L)
            while lua_next(L, p) != 0 {
                defer { luaPop(L, 1) }
                guard let k = luaString(L, -2), lua_type(L, -1) == LUA_TNUMBER else { throw a.fail("\(key) must map names to numbers") }
                if key == "rank_pattern" {
                    var ok: Int32 = 0
                    let v = lua_tointegerx(L, -1, &ok)
                    if ok == 0 || v < 1 { throw a.fail("rank_pattern[\"\(k)\"] must be an integer >= 1") }
                    c.rankPattern[k] = Int(v)
                } else {
                    c.alphaPattern[k] = lua_tonumberx(L, -1, nil)
                }
            }
        }
        return c
    }

    /// A reader of the full-precision weights in the model's own checkpoint (model.safetensors or
    /// shards), for PiSSA / LoftQ on 4-bit layers: nil when the model has no source directory or
    /// the checkpoint holds no float tensor "<module>.weight" of the layer's shape (a 4-bit
    /// checkpoint). LoRAInit uses it only while the layer's base still quantizes from it.
    static func checkpointWeights(_ model: LlamaModel) -> (LinearModule) throws -> Tensor? {
        var files: [String: SafetensorsFile] = [:]
        var weightMap: [String: String]? = nil
        return { module in
            guard let dir = model.sourcePath, module.isQuantized else { return nil }
            let key = module.name + ".weight"
            var path = dir + "/model.safetensors"
            if !FileManager.default.fileExists(atPath: path) {
                if weightMap == nil {
                    var map: [String: String] = [:]
                    if let json = try? JSONValue.load(path: dir + "/model.safetensors.index.json"),
                       let obj = json["weight_map"]?.objectValue {
                        for (k, v) in obj { if let f = v.stringValue, !f.contains("/"), !f.isEmpty { map[k] = f } }
                    }
                    weightMap = map
                }
                guard let f = weightMap?[key] else { return nil }
                path = dir + "/" + f
            }
            if files[path] == nil { files[path] = try? SafetensorsFile(path: path) }
            guard let file = files[path], let e = file.entry(named: key),
                  [.f32, .bf16, .f16, .f64].contains(e.dtype), e.shape == [module.outFeatures, module.inFeatures],
                  let t = try? TensorFiles.tensor(file, e) else { return nil }
            return try t.asF32()
        }
    }

    /// Calls the options' `targets` function with the module's description.
    static func callPredicate(_ L: LuaState, _ options: Int32, _ m: LinearModule) throws -> Bool {
        luaRawGetField(L, options, "targets")
        lua_createtable(L, 0, 5)
        luaPushString(L, m.name); luaRawSetField(L, -2, "name")
        luaPushString(L, m.kind); luaRawSetField(L, -2, "kind")
        if let li = m.layer { lua_pushinteger(L, lua_Integer(li)) } else { lua_pushnil(L) }
        luaRawSetField(L, -2, "layer")
        lua_pushinteger(L, lua_Integer(m.inFeatures)); luaRawSetField(L, -2, "in_features")
        lua_pushinteger(L, lua_Integer(m.outFeatures)); luaRawSetField(L, -2, "out_features")
        if luaPcall(L, 1, 1) != 0 {
            let msg = luaErrorText(L, -1)
            luaPop(L, 1)
            throw LuaError("qlora.add_lora: the targets function raised an error for \(m.name): \(msg)")
        }
        defer { luaPop(L, 1) }
        guard lua_type(L, -1) == LUA_TBOOLEAN else {
            throw LuaError("qlora.add_lora: the targets function must return true or false, got \(luaTypeName(L, -1)) for \(m.name)")
        }
        return lua_toboolean(L, -1) != 0
    }
}
