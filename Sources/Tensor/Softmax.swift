// softmax and log_softmax over one dim (stable, f32 inside): forward and backward side by side.
// A dim other than the last is moved last, computed, and moved back.

import CKernels

extension Tensor {
    public func softmax(_ d: Int) throws -> Tensor { try softmaxFamily(d, log: false) }
    public func logSoftmax(_ d: Int) throws -> Tensor { try softmaxFamily(d, log: true) }

    private func softmaxFamily(_ d: Int, log: Bool) throws -> Tensor {
        let fn = log ? "qlora.log_softmax" : "qlora.softmax"
        if !dtype.isFloat { throw TensorError("\(fn): expected a floating tensor, got \(dtype.name)") }
        if ndim == 0 { throw TensorError("\(fn): expected at least 1 dim") }
        if d != ndim - 1 {
            // Moved through a differentiable permute, so gradients flow back through it too.
            var perm = Array(0..<ndim)
            perm.remove(at: d)
            perm.append(d)
            var inverse = [Int](repeating: 0, count: ndim)
            for (i, p) in perm.enumerated() { inverse[p] = i }
            return try permute(perm).softmaxFamily(ndim - 1, log: log).permute(inverse)
        }
        let n = shape[ndim - 1]
        let rows = n == 0 ? 0 : count / n
        let x = try asF32()
        let out = try Tensor(shape: shape, dtype: .f32, zeroed: false)
        if log { ql_log_softmax_f32(x.f32, out.f32, Int64(rows), Int64(n)) } else { ql_softmax_f32(x.f32, out.f32, Int64(rows), Int64(n)) }
        let result = dtype == .f32 ? out : try out.converted(to: dtype)
        let y = try out.detach()  // an alias, so the node does not keep its own output alive in a cycle
        return result.recorded(log ? "log_softmax" : "softmax", [self]) { g in
            let gf = try g.asF32()
            let dx = try Tensor(shape: g.shape, dtype: .f32, zeroed: false)
            if log { ql_log_softmax_backward_f32(y.f32, gf.f32, dx.f32, Int64(rows), Int64(n)) } else { ql_softmax_backward_f32(y.f32, gf.f32, dx.f32, Int64(rows), Int64(n)) }
            return [dx]
        }
    }
}
