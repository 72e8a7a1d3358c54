// A linear layer of a model, by its Hugging Face name: a frozen base (a dense weight, or a 4-bit
// QuantLinear) plus any number of named LoRA adapters, of which the active, unmerged ones add
// scaling * B(A(dropout(x))) to the base output (DoRA adapters add their rescaled update instead,
// see LoRADoRA.swift).

import Quant
import Tensor

public enum LinearBase {
    case dense(weight: Tensor, bias: Tensor?)
    case quantized(QuantLinear)
}

public final class LinearModule {
    /// e.g. "model.layers.3.self_attn.q_proj"
    public let name: String
    /// the last name component, e.g. "q_proj"
    public var kind: String { name.split(separator: ".").last.map(String.init) ?? name }
    /// the decoder layer index, nil for the output head
    public let layer: Int?
    public let inFeatures: Int
    public let outFeatures: Int
    public var base: LinearBase
    public private(set) var adapters: [(name: String, adapter: LoRAAdapter)] = []
    /// Names of the adapters that run in forward (set_adapter); all of them when nil.
    public var activeAdapters: [String]? = nil
    public var adaptersEnabled = true
    /// A dense base computes its forward product and input gradient in bf16 (the model's head
    /// under compute = "bf16"; set by LlamaModel.headCompute).
    public var denseBF16 = false
    /// Adapters written in Lua at this layer (linear_input before it, linear after it), in the
    /// order they were added; they follow activeAdapters and adaptersEnabled too.
    public var scriptAdapters: [ScriptAdapter] = []

    public init(name: String, layer: Int?, base: LinearBase) throws {
        self.name = name
        self.layer = layer
        self.base = base
        switch base {
        case .dense(let w, let b):
            if w.ndim != 2 { throw ModelError("\(name): weight must be 2-d, got \(Shape.describe(w.shape))") }
            if let b = b, b.shape != [w.shape[0]] { throw ModelError("\(name): bias shape \(Shape.describe(b.shape)) does not match \(w.shape[0]) outputs") }
            outFeatures = w.shape[0]; inFeatures = w.shape[1]
        case .quantized(let q):
            outFeatures = q.outFeatures; inFeatures = q.inFeatures
        }
    }

    public var isQuantized: Bool { if case .quantized = base { return true } else { return false } }

    public func adapter(named n: String) -> LoRAAdapter? { adapters.first { $0.name == n }?.adapter }

    public func addAdapter(_ name: String, _ a: LoRAAdapter) throws {
        if adapter(named: name) != nil { throw ModelError("\(self.name) already has an adapter named \"\(name)\"") }
        adapters.append((name, a))
    }

    public func removeAdapter(_ name: String) { adapters.removeAll { $0.name == name } }

    /// The base output x W^T + b.
    public func baseForward(_ x: Tensor) throws -> Tensor {
        switch base {
        case .dense(let w, let b):
            var y = try x.linear(w, bf16: denseBF16 && ComputeType.bf16Kernels)
            if let b = b { y = try y.binary(.add, b) }
            return y
        case .quantized(let q):
            return try q.forward(x)
        }
    }

    /// linear_input adapters, the layer with its LoRA adapters, then linear adapters (each reads
    /// the layer's input as the layer received it and the output so far).
    public func forward(_ x: Tensor, training: Bool) throws -> Tensor {
        if scriptAdapters.isEmpty { return try layerForward(x, training: training) }
        let x2 = try ScriptAdapter.chain(scriptAdapters, .linearInput, x, active: activeAdapters, enabled: adaptersEnabled)
        var y = try layerForward(x2, training: training)
        for s in ScriptAdapter.running(scriptAdapters, .linear, active: activeAdapters, enabled: adaptersEnabled) {
            y = try s.run([x2, y], shape: y.shape)
        }
        return y
    }

    func layerForward(_ x: Tensor, training: Bool) throws -> Tensor {
        if let fused = try fusedQuantLoRA(x, training: training) { return fused }
        let base = try baseForward(x)
        if !adaptersEnabled { return base }
        var y = base
        // Merged adapters are part of the base weight already.
        for (n, a) in adapters where !a.merged && (activeAdapters?.contains(n) ?? true) {
            if a.isDoRA {
                y = try y.binary(.add, doraDelta(a, x, baseOutput: base, training: training))
            } else {
                y = try y.binary(.add, a.delta(x, training: training))
            }
        }
        return y
    }
}

