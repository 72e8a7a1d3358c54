// Loading a Hugging Face model directory: config.json, then weights from model.safetensors or a
// sharded model.safetensors.index.json, tensor by tensor. Decoder linears are quantized on load
// when asked (the f32 copy of one tensor at a time is the only transient), or read as they are
// from a bitsandbytes 4-bit checkpoint. Embeddings, norms and lm_head stay dense (f32).

import Foundation
import NN
import Quant
import Tensor

public struct LoadOptions {
    /// Quantize decoder linears on load (ignored for a checkpoint that is already 4-bit).
    public var quant: QuantOptions?
    public var compute: ComputeType = .f32
    public init(quant: QuantOptions? = nil, compute: ComputeType = .f32) {
        self.quant = quant
        self.compute = compute
    }
}

public enum ModelLoader {
    /// Loads a Hugging Face model directory, a repo id found in the local Hugging Face cache
    /// (HubCache), or a GGUF file (a path ending in ".gguf" or a file that starts with the GGUF
    /// magic).
    public static func load(_ given: String, _ options: LoadOptions) throws -> LlamaModel {
        let dir = try HubCache.resolve(given)
        if GGUFModel.isGGUF(dir) { return try GGUFModel.load(dir, options) }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw IOError(path: dir, reason: "not a directory (expected a Hugging Face model directory or a .gguf file)")
        }
        let (config, checkpointQuant) = try ModelConfigFile.load(dir + "/config.json")
        let weights = try WeightFiles(dir)

        func dense(_ name: String, _ shape: [Int]) throws -> Tensor {
            let t = try weights.tensor(name)
            if t.shape != shape {
                throw IOError(path: weights.file(of: name), reason: "tensor \"\(name)\" has shape \(Shape.describe(t.shape)), expected \(Shape.describe(shape))")
            }
            if !t.dtype.isFloat { throw IOError(path: weights.file(of: name), reason: "tensor \"\(name)\" is \(t.dtype.name), expected a floating dtype") }
            if t.dtype == .f32 { return t }   // borrows the mapping's pages
            let converted = try t.converted(to: .f32)
            weights.release(name)             // a copy of its own now
            return converted
        }
        let model = try assemble(config, options, dense: dense,
                                 packed: checkpointQuant == nil ? nil : { name, shape in
                                     try weights.bnb4bit(name, shape: shape, configType: checkpointQuant?.options.type)
                                 },
                                 release: { weights.release($0) })
        model.sourcePath = dir
        warnAboutUnused(weights.unused, dir: dir, config: config)
        if checkpointQuant != nil && options.compute == .bf16 { model.headCompute = .bf16 }
        return model
    }

    /// Builds a model from its config and a source of weights by Hugging Face name: `dense`
    /// returns an f32 tensor of the given shape; `packed`, when the source is a bitsandbytes
    /// 4-bit checkpoint, returns a decoder linear's 4-bit weight. Decoder linears are quantized
    /// when options.quant is set (one f32 weight at a time is the only transient); `release`
    /// says a weight was read for the last time (its file pages may leave memory).
    static func assemble(_ c: ModelConfig, _ options: LoadOptions,
                         dense: (String, [Int]) throws -> Tensor,
                         packed: ((String, [Int]) throws -> QuantizedTensor)?,
                         release: (String) -> Void = { _ in }) throws -> LlamaModel {
        // an RMSNorm weight; Gemma stores it as an offset from one, qlora holds 1 + w
        func norm(_ name: String, _ n: Int) throws -> Tensor {
            let w = try dense(name, [n])
            return c.gemma != nil ? try w.binary(.add, scalar: 1) : w
        }
        func linear(_ prefix: String, layer: Int?, out: Int, inp: Int, bias: Bool) throws -> LinearModule {
            let b = bias ? try dense(prefix + ".bias", [out]) : nil
            let base: LinearBase
            if let packed = packed, layer != nil {
                base = .quantized(try QuantLinear(weight: try packed(prefix + ".weight", [out, inp]), bias: b, compute: options.compute))
            } else if let qo = options.quant, layer != nil {
                let w = try dense(prefix + ".weight", [out, inp])
                base = .quantized(try QuantLinear(weight: try QuantizedTensor.quantize(w, qo), bias: b, compute: options.compute))
                release(prefix + ".weight")   // read for the last time: its pages may leave memory
            } else {
                base = .dense(weight: try dense(prefix + ".weight", [out, inp]), bias: b)
            }
            return try LinearModule(name: prefix, layer: layer, base: base)
        }

        let embedding = try dense("model.embed_tokens.weight", [c.vocabSize, c.hiddenSize])
        var layers: [DecoderLayer] = []
        let qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim
        for i in 0..<c.numLayers {
            let p = "model.layers.\(i)"
            layers.append(DecoderLayer(
                index: i,
                inputNorm: try norm("\(p).input_layernorm.weight", c.hiddenSize),
                postAttentionNorm: try norm("\(p).post_attention_layernorm.weight", c.hiddenSize),
                q: try linear("\(p).self_attn.q_proj", layer: i, out: qd, inp: c.hiddenSize, bias: c.attentionBias),
                k: try linear("\(p).self_attn.k_proj", layer: i, out: kvd, inp: c.hiddenSize, bias: c.attentionBias),
                v: try linear("\(p).self_attn.v_proj", layer: i, out: kvd, inp: c.hiddenSize, bias: c.attentionBias),
                o: try linear("\(p).self_attn.o_proj", layer: i, out: c.hiddenSize, inp: qd, bias: false),
                gate: try linear("\(p).mlp.gate_proj", layer: i, out: c.intermediateSize, inp: c.hiddenSize, bias: false),
                up: try linear("\(p).mlp.up_proj", layer: i, out: c.intermediateSize, inp: c.hiddenSize, bias: false),
                down: try linear("\(p).mlp.down_proj", layer: i, out: c.hiddenSize, inp: c.intermediateSize, bias: false),
                qNorm: c.qkNorm ? try norm("\(p).self_attn.q_norm.weight", c.headDim) : nil,
                kNorm: c.qkNorm ? try norm("\(p).self_attn.k_norm.weight", c.headDim) : nil,
                preFeedforwardNorm: c.gemma != nil ? try norm("\(p).pre_feedforward_layernorm.weight", c.hiddenSize) : nil,
                postFeedforwardNorm: c.gemma != nil ? try norm("\(p).post_feedforward_layernorm.weight", c.hiddenSize) : nil))
        }
        let finalNorm = try norm("model.norm.weight", c.hiddenSize)
        var head: LinearModule? = nil
        if !c.tieWordEmbeddings {
            head = try linear("lm_head", layer: nil, out: c.vocabSize, inp: c.hiddenSize, bias: false)
        }
        let model = try LlamaModel(config: c, embedding: embedding, layers: layers, norm: finalNorm, lmHead: head)
        if options.quant != nil && options.compute == .bf16 { model.headCompute = .bf16 }
        // converted weights that were quantized are gone: their memory leaves the process
        StoragePool.releaseAfterPeak()
        return model
    }
}

