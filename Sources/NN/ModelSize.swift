// What a model's architecture implies about its size, computed from the config alone (no
// weights): parameter counts by kind of weight, the shapes of the decoder linears, and the bytes
// the weights take dense or with the decoder linears in 4-bit (as bitsandbytes stores a QLoRA
// base model: embeddings, norms and lm_head stay dense).

import Quant

/// Parameters of a dense model by kind of weight.
public struct ParameterCounts: Equatable {
    /// embed_tokens.
    public var embeddings = 0
    /// q, k, v, o projections (and the q/k/v biases when the architecture has them).
    public var attention = 0
    /// gate, up, down projections.
    public var mlp = 0
    /// Every RMSNorm weight (two per layer, one final).
    public var norms = 0
    /// The output projection; 0 when it is tied to the embeddings.
    public var lmHead = 0

    public var total: Int { embeddings + attention + mlp + norms + lmHead }
}

/// One decoder linear: its kind ("q_proj", ...) and weight shape [out, in].
public struct LinearShape: Equatable {
    public let kind: String
    public let outFeatures: Int
    public let inFeatures: Int
    public let hasBias: Bool
    public var weightCount: Int { outFeatures * inFeatures }
}

extension ModelConfig {
    /// The linears of one decoder layer, in the order q, k, v, o, gate, up, down.
    public var decoderLinearShapes: [LinearShape] {
        let qd = numHeads * headDim, kvd = numKVHeads * headDim
        return [
            LinearShape(kind: "q_proj", outFeatures: qd, inFeatures: hiddenSize, hasBias: attentionBias),
            LinearShape(kind: "k_proj", outFeatures: kvd, inFeatures: hiddenSize, hasBias: attentionBias),
            LinearShape(kind: "v_proj", outFeatures: kvd, inFeatures: hiddenSize, hasBias: attentionBias),
            LinearShape(kind: "o_proj", outFeatures: hiddenSize, inFeatures: qd, hasBias: false),
            LinearShape(kind: "gate_proj", outFeatures: intermediateSize, inFeatures: hiddenSize, hasBias: false),
            LinearShape(kind: "up_proj", outFeatures: intermediateSize, inFeatures: hiddenSize, hasBias: false),
            LinearShape(kind: "down_proj", outFeatures: hiddenSize, inFeatures: intermediateSize, hasBias: false),
        ]
    }

    public var parameterCounts: ParameterCounts {
        var c = ParameterCounts()
        c.embeddings = vocabSize * hiddenSize
        for l in decoderLinearShapes {
            let n = l.weightCount + (l.hasBias ? l.outFeatures : 0)
            if ["q_proj", "k_proj", "v_proj", "o_proj"].contains(l.kind) {
                c.attention += numLayers * n
            } else {
                c.mlp += numLayers * n
            }
        }
        c.norms = ((gemma != nil ? 4 : 2) * numLayers + 1) * hiddenSize + (qkNorm ? 2 * numLayers * headDim : 0)
        c.lmHead = tieWordEmbeddings ? 0 : vocabSize * hiddenSize
        return c
    }

    /// Bytes of all weights with `denseBytes` per dense parameter; with `quant`, the decoder
    /// linear weights (not their biases) take 4-bit storage with its absmax instead.
    public func weightBytes(denseBytes: Int, quant: QuantOptions?) -> Int {
        guard let q = quant else { return parameterCount * denseBytes }
        var quantized = 0, quantizedBytes = 0
        for l in decoderLinearShapes {
            quantized += numLayers * l.weightCount
            quantizedBytes += numLayers * q.storageBytes(count: l.weightCount)
        }
        return (parameterCount - quantized) * denseBytes + quantizedBytes
    }
}