extension LinearModule {
    /// A 4-bit base with only plain LoRA adapters active (no DoRA) runs as one node
    /// (QuantLoRAOp); nil when that does not apply, fused ops are off, or the layer computes in
    /// the bitsandbytes-compatible mode (which only QuantLinear.forward implements).
    func fusedQuantLoRA(_ x: Tensor, training: Bool) throws -> Tensor? {
        guard Functional.fused, adaptersEnabled, case .quantized(let q) = base, q.compute != .bnbBF16 else { return nil }
        let active = adapters.filter { !$0.adapter.merged && (activeAdapters?.contains($0.name) ?? true) }
        if active.isEmpty || active.contains(where: { $0.adapter.isDoRA }) { return nil }
        // each adapter's dropout drawn in adapter order, as the composed layer draws them
        let fused = try active.map { entry -> QuantLoRAOp.Adapter in
            let a = entry.adapter
            let input = training && a.dropout > 0 ? try a.dropped(x, training: training) : nil
            return QuantLoRAOp.Adapter(a: a.a, b: a.b, scaling: a.scaling, input: input)
        }
        return try QuantLoRAOp.forward(q, x, fused)
    }
}

/// One LoRA adapter on a linear layer: A [r, in], B [out, r], scaling alpha / r (or
/// alpha / sqrt(r) with rsLoRA), dropout on the adapter's input during training. With a DoRA
/// magnitude m [out] the adapter is DoRA (weight-decomposed: the layer's weight becomes
/// m / ||W + s B A||_row * (W + s B A)).
public final class LoRAAdapter {
    public let a: Tensor
    public let b: Tensor
    /// DoRA's trainable magnitude vector [out] (f32); nil for plain LoRA.
    public let magnitude: Tensor?
    public let r: Int
    public let alpha: Double
    public let rslora: Bool
    public let dropout: Double
    /// True while the update is folded into the base weight (merge_adapter); a merged adapter
    /// does not run in forward.
    public internal(set) var merged = false
    /// Order of merges across the model (unmerging everything goes newest first).
    var mergeSerial = 0
    /// DoRA: the row norms ||W + s B A|| when merged (unmerge divides by m / norm).
    var mergedNorm: [Double]? = nil

    public var scaling: Double { rslora ? alpha / Double(r).squareRoot() : alpha / Double(r) }
    public var isDoRA: Bool { magnitude != nil }

    public init(a: Tensor, b: Tensor, magnitude: Tensor? = nil, alpha: Double, rslora: Bool = false, dropout: Double = 0) throws {
        if a.ndim != 2 || b.ndim != 2 || a.shape[0] != b.shape[1] {
            throw ModelError("LoRA A \(Shape.describe(a.shape)) and B \(Shape.describe(b.shape)) do not fit together (A is [r, in], B is [out, r])")
        }
        if let m = magnitude, m.shape != [b.shape[0]] || !m.dtype.isFloat {
            throw ModelError("DoRA magnitude \(m.dtype.name) \(Shape.describe(m.shape)) does not fit B \(Shape.describe(b.shape)) (expected a float vector of \(b.shape[0]))")
        }
        if !(dropout >= 0 && dropout < 1) { throw ModelError("LoRA dropout must be in [0, 1), got \(dropout)") }
        self.a = a
        self.b = b
        self.magnitude = magnitude
        r = a.shape[0]
        self.alpha = alpha
        self.rslora = rslora
        self.dropout = dropout
    }

    /// x with inverted dropout applied (training only).
    func dropped(_ x: Tensor, training: Bool) throws -> Tensor {
        if !(training && dropout > 0) { return x }
        let keep = try Tensor.rand(x.shape).binary(.ge, scalar: dropout).converted(to: .f32)
        return try x.binary(.mul, keep).binary(.mul, scalar: 1 / (1 - dropout))
    }

    /// scaling * (input A^T) B^T, no dropout.
    func update(_ input: Tensor) throws -> Tensor {
        try LoRAOp.update(input, a, b, scaling: scaling)
    }

    /// scaling * (drop(x) A^T) B^T
    public func delta(_ x: Tensor, training: Bool) throws -> Tensor {
        try update(dropped(x, training: training))
    }
}
