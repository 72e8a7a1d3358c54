// The output head and the causal LM loss in one op that never holds the logits: the rows of the
// final hidden states that predict a counted label go through the head a chunk at a time (about
// 32 MB of logits per chunk, a size fixed by the vocabulary alone), and each chunk's logits turn
// into its loss and then, in place, into its gradient, which is pushed through the head at once:
// dh rows = dlogits W and, when the head trains, dW += dlogits^T h. Backward only scales those by
// the incoming gradient. Rows whose label is ignored (-100, prompt tokens, padding) are never
// multiplied at all. Forward and backward side by side, as one autograd node.
//   h [B, T, C] final normed hidden states, W [V, C] the head (lm_head or the tied embedding)
//   labels [B, T]: position t predicts labels[t + 1]
// Same loss and gradients as logits -> causalLMLoss within rounding (the products are cut into
// other tiles); like every split here, the chunks depend on the sizes only, not on threads.

import CKernels
import Tensor

enum FusedLinearCrossEntropy {
    /// Logit bytes a chunk may hold.
    static let chunkBytes = 32 << 20

    /// Rows per chunk for a vocabulary of v: a multiple of 16, at least 16 (and so at least
    /// Tensor.bf16LinearMinRows, keeping the bf16 products), at most 4096.
    static func chunkRows(vocab v: Int) -> Int {
        let rows = chunkBytes / (4 * max(v, 1)) / 16 * 16
        return min(4096, max(16, rows))
    }

    /// Mean cross-entropy of h W^T against labels shifted by one (labels -100 ignored). bf16:
    /// the products with bf16-rounded operands and f32 sums, as Tensor.linear(bf16:) computes
    /// them. A 0-d f32 tensor; NaN when no label is counted.
    static func loss(hidden h: Tensor, weight w: Tensor, bf16: Bool, labels: Tensor) throws -> Tensor {
        guard h.ndim == 3, w.ndim == 2, h.shape[2] == w.shape[1] else {
            throw ModelError("the head weight \(Shape.describe(w.shape)) does not fit hidden states \(Shape.describe(h.shape))")
        }
        let b = h.shape[0], t = h.shape[1], c = h.shape[2], v = w.shape[0]
        if labels.shape != [b, t] {
            throw ModelError("labels shape \(Shape.describe(labels.shape)) does not match input ids \(Shape.describe([b, t]))")
        }
        if t < 2 { throw ModelError("the loss needs sequences of at least 2 tokens, got \(t)") }
        // the rows of h that predict a counted label, in (b, t) order, and those labels
        var rows = [Int](), targets = [Int64]()
        for i in 0..<b { for j in 1..<t {
            let y = labels.intValue(at: i * t + j)
            if y == -100 { continue }
            if y < 0 || y >= v { throw ModelError("label \(y) out of range for a vocabulary of \(v) (use -100 to ignore a position)") }
            rows.append(i * t + j - 1); targets.append(Int64(y))
        } }
        let counted = rows.count
        let needDH = h.tracksGrad && GradMode.enabled, needDW = w.tracksGrad && GradMode.enabled
        let hf = try h.asF32(), wf = try w.asF32()
        let dh = needDH ? try Tensor(shape: [b, t, c], dtype: .f32, zeroed: true) : nil
        let dw = needDW ? try Tensor(shape: [v, c], dtype: .f32, zeroed: true) : nil
        let step = chunkRows(vocab: v)
        let scale = counted > 0 ? Float(1.0 / Double(counted)) : 0
        var total = 0.0
        if counted > 0 {
            let cap = min(step, counted)
            let hc = try Tensor(shape: [cap, c], dtype: .f32, zeroed: false)
            let logits = try Tensor(shape: [cap, v], dtype: .f32, zeroed: false)
            let lse = try Tensor(shape: [cap], dtype: .f32, zeroed: false)
            let rowLoss = try Tensor(shape: [cap], dtype: .f32, zeroed: false)
            let dhc = needDH ? try Tensor(shape: [cap, c], dtype: .f32, zeroed: false) : nil
            var first = true
            for start in stride(from: 0, to: counted, by: step) {
                let n = min(step, counted - start)
                for r in 0..<n { (hc.f32 + r * c).update(from: hf.f32 + rows[start + r] * c, count: c) }
                let useBF16 = bf16 && n >= Tensor.bf16LinearMinRows
                if useBF16 {
                    ql_matmul_dense_bf16(hc.f32, Int64(n), wf.f32, Int64(v), Int64(c), logits.f32)
                } else {
                    ql_sgemm(0, 1, Int64(n), Int64(v), Int64(c), 1, hc.f32, Int64(c), wf.f32, Int64(c), 0, logits.f32, Int64(v))
                }
                targets.withUnsafeBufferPointer { tp in
                    let tgt = tp.baseAddress! + start
                    ql_xent_f32(logits.f32, 1, Int64(n), Int64(n * v), Int64(v), tgt, lse.f32, rowLoss.f32)
                    if needDH || needDW {
                        // softmax - onehot, scaled by 1 / counted, in place of the logits
                        ql_xent_backward_f32(logits.f32, 1, Int64(n), Int64(n * v), Int64(v), tgt, lse.f32, scale, logits.f32)
                    }
                }
                for r in 0..<n { total += Double(rowLoss.f32[r]) }
                if let dh = dh, let dhc = dhc {
                    if useBF16 {
                        ql_matmul_dense_backward_bf16(logits.f32, Int64(n), wf.f32, Int64(v), Int64(c), dhc.f32)
                    } else {
                        ql_sgemm(0, 0, Int64(n), Int64(c), Int64(v), 1, logits.f32, Int64(v), wf.f32, Int64(c), 0, dhc.f32, Int64(c))
                    }
                    for r in 0..<n { (dh.f32 + rows[start + r] * c).update(from: dhc.f32 + r * c, count: c) }
                }
                if let dw = dw {
                    ql_sgemm(1, 0, Int64(v), Int64(c), Int64(n), 1, logits.f32, Int64(v), hc.f32, Int64(c),
                             first ? 0 : 1, dw.f32, Int64(c))
                }
                first = false
            }
        }
        let value = counted > 0 ? total / Double(counted) : Double.nan
        let out = try Tensor([Float(value)], shape: [])
        if !(needDH || needDW) { return out }
        return out.recorded("linear_cross_entropy", [h, w]) { g in
            let s = g.value(at: 0)
            func scaled(_ t: Tensor?) throws -> Tensor? {
                guard let t = t else { return nil }
                return s == 1 ? t : try t.binary(.mul, Tensor([Float(s)], shape: []))
            }
            return [try scaled(dh), try scaled(dw)]
        }
    }
}
