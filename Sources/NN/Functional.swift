// The Llama-family building blocks composed from differentiable tensor ops: RMSNorm, causal
// grouped-query attention, SwiGLU and the shifted cross-entropy loss of causal language models.
// By default each runs as one fused kernel op (FusedOps.swift, Sources/CKernels/nn_*.c); the
// composed versions stay as the reference (Functional.fused = false, or QLORA_FUSED=0).

import Foundation
import Tensor

public enum Functional {
    /// True (the default) routes RMSNorm, attention, SwiGLU, RoPE and the loss through the
    /// fused kernels (FusedOps); false composes them from tensor ops. QLORA_FUSED=0 starts off.
    nonisolated(unsafe) public static var fused = ProcessInfo.processInfo.environment["QLORA_FUSED"] != "0"

    /// x * rsqrt(mean(x^2) + eps) * weight over the last dim, in f32.
    public static func rmsNorm(_ x: Tensor, _ weight: Tensor, eps: Double) throws -> Tensor {
        if fused, let y = try FusedOps.rmsNorm(x, weight, eps: eps) { return y }
        let xf = try x.to(.f32)
        let ms = try xf.unary(.square).reduceDim(.mean, xf.ndim - 1, keepDim: true)
        return try xf.binary(.mul, ms.binary(.add, scalar: eps).unary(.rsqrt)).binary(.mul, weight.to(.f32))
    }

    /// q [B, H, T, D], k and v [B, KV, S, D] (S >= T: cached keys first); causal, so query t sees
    /// keys up to S - T + t, or as an additive `mask` broadcast to [B, H, T, S] says.
    /// Returns [B, H, T, D].
    public static func attention(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: Tensor? = nil) throws -> Tensor {
        if fused, mask == nil, let y = try FusedOps.attention(q, k, v) { return y }
        let b = q.shape[0], h = q.shape[1], t = q.shape[2], d = q.shape[3]
        let kv = k.shape[1], s = k.shape[2]
        var keys = k, values = v
        if kv != h {
            let rep = h / kv
            keys = try k.reshape([b, kv, 1, s, d]).expanded(to: [b, kv, rep, s, d]).reshape([b, h, s, d])
            values = try v.reshape([b, kv, 1, s, d]).expanded(to: [b, kv, rep, s, d]).reshape([b, h, s, d])
        }
        var scores = try q.matmul(keys.transpose(2, 3)).binary(.mul, scalar: 1 / Double(d).squareRoot())
        if let m = mask {
            // An explicit additive mask (0 or -inf), e.g. keeping packed examples apart.
            scores = try scores.binary(.add, m)
        } else if t > 1 {
            let mask = try Tensor(shape: [t, s], dtype: .f32)
            for i in 0..<t { for j in 0..<s where j > s - t + i { mask.f32[i * s + j] = -Float.infinity } }
            scores = try scores.binary(.add, mask)
        }
        return try scores.softmax(3).matmul(values)
    }

    /// down(silu(gate) * up) given the gate and up projections' outputs: silu(gate) * up.
    public static func swiglu(_ gate: Tensor, _ up: Tensor) throws -> Tensor {
        if fused, let y = try FusedOps.swiglu(gate, up) { return y }
        return try gate.unary(.silu).binary(.mul, up)
    }

    /// Mean cross-entropy of logits [B, T, V] predicting labels [B, T] shifted by one (position t
    /// predicts label t+1); labels -100 are ignored. Returns a 0-d f32 tensor.
    public static func causalLMLoss(_ logits: Tensor, _ labels: Tensor) throws -> Tensor {
        let b = logits.shape[0], t = logits.shape[1], v = logits.shape[2]
        if labels.shape != [b, t] {
            throw ModelError("labels shape \(Shape.describe(labels.shape)) does not match input ids \(Shape.describe([b, t]))")
        }
        if t < 2 { throw ModelError("the loss needs sequences of at least 2 tokens, got \(t)") }
        let pred = try logits.slice(1, 0, t - 1).reshape([b * (t - 1), v])
        var target = [Int64]()
        var weights = [Float]()
        for i in 0..<b { for j in 1..<t {
            let y = labels.intValue(at: i * t + j)
            if y == -100 { target.append(0); weights.append(0) } else {
                if y < 0 || y >= v { throw ModelError("label \(y) out of range for a vocabulary of \(v) (use -100 to ignore a position)") }
                target.append(y); weights.append(1)
            }
        } }
        let counted = weights.reduce(0, +)
        if fused {
            let shifted = weights.enumerated().map { $0.element == 0 ? Int64(-1) : target[$0.offset] }
            return try FusedOps.causalLMLoss(logits, targets: shifted, counted: Int(counted))
        }
        let idx = try Tensor(shape: [b * (t - 1), 1], dtype: .i64, zeroed: false)
        for (i, y) in target.enumerated() { idx.storeInteger(y, at: i) }
        let w = try Tensor(weights, shape: [b * (t - 1), 1])
        let nll = try pred.to(.f32).logSoftmax(1).gather(1, idx).binary(.mul, w).reduceAll(.sum)
        return try nll.binary(.mul, scalar: counted > 0 ? -1 / Double(counted) : Double.nan)
    }
}
