// LoRA adapters in Hugging Face PEFT's layout: adapter_config.json plus adapter_model.safetensors
// with keys "base_model.model.<module>.lora_A.weight" [r, in] and "...lora_B.weight" [out, r],
// and for DoRA ("use_dora": true) "...lora_magnitude_vector" [out] (PEFT strips the ".weight";
// we also read it with one), metadata {"format": "pt"}. Saving writes each file atomically;
// loading checks every key, shape and module against the model.

import Foundation
import NN
import Tensor

public enum PEFTAdapter {
    static let prefix = "base_model.model."

    public static func save(_ model: LlamaModel, adapter name: String, to dir: String) throws {
        let modules = model.linears.filter { $0.adapter(named: name) != nil }
        if modules.isEmpty { throw IOError(path: dir, reason: "the model has no adapter named \"\(name)\"") }
        let cfg = model.adapterConfigs[name] ?? LoRAConfig()
        try AtomicFile.makeDirectory(dir)
        var tensors: [(name: String, tensor: Tensor)] = []
        for m in modules {
            guard let a = m.adapter(named: name) else { continue }
            tensors.append((prefix + m.name + ".lora_A.weight", try a.a.detach()))
            tensors.append((prefix + m.name + ".lora_B.weight", try a.b.detach()))
            if let mag = a.magnitude { tensors.append((prefix + m.name + ".lora_magnitude_vector", try mag.detach())) }
        }
        let useDora = modules.contains { $0.adapter(named: name)?.isDoRA == true }
        try TensorFiles.save(dir + "/adapter_model.safetensors", tensors, metadata: ["format": "pt"])

        var targets: JSONValue
        switch cfg.targets {
        case .names(let n): targets = .array(n.map { .string($0) })
        case .regex(let p): targets = .string(p)
        case .allLinear: targets = .string("all-linear")
        // A predicate has no PEFT form: name exactly the modules it chose (an entry matches a
        // module whose name equals it or ends with "." + it).
        case .predicate: targets = .array(modules.map { .string($0.name) })
        }
        let config: JSONObject = [
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": model.sourcePath.map { .string($0) } ?? .null,
            "r": .int(Int64(cfg.r)),
            "lora_alpha": .double(cfg.alpha),
            "lora_dropout": .double(cfg.dropout),
            "target_modules": targets,
            "bias": "none",
            "use_rslora": .bool(cfg.rslora),
            "use_dora": .bool(useDora),
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": .null,
            "layers_to_transform": cfg.layers.map { .array($0.map { .int(Int64($0)) }) } ?? .null,
            "rank_pattern": .object(JSONObject(cfg.rankPattern.sorted { $0.key < $1.key }.map { ($0.key, .int(Int64($0.value))) })),
            "alpha_pattern": .object(JSONObject(cfg.alphaPattern.sorted { $0.key < $1.key }.map { ($0.key, .double($0.value)) })),
            "revision": .null,
        ]
        try writeFileAtomically(dir + "/adapter_config.json", Array(JSONValue.object(config).serialized(pretty: true).utf8) + [10])
    }

