// A 4-bit base layer and its plain LoRA adapters as one autograd node:
//   y = x W^T (+ b) + sum_i s_i (x A_i^T) B_i^T
// Each adapter's product is accumulated straight into the base output (sgemm with alpha = s_i,
// beta = 1), and in backward each adapter's input gradient straight into the base's dx, so the
// layer makes no separate update tensor, scaling pass or addition in either direction, and the
// graph holds one node per layer instead of three or more. Saves x and each h_i = x A_i^T.
// With dropout an adapter reads its own input (x after dropout, made outside the node as
// before, so the random draws are the same); its input gradient then goes to that input.
//   dh_i = s_i dy B_i    dx = dy W + sum_i dh_i A_i    dA_i = dh_i^T x    dB_i = s_i dy^T h_i
// The adapters that read x itself share the base's pass over it: their A's (stacked in adapter
// order when several) ride on the 4-bit kernel as its LoRA extension, so one call gives y and
// every h_i = x A_i^T, and in backward one call gives dx = dy W + sum_i dh_i A_i ([dy | dh_i...]
// as one input). Only the products with B and the weight gradients remain sgemms (they read h,
// dy and dh, not the layer's input). Adapters with their own input (dropout) keep sgemms, and so
// do all adapters for at most smallRows rows (generation).
// With compute = "bf16" the shared products round x, A_i and dh_i to bf16 like W (f32 sums);
// the rest stays f32.
// The composed form (QuantLinear.forward plus LoRAOp.update per adapter, then additions) is the
// reference (Functional.fused = false); results agree up to float rounding order (f32), or up to
// bf16 rounding of the LoRA products (bf16, whose composed form multiplies A in f32).

import Quant
import Tensor

enum QuantLoRAOp {
    /// Up to this many rows (the 4-bit kernel's small-M path) the adapters keep their sgemms.
    static let smallRows = 4

    struct Adapter {
        let a: Tensor      // [r, in]
        let b: Tensor      // [out, r]
        let scaling: Double
        /// The adapter's own input when it differs from x (x after dropout); nil: x itself.
        var input: Tensor? = nil
    }

