// The model part of the `qlora` module: q.load_model and the methods of a model (forward, loss,
// modules, config, summary).

import CLua
import Foundation
import IO
import NN
import Quant
import Tensor

/// A model as scripts hold it: the network and, when its directory has one, its tokenizer.
final class ModelHandle {
    let model: LlamaModel
    let tokenizer: Tokenizer?
    init(model: LlamaModel, tokenizer: Tokenizer?) { self.model = model; self.tokenizer = tokenizer }
}

enum ModelBindings {
    static let modelName = "qlora.Model"

    static func model(_ a: LuaArgs) throws -> LlamaModel { try a.object(1, modelName, as: ModelHandle.self).model }

    static func install(_ L: LuaState) {
        ObjectUserdata.register(L, name: modelName, methods: methods() + LoRABindings.methods() + AdapterBindings.methods()) { o in
            guard let m = (o as? ModelHandle)?.model else { return "Model" }
            return "Model(\(m.config.architecture), \(m.config.numLayers) layers, hidden \(m.config.hiddenSize), vocab \(m.config.vocabSize))"
        }
    }

    static func functions() -> [(String, LuaFunction)] {
        [
            ("llama", { a in try newModel(a) }),
            // q.load_model(dir [, {quant = {type, block, double_quant} | false, compute = "f32"|"bf16"}])
            ("load_model", { a in
                let dir = try a.string(1)
                let opts = try a.options(2, allowed: ["quant", "compute"])
                var load = LoadOptions()
                load.compute = try QuantBindings.computeType(a, opts)
                if let o = opts, let ty = a.optField(o, "quant") {
                    defer { luaPop(a.L, 1) }
                    if ty == LUA_TTABLE {
                        let qt = try a.options(-1, allowed: ["type", "block", "double_quant"])
                        load.quant = try QuantBindings.quantOptions(a, qt)
                    } else if ty != LUA_TBOOLEAN || lua_toboolean(a.L, -1) != 0 {
                        throw a.fail("option 'quant' must be a table {type, block, double_quant} or false")
                    }
                }
                let model = try modelErrors(a) { try ModelLoader.load(dir, load) }
                var tokenizer: Tokenizer? = nil
                if GGUFModel.isGGUF(dir) {
                    tokenizer = try modelErrors(a) { try GGUFModel.tokenizer(dir) }
                } else if FileManager.default.fileExists(atPath: dir + "/tokenizer.json") {
                    tokenizer = try modelErrors(a) { try Tokenizer(path: dir) }
                }
                ObjectUserdata.push(a.L, ModelHandle(model: model, tokenizer: tokenizer), modelName)
                return 1
            }),
        ]
    }

    /// q.llama{vocab, hidden, layers, heads, kv_heads, intermediate, head_dim, rope_theta,
    /// rms_norm_eps, max_positions, tie_word_embeddings, seed, bos_id, eos_id, trainable}: a new
    /// model (trainable: every weight trains, as model:set_trainable(true)).
    static func newModel(_ a: LuaArgs) throws -> Int32 {
        let t = try a.options(1, allowed: ["vocab", "hidden", "layers", "heads", "kv_heads", "intermediate", "head_dim",
                                           "rope_theta", "rms_norm_eps", "max_positions", "tie_word_embeddings", "seed",
                                           "bos_id", "eos_id", "trainable"])
        func need(_ k: String) throws -> Int {
            guard let v = try a.optionInteger(t, k) else { throw a.fail("missing option '\(k)'") }
            return v
        }
        let heads = try need("heads")
        var c = ModelConfig(vocabSize: try need("vocab"), hiddenSize: try need("hidden"), intermediateSize: try need("intermediate"),
                            numLayers: try need("layers"), numHeads: heads, numKVHeads: try a.optionInteger(t, "kv_heads") ?? heads,
                            headDim: try a.optionInteger(t, "head_dim"))
        c.ropeTheta = try a.optionNumber(t, "rope_theta") ?? 10000
        c.rmsNormEps = try a.optionNumber(t, "rms_norm_eps") ?? 1e-6
        c.maxPositions = try a.optionInteger(t, "max_positions") ?? 2048
        c.tieWordEmbeddings = try a.optionBool(t, "tie_word_embeddings") ?? false
        c.bosTokenId = try a.optionInteger(t, "bos_id")
        if let e = try a.optionInteger(t, "eos_id") { c.eosTokenIds = [e] }
        let seed = try a.optionInteger(t, "seed") ?? 0
        if seed < 0 { throw a.fail("seed must be >= 0") }
        let trainable = try a.optionBool(t, "trainable") ?? false
        let m = try modelErrors(a) { try LlamaModel.random(c, seed: UInt64(seed)) }
        if trainable { try modelErrors(a) { try m.setBaseTrainable(true) } }
        ObjectUserdata.push(a.L, ModelHandle(model: m, tokenizer: nil), modelName)
        return 1
    }

