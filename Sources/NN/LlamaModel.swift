// The Llama-family causal language model (Llama, Mistral, Qwen2): token embedding, decoder
// layers (RMSNorm, grouped-query attention with RoPE, RMSNorm, SwiGLU MLP), final norm and the
// output head (tied to the embedding when the config says so). Forward gives logits [B, T, V];
// loss() is transformers' shifted cross-entropy.

import Quant
import Tensor

public final class DecoderLayer {
    public let index: Int
    public var inputNorm: Tensor
    public var postAttentionNorm: Tensor
    public let q, k, v, o, gate, up, down: LinearModule

    public init(index: Int, inputNorm: Tensor, postAttentionNorm: Tensor, q: LinearModule, k: LinearModule,
                v: LinearModule, o: LinearModule, gate: LinearModule, up: LinearModule, down: LinearModule) {
        self.index = index
        self.inputNorm = inputNorm
        self.postAttentionNorm = postAttentionNorm
        self.q = q; self.k = k; self.v = v; self.o = o
        self.gate = gate; self.up = up; self.down = down
    }

    public var linears: [LinearModule] { [q, k, v, o, gate, up, down] }
}

/// Keys and values of earlier positions, per layer: [B, KV, S, D].
public final class KVCache {
    public var keys: [Tensor?]
    public var values: [Tensor?]
    public var length = 0
    public init(layers: Int) { keys = Array(repeating: nil, count: layers); values = keys }
}

public final class LlamaModel {
    public let config: ModelConfig
    public var embedding: Tensor
    public let layers: [DecoderLayer]
    public var norm: Tensor
    /// nil when the head is tied to the embedding
    public let lmHead: LinearModule?
    /// The dense output head's arithmetic (lm_head or the tied embedding): .bf16 rounds its
    /// operands for the logits and the input gradient (f32 sums); set with the 4-bit layers'
    /// compute type by quantizeLinears and the loader.
    public var headCompute: ComputeType = .f32 {
        didSet { lmHead?.denseBF16 = headCompute == .bf16 }
    }
    public let rope: RoPE
    public var training = false
    /// Recompute each decoder layer in backward instead of keeping its activations: activation
    /// memory grows with one layer, not all of them.
    public var gradientCheckpointing = false
    /// The configuration each named LoRA adapter was added with (what save_adapter writes).
    public var adapterConfigs: [String: LoRAConfig] = [:]
    /// Where the base model came from (adapter_config.json's base_model_name_or_path).
    public var sourcePath: String?
    /// A line about the source file's own storage, shown by summary (a GGUF file whose linears
    /// were already 4-bit, say).
    public var sourceNote: String?

    public init(config: ModelConfig, embedding: Tensor, layers: [DecoderLayer], norm: Tensor, lmHead: LinearModule?) throws {
        try config.validate("model")
        if embedding.shape != [config.vocabSize, config.hiddenSize] {
            throw ModelError("embedding shape \(Shape.describe(embedding.shape)) does not match vocab \(config.vocabSize) x hidden \(config.hiddenSize)")
        }
        self.config = config
        self.embedding = embedding
        self.layers = layers
        self.norm = norm
        self.lmHead = lmHead
        rope = RoPE(headDim: config.headDim, theta: config.ropeTheta, scaling: config.ropeScaling)
    }

    /// Every linear layer in model order (the head last, when not tied).
    public var linears: [LinearModule] { layers.flatMap { $0.linears } + (lmHead.map { [$0] } ?? []) }

