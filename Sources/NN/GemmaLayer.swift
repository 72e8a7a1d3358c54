// Gemma 2 and Gemma 3 decoder layers (ModelConfig.gemma), as transformers computes them:
//   h = x + post_attention_norm(attn(input_norm(x)))
//   y = h + post_feedforward_norm(down(gelu_tanh(gate(z)) * up(z))),  z = pre_feedforward_norm(h)
// Attention: queries and keys (after q_norm / k_norm when present, Gemma 3) rotated by the
// layer's RoPE (Gemma 3's sliding layers have their own theta), scores scaled by
// query_pre_attn_scalar^-0.5, tanh soft-capped (Gemma 2), causal, and on sliding layers limited
// to the last `sliding_window` positions (key j visible from query i when i - window < j <= i).
// Without soft-capping and with every key inside the window, the fused attention kernel runs
// (queries pre-scaled so its 1/sqrt(d) gives Gemma's scale); otherwise the composed ops do.
// The norm weights hold 1 + w (see GemmaOptions), so RMSNorm is the usual op.

import Tensor

extension LlamaModel {
    func gemmaDecoderLayer(_ layer: DecoderLayer, _ input: Tensor, cos: Tensor, sin: Tensor, cache: KVCache?,
                           mask: Tensor?, start: Int, sliding: Bool) throws -> Tensor {
        let c = config
        guard let g = c.gemma, let preFF = layer.preFeedforwardNorm, let postFF = layer.postFeedforwardNorm else {
            throw ModelError("layer \(layer.index) lacks Gemma's feed-forward norms")
        }
        let b = input.shape[0], t = input.shape[1]
        let x = try Functional.rmsNorm(input, layer.inputNorm, eps: c.rmsNormEps)
        var qh = try layer.q.forward(x, training: training).reshape([b, t, c.numHeads, c.headDim])
        var kh = try layer.k.forward(x, training: training).reshape([b, t, c.numKVHeads, c.headDim])
        let v0 = try layer.v.forward(x, training: training).reshape([b, t, c.numKVHeads, c.headDim]).transpose(1, 2)
        if let qn = layer.qNorm { qh = try Functional.rmsNorm(qh, qn, eps: c.rmsNormEps) }
        if let kn = layer.kNorm { kh = try Functional.rmsNorm(kh, kn, eps: c.rmsNormEps) }
        let q = try RoPE.apply(qh.transpose(1, 2), cos: cos, sin: sin)
        let (k, v) = try withCache(cache, layer, RoPE.apply(kh.transpose(1, 2), cos: cos, sin: sin), v0)
        let window = sliding ? g.slidingWindow : nil
        let attn = try gemmaAttention(q, k, v, scale: 1 / g.queryPreAttnScalar.squareRoot(), softcap: g.attnSoftcap,
                                      window: window, start: start, segmentMask: mask)
            .transpose(1, 2).reshape([b, t, c.numHeads * c.headDim])
        let o = try layer.o.forward(attn, training: training)
        let h = try input.binary(.add, Functional.rmsNorm(o, layer.postAttentionNorm, eps: c.rmsNormEps))
        let z = try Functional.rmsNorm(h, preFF, eps: c.rmsNormEps)
        let act = try Functional.geluTanh(layer.gate.forward(z, training: training))
        var inner = try act.binary(.mul, layer.up.forward(z, training: training))
        // adapters written in Lua: on the MLP activation, the MLP's output (after its norm, before
        // the residual addition) and the block's output, as in Llama-style layers
        let hooks = layer.scriptAdapters
        if !hooks.isEmpty { inner = try ScriptAdapter.chain(hooks, .mlpAct, inner, active: scriptActive, enabled: scriptEnabled) }
        var mlp = try Functional.rmsNorm(layer.down.forward(inner, training: training), postFF, eps: c.rmsNormEps)
        if hooks.isEmpty { return try h.binary(.add, mlp) }
        mlp = try ScriptAdapter.chain(hooks, .mlpOut, mlp, active: scriptActive, enabled: scriptEnabled)
        return try ScriptAdapter.chain(hooks, .blockOut, h.binary(.add, mlp), active: scriptActive, enabled: scriptEnabled)
    }

    /// q [B, H, T, D], k and v [B, KV, S, D] (S = start + T): softmax(cap(q k^T scale) + mask) v.
    func gemmaAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, scale: Double, softcap: Double?, window: Int?,
                        start: Int, segmentMask: Tensor?) throws -> Tensor {
        let b = q.shape[0], h = q.shape[1], t = q.shape[2], d = q.shape[3]
        let kv = k.shape[1], s = k.shape[2]
        let windowBites = window.map { s > $0 } ?? false
        if softcap == nil && !windowBites {
            // the fused kernel scales by 1/sqrt(d): pre-scale q to make that `scale`
            let qs = try q.binary(.mul, scalar: scale * Double(d).squareRoot())
            return try Functional.attention(qs, k, v, mask: segmentMask)
        }
        var keys = k, values = v
        if kv != h {
            let rep = h / kv
            keys = try k.reshape([b, kv, 1, s, d]).expanded(to: [b, kv, rep, s, d]).reshape([b, h, s, d])
            values = try v.reshape([b, kv, 1, s, d]).expanded(to: [b, kv, rep, s, d]).reshape([b, h, s, d])
        }
        var scores = try q.matmul(keys.transpose(2, 3)).binary(.mul, scalar: scale)
        if let cap = softcap { scores = try Functional.softcap(scores, cap) }
        // causal (query i sits at position start + i) and the window, as one additive mask
        let allowed = try Tensor(shape: [t, s], dtype: .f32)
        for i in 0..<t {
            let pos = start + i
            for j in 0..<s {
                let visible = j <= pos && (window.map { j > pos - $0 } ?? true)
                allowed.f32[i * s + j] = visible ? 0 : -Float.infinity
            }
        }
        scores = try scores.binary(.add, allowed)
        if let m = segmentMask { scores = try scores.binary(.add, m) }
        return try scores.softmax(3).matmul(values)
    }
}

extension Functional {
    /// cap * tanh(x / cap): Gemma 2's soft-capping of attention scores and logits.
    public static func softcap(_ x: Tensor, _ cap: Double) throws -> Tensor {
        try x.binary(.mul, scalar: 1 / cap).unary(.tanh).binary(.mul, scalar: cap)
    }

    /// GELU with the tanh approximation (PyTorch's gelu(approximate = "tanh"), transformers'
    /// gelu_pytorch_tanh): 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
    public static func geluTanh(_ x: Tensor) throws -> Tensor {
        let cube = try x.binary(.mul, x).binary(.mul, x)
        let inner = try x.binary(.add, cube.binary(.mul, scalar: 0.044715)).binary(.mul, scalar: (2 / Double.pi).squareRoot())
        return try x.binary(.mul, scalar: 0.5).binary(.mul, inner.unary(.tanh).binary(.add, scalar: 1))
    }
}
