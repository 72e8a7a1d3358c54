// Fused Llama building blocks: each op is one C kernel pair (forward and backward side by side
// in Sources/CKernels/nn_*.c) recorded as one autograd node, in place of the chains of
// elementwise ops, reductions and copies Functional used to compose. Same values as the
// composed versions (f32, within rounding).
//   rmsNorm        y = x * rstd * w             saves rstd per row
//   causal LM loss mean(lse - logit[target])    saves lse per row; softmax recomputed backward
//   swiglu         y = silu(g) * u
//   rope           y = x cos + rotate_half(x) sin; backward is the inverse rotation
//   attention      causal GQA softmax(q k^T / sqrt(d)) v; saves out and lse per row, and
//                  recomputes the probabilities in the backward (never stores [B, H, T, S])

import CKernels
import Tensor

enum FusedOps {
    /// x [..., n], weight [n]: x * rsqrt(mean(x^2) + eps) * weight, f32. nil when the shapes are
    /// not the plain case (the caller composes it instead).
    static func rmsNorm(_ x: Tensor, _ weight: Tensor, eps: Double) throws -> Tensor? {
        guard x.ndim >= 1, let n = x.shape.last, n > 0, weight.ndim == 1, weight.count == n,
              x.dtype.isFloat, weight.dtype.isFloat else { return nil }
        let rows = x.count / n
        let xf = try x.asF32(), wf = try weight.asF32()
        let y = try Tensor(shape: x.shape, dtype: .f32, zeroed: false)
        let rstd = try Tensor(shape: [max(rows, 1)], dtype: .f32, zeroed: false)
        ql_rmsnorm_f32(xf.f32, wf.f32, Float(eps), y.f32, rstd.f32, Int64(rows), Int64(n))
        return y.recorded("rms_norm", [x, weight]) { g in
            let gf = try g.asF32()
            let dx = x.tracksGrad ? try Tensor(shape: x.shape, dtype: .f32, zeroed: false) : nil
            let dw = weight.tracksGrad ? try Tensor(shape: weight.shape, dtype: .f32, zeroed: false) : nil
            ql_rmsnorm_backward_f32(xf.f32, wf.f32, rstd.f32, gf.f32, dx?.f32, dw?.f32, Int64(rows), Int64(n))
            return [dx, dw]
        }
    }

    /// Mean cross-entropy of logits [B, T, V] (position t predicts target[b][t], t < T-1; target
    /// < 0 ignored) with `counted` targets. A 0-d f32 tensor.
    static func causalLMLoss(_ logits: Tensor, targets: [Int64], counted: Int) throws -> Tensor {
        let b = logits.shape[0], t = logits.shape[1], v = logits.shape[2]
        let per = t - 1, rows = b * per
        let lf = try logits.asF32()
        let lse = try Tensor(shape: [max(rows, 1)], dtype: .f32, zeroed: false)
        let loss = try Tensor(shape: [max(rows, 1)], dtype: .f32, zeroed: false)
        targets.withUnsafeBufferPointer { tp in
            ql_xent_f32(lf.f32, Int64(b), Int64(per), Int64(t * v), Int64(v), tp.baseAddress, lse.f32, loss.f32)
        }
        var total = 0.0
        for i in 0..<rows { total += Double(loss.f32[i]) }
        let value = counted > 0 ? total / Double(counted) : Double.nan
        let out = try Tensor([Float(value)], shape: [])
        return out.recorded("cross_entropy", [logits]) { g in
            let scale = counted > 0 ? Float(g.value(at: 0) / Double(counted)) : Float.nan
            let dx = try Tensor(shape: logits.shape, dtype: .f32, zeroed: false)
            targets.withUnsafeBufferPointer { tp in
                ql_xent_backward_f32(lf.f32, Int64(b), Int64(per), Int64(t * v), Int64(v), tp.baseAddress,
                                     lse.f32, scale, dx.f32)
            }
            for i in 0..<b { (dx.f32 + (i * t + t - 1) * v).update(repeating: 0, count: v) }
            return [dx]
        }
    }

