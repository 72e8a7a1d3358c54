// Writing GGUF for llama.cpp: a LoRA adapter laid out as llama.cpp's convert_lora_to_gguf writes
// it (general.type = adapter, adapter.type = lora, adapter.lora.alpha; tensors
// "blk.N.attn_q.weight.lora_a" [r, in] and ".lora_b" [out, r] in F32, B's rows of q and k in
// llama.cpp's rotary order for llama-arch models), and a merged model (every adapter folded into
// dense weights) in F32, F16, BF16, Q8_0 or Q4_0 with the llama metadata and the tokenizer and
// chat template of the GGUF file or Hugging Face directory the model came from.

import Foundation
import NN
import Quant
import Tensor

public enum GGUFExport {
    /// llama.cpp's architecture name for a model qlora can write as GGUF: Llama-shaped models
    /// ("llama") and Qwen2 ("qwen2"). Qwen3's q/k norms and Gemma's layers have other names and
    /// tensors there, which this writer does not produce: an error rather than a wrong file.
    static func arch(_ c: ModelConfig) throws -> String {
        if c.qkNorm || c.gemma != nil {
            throw ModelError("\(c.architecture) cannot be written as GGUF yet (qlora writes llama and qwen2 models and their adapters)")
        }
        return c.modelType == "qwen2" ? "qwen2" : "llama"
    }

    static func f32Bytes(_ t: Tensor) throws -> [UInt8] {
        let x = try t.dtype == .f32 ? t : t.converted(to: .f32)
        return Array(UnsafeRawBufferPointer(start: x.raw, count: x.byteCount))
    }

    /// q / k rows (weight or bias) into llama.cpp's order for llama-arch models.
    static func toGGUFOrder(_ t: Tensor, module: String, _ c: ModelConfig) throws -> Tensor {
        guard try arch(c) == "llama" else { return t }
        if module.hasSuffix("q_proj") { return try GGUFModel.unpermute(t, heads: c.numHeads, inverse: true) }
        if module.hasSuffix("k_proj") { return try GGUFModel.unpermute(t, heads: c.numKVHeads, inverse: true) }
        return t
    }

    static func ggufName(_ module: String, _ suffix: String) throws -> String {
        guard let n = GGUFModel.ggufName(module + "." + suffix) else {
            throw ModelError("module \(module) has no llama.cpp tensor name")
        }
        return n
    }

    public static func saveAdapter(_ model: LlamaModel, adapter name: String, to path: String) throws {
        let modules = model.linears.filter { $0.adapter(named: name) != nil }
        if modules.isEmpty { throw IOError(path: path, reason: "the model has no adapter named \"\(name)\"") }
        let c = model.config
        // llama.cpp scales every module by alpha / r (r from the tensor): one alpha for the file,
        // and a module whose own scaling differs (rank or alpha patterns, rsLoRA) has it folded into B.
        guard let first = modules.first?.adapter(named: name) else { return }
        let alpha = first.scaling * Double(first.r)
        var w = GGUFWriter()
        w.set("general.architecture", .string(try arch(c)))
        w.set("general.type", .string("adapter"))
        w.set("general.name", .string("qlora adapter \(name)"))
        w.set("adapter.type", .string("lora"))
        w.set("adapter.lora.alpha", .f32(Float(alpha)))
        for m in modules {
            guard let ad = m.adapter(named: name) else { continue }
            if ad.isDoRA { throw IOError(path: path, reason: "DoRA adapters (\(m.name)) have no GGUF form in llama.cpp") }
            let base = try ggufName(m.name, "weight")
            var b = try ad.b.detach().clone()
            let fold = ad.scaling / (alpha / Double(ad.r))
            if abs(fold - 1) > 1e-12 { try b.scaleIn(fold) }
            b = try toGGUFOrder(b, module: m.name, c)
            let a = try ad.a.detach()
            w.add(base + ".lora_a", type: .f32, shape: a.shape, data: try f32Bytes(a))
            w.add(base + ".lora_b", type: .f32, shape: b.shape, data: try f32Bytes(b))
        }
        try w.write(to: path)
    }

    public static let mergedTypes: [String: GGMLType] = ["f32": .f32, "f16": .f16, "bf16": .bf16, "q8_0": .q8_0, "q4_0": .q4_0]

    /// llama.cpp's general.file_type for the main tensor type.
    static func fileType(_ t: GGMLType) -> UInt32 {
        switch t {
        case .f16: return 1
        case .q4_0: return 2
        case .q8_0: return 7
        case .bf16: return 32
        default: return 0
        }
    }

    static func encode(_ t: Tensor, _ type: GGMLType) throws -> (GGMLType, [UInt8]) {
        let x = try t.dtype == .f32 ? t : t.converted(to: .f32)
        let cols = x.shape.last ?? 1
        switch type {
        case .f16, .bf16:
            let h = try x.converted(to: type == .f16 ? .f16 : .bf16)
            return (type, Array(UnsafeRawBufferPointer(start: h.raw, count: h.byteCount)))
        case .q8_0, .q4_0:
            guard cols % 32 == 0 else { return try encode(x, .f16) }  // rows must be whole blocks
            let p = x.raw.assumingMemoryBound(to: Float.self)
            guard let bytes = type.quantize(UnsafeBufferPointer(start: p, count: x.count)) else {
                throw ModelError("cannot quantize a \(Shape.describe(x.shape)) tensor to \(type)")
            }
            return (type, bytes)
        default:
            return (.f32, Array(UnsafeRawBufferPointer(start: x.raw, count: x.byteCount)))
        }
    }

