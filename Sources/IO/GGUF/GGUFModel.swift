// Loading a Llama-family model from a GGUF file as llama.cpp's converter wrote it: the config
// from the "<arch>.*" metadata (llama, mistral-as-llama, qwen2), Hugging Face tensor names
// restored from llama.cpp's ("blk.N.attn_q.weight" -> "model.layers.N.self_attn.q_proj.weight"),
// the q/k row permutation convert_hf_to_gguf applies to llama-arch models undone, a missing
// output.weight meaning tied embeddings. Weights are dequantized (exactly as ggml does) to f32
// and go through the same assembly as a Hugging Face directory, so `quant` options apply alike.

import Foundation
import NN
import Quant
import Tensor

public enum GGUFModel {
    public static let architectures = ["llama", "mistral", "qwen2"]

    /// True for a path ending in ".gguf" or a regular file starting with "GGUF".
    public static func isGGUF(_ path: String) -> Bool {
        if path.lowercased().hasSuffix(".gguf") { return true }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue,
              let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return (try? h.read(upToCount: 4)) == Data("GGUF".utf8)
    }

    /// The model config the metadata describes.
    public static func config(_ f: GGUFFile) throws -> ModelConfig {
        func bad(_ reason: String) -> IOError { IOError(path: f.path, reason: reason) }
        guard let arch = try f.string("general.architecture") else { throw bad("missing metadata general.architecture") }
        guard architectures.contains(arch) else {
            throw bad("unsupported general.architecture \"\(arch)\" (qlora reads \(architectures.joined(separator: ", ")))")
        }
        if let t = try f.string("general.type"), t != "model" {
            throw bad("general.type is \"\(t)\": this file is not a model (an adapter is loaded with model:load_adapter)")
        }
        let p = arch + "."
        func need(_ key: String) throws -> Int {
            guard let v = try f.int(p + key) else { throw bad("missing metadata \(p + key)") }
            return v
        }
        guard let embd = f.info("token_embd.weight") else { throw bad("missing tensor token_embd.weight") }
        let vocab = try f.int(p + "vocab_size") ?? (try f.array("tokenizer.ggml.tokens"))?.count ?? embd.shape[0]
        let heads = try need("attention.head_count")
        var c = ModelConfig(vocabSize: vocab, hiddenSize: try need("embedding_length"),
                            intermediateSize: try need("feed_forward_length"), numLayers: try need("block_count"),
                            numHeads: heads, numKVHeads: try f.int(p + "attention.head_count_kv") ?? heads,
                            headDim: try f.int(p + "attention.key_length"))
        if let vl = try f.int(p + "attention.value_length"), vl != c.headDim {
            throw bad("\(p)attention.value_length (\(vl)) differs from key_length (\(c.headDim)), which qlora does not support")
        }
        if let rd = try f.int(p + "rope.dimension_count"), rd != c.headDim {
            throw bad("\(p)rope.dimension_count (\(rd)) is not the head dimension (\(c.headDim)): partial rotary embeddings are not supported")
        }
        c.architecture = arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"
        c.modelType = arch == "qwen2" ? "qwen2" : "llama"
        c.rmsNormEps = try f.double(p + "attention.layer_norm_rms_epsilon") ?? 1e-5
        c.ropeTheta = try f.double(p + "rope.freq_base") ?? 10000
        c.maxPositions = try f.int(p + "context_length") ?? 2048
        switch try f.string(p + "rope.scaling.type") ?? "none" {
        case "none": break
        case "linear":
            guard let factor = try f.double(p + "rope.scaling.factor"), factor > 0 else {
                throw bad("\(p)rope.scaling.type linear needs a positive \(p)rope.scaling.factor")
            }
            if factor != 1 { c.ropeScaling = .linear(factor: factor) }
        case let other: throw bad("unsupported \(p)rope.scaling.type \"\(other)\" (qlora supports none and linear)")
        }
        if f.info("rope_freqs.weight") != nil {
            throw bad("tensor rope_freqs.weight (Llama 3.1-style rope scaling factors) is not supported yet")
        }
        c.tieWordEmbeddings = f.info("output.weight") == nil
        c.attentionBias = arch == "qwen2" || f.info("blk.0.attn_q.bias") != nil
        c.bosTokenId = try f.int("tokenizer.ggml.bos_token_id")
        if let e = try f.int("tokenizer.ggml.eos_token_id") { c.eosTokenIds = [e] }
        c.padTokenId = try f.int("tokenizer.ggml.padding_token_id")
        do { try c.validate(f.path) } catch let e as ModelError { throw bad(String(e.message.dropFirst(f.path.count + 2))) }
        return c
    }

