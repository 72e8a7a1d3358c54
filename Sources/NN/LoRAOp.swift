// The LoRA update as one autograd node: y = s * (x A^T) B^T for x [..., in], A [r, in],
// B [out, r], with the backward written by hand (four small products) instead of the six nodes
// and copies of composed transposes and matmuls. Saves only x and h = x A^T.
//   dh = s * dy B      dx = dh A      dA = dh^T x      dB = s * dy^T h

import CKernels
import Tensor

enum LoRAOp {
    static func update(_ x: Tensor, _ a: Tensor, _ b: Tensor, scaling s: Double) throws -> Tensor {
        let r = a.shape[0], k = a.shape[1], n = b.shape[0]
        guard let last = x.shape.last, last == k else {
            throw ModelError("LoRA input's last dim \(x.shape.last ?? 0) does not match A's \(k) inputs")
        }
        let m = x.count / max(k, 1)
        let xf = try x.asF32(), af = try a.asF32(), bf = try b.asF32()
        let h = try Tensor(shape: [m, r], dtype: .f32, zeroed: false)
        try Tensor.gemm(false, true, xf, af, h, 1, m, r, k)
        let y = try Tensor(shape: Array(x.shape.dropLast()) + [n], dtype: .f32, zeroed: false)
        try Tensor.gemm(false, true, h, bf, y, 1, m, n, r)
        ql_affine_f32(y.f32, Float(s), 0, y.f32, Int64(y.count))
        return y.recorded("lora", [x, a, b]) { g in
            let gf = try g.asF32()
            let dh = try Tensor(shape: [m, r], dtype: .f32, zeroed: false)
            try Tensor.gemm(false, false, gf, bf, dh, 1, m, r, n)
            ql_affine_f32(dh.f32, Float(s), 0, dh.f32, Int64(dh.count))
            var dx: Tensor? = nil, da: Tensor? = nil, db: Tensor? = nil
            if x.tracksGrad {
                let t = try Tensor(shape: x.shape, dtype: .f32, zeroed: false)
                try Tensor.gemm(false, false, dh, af, t, 1, m, k, r)
                dx = t
            }
            if a.tracksGrad {
                let t = try Tensor(shape: [r, k], dtype: .f32, zeroed: false)
                try Tensor.gemm(true, false, dh, xf, t, 1, r, k, m)
                da = t
            }
            if b.tracksGrad {
                let t = try Tensor(shape: [n, r], dtype: .f32, zeroed: false)
                try Tensor.gemm(true, false, gf, h, t, 1, n, r, m)
                ql_affine_f32(t.f32, Float(s), 0, t.f32, Int64(t.count))
                db = t
            }
            return [dx, da, db]
        }
    }
}