    static func forward(_ layer: QuantLinear, _ x: Tensor, _ adapters: [Adapter]) throws -> Tensor {
        guard let k = x.shape.last, x.ndim >= 1, k == layer.inFeatures else {
            return try layer.forward(x)   // raises the layer's own shape error
        }
        let m = x.count / max(k, 1), n = layer.outFeatures
        let xf = try x.asF32()
        let y = try Tensor(shape: Array(x.shape.dropLast()) + [n], dtype: .f32, zeroed: false)
        var afs: [Tensor] = [], bfs: [Tensor] = [], ins: [Tensor] = []
        for ad in adapters {
            let r = ad.a.shape[0]
            guard ad.a.ndim == 2, ad.a.shape[1] == k, ad.b.shape == [n, r] else {
                throw ModelError("LoRA A \(Shape.describe(ad.a.shape)) and B \(Shape.describe(ad.b.shape)) do not fit a layer of \(k) inputs and \(n) outputs")
            }
            afs.append(try ad.a.asF32()); bfs.append(try ad.b.asF32())
            ins.append(try ad.input.map { i -> Tensor in
                guard i.shape == x.shape else { throw ModelError("LoRA input \(Shape.describe(i.shape)) does not match x \(Shape.describe(x.shape))") }
                return try i.asF32()
            } ?? xf)
        }
        // the adapters reading x: their A's stacked, h of all from the base's pass
        // (not for a few rows, token-by-token generation: there the kernel's small-M path would
        // need a panel pass of its own for h, which costs more than the sgemms)
        let sharedIdx = m > smallRows ? adapters.indices.filter { adapters[$0].input == nil } : []
        let shared = try SharedRows(sharedIdx.map { afs[$0] })
        var hs = [Tensor?](repeating: nil, count: adapters.count)
        if let stacked = shared.stacked, shared.rank > 0 {
            let hAll = try Tensor(shape: [m, shared.rank], dtype: .f32, zeroed: false)
            try layer.productLoRA(xf, rows: m, into: y, a: stacked, rank: shared.rank, h: hAll)
            let parts = try shared.split(hAll, rows: m)
            for (i, h) in zip(sharedIdx, parts) { hs[i] = h }
        } else {
            try layer.product(xf, rows: m, into: y)
        }
        for (i, ad) in adapters.enumerated() {
            let r = ad.a.shape[0]
            let h: Tensor
            if let shared = hs[i] { h = shared } else {
                h = try Tensor(shape: [m, r], dtype: .f32, zeroed: false)
                try Tensor.gemm(false, true, ins[i], afs[i], h, 1, m, r, k)
                hs[i] = h
            }
            try Tensor.gemm(false, true, h, bfs[i], y, 1, m, n, r, alpha: Float(ad.scaling), beta: 1)
        }
        var inputs = [x]
        if let bias = layer.bias { inputs.append(bias) }
        for ad in adapters { inputs += [ad.a, ad.b] + (ad.input.map { [$0] } ?? []) }
        let bias = layer.bias
        let compute = layer.compute
        return y.recorded("quant_lora", inputs) { g in
            let gf = try g.asF32()
            // dh_i = s_i dy B_i, wanted for A's gradient or (shared adapters) for dx
            var dhs = [Tensor?](repeating: nil, count: adapters.count)
            for (i, ad) in adapters.enumerated() {
                let needsInputGrad = ad.input.map { $0.tracksGrad } ?? x.tracksGrad
                guard needsInputGrad || ad.a.tracksGrad else { continue }
                let r = ad.a.shape[0]
                let dh = try Tensor(shape: [m, r], dtype: .f32, zeroed: false)
                try Tensor.gemm(false, false, gf, bfs[i], dh, 1, m, r, n, alpha: Float(ad.scaling))
                dhs[i] = dh
            }
            var dx: Tensor? = nil
            if x.tracksGrad {
                let t = try Tensor(shape: x.shape, dtype: .f32, zeroed: false)
                if let stacked = shared.stacked, shared.rank > 0 {  // dx = dy W + sum_i dh_i A_i, one pass
                    let dhAll = try shared.join(sharedIdx.map { dhs[$0]! }, rows: m)
                    try layer.inputGradientLoRA(gf, dh: dhAll, a: stacked, rank: shared.rank,
                                                rows: m, into: t, compute: compute)
                } else {
                    try layer.inputGradient(gf, rows: m, into: t, compute: compute)
                }
                dx = t
            }
            var grads: [Tensor?] = [dx]
            if let bias = bias {
                grads.append(bias.tracksGrad ? try gf.reshape([m, n]).reduceDim(.sum, 0, keepDim: false) : nil)
            }
            for (i, ad) in adapters.enumerated() {
                let r = ad.a.shape[0], s = Float(ad.scaling)
                let own = ad.input                       // nil: the adapter reads x
                let needsInputGrad = own.map { $0.tracksGrad } ?? x.tracksGrad
                var da: Tensor? = nil, db: Tensor? = nil, dInput: Tensor? = nil
                if let dh = dhs[i] {
                    if needsInputGrad {
                        if let own = own {
                            let t = try Tensor(shape: own.shape, dtype: .f32, zeroed: false)
                            try Tensor.gemm(false, false, dh, afs[i], t, 1, m, k, r)
                            dInput = t
                        } else if shared.rank == 0, let dx = dx {  // else already in dx
                            try Tensor.gemm(false, false, dh, afs[i], dx, 1, m, k, r, beta: 1)
                        }
                    }
                    if ad.a.tracksGrad {
                        let t = try Tensor(shape: [r, k], dtype: .f32, zeroed: false)
                        try Tensor.gemm(true, false, dh, ins[i], t, 1, r, k, m)
                        da = t
                    }
                }
                if ad.b.tracksGrad {
                    let t = try Tensor(shape: [n, r], dtype: .f32, zeroed: false)
                    try Tensor.gemm(true, false, gf, hs[i]!, t, 1, n, r, m, alpha: s)
                    db = t
                }
                grads += [da, db]
                if own != nil { grads.append(dInput) }
            }
            return grads
        }
    }
}

/// The A matrices of the adapters that share the base's pass over x, as one [sum r, in] matrix
/// (the adapter's own tensor when there is one; a copy when several), and the column ranges of
/// the stacked h / dh that belong to each.
private struct SharedRows {
    let parts: [Tensor]
    let rank: Int
    let stacked: Tensor?   // nil: no adapter shares the pass

    init(_ parts: [Tensor]) throws {
        self.parts = parts
        rank = parts.reduce(0) { $0 + $1.shape[0] }
        if parts.count <= 1 { stacked = parts.first; return }
        let k = parts[0].shape[1]
        // a plain f32 buffer, not a graph op: A's gradients come from the node's own backward
        let t = try Tensor(shape: [rank, k], dtype: .f32, zeroed: false)
        var at = 0
        for p in parts {
            t.f32.advanced(by: at).update(from: p.f32, count: p.count)
            at += p.count
        }
        stacked = t
    }

    /// [m, rank] -> one [m, r_i] per part (the tensor itself for a single part).
    func split(_ all: Tensor, rows m: Int) throws -> [Tensor] {
        if parts.count == 1 { return [all] }
        var out: [Tensor] = [], col = 0
        for p in parts {
            let r = p.shape[0]
            let t = try Tensor(shape: [m, r], dtype: .f32, zeroed: false)
            for i in 0..<m { t.f32.advanced(by: i * r).update(from: all.f32.advanced(by: i * rank + col), count: r) }
            out.append(t)
            col += r
        }
        return out
    }

    /// One [m, r_i] per part -> [m, rank].
    func join(_ each: [Tensor], rows m: Int) throws -> Tensor {
        if parts.count == 1 { return each[0] }
        let all = try Tensor(shape: [m, rank], dtype: .f32, zeroed: false)
        var col = 0
        for (p, t) in zip(parts, each) {
            let r = p.shape[0]
            for i in 0..<m { all.f32.advanced(by: i * rank + col).update(from: t.f32.advanced(by: i * r), count: r) }
            col += r
        }
        return all
    }
}
