// Matrix products through OpenBLAS sgemm (f32; bf16/f16 inputs computed in f32):
// [M,K] x [K,N], batched [...,M,K] x [...,K,N] with broadcast batch dims, and 1-D operands as in
// NumPy. Backward: dA = dC B^T, dB = A^T dC, summed over broadcast batch dims.

import CKernels
import COpenBLAS

extension Tensor {
    public func matmul(_ other: Tensor) throws -> Tensor {
        let fn = "qlora.matmul"
        if !dtype.isFloat || !other.dtype.isFloat {
            throw TensorError("\(fn): expected floating tensors, got \(dtype.name) and \(other.dtype.name)")
        }
        if ndim == 0 || other.ndim == 0 {
            throw TensorError("\(fn): expected tensors with at least 1 dim, got shapes \(Shape.describe(shape)) and \(Shape.describe(other.shape))")
        }
        // 1-D operands become matrices, and the added dim is dropped at the end.
        let a = ndim == 1 ? try reshape([1, shape[0]]) : self
        let b = other.ndim == 1 ? try other.reshape([other.shape[0], 1]) : other
        let k = a.shape[a.ndim - 1]
        if b.shape[b.ndim - 2] != k {
            throw TensorError("\(fn): shapes \(Shape.describe(shape)) and \(Shape.describe(other.shape)) do not match (inner dims \(k) and \(b.shape[b.ndim - 2]))")
        }
        var result = try Tensor.matmulND(a, b)
        if ndim == 1 || other.ndim == 1 {
            var s = result.shape
            if other.ndim == 1 { s.removeLast() }
            if ndim == 1 { s.remove(at: s.count - (other.ndim == 1 ? 1 : 2)) }
            result = try result.reshape(s)
        }
        return result
    }

    /// x [..., k] W^T for a weight W [n, k] stored as a Linear layer keeps it: one sgemm that reads
    /// W transposed in place, where matmul(W.transpose) would copy W (and keep the copy for
    /// backward). Backward: dx = dy W, dW = dy^T x (summed over every leading dim of x).
    /// bf16: the forward product and dx with bf16-rounded operands and f32 sums (the 4-bit kernel's
    /// panel machinery, ql_matmul_dense_bf16; OpenBLAS here has no bf16 gemm); dW stays f32. Up to
    /// `Tensor.bf16LinearMinRows - 1` rows (token-by-token generation) the f32 products run
    /// instead: packing W's bf16 panels would cost more than a matrix-vector product saves.
    public func linear(_ w: Tensor, bf16 wantBF16: Bool = false) throws -> Tensor {
        let fn = "qlora.linear"
        if !dtype.isFloat || !w.dtype.isFloat {
            throw TensorError("\(fn): expected floating tensors, got \(dtype.name) and \(w.dtype.name)")
        }
        guard ndim >= 1, w.ndim == 2, let k = shape.last, w.shape[1] == k else {
            throw TensorError("\(fn): input \(Shape.describe(shape)) does not fit weight \(Shape.describe(w.shape)) (expected [..., in] and [out, in])")
        }
        let n = w.shape[0], m = count / max(k, 1)
        let bf16 = wantBF16 && m >= Tensor.bf16LinearMinRows
        let xf = try asF32(), wf = try w.asF32()
        let out = try Tensor(shape: Array(shape.dropLast()) + [n], dtype: .f32, zeroed: false)
        if bf16 {
            ql_matmul_dense_bf16(xf.f32, Int64(m), wf.f32, Int64(n), Int64(k), out.f32)
        } else {
            try Tensor.gemm(false, true, xf, wf, out, 1, m, n, k)
        }
        let type = DType.promote(dtype, w.dtype)
        let result = type == .f32 ? out : try out.converted(to: type)
        let x = self
        return result.recorded("linear", [x, w]) { g in
            let gf = try g.asF32()
            var gx: Tensor? = nil, gw: Tensor? = nil
            if x.tracksGrad {
                let t = try Tensor(shape: x.shape, dtype: .f32, zeroed: false)
                if bf16 {
                    ql_matmul_dense_backward_bf16(gf.f32, Int64(m), wf.f32, Int64(n), Int64(k), t.f32)
                } else {
                    try Tensor.gemm(false, false, gf, wf, t, 1, m, k, n)  // dy [m,n] W [n,k]
                }
                gx = t
            }
            if w.tracksGrad {
                let t = try Tensor(shape: [n, k], dtype: .f32, zeroed: false)
                try Tensor.gemm(true, false, gf, xf, t, 1, n, k, m)       // dy^T [n,m] x [m,k]
                gw = t
            }
            return [gx, gw]
        }
    }

    /// Both at least 2-D; batch dims broadcast.
    private static func matmulND(_ a: Tensor, _ b: Tensor) throws -> Tensor {
        let m = a.shape[a.ndim - 2], k = a.shape[a.ndim - 1], n = b.shape[b.ndim - 1]
        let batchA = Array(a.shape.dropLast(2)), batchB = Array(b.shape.dropLast(2))
        let batch = try Shape.broadcast(batchA, batchB, "qlora.matmul")
        let af = try a.asF32().expanded(to: batch + [m, k])
        let bf = try b.asF32().expanded(to: batch + [k, n])
        let nb = batch.reduce(1, *)
        let out = try Tensor(shape: batch + [m, n], dtype: .f32, zeroed: false)
        try gemm(false, false, af, bf, out, nb, m, n, k)
        let type = DType.promote(a.dtype, b.dtype)
        let result = type == .f32 ? out : try out.converted(to: type)
        return result.recorded("matmul", [a, b]) { g in
            let gf = try g.asF32()
            var ga: Tensor? = nil, gb: Tensor? = nil
            if a.tracksGrad {
                let t = try Tensor(shape: batch + [m, k], dtype: .f32, zeroed: false)
                try gemm(false, true, gf, bf, t, nb, m, k, n)      // dC [m,n] x B^T [n,k]
                ga = try t.sumTo(a.shape)
            }
            if b.tracksGrad {
                let t = try Tensor(shape: batch + [k, n], dtype: .f32, zeroed: false)
                try gemm(true, false, af, gf, t, nb, k, n, m)      // A^T [k,m] x dC [m,n]
                gb = try t.sumTo(b.shape)
            }
            return [ga, gb]
        }
    }

    /// c[i] = op(a[i]) x op(b[i]) for nb batches, c [m, n]; op transposes a stored matrix. All
    /// three are f32 and contiguous (callers check). With alpha and beta: c = alpha op(a) op(b) + beta c.
    /// Rows from which `linear(_:bf16:)` uses the bf16 products.
    public static let bf16LinearMinRows = 5

    public static func gemm(_ ta: Bool, _ tb: Bool, _ a: Tensor, _ b: Tensor, _ c: Tensor,
                     _ nb: Int, _ m: Int, _ n: Int, _ k: Int, alpha: Float = 1, beta: Float = 0) throws {
        if m == 0 || n == 0 { return }
        if k == 0 { if beta == 0 { c.f32.update(repeating: 0, count: c.count) }; return }
        if m > Int(Int32.max) || n > Int(Int32.max) || k > Int(Int32.max) {
            throw TensorError("qlora.matmul: dims too large for BLAS")
        }
        let lda = ta ? m : k, ldb = tb ? k : n
        for i in 0..<nb {
            ql_sgemm(ta ? 1 : 0, tb ? 1 : 0, Int64(m), Int64(n), Int64(k), alpha,
                     a.f32 + i * m * k, Int64(lda), b.f32 + i * k * n, Int64(ldb),
                     beta, c.f32 + i * m * n, Int64(n))
        }
    }
}