    static func methods() -> [(String, LuaFunction)] {
        func this(_ a: LuaArgs) throws -> LlamaModel { try model(a) }
        return [
            ("tokenizer", { a in
                let h = try a.object(1, modelName, as: ModelHandle.self)
                if let t = h.tokenizer { ObjectUserdata.push(a.L, t, TokenizerBindings.name) } else { lua_pushnil(a.L) }
                return 1
            }),
            ("generate", { a in try GenerateBinding.generate(a) }),
            ("chat", { a in try ChatBindings.chat(a) }),
            // model:quantize{type, block, double_quant, compute}: decoder linears to 4-bit in place.
            ("quantize", { a in
                let m = try this(a)
                let t = try a.options(2, allowed: ["type", "block", "double_quant", "compute"])
                let qo = try QuantBindings.quantOptions(a, t)
                let compute = try QuantBindings.computeType(a, t)
                let n = try modelErrors(a) { try m.quantizeLinears(qo, compute: compute) }
                lua_pushinteger(a.L, lua_Integer(n))
                return 1
            }),
            // model:head_compute(["f32"|"bf16"]): the dense output head's arithmetic (set with the
            // 4-bit layers' compute by quantize / load_model); returns the previous one.
            ("head_compute", { a in
                let m = try this(a)
                let previous = m.headCompute
                if !a.isNil(2) {
                    let s = try a.string(2)
                    guard let c = ComputeType(rawValue: s), c == .f32 || c == .bf16 else {
                        throw a.fail("head compute must be \"f32\" or \"bf16\", got \"\(s)\"")
                    }
                    m.headCompute = c
                }
                luaPushString(a.L, previous.rawValue)
                return 1
            }),
            // model:gradient_checkpointing(true|false): recompute decoder layers in backward.
            ("gradient_checkpointing", { a in
                let m = try this(a)
                let previous = m.gradientCheckpointing
                m.gradientCheckpointing = a.isNil(2) ? true : try a.bool(2)
                lua_pushboolean(a.L, previous ? 1 : 0)
                return 1
            }),
            // model:train(true|false): training mode turns adapter dropout on.
            ("train", { a in
                let m = try this(a)
                let previous = m.training
                m.training = a.isNil(2) ? true : try a.bool(2)
                lua_pushboolean(a.L, previous ? 1 : 0)
                return 1
            }),
            // A text summary: architecture, parameters, bytes and bits per parameter by kind.
            // model:save(dir [, {dtype = "f32"|"bf16", quantized = true | {type, block, double_quant}}])
            ("save", { a in
                let m = try this(a)
                let dir = try a.string(2)
                // model:save(path.gguf [, {type = "f16"|"bf16"|"q8_0"|"q4_0"|"f32"}]): a merged GGUF for llama.cpp
                if dir.lowercased().hasSuffix(".gguf") {
                    let t = try a.options(3, allowed: ["type"])
                    let name = try a.optionString(t, "type") ?? "f16"
                    guard let type = GGUFExport.mergedTypes[name.lowercased()] else {
                        throw a.fail("option 'type' must be one of \(GGUFExport.mergedTypes.keys.sorted().joined(separator: ", ")), got '\(name)'")
                    }
                    try modelErrors(a) { try GGUFExport.saveMerged(m, to: dir, type: type) }
                    return 0
                }
                let t = try a.options(3, allowed: ["dtype", "quantized"])
                var o = SaveOptions()
                o.dtype = try a.optionDType(t) ?? .f32
                if let t = t, let ty = a.optField(t, "quantized") {
                    defer { luaPop(a.L, 1) }
                    if ty == LUA_TTABLE {
                        o.quantized = try QuantBindings.quantOptions(a, try a.options(-1, allowed: ["type", "block", "double_quant"]))
                    } else if ty == LUA_TBOOLEAN {
                        if lua_toboolean(a.L, -1) != 0 { o.quantized = try QuantBindings.quantOptions(a, nil) }
                    } else { throw a.fail("option 'quantized' must be a boolean or {type, block, double_quant}") }
                }
                try modelErrors(a) { try ModelSaver.save(m, to: dir, o) }
                return 0
            }),
            ("summary", { a in luaPushString(a.L, ModelSummary.text(try this(a))); return 1 }),
            // model:forward(ids [, {segment_ids =, position_ids =}])
            ("forward", { a in
                let m = try this(a)
                let ids = try idsTensor(a, 2)
                try checkVocab(a, ids, m.config.vocabSize)
                let (seg, pos) = try packedOptions(a, 3)
                return TensorBindings.push(a, try modelErrors(a) { try m.forward(ids, segmentIds: seg, positionIds: pos) })
            }),
            // model:loss(ids [, labels] [, {segment_ids =, position_ids =}])
            ("loss", { a in
                let m = try this(a)
                let ids = try idsTensor(a, 2)
                try checkVocab(a, ids, m.config.vocabSize)
                let labels = a.isNil(3) ? ids : try idsTensor(a, 3)
                let (seg, pos) = try packedOptions(a, 4)
                return TensorBindings.push(a, try modelErrors(a) { try m.loss(ids, labels, segmentIds: seg, positionIds: pos) })
            }),
            ("modules", { a in
                let m = try this(a)
                let list = m.linears
                lua_createtable(a.L, Int32(list.count), 0)
                for (i, l) in list.enumerated() {
                    lua_createtable(a.L, 0, 6)
                    luaPushString(a.L, l.name); luaRawSetField(a.L, -2, "name")
                    luaPushString(a.L, l.kind); luaRawSetField(a.L, -2, "kind")
                    if let li = l.layer { lua_pushinteger(a.L, lua_Integer(li)) } else { lua_pushnil(a.L) }
                    luaRawSetField(a.L, -2, "layer")
                    lua_pushinteger(a.L, lua_Integer(l.inFeatures)); luaRawSetField(a.L, -2, "in_features")
                    lua_pushinteger(a.L, lua_Integer(l.outFeatures)); luaRawSetField(a.L, -2, "out_features")
                    lua_pushboolean(a.L, l.isQuantized ? 1 : 0); luaRawSetField(a.L, -2, "quantized")
                    lua_rawseti(a.L, -2, lua_Integer(i + 1))
                }
                return 1
            }),
            ("config", { a in
                let c = try this(a).config
                lua_createtable(a.L, 0, 16)
                luaPushString(a.L, c.architecture); luaRawSetField(a.L, -2, "architecture")
                for (k, v) in [("vocab_size", c.vocabSize), ("hidden_size", c.hiddenSize), ("intermediate_size", c.intermediateSize),
                               ("num_hidden_layers", c.numLayers), ("num_attention_heads", c.numHeads),
                               ("num_key_value_heads", c.numKVHeads), ("head_dim", c.headDim),
                               ("max_position_embeddings", c.maxPositions)] {
                    lua_pushinteger(a.L, lua_Integer(v)); luaRawSetField(a.L, -2, k)
                }
                lua_pushnumber(a.L, c.rmsNormEps); luaRawSetField(a.L, -2, "rms_norm_eps")
                lua_pushnumber(a.L, c.ropeTheta); luaRawSetField(a.L, -2, "rope_theta")
                lua_pushboolean(a.L, c.tieWordEmbeddings ? 1 : 0); luaRawSetField(a.L, -2, "tie_word_embeddings")
                return 1
            }),
        ]
    }