/// Tensors the model did not read are a sign that config.json and the weights disagree (more
/// layers in the files than num_hidden_layers, say): loading goes on, as transformers does, with
/// a warning on stderr. Rotary caches and a tied head's copy are expected and not reported.
private func warnAboutUnused(_ names: [String], dir: String, config c: ModelConfig) {
    let extra = names.filter { n in
        !n.hasSuffix("rotary_emb.inv_freq") && !(c.tieWordEmbeddings && n.hasPrefix("lm_head."))
    }
    if extra.isEmpty { return }
    let shown = extra.prefix(4).joined(separator: ", ") + (extra.count > 4 ? ", ..." : "")
    let message = "qlora: warning: \(dir): \(extra.count) tensor(s) in the weight files are not used by the model config.json describes (\(c.numLayers) layers): \(shown)\n"
    FileHandle.standardError.write(Data(message.utf8))
}

/// The weight files of a model directory: one safetensors file, or shards named by an index.
/// Remembers which tensors were read, so the loader can say which ones the model did not use.
final class WeightFiles {
    private var files: [String: SafetensorsFile] = [:]
    private var location: [String: (file: String, entry: SafetensorsEntry)] = [:]
    private var used = Set<String>()

    /// Tensors in the files that were never read, sorted.
    var unused: [String] { location.keys.filter { !used.contains($0) }.sorted() }

    init(_ dir: String) throws {
        for path in try ModelFiles.weightFiles(in: dir) {
            let f = try SafetensorsFile(path: path)
            files[path] = f
            for e in f.entries { location[e.name] = (path, e) }
        }
    }

