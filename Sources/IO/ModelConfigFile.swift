// Reading a Hugging Face config.json into a ModelConfig: the Llama, Mistral, Qwen2, Qwen3,
// Gemma 2 and Gemma 3 (text) architectures, both RoPE styles (rope_theta/rope_scaling and rope_parameters), and the
// bitsandbytes quantization_config of a 4-bit checkpoint. Unsupported options are errors.

import NN
import Quant

public struct CheckpointQuantization: Equatable {
    public var options: QuantOptions
}

public enum ModelConfigFile {
    public static let architectures = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                                       "Gemma2ForCausalLM", "Gemma3ForCausalLM"]

    public static func load(_ path: String) throws -> (ModelConfig, CheckpointQuantization?) {
        let json = try JSONValue.load(path: path)
        func bad(_ reason: String) -> IOError { IOError(path: path, reason: reason) }
        guard let obj = json.objectValue else { throw bad("expected a JSON object") }
        func int(_ key: String, default d: Int? = nil) throws -> Int {
            guard let v = obj[key], !v.isNull else {
                if let d = d { return d }
                throw bad("missing field \"\(key)\"")
            }
            guard let i = v.intValue else { throw bad("field \"\(key)\" must be an integer, got \(v)") }
            return i
        }
        func double(_ o: JSONObject, _ key: String) throws -> Double? {
            guard let v = o[key], !v.isNull else { return nil }
            guard let d = v.doubleValue else { throw bad("field \"\(key)\" must be a number, got \(v)") }
            return d
        }
        let arch = obj["architectures"]?.arrayValue?.first?.stringValue ?? ""
        guard architectures.contains(arch) else {
            throw bad("unsupported architecture \"\(arch)\" (qlora supports \(architectures.joined(separator: ", ")))")
        }
        let isGemma = arch.hasPrefix("Gemma")
        let wantAct = isGemma ? "gelu_pytorch_tanh" : "silu"
        for key in isGemma ? ["hidden_activation", "hidden_act"] : ["hidden_act"] {
            if let act = obj[key]?.stringValue, act != wantAct {
                throw bad("unsupported \(key) \"\(act)\" (\(arch) is read with \"\(wantAct)\")")
            }
        }
        var c = ModelConfig(vocabSize: try int("vocab_size"), hiddenSize: try int("hidden_size"),
                            intermediateSize: try int("intermediate_size"), numLayers: try int("num_hidden_layers"),
                            numHeads: try int("num_attention_heads"))
        c.architecture = arch
        c.modelType = obj["model_type"]?.stringValue ?? "llama"
        c.numKVHeads = try int("num_key_value_heads", default: c.numHeads)
        c.headDim = try int("head_dim", default: c.numHeads > 0 ? c.hiddenSize / c.numHeads : 0)
        c.rmsNormEps = try double(obj, "rms_norm_eps") ?? 1e-6
        c.maxPositions = try int("max_position_embeddings", default: 2048)
        c.tieWordEmbeddings = obj["tie_word_embeddings"]?.boolValue ?? false
        c.attentionBias = arch == "Qwen2ForCausalLM" || (obj["attention_bias"]?.boolValue ?? false)
        c.qkNorm = arch == "Qwen3ForCausalLM" || arch == "Gemma3ForCausalLM"
        if isGemma { c.tieWordEmbeddings = obj["tie_word_embeddings"]?.boolValue ?? true }
        if obj["mlp_bias"]?.boolValue == true { throw bad("unsupported mlp_bias = true") }
        if !isGemma, let s = obj["sliding_window"], !s.isNull, obj["use_sliding_window"]?.boolValue == true {
            throw bad("unsupported use_sliding_window = true")
        }
        c.bosTokenId = obj["bos_token_id"]?.intValue
        if let e = obj["eos_token_id"] {
            if let i = e.intValue { c.eosTokenIds = [i] } else if let a = e.arrayValue { c.eosTokenIds = a.compactMap { $0.intValue } }
        }
        c.padTokenId = obj["pad_token_id"]?.intValue

        // RoPE: rope_parameters (newer; Gemma 3 keeps one per layer type) or rope_theta +
        // rope_scaling (older; Gemma 3's sliding layers then use rope_local_base_freq).
        var params = obj["rope_parameters"]?.objectValue
        var localParams: JSONObject? = nil
        if let full = params?["full_attention"]?.objectValue {
            localParams = params?["sliding_attention"]?.objectValue
            params = full
        }
        c.ropeTheta = try params.flatMap { try double($0, "rope_theta") } ?? double(obj, "rope_theta") ?? 10000
        let scaling = params ?? obj["rope_scaling"]?.objectValue
        if let s = scaling {
            let type = s["rope_type"]?.stringValue ?? s["type"]?.stringValue ?? "default"
            switch type {
            case "default": c.ropeScaling = .none
            case "linear":
                guard let f = try double(s, "factor"), f > 0 else { throw bad("rope scaling \"linear\" needs a positive \"factor\"") }
                c.ropeScaling = .linear(factor: f)
            case "llama3":
                guard let f = try double(s, "factor"), let lo = try double(s, "low_freq_factor"),
                      let hi = try double(s, "high_freq_factor"), let orig = s["original_max_position_embeddings"]?.intValue,
                      f > 0, hi > lo, orig > 0 else {
                    throw bad("rope scaling \"llama3\" needs factor, low_freq_factor < high_freq_factor and original_max_position_embeddings")
                }
                c.ropeScaling = .llama3(factor: f, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositions: orig)
            default:
                throw bad("unsupported rope scaling type \"\(type)\" (qlora supports default, linear, llama3)")
            }
        }
        if isGemma { c.gemma = try gemmaOptions(obj, arch: arch, config: c, localParams: localParams, bad: bad) }
        do { try c.validate(path) } catch let e as ModelError { throw bad(String(e.message.dropFirst(path.count + 2))) }

        var quant: CheckpointQuantization? = nil
        if let q = obj["quantization_config"]?.objectValue {
            guard q["quant_method"]?.stringValue == "bitsandbytes", q["load_in_4bit"]?.boolValue == true else {
                throw bad("unsupported quantization_config (qlora reads bitsandbytes 4-bit checkpoints)")
            }
            let typeName = q["bnb_4bit_quant_type"]?.stringValue ?? "fp4"
            guard let type = QuantType(rawValue: typeName) else { throw bad("unsupported bnb_4bit_quant_type \"\(typeName)\"") }
            let options = try QuantOptions(type: type, block: 64, doubleQuant: q["bnb_4bit_use_double_quant"]?.boolValue ?? false)
            quant = CheckpointQuantization(options: options)
        }
        return (c, quant)
    }

    /// Gemma 2 / 3 fields: query_pre_attn_scalar, soft-capping, the sliding window and which
    /// layers use it (layer_types, or the family's default pattern), Gemma 3's local RoPE theta.
    static func gemmaOptions(_ obj: JSONObject, arch: String, config c: ModelConfig, localParams: JSONObject?,
                             bad: (String) -> IOError) throws -> GemmaOptions {
        func positive(_ key: String) throws -> Double? {
            guard let v = obj[key], !v.isNull else { return nil }
            guard let d = v.doubleValue, d > 0, d.isFinite else { throw bad("field \"\(key)\" must be a positive number, got \(v)") }
            return d
        }
        if obj["use_bidirectional_attention"]?.boolValue == true { throw bad("unsupported use_bidirectional_attention = true") }
        var g = GemmaOptions(queryPreAttnScalar: try positive("query_pre_attn_scalar") ?? Double(c.headDim))
        g.attnSoftcap = try positive("attn_logit_softcapping")
        g.finalSoftcap = try positive("final_logit_softcapping")
        if let w = obj["sliding_window"], !w.isNull {
            guard let n = w.intValue, n > 0 else { throw bad("field \"sliding_window\" must be a positive integer, got \(w)") }
            g.slidingWindow = n
        }
        if let types = obj["layer_types"]?.arrayValue {
            guard types.count == c.numLayers else {
                throw bad("layer_types has \(types.count) entries for \(c.numLayers) layers")
            }
            g.slidingLayers = try types.map { v in
                switch v.stringValue {
                case "sliding_attention": return true
                case "full_attention": return false
                default: throw bad("unsupported layer type \(v) in layer_types (expected sliding_attention or full_attention)")
                }
            }
        } else if arch == "Gemma2ForCausalLM" {
            g.slidingLayers = (0..<c.numLayers).map { $0 % 2 == 0 }
        } else {
            let pattern = obj["sliding_window_pattern"]?.intValue ?? obj["_sliding_window_pattern"]?.intValue ?? 6
            g.slidingLayers = (0..<c.numLayers).map { pattern <= 0 || ($0 + 1) % pattern != 0 }
        }
        if arch == "Gemma3ForCausalLM" {
            if let lp = localParams {
                if let type = lp["rope_type"]?.stringValue, type != "default" {
                    throw bad("unsupported rope type \"\(type)\" for sliding_attention layers")
                }
                g.localRopeTheta = lp["rope_theta"]?.doubleValue
            } else {
                g.localRopeTheta = try positive("rope_local_base_freq") ?? 10000
            }
        }
        return g
    }
}
