// Saving a model as a Hugging Face directory: config.json and model.safetensors with
// transformers' names, in f32 or bf16 (4-bit layers are dequantized), or with `quantized` in
// bitsandbytes' 4-bit layout (packed weight, absmax, quant maps, the quant_state JSON) with a
// quantization_config that transformers reads. LoRA adapters are not part of it (save_adapter);
// merged adapters are, as they live in the weights. Each file is written atomically.

import Foundation
import NN
import Quant
import Tensor

public struct SaveOptions {
    public var dtype: DType = .f32
    /// Write decoder linears in bitsandbytes' 4-bit layout; dense ones are quantized with these.
    public var quantized: QuantOptions?
    public init() {}
}

public enum ModelSaver {
    public static func save(_ model: LlamaModel, to dir: String, _ options: SaveOptions) throws {
        if options.dtype != .f32 && options.dtype != .bf16 && options.dtype != .f16 {
            throw IOError(path: dir, reason: "dtype must be f32, bf16 or f16, got \(options.dtype.name)")
        }
        try AtomicFile.makeDirectory(dir)
        let c = model.config
        var tensors: [(name: String, tensor: Tensor)] = []
        func dense(_ name: String, _ t: Tensor) throws {
            tensors.append((name, try t.dtype == options.dtype ? t : t.converted(to: options.dtype)))
        }
        // an RMSNorm weight: Gemma's files hold it as an offset from one (qlora holds 1 + w)
        func norm(_ name: String, _ t: Tensor) throws {
            try dense(name, c.gemma != nil ? try t.binary(.add, scalar: -1) : t)
        }
        try dense("model.embed_tokens.weight", model.embedding)
        var quantType: QuantType? = nil
        var doubleQuant = false
        for layer in model.layers {
            let p = "model.layers.\(layer.index)"
            try norm("\(p).input_layernorm.weight", layer.inputNorm)
            try norm("\(p).post_attention_layernorm.weight", layer.postAttentionNorm)
            if let n = layer.qNorm { try norm("\(p).self_attn.q_norm.weight", n) }
            if let n = layer.kNorm { try norm("\(p).self_attn.k_norm.weight", n) }
            if let n = layer.preFeedforwardNorm { try norm("\(p).pre_feedforward_layernorm.weight", n) }
            if let n = layer.postFeedforwardNorm { try norm("\(p).post_feedforward_layernorm.weight", n) }
            for l in layer.linears {
                switch l.base {
                case .dense(let w, let b):
                    if let qo = options.quantized {
                        let q = try QuantizedTensor.quantize(w, qo)
                        try appendBnb(&tensors, l.name + ".weight", q)
                        quantType = qo.type; doubleQuant = qo.doubleQuant
                    } else { try dense(l.name + ".weight", w) }
                    if let b = b { try dense(l.name + ".bias", b) }
                case .quantized(let ql):
                    if options.quantized != nil {
                        try appendBnb(&tensors, l.name + ".weight", ql.weight)
                        quantType = ql.weight.type; doubleQuant = ql.weight.options.doubleQuant
                    } else { try dense(l.name + ".weight", try ql.weight.dequantize()) }
                    if let b = ql.bias { try dense(l.name + ".bias", b) }
                }
            }
        }
        try norm("model.norm.weight", model.norm)
        if let head = model.lmHead {
            switch head.base {
            case .dense(let w, _): try dense("lm_head.weight", w)
            case .quantized(let ql): try dense("lm_head.weight", try ql.weight.dequantize())
            }
        }
        try TensorFiles.save(dir + "/model.safetensors", tensors, metadata: ["format": "pt"])
        var config = configJSON(c, dtype: options.dtype)
        if let qt = quantType {
            config["quantization_config"] = .object([
                "quant_method": "bitsandbytes",
                "load_in_4bit": true,
                "load_in_8bit": false,
                "bnb_4bit_quant_type": .string(qt.rawValue),
                "bnb_4bit_use_double_quant": .bool(doubleQuant),
                "bnb_4bit_compute_dtype": "float32",
                "bnb_4bit_quant_storage": "uint8",
            ])
        }
        try writeFileAtomically(dir + "/config.json", Array(JSONValue.object(config).serialized(pretty: true).utf8) + [10])
    }