    func has(_ name: String) -> Bool { location[name] != nil }

    /// The named tensor will not be read through the mapping again: its pages leave memory.
    func release(_ name: String) {
        guard let (path, entry) = location[name], let f = files[path] else { return }
        f.release(entry)
    }
    func file(of name: String) -> String { location[name]?.file ?? "model.safetensors" }

    func tensor(_ name: String) throws -> Tensor {
        used.insert(name)
        guard let (path, entry) = location[name], let f = files[path] else {
            throw IOError(path: files.keys.sorted().first ?? "model.safetensors", reason: "missing tensor \"\(name)\"")
        }
        return try TensorFiles.tensor(f, entry)
    }

    /// A weight saved by bitsandbytes/transformers in 4-bit: packed bytes plus its quant state.
    func bnb4bit(_ name: String, shape: [Int], configType: QuantType? = nil) throws -> QuantizedTensor {
        // the quant state's parts belong to this weight, including the ones qlora rebuilds itself
        // (the 16-entry code in ".quant_map")
        for k in location.keys where k.hasPrefix(name + ".") { used.insert(k) }
        let stateName = location.keys.first { $0.hasPrefix(name + ".quant_state.bitsandbytes__") }
        guard let sn = stateName else {
            throw IOError(path: file(of: name), reason: "4-bit weight \"\(name)\" has no quant_state entry")
        }
        let stateBytes = try tensor(sn)
        var bytes = [UInt8](repeating: 0, count: stateBytes.count)
        for i in 0..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: stateBytes.intValue(at: i)) }
        let path = file(of: name)
        let state: JSONValue
        do { state = try JSONValue.parse(bytes) } catch {
            throw IOError(path: path, reason: "\(sn): \(error)")
        }
        guard let typeName = state["quant_type"]?.stringValue, let type = QuantType(rawValue: typeName),
              let block = state["blocksize"]?.intValue,
              let savedShape = state["shape"]?.arrayValue?.compactMap({ $0.intValue }) else {
            throw IOError(path: path, reason: "quant_state of \"\(name)\" lacks quant_type, blocksize or shape")
        }
        if let ct = configType, ct != type {
            throw IOError(path: path, reason: "quant_state of \"\(name)\" says \(type.rawValue) but config.json's bnb_4bit_quant_type says \(ct.rawValue)")
        }
        // The code table is rebuilt from quant_type; a stored one must be that table.
        if has(name + ".quant_map") {
            let map = try tensor(name + ".quant_map")
            let code = type.code
            let fits = map.shape == [code.count] && map.dtype.isFloat
                && (0..<code.count).allSatisfy { abs(map.value(at: $0) - Double(code[$0])) <= 1e-6 }
            if !fits {
                throw IOError(path: path, reason: "\(name).quant_map (\(map.dtype.name) \(Shape.describe(map.shape))) is not the \(code.count)-entry \(type.rawValue) code table; custom code tables are not supported")
            }
        }
        if savedShape != shape {
            throw IOError(path: path, reason: "4-bit weight \"\(name)\" has shape \(Shape.describe(savedShape)), expected \(Shape.describe(shape))")
        }
        let nested = state["nested_offset"] != nil
        let options: QuantOptions
        do { options = try QuantOptions(type: type, block: block, doubleQuant: nested) } catch let e as QuantError {
            throw IOError(path: path, reason: "\(sn): \(e.message)")
        }
        var parts: [String: Tensor] = ["packed": try tensor(name)]
        if nested {
            parts["absmax_q"] = try tensor(name + ".absmax")
            parts["nested_absmax"] = try tensor(name + ".nested_absmax")
            parts["nested_code"] = try tensor(name + ".nested_quant_map")
            let off = state["nested_offset"]?.doubleValue ?? 0
            parts["offset"] = try Tensor([Float(off)], shape: [1])
        } else {
            parts["absmax"] = try tensor(name + ".absmax")
        }
        do {
            // No copy: the 4-bit weights stay in the read-only file mapping, shared by every
            // process that loads this directory (sweep workers).
            return try QuantizedTensor.fromParts(parts, shape: shape, options, copy: false)
        } catch let e as QuantError {
            throw IOError(path: path, reason: "4-bit weight \"\(name)\": \(e.message)")
        }
    }
}