    /// Loads an adapter saved by PEFT (or by us) onto the model under `name`.
    public static func load(_ model: LlamaModel, from dir: String, as name: String) throws {
        let configPath = dir + "/adapter_config.json"
        let json = try JSONValue.load(path: configPath)
        func bad(_ reason: String) -> IOError { IOError(path: configPath, reason: reason) }
        guard let obj = json.objectValue else { throw bad("expected a JSON object") }
        if let t = obj["peft_type"]?.stringValue, t != "LORA" { throw bad("peft_type \"\(t)\" is not supported (qlora reads LORA adapters)") }
        // Optional fields: absent or null takes the default; any other type is an error.
        func number(_ key: String, default d: Double) throws -> Double {
            guard let v = obj[key], !v.isNull else { return d }
            guard let x = v.doubleValue else { throw bad("field \"\(key)\" must be a number, got \(v)") }
            return x
        }
        func flag(_ key: String) throws -> Bool {
            guard let v = obj[key], !v.isNull else { return false }
            guard let b = v.boolValue else { throw bad("field \"\(key)\" must be a boolean, got \(v)") }
            return b
        }
        let useDora = try flag("use_dora")
        guard let r = obj["r"]?.intValue, r >= 1 else { throw bad("field \"r\" must be an integer >= 1") }
        let alpha = try number("lora_alpha", default: Double(r))
        let rslora = try flag("use_rslora")
        let dropout = try number("lora_dropout", default: 0)
        var alphaPattern: [String: Double] = [:]
        var alphaOrder: [String] = []
        for (k, v) in obj["alpha_pattern"]?.objectValue ?? JSONObject() {
            guard let d = v.doubleValue else { throw bad("alpha_pattern \"\(k)\" must be a number") }
            alphaPattern[k] = d
            alphaOrder.append(k)
        }
        if !alpha.isFinite { throw bad("field \"lora_alpha\" must be a finite number, got \(alpha)") }
        if !(dropout >= 0 && dropout < 1) { throw bad("field \"lora_dropout\" must be in [0, 1), got \(dropout)") }
        if let bad1 = alphaPattern.first(where: { !$0.value.isFinite }) { throw bad("alpha_pattern \"\(bad1.key)\" must be a finite number") }
        var rankPattern: [String: Int] = [:]
        var rankOrder: [String] = []
        for (k, v) in obj["rank_pattern"]?.objectValue ?? JSONObject() {
            guard let i = v.intValue, i >= 1 else { throw bad("rank_pattern \"\(k)\" must be an integer >= 1") }
            rankPattern[k] = i
            rankOrder.append(k)
        }
        // Fields that change what the weights mean: refused unless they say what qlora does.
        if try flag("fan_in_fan_out") {
            throw bad("field \"fan_in_fan_out\" is true (weights stored transposed, for Conv1D layers); qlora supports only false")
        }
        if let v = obj["bias"], !v.isNull, v.stringValue != "none" {
            throw bad("field \"bias\" is \(v) (trained biases); qlora supports only \"none\"")
        }
        if let v = obj["lora_bias"], !v.isNull, v.boolValue != false {
            throw bad("field \"lora_bias\" is \(v); qlora supports only false")
        }
        if let v = obj["modules_to_save"], !v.isNull, v.arrayValue?.isEmpty != true {
            throw bad("field \"modules_to_save\" is \(v) (fully trained extra modules); qlora supports only null or []")
        }
        if let v = obj["layer_replication"], !v.isNull {
            throw bad("field \"layer_replication\" is set; qlora does not support it")
        }
        var cfgTargets: LoRATargets? = nil
        switch obj["target_modules"] {
        case nil, .some(.null): break
        case .some(let v):
            if let s = v.stringValue { cfgTargets = s == "all-linear" ? .allLinear : .regex(s) }
            else if let names = v.arrayValue.flatMap({ list in allOrNil(list.map { $0.stringValue }) }) { cfgTargets = .names(names) }
            else { throw bad("field \"target_modules\" must be a string or a list of strings, got \(v)") }
        }
        var layersToTransform: [Int]? = nil
        switch obj["layers_to_transform"] {
        case nil, .some(.null): break
        case .some(let v):
            if let i = v.intValue { layersToTransform = [i] }
            else if let ints = v.arrayValue.flatMap({ list in allOrNil(list.map { $0.intValue }) }) { layersToTransform = ints }
            else { throw bad("field \"layers_to_transform\" must be an integer or a list of integers, got \(v)") }
        }
        let weightsPath = dir + "/adapter_model.safetensors"
        let (tensors, _) = try TensorFiles.load(weightsPath)
        let byName = Dictionary(tensors.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        let modules = Dictionary(model.linears.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var pending: [(LinearModule, LoRAAdapter)] = []
        var used = Set<String>()
        // A lora_B without its lora_A is reported as the missing lora_A it is.
        for (key, _) in tensors where key.hasSuffix(".lora_B.weight") {
            let aKey = String(key.dropLast(".lora_B.weight".count)) + ".lora_A.weight"
            if byName[aKey] == nil { throw IOError(path: weightsPath, reason: "missing \"\(aKey)\" (the file has \"\(key)\")") }
        }
        // The modules the config selects (target_modules, layers_to_transform) must be exactly
        // the ones with weights.
        var selected: Set<String>? = nil
        if let t = cfgTargets {
            var sel = LoRAConfig()
            sel.targets = t
            sel.layers = layersToTransform
            do { selected = Set(try LoRAPlacement.select(model.linears, sel).map { $0.name }) } catch let e as ModelError {
                throw bad("target_modules / layers_to_transform do not fit this model: \(e.message)")
            }
        }
        for (key, _) in tensors where key.hasSuffix(".lora_A.weight") {
            guard key.hasPrefix(prefix) else { throw IOError(path: weightsPath, reason: "key \"\(key)\" does not start with \"\(prefix)\"") }
            let moduleName = String(key.dropFirst(prefix.count).dropLast(".lora_A.weight".count))
            guard let m = modules[moduleName] else {
                throw IOError(path: weightsPath, reason: "adapter key \"\(key)\" names module \"\(moduleName)\", which this model does not have")
            }
            let bKey = prefix + moduleName + ".lora_B.weight"
            guard let a = byName[key], let b = byName[bKey] else { throw IOError(path: weightsPath, reason: "missing \"\(bKey)\"") }
            let ra = a.shape.first ?? 0
            if a.shape != [ra, m.inFeatures] || b.shape != [m.outFeatures, ra] || ra < 1 {
                throw IOError(path: weightsPath, reason: "\(moduleName): lora_A \(Shape.describe(a.shape)) and lora_B \(Shape.describe(b.shape)) do not fit a layer of \(m.inFeatures) inputs and \(m.outFeatures) outputs")
            }
            if let sel = selected, !sel.contains(moduleName) {
                throw bad("the weights adapt \(moduleName), which target_modules\(layersToTransform == nil ? "" : " / layers_to_transform") do not select")
            }
            let rankKey = rankOrder.first(where: { LoRAPlacement.patternMatches($0, moduleName) })
            let expectedRank = rankKey.flatMap { rankPattern[$0] } ?? r
            if ra != expectedRank {
                throw bad("\(moduleName): the weights have rank \(ra) but \(rankKey.map { "rank_pattern \"\($0)\"" } ?? "field \"r\"") says \(expectedRank)")
            }
            var moduleAlpha = alpha
            // As PEFT: the first key in the file's order whose pattern matches the module name.
            if let hit = alphaOrder.first(where: { LoRAPlacement.patternMatches($0, moduleName) }), let v = alphaPattern[hit] { moduleAlpha = v }
            var magnitude: Tensor? = nil
            if useDora {
                let mKey = prefix + moduleName + ".lora_magnitude_vector"
                guard let (foundKey, mag) = [mKey, mKey + ".weight"].lazy.compactMap({ k in byName[k].map { (k, $0) } }).first else {
                    throw IOError(path: weightsPath, reason: "missing \"\(mKey)\" (adapter_config.json sets use_dora)")
                }
                if mag.shape != [m.outFeatures] || !mag.dtype.isFloat {
                    throw IOError(path: weightsPath, reason: "\(moduleName): lora_magnitude_vector \(mag.dtype.name) \(Shape.describe(mag.shape)) does not fit a layer of \(m.outFeatures) outputs")
                }
                let mf = try mag.to(.f32).copy()
                mf.requiresGrad = true
                magnitude = mf
                used.insert(foundKey)
            }
            let af = try a.to(.f32).copy(), bf = try b.to(.f32).copy()
            af.requiresGrad = true
            bf.requiresGrad = true
            pending.append((m, try LoRAAdapter(a: af, b: bf, magnitude: magnitude, alpha: moduleAlpha, rslora: rslora, dropout: dropout)))
            used.insert(key); used.insert(bKey)
        }
        if let stray = tensors.first(where: { !used.contains($0.name) }) {
            if stray.name.contains(".lora_magnitude_vector") && !useDora {
                throw IOError(path: weightsPath, reason: "key \"\(stray.name)\" is a DoRA magnitude, but adapter_config.json does not set use_dora")
            }
            throw IOError(path: weightsPath, reason: "unexpected key \"\(stray.name)\" (qlora reads lora_A / lora_B weights and DoRA magnitudes)")
        }
        if pending.isEmpty { throw IOError(path: weightsPath, reason: "no lora_A / lora_B weights") }
        if let sel = selected {
            let have = Set(pending.map { $0.0.name })
            if let missing = model.linears.first(where: { sel.contains($0.name) && !have.contains($0.name) }) {
                throw bad("target_modules selects \(missing.name), but adapter_model.safetensors has no \"\(prefix)\(missing.name).lora_A.weight\"")
            }
        }
        if let clash = pending.first(where: { $0.0.adapter(named: name) != nil }) {
            throw IOError(path: dir, reason: "\(clash.0.name) already has an adapter named \"\(name)\"")
        }
        for (m, a) in pending { try m.addAdapter(name, a) }
        var cfg = LoRAConfig()
        cfg.name = name
        cfg.r = r
        cfg.alpha = alpha
        cfg.rslora = rslora
        cfg.dropout = dropout
        cfg.rankPattern = rankPattern
        cfg.alphaPattern = alphaPattern
        cfg.dora = useDora
        if let t = cfgTargets { cfg.targets = t }
        cfg.layers = layersToTransform
        model.adapterConfigs[name] = cfg
    }
}

/// Every element, or nil when any is nil.
private func allOrNil<T>(_ xs: [T?]) -> [T]? {
    var out: [T] = []
    for x in xs { guard let x else { return nil }; out.append(x) }
    return out
}