    /// The dense weight of a linear with every adapter that is not merged yet folded in.
    static func mergedWeight(_ l: LinearModule) throws -> (Tensor, Tensor?) {
        var w: Tensor, bias: Tensor?
        switch l.base {
        case .dense(let dw, let b): w = try dw.detach().to(.f32).clone(); bias = b
        case .quantized(let q): w = try q.weight.dequantize(); bias = q.bias
        }
        for (n, ad) in l.adapters where !ad.merged && (l.activeAdapters?.contains(n) ?? true) {
            if ad.isDoRA { throw ModelError("\(l.name): merging a DoRA adapter into a GGUF export is not supported; merge it first with model:merge_adapter") }
            let delta = try ad.b.detach().matmul(try ad.a.detach())
            try w.addIn(delta, alpha: ad.scaling)
        }
        return (w, bias)
    }

    public static func saveMerged(_ model: LlamaModel, to path: String, type: GGMLType) throws {
        let c = model.config
        let a = try arch(c)
        var w = GGUFWriter()
        w.set("general.architecture", .string(a))
        w.set("general.type", .string("model"))
        w.set("general.name", .string(model.sourcePath.map { (($0 as NSString).lastPathComponent as NSString).deletingPathExtension } ?? "qlora model"))
        w.set("general.file_type", .u32(fileType(type)))
        w.set("general.quantization_version", .u32(2))
        w.set(a + ".vocab_size", .u32(UInt32(c.vocabSize)))
        w.set(a + ".context_length", .u32(UInt32(c.maxPositions)))
        w.set(a + ".embedding_length", .u32(UInt32(c.hiddenSize)))
        w.set(a + ".block_count", .u32(UInt32(c.numLayers)))
        w.set(a + ".feed_forward_length", .u32(UInt32(c.intermediateSize)))
        w.set(a + ".attention.head_count", .u32(UInt32(c.numHeads)))
        w.set(a + ".attention.head_count_kv", .u32(UInt32(c.numKVHeads)))
        w.set(a + ".attention.key_length", .u32(UInt32(c.headDim)))
        w.set(a + ".attention.value_length", .u32(UInt32(c.headDim)))
        w.set(a + ".rope.dimension_count", .u32(UInt32(c.headDim)))
        w.set(a + ".rope.freq_base", .f32(Float(c.ropeTheta)))
        w.set(a + ".attention.layer_norm_rms_epsilon", .f32(Float(c.rmsNormEps)))
        switch c.ropeScaling {
        case .none: break
        case .linear(let f):
            w.set(a + ".rope.scaling.type", .string("linear"))
            w.set(a + ".rope.scaling.factor", .f32(Float(f)))
        case .llama3:
            throw IOError(path: path, reason: "Llama 3 rope scaling has no GGUF export in qlora yet")
        }
        // The tokenizer and chat template of the GGUF the model came from.
        var hasTokenizer = false
        if let src = model.sourcePath, GGUFModel.isGGUF(src), let f = try? GGUFFile(path: src) {
            for k in f.keys where k.hasPrefix("tokenizer.") {
                if let v = f.metadata[k] { w.set(k, v); hasTokenizer = true }
            }
        }
        if !hasTokenizer, let src = model.sourcePath, FileManager.default.fileExists(atPath: src + "/tokenizer.json") {
            for (k, v) in try GGUFTokenizerExport.metadata(directory: src) { w.set(k, v) }
            hasTokenizer = true
        }
        if !hasTokenizer {
            if let b = c.bosTokenId { w.set("tokenizer.ggml.bos_token_id", .u32(UInt32(b))) }
            if let e = c.eosTokenIds.first { w.set("tokenizer.ggml.eos_token_id", .u32(UInt32(e))) }
            FileHandle.standardError.write(Data("qlora: warning: \(path): the model did not come from a GGUF file, so the export has no tokenizer metadata\n".utf8))
        }

        func add(_ name: String, _ t: Tensor, _ ty: GGMLType) throws {
            let (real, bytes) = try encode(t, ty)
            w.add(name, type: real, shape: t.shape, data: bytes)
        }
        try add("token_embd.weight", model.embedding, type)
        for layer in model.layers {
            let i = layer.index
            try add("blk.\(i).attn_norm.weight", layer.inputNorm, .f32)
            try add("blk.\(i).ffn_norm.weight", layer.postAttentionNorm, .f32)
            for l in layer.linears {
                let (weight, bias) = try mergedWeight(l)
                try add(try ggufName(l.name, "weight"), try toGGUFOrder(weight, module: l.name, c), type)
                if let b = bias { try add(try ggufName(l.name, "bias"), try toGGUFOrder(b, module: l.name, c), .f32) }
            }
        }
        try add("output_norm.weight", model.norm, .f32)
        if let head = model.lmHead {
            let (weight, _) = try mergedWeight(head)
            try add("output.weight", weight, type)
        }
        try w.write(to: path)
    }
}
