// DoRA (weight-decomposed LoRA) as PEFT computes it: the row norms ||W + s B A|| (per output row,
// detached from the graph), and the adapter's contribution to the layer output,
// (m / norm - 1) * (x W^T) + (m / norm) * s * B A x, which gradients reach through m, A and B.
// A 4-bit base is dequantized on the fly for the norm; no dense copy is kept.

import Quant
import Tensor

extension LinearModule {
    /// The base weight [out, in] as f32: the dense weight itself (not a copy when it is f32), or
    /// the 4-bit weight dequantized into a new tensor.
    public func baseWeightF32() throws -> Tensor {
        switch base {
        case .dense(let w, _): return try w.asF32()
        case .quantized(let q): return try q.weight.dequantize()
        }
    }

    /// The base bias, if any.
    public var baseBias: Tensor? {
        switch base {
        case .dense(_, let b): return b
        case .quantized(let q): return q.bias
        }
    }

    /// x W^T without the bias.
    func baseForwardNoBias(_ x: Tensor) throws -> Tensor {
        switch base {
        case .dense(let w, _):
            return try x.matmul(w.transpose(0, 1))
        case .quantized(let q):
            return try QuantLinear(weight: q.weight, bias: nil, compute: q.compute).forward(x)
        }
    }

    /// ||W + scaling * B A|| per output row, as f32 [out], outside the graph (sums in double).
    public func doraWeightNorm(a: Tensor, b: Tensor, scaling: Double) throws -> Tensor {
        try GradMode.withoutGrad {
            let w = try baseWeightF32()
            let ba = try b.detach().asF32().matmul(a.detach().asF32())
            if w.shape != [outFeatures, inFeatures] || ba.shape != w.shape {
                throw ModelError("\(name): DoRA: B A \(Shape.describe(ba.shape)) does not match the weight \(Shape.describe(w.shape))")
            }
            let out = try Tensor(shape: [outFeatures], dtype: .f32, zeroed: false)
            let s = Float(scaling), n = inFeatures, rows = outFeatures
            withExtendedLifetime((w, ba)) {
                let wp = w.f32, bp = ba.f32
                for i in 0..<rows {
                    var acc = 0.0
                    for j in 0..<n {
                        let v = Double(wp[i * n + j] + s * bp[i * n + j])
                        acc += v * v
                    }
                    out.f32[i] = Float(acc.squareRoot())
                }
            }
            return out
        }
    }

    /// The DoRA adapter's addition to the base output. Without dropout (or outside training) it
    /// reuses the base output minus the bias; with dropout, x is dropped once and both x W^T and
    /// the LoRA branch see the dropped input (as PEFT's DoRA variant does).
    func doraDelta(_ ad: LoRAAdapter, _ x: Tensor, baseOutput: Tensor, training: Bool) throws -> Tensor {
        guard let m = ad.magnitude else { return try ad.delta(x, training: training) }
        let norm = try doraWeightNorm(a: ad.a, b: ad.b, scaling: ad.scaling)
        let scale = try m.binary(.div, norm)                        // [out]; gradient reaches m only
        let input: Tensor
        let baseResult: Tensor
        if training && ad.dropout > 0 {
            input = try ad.dropped(x, training: true)
            baseResult = try baseForwardNoBias(input)
        } else {
            input = x
            if let bias = baseBias { baseResult = try baseOutput.binary(.sub, bias) } else { baseResult = baseOutput }
        }
        let lora = try ad.update(input)                             // scaling * B A input
        return try scale.binary(.sub, scalar: 1).binary(.mul, baseResult).binary(.add, scale.binary(.mul, lora))
    }
}
