// A 4-bit base layer and its plain LoRA adapters as one autograd node:
//   y = x W^T (+ b) + sum_i s_i (x A_i^T) B_i^T
// Each adapter's product is accumulated straight into the base output (sgemm with alpha = s_i,
// beta = 1), and in backward each adapter's input gradient straight into the base's dx, so the
// layer makes no separate update tensor, scaling pass or addition in either direction, and the
// graph holds one node per layer instead of three or more. Saves x and each h_i = x A_i^T.
// With dropout an adapter reads its own input (x after dropout, made outside the node as
// before, so the random draws are the same); its input gradient then goes to that input.
//   dh_i = s_i dy B_i    dx = dy W + sum_i dh_i A_i    dA_i = dh_i^T x    dB_i = s_i dy^T h_i
// The composed form (QuantLinear.forward plus LoRAOp.update per adapter, then additions) is the
// reference (Functional.fused = false); results agree up to float rounding order.

import Quant
import Tensor

enum QuantLoRAOp {
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
        try layer.product(xf, rows: m, into: y)
        var hs: [Tensor] = [], afs: [Tensor] = [], bfs: [Tensor] = [], ins: [Tensor] = []
        for ad in adapters {
            let r = ad.a.shape[0]
            guard ad.a.shape[1] == k, ad.b.shape == [n, r] else {
                throw ModelError("LoRA A \(Shape.describe(ad.a.shape)) and B \(Shape.describe(ad.b.shape)) do not fit a layer of \(k) inputs and \(n) outputs")
            }
            let af = try ad.a.asF32(), bf = try ad.b.asF32()
            let inf = try ad.input.map { i -> Tensor in
                guard i.shape == x.shape else { throw ModelError("LoRA input \(Shape.describe(i.shape)) does not match x \(Shape.describe(x.shape))") }
                return try i.asF32()
            } ?? xf
            let h = try Tensor(shape: [m, r], dtype: .f32, zeroed: false)
            try Tensor.gemm(false, true, inf, af, h, 1, m, r, k)
            try Tensor.gemm(false, true, h, bf, y, 1, m, n, r, alpha: Float(ad.scaling), beta: 1)
            hs.append(h); afs.append(af); bfs.append(bf); ins.append(inf)
        }
        var inputs = [x]
        if let bias = layer.bias { inputs.append(bias) }
        for ad in adapters { inputs += [ad.a, ad.b] + (ad.input.map { [$0] } ?? []) }
        let bias = layer.bias
        let compute = layer.compute
        return y.recorded("quant_lora", inputs) { g in
            let gf = try g.asF32()
            var dx: Tensor? = nil
            if x.tracksGrad {
                let t = try Tensor(shape: x.shape, dtype: .f32, zeroed: false)
                try layer.inputGradient(gf, rows: m, into: t, compute: compute)
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
                if needsInputGrad || ad.a.tracksGrad {
                    let dh = try Tensor(shape: [m, r], dtype: .f32, zeroed: false)
                    try Tensor.gemm(false, false, gf, bfs[i], dh, 1, m, r, n, alpha: s)
                    if needsInputGrad {
                        if let own = own {
                            let t = try Tensor(shape: own.shape, dtype: .f32, zeroed: false)
                            try Tensor.gemm(false, false, dh, afs[i], t, 1, m, k, r)
                            dInput = t
                        } else if let dx = dx {
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
                    try Tensor.gemm(true, false, gf, hs[i], t, 1, n, r, m, alpha: s)
                    db = t
                }
                grads += [da, db]
                if own != nil { grads.append(dInput) }
            }
            return grads
        }
    }
}