    /// ids [B, T] (integer tensor) -> logits [B, T, V] (f32). With a cache, ids are the next
    /// positions after the cached ones, and the cache is extended.
    public func forward(_ ids: Tensor, cache: KVCache? = nil, segmentIds: Tensor? = nil, positionIds: Tensor? = nil) throws -> Tensor {
        if ids.dtype.isFloat || ids.ndim != 2 {
            throw ModelError("input ids must be an integer tensor of shape [B, T], got \(ids.dtype.name) \(Shape.describe(ids.shape))")
        }
        let b = ids.shape[0], t = ids.shape[1]
        if b == 0 || t == 0 { throw ModelError("input ids must not be empty, got shape \(Shape.describe(ids.shape))") }
        let start = cache?.length ?? 0
        let c = config
        var h = try embedding.indexSelect(0, ids).to(.f32)      // [B, T, hidden]
        var (cos, sin) = try rope.tables(start: start, count: t)
        var mask: Tensor? = nil
        if segmentIds != nil || positionIds != nil {
            if cache != nil { throw ModelError("segment_ids and position_ids cannot be used with a KV cache") }
            if let pos = positionIds { (cos, sin) = try PackedInputs.ropeTables(rope, pos, batch: b, length: t) }
            if let seg = segmentIds { mask = try PackedInputs.attentionMask(seg, batch: b, length: t) }
        }
        for layer in layers {
            if gradientCheckpointing && cache == nil && GradMode.enabled {
                let (c, s, m) = (cos, sin, mask)
                h = try Tensor.checkpoint(h) { x in try self.decoderLayer(layer, x, cos: c, sin: s, cache: nil, mask: m) }
            } else {
                h = try decoderLayer(layer, h, cos: cos, sin: sin, cache: cache, mask: mask)
            }
        }
        cache?.length = start + t
        h = try Functional.rmsNorm(h, norm, eps: c.rmsNormEps)
        if let head = lmHead { return try head.forward(h, training: training) }
        return try h.linear(embedding, bf16: headCompute == .bf16)
    }

    /// One decoder layer: h + attn(norm1(h)), then + mlp(norm2(.)); h [B, T, hidden].
    func decoderLayer(_ layer: DecoderLayer, _ input: Tensor, cos: Tensor, sin: Tensor, cache: KVCache?,
                      mask: Tensor? = nil) throws -> Tensor {
        let c = config
        let b = input.shape[0], t = input.shape[1]
        var h = input
        let x = try Functional.rmsNorm(h, layer.inputNorm, eps: c.rmsNormEps)
        let q = try layer.q.forward(x, training: training).reshape([b, t, c.numHeads, c.headDim]).transpose(1, 2)
        var k = try layer.k.forward(x, training: training).reshape([b, t, c.numKVHeads, c.headDim]).transpose(1, 2)
        var v = try layer.v.forward(x, training: training).reshape([b, t, c.numKVHeads, c.headDim]).transpose(1, 2)
        let qr = try RoPE.apply(q, cos: cos, sin: sin)
        k = try RoPE.apply(k, cos: cos, sin: sin)
        if let cache = cache {
            if let pk = cache.keys[layer.index], let pv = cache.values[layer.index] {
                k = try Tensor.concat([pk, k], 2)
                v = try Tensor.concat([pv, v], 2)
            }
            cache.keys[layer.index] = try k.detach()
            cache.values[layer.index] = try v.detach()
        }
        let attn = try Functional.attention(qr, k, v, mask: mask).transpose(1, 2).reshape([b, t, c.numHeads * c.headDim])
        h = try h.binary(.add, layer.o.forward(attn, training: training))
        let y = try Functional.rmsNorm(h, layer.postAttentionNorm, eps: c.rmsNormEps)
        let mlp = try Functional.swiglu(layer.gate.forward(y, training: training), layer.up.forward(y, training: training))
        return try h.binary(.add, layer.down.forward(mlp, training: training))
    }

    /// Mean shifted cross-entropy of forward(ids) against labels (-100 ignored).
    public func loss(_ ids: Tensor, _ labels: Tensor, segmentIds: Tensor? = nil, positionIds: Tensor? = nil) throws -> Tensor {
        try Functional.causalLMLoss(forward(ids, segmentIds: segmentIds, positionIds: positionIds), labels)
    }
}
