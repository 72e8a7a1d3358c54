// Rotary position embeddings as transformers computes them: inverse frequencies (with linear or
// llama3 scaling), cos/sin tables per position, and the half-split rotation
// x * cos + rotate_half(x) * sin, where rotate_half(x) = concat(-x2, x1).

import Foundation
import Tensor

public struct RoPE {
    public let headDim: Int
    /// f32 inverse frequencies [headDim / 2], as transformers rounds them.
    public let invFreq: [Float]

    public init(headDim: Int, theta: Double, scaling: RopeScaling) {
        self.headDim = headDim
        let half = headDim / 2
        var inv = (0..<half).map { i -> Float in
            let exponent = Float(2 * i) / Float(headDim)
            return 1 / Float(Foundation.pow(Double(theta), Double(exponent)))
        }
        switch scaling {
        case .none: break
        case .linear(let factor):
            inv = inv.map { $0 / Float(factor) }
        case .llama3(let factor, let low, let high, let original):
            let lowWavelen = Double(original) / low, highWavelen = Double(original) / high
            inv = inv.map { f in
                let wavelen = 2 * Double.pi / Double(f)
                if wavelen < highWavelen { return f }
                if wavelen > lowWavelen { return f / Float(factor) }
                let smooth = (Double(original) / wavelen - low) / (high - low)
                return Float((1 - smooth) * Double(f) / factor + smooth * Double(f))
            }
        }
        invFreq = inv
    }

    /// cos and sin tables [T, headDim] for positions start..<start+T.
    public func tables(start: Int, count: Int) throws -> (cos: Tensor, sin: Tensor) {
        let c = try Tensor(shape: [count, headDim], dtype: .f32, zeroed: false)
        let s = try Tensor(shape: [count, headDim], dtype: .f32, zeroed: false)
        let half = headDim / 2
        for t in 0..<count {
            let pos = Float(start + t)
            for i in 0..<half {
                let angle = pos * invFreq[i]
                let cv = Foundation.cos(angle), sv = Foundation.sin(angle)
                c.f32[t * headDim + i] = cv; c.f32[t * headDim + i + half] = cv
                s.f32[t * headDim + i] = sv; s.f32[t * headDim + i + half] = sv
            }
        }
        return (c, s)
    }

    /// x [..., T, headDim] rotated by the tables [T, headDim] (differentiable).
    public static func apply(_ x: Tensor, cos: Tensor, sin: Tensor) throws -> Tensor {
        if Functional.fused, let y = try FusedOps.rope(x, cos: cos, sin: sin) { return y }
        let d = x.shape[x.ndim - 1], half = d / 2
        let x1 = try x.slice(x.ndim - 1, 0, half)
        let x2 = try x.slice(x.ndim - 1, half, d)
        let rotated = try Tensor.concat([x2.unary(.neg), x1], x.ndim - 1)
        return try x.binary(.mul, cos).binary(.add, rotated.binary(.mul, sin))
    }
}
