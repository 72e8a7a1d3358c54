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
    /// Qwen3's per-head RMSNorm weights [head_dim] of queries and keys (nil for Llama-style layers).
    public var qNorm: Tensor?
    public var kNorm: Tensor?
    /// Gemma's norms around the MLP (nil for Llama-style layers; its postAttentionNorm then
    /// normalizes the attention output instead of the MLP input).
    public var preFeedforwardNorm: Tensor?
    public var postFeedforwardNorm: Tensor?
    public let q, k, v, o, gate, up, down: LinearModule
    /// Adapters written in Lua on this layer's MLP activation (mlp_act) and output (block_out).
    public var scriptAdapters: [ScriptAdapter] = []

    public init(index: Int, inputNorm: Tensor, postAttentionNorm: Tensor, q: LinearModule, k: LinearModule,
                v: LinearModule, o: LinearModule, gate: LinearModule, up: LinearModule, down: LinearModule,
                qNorm: Tensor? = nil, kNorm: Tensor? = nil, preFeedforwardNorm: Tensor? = nil,
                postFeedforwardNorm: Tensor? = nil) {
        self.index = index
        self.qNorm = qNorm
        self.kNorm = kNorm
        self.preFeedforwardNorm = preFeedforwardNorm
        self.postFeedforwardNorm = postFeedforwardNorm
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

    /// Whether the head's products run in bf16 here: its compute is bf16 and the CPU has bf16 dot
    /// products (or QLORA_BF16=emulate); see ComputeType.kernels.
    var headBF16: Bool { headCompute.kernels == .bf16 }

    public let rope: RoPE
    public var training = false
    /// Recompute each decoder layer in backward instead of keeping its activations: activation
    /// memory grows with one layer, not all of them.
    public var gradientCheckpointing = false
    /// The configuration each named LoRA adapter was added with (what save_adapter writes).
    public var adapterConfigs: [String: LoRAConfig] = [:]
    /// Adapters written in Lua on the embeddings (embed) and in front of the sequence (prefix).
    public var modelScriptAdapters: [ScriptAdapter] = []
    /// set_adapter / disable_adapters for the script adapters outside linear layers (the linear
    /// ones follow their layer's activeAdapters and adaptersEnabled).
    public var scriptActive: [String]? = nil
    public var scriptEnabled = true
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
        localRope = config.gemma?.localRopeTheta.map { RoPE(headDim: config.headDim, theta: $0, scaling: .none) }
    }

    /// Gemma 3's RoPE of its sliding-window layers (their own theta, no scaling); nil otherwise.
    let localRope: RoPE?

    /// Every linear layer in model order (the head last, when not tied).
    public var linears: [LinearModule] { layers.flatMap { $0.linears } + (lmHead.map { [$0] } ?? []) }

    /// ids [B, T] (integer tensor) -> logits [B, T, V] (f32). With a cache, ids are the next
    /// positions after the cached ones, and the cache is extended.
    public func forward(_ ids: Tensor, cache: KVCache? = nil, segmentIds: Tensor? = nil, positionIds: Tensor? = nil) throws -> Tensor {
        let h = try finalHidden(ids, cache: cache, segmentIds: segmentIds, positionIds: positionIds)
        let logits = try lmHead?.forward(h, training: training) ?? h.linear(embedding, bf16: headBF16)
        if let cap = config.gemma?.finalSoftcap { return try Functional.softcap(logits, cap) }
        return logits
    }

    /// The final normed hidden states [B, T, hidden] that the head turns into logits.
    func finalHidden(_ ids: Tensor, cache: KVCache? = nil, segmentIds: Tensor? = nil, positionIds: Tensor? = nil) throws -> Tensor {
        if ids.dtype.isFloat || ids.ndim != 2 {
            throw ModelError("input ids must be an integer tensor of shape [B, T], got \(ids.dtype.name) \(Shape.describe(ids.shape))")
        }
        let b = ids.shape[0], t = ids.shape[1]
        if b == 0 || t == 0 { throw ModelError("input ids must not be empty, got shape \(Shape.describe(ids.shape))") }
        let start = cache?.length ?? 0
        let c = config
        var h = try embedding.indexSelect(0, ids).to(.f32)      // [B, T, hidden]
        if c.gemma != nil { h = try h.binary(.mul, scalar: Double(Float(Double(c.hiddenSize).squareRoot()))) }
        // script adapters on the embeddings, then virtual tokens in front (a sequence's first
        // forward only: with a cache they are kept there like any other position)
        var p = 0
        if !modelScriptAdapters.isEmpty {
            h = try ScriptAdapter.chain(modelScriptAdapters, .embed, h, active: scriptActive, enabled: scriptEnabled)
            if start == 0 {
                for s in ScriptAdapter.running(modelScriptAdapters, .prefix, active: scriptActive, enabled: scriptEnabled) {
                    let n = try s.run([h], shape: nil)
                    guard n.ndim == 3, n.shape[0] == b, n.shape[2] == c.hiddenSize, n.shape[1] >= h.shape[1] else {
                        throw ModelError("\(s.describe()): forward returned shape \(Shape.describe(n.shape)), expected [\(b), P + \(h.shape[1]), \(c.hiddenSize)] (P virtual tokens in front)")
                    }
                    h = n
                }
                p = h.shape[1] - t
            }
        }
        let tt = t + p
        var (cos, sin) = try rope.tables(start: start, count: tt)
        var local = try localRope?.tables(start: start, count: tt)
        var mask: Tensor? = nil
        if segmentIds != nil || positionIds != nil {
            if cache != nil { throw ModelError("segment_ids and position_ids cannot be used with a KV cache") }
            if let pos = positionIds {
                let pp = p > 0 ? try LlamaModel.prefixedPositions(pos, prefix: p, batch: b, length: t) : pos
                (cos, sin) = try PackedInputs.ropeTables(rope, pp, batch: b, length: tt)
                if let lr = localRope { local = try PackedInputs.ropeTables(lr, pp, batch: b, length: tt) }
            }
            if let seg = segmentIds {
                mask = p > 0 ? try LlamaModel.prefixMask(seg, prefix: p, batch: b, length: t)
                             : try PackedInputs.attentionMask(seg, batch: b, length: t)
            }
        }
        for layer in layers {
            let sliding = c.gemma?.isSliding(layer.index) ?? false
            let (lc, ls) = sliding ? (local?.0 ?? cos, local?.1 ?? sin) : (cos, sin)
            let run: (Tensor, KVCache?) throws -> Tensor = { x, kv in
                c.gemma != nil
                    ? try self.gemmaDecoderLayer(layer, x, cos: lc, sin: ls, cache: kv, mask: mask, start: start, sliding: sliding)
                    : try self.decoderLayer(layer, x, cos: lc, sin: ls, cache: kv, mask: mask)
            }
            if gradientCheckpointing && cache == nil && GradMode.enabled {
                h = try Tensor.checkpoint(h) { x in try run(x, nil) }
            } else {
                h = try run(h, cache)
            }
        }
        cache?.length = start + tt
        if p > 0 { h = try h.slice(1, p, tt) }               // the real tokens only (their logits)
        return try Functional.rmsNorm(h, norm, eps: c.rmsNormEps)
    }

    /// One decoder layer: h + attn(norm1(h)), then + mlp(norm2(.)); h [B, T, hidden].
    func decoderLayer(_ layer: DecoderLayer, _ input: Tensor, cos: Tensor, sin: Tensor, cache: KVCache?,
                      mask: Tensor? = nil) throws -> Tensor {
        let c = config
        let b = input.shape[0], t = input.shape[1]
        var h = input
        let x = try Functional.rmsNorm(h, layer.inputNorm, eps: c.rmsNormEps)
        var qh = try layer.q.forward(x, training: training).reshape([b, t, c.numHeads, c.headDim])
        var kh = try layer.k.forward(x, training: training).reshape([b, t, c.numKVHeads, c.headDim])
        if let qn = layer.qNorm { qh = try Functional.rmsNorm(qh, qn, eps: c.rmsNormEps) }
        if let kn = layer.kNorm { kh = try Functional.rmsNorm(kh, kn, eps: c.rmsNormEps) }
        let q = try qh.transpose(1, 2)
        var k = try kh.transpose(1, 2)
        var v = try layer.v.forward(x, training: training).reshape([b, t, c.numKVHeads, c.headDim]).transpose(1, 2)
        let qr = try RoPE.apply(q, cos: cos, sin: sin)
        k = try RoPE.apply(k, cos: cos, sin: sin)
        (k, v) = try withCache(cache, layer, k, v)
        let attn = try Functional.attention(qr, k, v, mask: mask).transpose(1, 2).reshape([b, t, c.numHeads * c.headDim])
        h = try h.binary(.add, layer.o.forward(attn, training: training))
        let y = try Functional.rmsNorm(h, layer.postAttentionNorm, eps: c.rmsNormEps)
        var mlp = try Functional.swiglu(layer.gate.forward(y, training: training), layer.up.forward(y, training: training))
        if layer.scriptAdapters.isEmpty { return try h.binary(.add, layer.down.forward(mlp, training: training)) }
        mlp = try ScriptAdapter.chain(layer.scriptAdapters, .mlpAct, mlp, active: scriptActive, enabled: scriptEnabled)
        let out = try ScriptAdapter.chain(layer.scriptAdapters, .mlpOut, layer.down.forward(mlp, training: training),
                                          active: scriptActive, enabled: scriptEnabled)
        h = try h.binary(.add, out)
        return try ScriptAdapter.chain(layer.scriptAdapters, .blockOut, h, active: scriptActive, enabled: scriptEnabled)
    }

    /// This layer's keys and values [B, KV, S, D] with the cached earlier positions in front, and
    /// the cache extended by them (unchanged without a cache).
    func withCache(_ cache: KVCache?, _ layer: DecoderLayer, _ k: Tensor, _ v: Tensor) throws -> (Tensor, Tensor) {
        guard let cache = cache else { return (k, v) }
        var (k, v) = (k, v)
        if let pk = cache.keys[layer.index], let pv = cache.values[layer.index] {
            k = try Tensor.concat([pk, k], 2)
            v = try Tensor.concat([pv, v], 2)
        }
        cache.keys[layer.index] = try k.detach()
        cache.values[layer.index] = try v.detach()
        return (k, v)
    }

    /// Mean shifted cross-entropy of forward(ids) against labels (-100 ignored). With the fused
    /// ops on and a plain dense head (no active adapter, no bias) the logits are never built:
    /// FusedLinearCrossEntropy takes the final hidden states and the head weight.
    public func loss(_ ids: Tensor, _ labels: Tensor, segmentIds: Tensor? = nil, positionIds: Tensor? = nil) throws -> Tensor {
        if Functional.fused, let (w, bf16) = plainHead {
            let h = try finalHidden(ids, segmentIds: segmentIds, positionIds: positionIds)
            return try FusedLinearCrossEntropy.loss(hidden: h, weight: w, bf16: bf16, labels: labels)
        }
        return try Functional.causalLMLoss(forward(ids, segmentIds: segmentIds, positionIds: positionIds), labels)
    }

    /// The head's weight and bf16 setting when it is a plain dense product: the tied embedding, or
    /// an lm_head without bias whose adapters (if any) are merged, disabled or inactive.
    var plainHead: (Tensor, Bool)? {
        if config.gemma?.finalSoftcap != nil { return nil }   // the logits are soft-capped first
        guard let head = lmHead else { return (embedding, headBF16) }
        guard case .dense(let w, let bias) = head.base, bias == nil else { return nil }
        let adapting = head.adaptersEnabled && head.adapters.contains { !$0.adapter.merged && (head.activeAdapters?.contains($0.name) ?? true) }
            || head.adaptersEnabled && head.scriptAdapters.contains { head.activeAdapters?.contains($0.name) ?? true }
        return adapting ? nil : (w, head.denseBF16 && ComputeType.bf16Kernels)
    }
}