    /// bitsandbytes' keys for one 4-bit weight `name` ("...q_proj.weight").
    static func appendBnb(_ out: inout [(name: String, tensor: Tensor)], _ name: String, _ q: QuantizedTensor) throws {
        out.append((name, try q.packed.view([q.packed.count, 1])))
        out.append((name + ".quant_map", try Tensor(q.type.code, shape: [16])))
        var state: JSONObject = [
            "quant_type": .string(q.type.rawValue),
            "blocksize": .int(Int64(q.block)),
            "dtype": "float32",
            "shape": .array(q.shape.map { .int(Int64($0)) }),
        ]
        if let codes = q.absmaxCodes, let nested = q.nestedAbsmax, let code = q.nestedCode {
            out.append((name + ".absmax", codes))
            out.append((name + ".nested_absmax", nested))
            out.append((name + ".nested_quant_map", code))
            state["nested_blocksize"] = .int(256)
            state["nested_dtype"] = "float32"
            state["nested_offset"] = .double(Double(q.offset))
        } else if let a = q.absmax {
            out.append((name + ".absmax", a))
        }
        let json = Array(JSONValue.object(state).serialized().utf8)
        let bytes = try Tensor(shape: [json.count], dtype: .u8, zeroed: false)
        for (i, b) in json.enumerated() { bytes.storeInteger(Int64(b), at: i) }
        out.append((name + ".quant_state.bitsandbytes__\(q.type.rawValue)", bytes))
    }

    /// config.json for the architecture, in the field names transformers uses.
    static func configJSON(_ c: ModelConfig, dtype: DType) -> JSONObject {
        var o: JSONObject = [
            "architectures": .array([.string(c.architecture)]),
            "model_type": .string(c.modelType),
            "vocab_size": .int(Int64(c.vocabSize)),
            "hidden_size": .int(Int64(c.hiddenSize)),
            "intermediate_size": .int(Int64(c.intermediateSize)),
            "num_hidden_layers": .int(Int64(c.numLayers)),
            "num_attention_heads": .int(Int64(c.numHeads)),
            "num_key_value_heads": .int(Int64(c.numKVHeads)),
            "head_dim": .int(Int64(c.headDim)),
            "hidden_act": "silu",
            "rms_norm_eps": .double(c.rmsNormEps),
            "rope_theta": .double(c.ropeTheta),
            "max_position_embeddings": .int(Int64(c.maxPositions)),
            "tie_word_embeddings": .bool(c.tieWordEmbeddings),
            "attention_bias": .bool(c.attentionBias && c.architecture != "Qwen2ForCausalLM"),
            "mlp_bias": false,
            "torch_dtype": .string(dtype == .f32 ? "float32" : dtype == .bf16 ? "bfloat16" : "float16"),
        ]
        switch c.ropeScaling {
        case .none: break
        case .linear(let f):
            o["rope_scaling"] = .object(["rope_type": "linear", "factor": .double(f)])
        case .llama3(let f, let lo, let hi, let orig):
            o["rope_scaling"] = .object(["rope_type": "llama3", "factor": .double(f), "low_freq_factor": .double(lo),
                                         "high_freq_factor": .double(hi), "original_max_position_embeddings": .int(Int64(orig))])
        }
        if let b = c.bosTokenId { o["bos_token_id"] = .int(Int64(b)) }
        if c.eosTokenIds.count == 1 { o["eos_token_id"] = .int(Int64(c.eosTokenIds[0])) } else if !c.eosTokenIds.isEmpty {
            o["eos_token_id"] = .array(c.eosTokenIds.map { .int(Int64($0)) })
        }
        if let p = c.padTokenId { o["pad_token_id"] = .int(Int64(p)) }
        if let g = c.gemma {
            o["hidden_act"] = nil
            o["hidden_activation"] = "gelu_pytorch_tanh"
            // transformers reads it as an integer (its configs declare it so)
            let scalar = g.queryPreAttnScalar
            o["query_pre_attn_scalar"] = scalar == scalar.rounded() && abs(scalar) < 1e15 ? .int(Int64(scalar)) : .double(scalar)
            o["attn_logit_softcapping"] = g.attnSoftcap.map { .double($0) } ?? .null
            o["final_logit_softcapping"] = g.finalSoftcap.map { .double($0) } ?? .null
            o["sliding_window"] = g.slidingWindow.map { .int(Int64($0)) } ?? .null
            o["layer_types"] = .array(g.slidingLayers.map { .string($0 ? "sliding_attention" : "full_attention") })
            if let local = g.localRopeTheta { o["rope_local_base_freq"] = .double(local) }
        }
        return o
    }
}
