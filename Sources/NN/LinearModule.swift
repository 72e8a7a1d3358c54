// A linear layer of a model, by its Hugging Face name: a frozen base (a dense weight, or a 4-bit
// QuantLinear) plus any number of named LoRA adapters, of which the active ones add
// scaling * B(A(dropout(x))) to the base output.

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
            var y = try x.matmul(w.transpose(0, 1))
            if let b = b { y = try y.binary(.add, b) }
            return y
        case .quantized(let q):
            return try q.forward(x)
        }
    }

    public func forward(_ x: Tensor, training: Bool) throws -> Tensor {
        var y = try baseForward(x)
        if !adaptersEnabled { return y }
        for (n, a) in adapters where activeAdapters?.contains(n) ?? true {
            y = try y.binary(.add, a.delta(x, training: training))
        }
        return y
    }
}

/// One LoRA adapter on a linear layer: A [r, in], B [out, r], scaling alpha / r (or
/// alpha / sqrt(r) with rsLoRA), dropout on the adapter's input during training.
public final class LoRAAdapter {
    public let a: Tensor
    public let b: Tensor
    public let r: Int
    public let alpha: Double
    public let rslora: Bool
    public let dropout: Double

    public var scaling: Double { rslora ? alpha / Double(r).squareRoot() : alpha / Double(r) }

    public init(a: Tensor, b: Tensor, alpha: Double, rslora: Bool = false, dropout: Double = 0) throws {
        if a.ndim != 2 || b.ndim != 2 || a.shape[0] != b.shape[1] {
            throw ModelError("LoRA A \(Shape.describe(a.shape)) and B \(Shape.describe(b.shape)) do not fit together (A is [r, in], B is [out, r])")
        }
        if !(dropout >= 0 && dropout < 1) { throw ModelError("LoRA dropout must be in [0, 1), got \(dropout)") }
        self.a = a
        self.b = b
        r = a.shape[0]
        self.alpha = alpha
        self.rslora = rslora
        self.dropout = dropout
    }

    /// scaling * (drop(x) A^T) B^T
    public func delta(_ x: Tensor, training: Bool) throws -> Tensor {
        var input = x
        if training && dropout > 0 {
            let keep = try Tensor.rand(x.shape).binary(.ge, scalar: dropout).converted(to: .f32)
            input = try x.binary(.mul, keep).binary(.mul, scalar: 1 / (1 - dropout))
        }
        return try input.matmul(a.transpose(0, 1)).matmul(b.transpose(0, 1)).binary(.mul, scalar: scaling)
    }
}
