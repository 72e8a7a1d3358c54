// The architecture of a Llama-family model (Llama, Mistral, Qwen2) as qlora uses it: sizes,
// attention layout (GQA, head_dim), RMSNorm eps, RoPE (theta and scaling) and weight tying.
// Parsed from Hugging Face's config.json by the IO layer; validated here.

public enum RopeScaling: Equatable {
    case none
    case linear(factor: Double)
    case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositions: Int)
}

/// What Gemma 2 and Gemma 3 layers do that Llama's do not. Their norm weights are stored as
/// offsets from one ((1 + w) multiplies), and qlora holds them as 1 + w (converted on load and
/// save), so its RMSNorm is the same op.
public struct GemmaOptions: Equatable {
    /// RMSNorm after attention and around the MLP: h + post(attn(in(h))), then h + post_ff(mlp(pre_ff(h))).
    /// The MLP is GeGLU: down(gelu_tanh(gate) * up). Embeddings are multiplied by sqrt(hidden).
    /// Attention scores are scaled by query_pre_attn_scalar^-0.5.
    public var queryPreAttnScalar: Double
    /// tanh soft-capping of attention scores / of the final logits (Gemma 2), nil when off.
    public var attnSoftcap: Double? = nil
    public var finalSoftcap: Double? = nil
    /// Layers that attend over the last `slidingWindow` positions only.
    public var slidingWindow: Int? = nil
    public var slidingLayers: [Bool] = []
    /// RoPE theta of the sliding layers when it differs from the others' (Gemma 3).
    public var localRopeTheta: Double? = nil

    public init(queryPreAttnScalar: Double) { self.queryPreAttnScalar = queryPreAttnScalar }

    public func isSliding(_ layer: Int) -> Bool {
        slidingWindow != nil && layer < slidingLayers.count && slidingLayers[layer]
    }
}

public struct ModelConfig: Equatable {
    public var architecture: String = "LlamaForCausalLM"
    public var modelType: String = "llama"
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var rmsNormEps: Double = 1e-6
    public var ropeTheta: Double = 10000
    public var ropeScaling: RopeScaling = .none
    public var maxPositions: Int = 2048
    public var tieWordEmbeddings: Bool = false
    /// q/k/v projections carry biases (Qwen2; Llama with attention_bias).
    public var attentionBias: Bool = false
    /// Qwen3, Gemma 3: an RMSNorm over head_dim on each head's query and key (q_norm, k_norm)
    /// before RoPE.
    public var qkNorm: Bool = false
    /// Gemma 2 / 3 (nil for Llama-style layers): the layer and model shape they differ by.
    public var gemma: GemmaOptions? = nil
    public var bosTokenId: Int?
    public var eosTokenIds: [Int] = []
    public var padTokenId: Int?

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numLayers: Int,
                numHeads: Int, numKVHeads: Int? = nil, headDim: Int? = nil) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numLayers = numLayers
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads ?? numHeads
        self.headDim = headDim ?? (numHeads > 0 ? hiddenSize / numHeads : 0)
    }

    /// Errors for sizes no model can have; `source` names the file or call in messages.
    public func validate(_ source: String) throws {
        func check(_ ok: Bool, _ what: String) throws {
            if !ok { throw ModelError("\(source): \(what)") }
        }
        try check(vocabSize > 0, "vocab_size must be > 0, got \(vocabSize)")
        try check(hiddenSize > 0, "hidden_size must be > 0, got \(hiddenSize)")
        try check(intermediateSize > 0, "intermediate_size must be > 0, got \(intermediateSize)")
        try check(numLayers > 0 && numLayers <= 1024, "num_hidden_layers must be 1..1024, got \(numLayers)")
        try check(numHeads > 0, "num_attention_heads must be > 0, got \(numHeads)")
        try check(numKVHeads > 0 && numHeads % numKVHeads == 0,
                  "num_key_value_heads (\(numKVHeads)) must divide num_attention_heads (\(numHeads))")
        try check(headDim > 0 && headDim % 2 == 0, "head_dim must be a positive even number, got \(headDim)")
        try check(rmsNormEps > 0 && rmsNormEps < 1, "rms_norm_eps must be in (0, 1), got \(rmsNormEps)")
        try check(ropeTheta > 0 && ropeTheta.isFinite, "rope_theta must be a finite number > 0, got \(ropeTheta)")
        try check(maxPositions > 0, "max_position_embeddings must be > 0, got \(maxPositions)")
        // Each size alone first: their products below must not overflow.
        let limit = 1 << 24
        for (name, v) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                          ("num_attention_heads", numHeads), ("num_key_value_heads", numKVHeads), ("head_dim", headDim)] {
            try check(v < limit, "\(name) \(v) is too large (at most \(limit - 1))")
        }
        try check(numHeads * headDim < limit,
                  "num_attention_heads * head_dim (\(numHeads) * \(headDim)) is too large (at most \(limit - 1))")
    }

    /// Total parameter count of the dense model.
    public var parameterCount: Int { parameterCounts.total }
}

public struct ModelError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