    /// {segment_ids =, position_ids =} of a packed batch (each an integer tensor [B, T]).
    static func packedOptions(_ a: LuaArgs, _ i: Int32) throws -> (Tensor?, Tensor?) {
        guard let t = try a.options(i, allowed: ["segment_ids", "position_ids"]) else { return (nil, nil) }
        var out: [Tensor?] = [nil, nil]
        for (k, key) in ["segment_ids", "position_ids"].enumerated() where a.optField(t, key) != nil {
            defer { luaPop(a.L, 1) }
            guard let x = TensorUserdata.tensor(a.L, -1) else { throw a.fail("option '\(key)' must be an integer tensor") }
            out[k] = x
        }
        return (out[0], out[1])
    }

    /// Token ids: an integer tensor [B, T] (or [T]), or a Lua table of tables (or of integers).
    static func idsTensor(_ a: LuaArgs, _ i: Int32) throws -> Tensor {
        var t: Tensor
        if let x = TensorUserdata.tensor(a.L, i) { t = x } else if lua_type(a.L, i) == LUA_TTABLE {
            t = try TensorConversions.fromLua(a, i, dtype: .i64, integersOnly: true)
        } else { throw a.typeError(i, "token ids (an integer tensor or a table)") }
        if t.dtype.isFloat { throw a.fail("token ids must be integers, got a \(t.dtype.name) tensor") }
        if t.ndim == 1 { t = try t.reshape([1, t.count]) }
        return t
    }

    /// Input ids (not labels, which may hold -100) must index the embedding table.
    static func checkVocab(_ a: LuaArgs, _ ids: Tensor, _ vocab: Int) throws {
        for i in 0..<ids.count {
            let v = ids.intValue(at: i)
            if v < 0 || v >= Int64(vocab) {
                throw a.fail("token id \(v) at position \(i + 1) is out of range for a vocab of \(vocab) (ids are 0-based)")
            }
        }
    }

    static func modelErrors<T>(_ a: LuaArgs, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as ModelError { throw a.fail(e.message) } catch let e as IOError { throw a.fail(e.description) } catch let e as QuantError { throw a.fail(e.message) }
    }
}