    /// silu(gate) * up for f32 tensors of one shape; nil otherwise.
    static func swiglu(_ gate: Tensor, _ up: Tensor) throws -> Tensor? {
        guard gate.dtype == .f32, up.dtype == .f32, gate.shape == up.shape else { return nil }
        let n = gate.count
        let y = try Tensor(shape: gate.shape, dtype: .f32, zeroed: false)
        ql_swiglu_f32(gate.f32, up.f32, y.f32, Int64(n))
        return y.recorded("swiglu", [gate, up]) { g in
            let gf = try g.asF32()
            let dg = gate.tracksGrad ? try Tensor(shape: gate.shape, dtype: .f32, zeroed: false) : nil
            let du = up.tracksGrad ? try Tensor(shape: up.shape, dtype: .f32, zeroed: false) : nil
            ql_swiglu_backward_f32(gate.f32, up.f32, gf.f32, dg?.f32, du?.f32, Int64(n))
            return [dg, du]
        }
    }

    /// x [..., T, D] (f32) rotated by f32 tables [T, D] that need no gradient; nil otherwise.
    static func rope(_ x: Tensor, cos: Tensor, sin: Tensor) throws -> Tensor? {
        guard x.ndim >= 2, x.dtype == .f32, cos.dtype == .f32, sin.dtype == .f32,
              !cos.tracksGrad, !sin.tracksGrad else { return nil }
        let t = x.shape[x.ndim - 2], d = x.shape[x.ndim - 1]
        guard d % 2 == 0, d > 0, t > 0, cos.shape == [t, d], sin.shape == [t, d] else { return nil }
        let outer = x.count / (t * d)
        let y = try Tensor(shape: x.shape, dtype: .f32, zeroed: false)
        ql_rope_f32(x.f32, cos.f32, sin.f32, y.f32, Int64(outer), Int64(t), Int64(d), 0)
        return y.recorded("rope", [x]) { g in
            let gf = try g.asF32()
            let dx = try Tensor(shape: x.shape, dtype: .f32, zeroed: false)
            ql_rope_f32(gf.f32, cos.f32, sin.f32, dx.f32, Int64(outer), Int64(t), Int64(d), 1)
            return [dx]
        }
    }

    /// q [B, H, T, D], k and v [B, KV, S, D] (f32, H a multiple of KV, S >= T); nil otherwise.
    static func attention(_ q: Tensor, _ k: Tensor, _ v: Tensor) throws -> Tensor? {
        guard q.ndim == 4, k.ndim == 4, v.ndim == 4, q.dtype == .f32, k.dtype == .f32, v.dtype == .f32,
              k.shape == v.shape else { return nil }
        let b = q.shape[0], h = q.shape[1], t = q.shape[2], d = q.shape[3]
        let kv = k.shape[1], s = k.shape[2]
        guard k.shape[0] == b, k.shape[3] == d, kv > 0, h % kv == 0, s >= t, t > 0, d > 0,
              t * s < Int(Int32.max), s * d < Int(Int32.max) else { return nil }
        let scale = Float(1 / Double(d).squareRoot())
        let result = try Tensor(shape: q.shape, dtype: .f32, zeroed: false)
        let lse = try Tensor(shape: [b * h * t], dtype: .f32, zeroed: false)
        if ql_attention_f32(q.f32, k.f32, v.f32, result.f32, lse.f32, Int64(b), Int64(h), Int64(kv), Int64(t),
                            Int64(s), Int64(d), scale) != 0 {
            throw TensorError("attention: out of memory for the score scratch (\(t) x \(s) floats per thread)")
        }
        let out = try result.detach()  // the closure must not hold the result itself (a reference cycle)
        return result.recorded("attention", [q, k, v]) { g in
            let gf = try g.asF32()
            let dq = q.tracksGrad ? try Tensor(shape: q.shape, dtype: .f32, zeroed: false) : nil
            let dk = k.tracksGrad ? try Tensor(shape: k.shape, dtype: .f32, zeroed: false) : nil
            let dv = v.tracksGrad ? try Tensor(shape: v.shape, dtype: .f32, zeroed: false) : nil
            if ql_attention_backward_f32(q.f32, k.f32, v.f32, out.f32, lse.f32, gf.f32, dq?.f32, dk?.f32, dv?.f32,
                                         Int64(b), Int64(h), Int64(kv), Int64(t), Int64(s), Int64(d), scale) != 0 {
                throw TensorError("attention backward: out of memory for the score scratch (2 x \(t) x \(s) floats per thread)")
            }
            return [dq, dk, dv]
        }
    }
}