    /// llama.cpp's name for a Hugging Face tensor name (nil for names it has no counterpart for).
    public static func ggufName(_ hf: String) -> String? {
        let fixed = ["model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                     "lm_head.weight": "output.weight"]
        if let n = fixed[hf] { return n }
        let parts = hf.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let i = Int(parts[2]) else { return nil }
        let rest = parts[3...].joined(separator: ".")
        let map = ["input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                   "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                   "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                   "mlp.down_proj": "ffn_down"]
        for suffix in ["weight", "bias"] where rest.hasSuffix("." + suffix) {
            let module = String(rest.dropLast(suffix.count + 1))
            if let g = map[module] { return "blk.\(i).\(g).\(suffix)" }
        }
        return nil
    }

    /// Rows of a q or k projection (weight [heads*headDim, in] or bias [heads*headDim]) in
    /// llama.cpp's interleaved rotary order put back in Hugging Face's half-split order:
    /// HF row h*d + s*d/2 + i is GGUF row h*d + 2i + s. `inverse` applies the converter's permutation.
    public static func unpermute(_ t: Tensor, heads: Int, inverse: Bool = false) throws -> Tensor {
        let rows = t.shape.first ?? 0, cols = t.count / max(1, rows)
        guard heads > 0, rows > 0, rows % (2 * heads) == 0, t.dtype == .f32 else {
            throw ModelError("cannot permute rows of a \(Shape.describe(t.shape)) tensor over \(heads) heads")
        }
        let d = rows / heads, half = d / 2
        let out = try Tensor(shape: t.shape, dtype: .f32, zeroed: false)
        let src = t.raw.assumingMemoryBound(to: Float.self), dst = out.raw.assumingMemoryBound(to: Float.self)
        for h in 0..<heads {
            for s in 0..<2 {
                for i in 0..<half {
                    let hfRow = h * d + s * half + i, ggRow = h * d + 2 * i + s
                    let (from, to) = inverse ? (hfRow, ggRow) : (ggRow, hfRow)
                    (dst + to * cols).update(from: src + from * cols, count: cols)
                }
            }
        }
        return out
    }

    /// Writes the GGUF file's tokenizer as OUT/tokenizer.json (the equivalent Hugging Face form)
    /// and its chat template as OUT/chat_template.jinja; returns the names written.
    public static func writeTokenizerFiles(from path: String, to out: String) throws -> [String] {
        let f = try GGUFFile(path: path)
        guard f.metadata["tokenizer.ggml.model"] != nil else { return [] }
        let p = try GGUFTokenizer.parts(f)
        var written = ["tokenizer.json"]
        try writeFileAtomically(path: out + "/tokenizer.json", bytes: Array(p.json.serialized().utf8))
        if let t = p.chatTemplate {
            try writeFileAtomically(path: out + "/chat_template.jinja", bytes: Array(t.utf8))
            written.append("chat_template.jinja")
        }
        return written
    }

    /// The tokenizer in a GGUF file's metadata, or nil when the file has none.
    public static func tokenizer(_ path: String) throws -> Tokenizer? {
        let f = try GGUFFile(path: path)
        return f.metadata["tokenizer.ggml.model"] == nil ? nil : try GGUFTokenizer.load(f)
    }

    public static func load(_ path: String, _ options: LoadOptions) throws -> LlamaModel {
        let f = try GGUFFile(path: path)
        let c = try config(f)
        let arch = try f.string("general.architecture") ?? ""
        let permuted = arch == "llama" || arch == "mistral"
        var used = Set<String>()
        var linearTypes = Set<String>()

        func dense(_ hf: String, _ shape: [Int]) throws -> Tensor {
            guard let name = ggufName(hf) else { throw IOError(path: path, reason: "no GGUF name for tensor \"\(hf)\"") }
            guard let info = f.info(name) else { throw IOError(path: path, reason: "missing tensor \"\(name)\" (\(hf))") }
            guard info.shape == shape else {
                throw IOError(path: path, reason: "tensor \"\(name)\" has shape \(Shape.describe(info.shape)), expected \(Shape.describe(shape))")
            }
            used.insert(name)
            if hf.hasSuffix("proj.weight") { linearTypes.insert(info.type.description) }
            var t = try f.tensor(info)
            if permuted {
                if hf.hasSuffix("q_proj.weight") || hf.hasSuffix("q_proj.bias") {
                    t = try unpermute(t, heads: c.numHeads)
                } else if hf.hasSuffix("k_proj.weight") || hf.hasSuffix("k_proj.bias") {
                    t = try unpermute(t, heads: c.numKVHeads)
                }
            }
            return t
        }
        let model: LlamaModel
        do { model = try ModelLoader.assemble(c, options, dense: dense, packed: nil) } catch let e as ModelError {
            throw IOError(path: path, reason: e.message)
        }
        model.sourcePath = path
        let types = linearTypes.sorted().joined(separator: ", ")
        let fourBit = linearTypes.contains { ["Q4_0", "Q4_1", "Q4_K", "IQ4_NL", "Q2_K", "Q3_K"].contains($0) }
        var note = "source: GGUF \((path as NSString).lastPathComponent), decoder linears stored as \(types)"
        if fourBit {
            note += options.quant != nil
                ? " (already 4-bit or less: re-quantizing adds the new format's error to the file's)"
                : " (already 4-bit or less, dequantized to f32)"
        }
        model.sourceNote = note
        let unused = f.tensors.map { $0.name }.filter { !used.contains($0) && $0 != "rope_freqs.weight" }
        if !unused.isEmpty {
            let shown = unused.prefix(4).joined(separator: ", ") + (unused.count > 4 ? ", ..." : "")
            FileHandle.standardError.write(Data("qlora: warning: \(path): \(unused.count) tensor(s) not used by the model: \(shown)\n".utf8))
        }
        return model
    }
}

/// Every tensor of a GGUF file decoded to f32 (row-major shapes, GGUF names) and its metadata as
/// strings (numbers and bools spelled out, arrays as "[count x type]"), for q.load_tensors.
public enum GGUFTensors {
    public static func load(_ path: String) throws -> (tensors: [(name: String, tensor: Tensor)], metadata: [String: String]) {
        let f = try GGUFFile(path: path)
        var out: [(String, Tensor)] = []
        for t in f.tensors { out.append((t.name, try f.tensor(t))) }
        var meta: [String: String] = [:]
        for (k, v) in f.metadata {
            switch v {
            case .string(let s): meta[k] = s
            case .array: meta[k] = v.description
            default: meta[k] = v.description
            }
        }
        return (out, meta)
    }
}
