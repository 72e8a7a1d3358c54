// Full-parameter training of a dense model: the base weights (token embedding, RMSNorm weights,
// dense linear weights and biases, the output head) by their Hugging Face names, and switching
// them to trainable f32 leaves. A 4-bit weight can never be trained (its storage is packed
// codes); asking for it is an error naming the layer.

import Tensor

extension LlamaModel {
    /// Every base weight in file order, with transformers' names (tied heads appear once, as
    /// model.embed_tokens.weight). 4-bit linears are left out (they hold no dense tensor).
    public func baseParameters() -> [(name: String, tensor: Tensor)] {
        var out: [(name: String, tensor: Tensor)] = [("model.embed_tokens.weight", embedding)]
        for layer in layers {
            let p = "model.layers.\(layer.index)"
            out.append(("\(p).input_layernorm.weight", layer.inputNorm))
            out.append(("\(p).post_attention_layernorm.weight", layer.postAttentionNorm))
            if let n = layer.qNorm { out.append(("\(p).self_attn.q_norm.weight", n)) }
            if let n = layer.kNorm { out.append(("\(p).self_attn.k_norm.weight", n)) }
            if let n = layer.preFeedforwardNorm { out.append(("\(p).pre_feedforward_layernorm.weight", n)) }
            if let n = layer.postFeedforwardNorm { out.append(("\(p).post_feedforward_layernorm.weight", n)) }
            for l in layer.linears { out += l.denseParameters() }
        }
        out.append(("model.norm.weight", norm))
        if let head = lmHead { out += head.denseParameters() }
        return out
    }

    /// Makes every base weight a trainable f32 leaf (on) or frozen again (off); returns how many
    /// tensors changed. Turning on replaces each weight that is not trainable yet by an f32 copy
    /// with requires_grad (so bf16 weights and memory-mapped files are never written), which is
    /// why optimizers must be built after this call. Off clears requires_grad and gradients.
    @discardableResult
    public func setBaseTrainable(_ on: Bool) throws -> Int {
        if on, let q = linears.first(where: { $0.isQuantized }) {
            throw ModelError("\(q.name) is a 4-bit layer: quantized weights cannot be trained (load the model without quant to train every weight, or add LoRA adapters)")
        }
        var changed = 0
        func update(_ t: Tensor) throws -> Tensor {
            if on {
                if t.requiresGrad { return t }
                let c = try t.converted(to: .f32).copy()
                c.requiresGrad = true
                changed += 1
                return c
            }
            if t.requiresGrad { t.requiresGrad = false; t.grad = nil; changed += 1 }
            return t
        }
        embedding = try update(embedding)
        for layer in layers {
            layer.inputNorm = try update(layer.inputNorm)
            layer.postAttentionNorm = try update(layer.postAttentionNorm)
            if let n = layer.qNorm { layer.qNorm = try update(n) }
            if let n = layer.kNorm { layer.kNorm = try update(n) }
            if let n = layer.preFeedforwardNorm { layer.preFeedforwardNorm = try update(n) }
            if let n = layer.postFeedforwardNorm { layer.postFeedforwardNorm = try update(n) }
            for l in layer.linears { try l.updateDense(update) }
        }
        norm = try update(norm)
        try lmHead?.updateDense(update)
        return changed
    }

    /// True when any base weight collects gradients.
    public var baseTrainable: Bool { baseParameters().contains { $0.tensor.requiresGrad } }
}

extension LinearModule {
    /// The dense weight (and bias) by name; empty for a 4-bit layer.
    func denseParameters() -> [(name: String, tensor: Tensor)] {
        guard case .dense(let w, let b) = base else { return [] }
        return [(name + ".weight", w)] + (b.map { [(name + ".bias", $0)] } ?? [])
    }

    /// Replaces the dense weight and bias by f(weight), f(bias); nothing for a 4-bit layer.
    func updateDense(_ f: (Tensor) throws -> Tensor) throws {
        guard case .dense(let w, let b) = base else { return }
        base = .dense(weight: try f(w), bias: try b.map(f))
    }
}
