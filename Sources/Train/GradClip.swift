// Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_ with the 2-norm): the norm
// over every gradient, accumulated in double; when it exceeds maxNorm the gradients are scaled
// in place by maxNorm / (norm + 1e-6), PyTorch's coefficient.

import CKernels
import Tensor

public enum GradClip {
    /// Returns the global norm before clipping. Parameters without a gradient are skipped; a NaN
    /// or infinite norm is returned as is and the gradients are left untouched.
    @discardableResult
    public static func clipGlobalNorm(_ params: [Tensor], maxNorm: Double) throws -> Double {
        if !(maxNorm >= 0) { throw TrainError("max_norm must be a number >= 0, got \(maxNorm)") }
        var grads: [Tensor] = []
        for p in params {
            guard let g = p.grad else { continue }
            if g.dtype != .f32 { throw TrainError("clip_grad_norm: gradients must be f32, got \(g.dtype.name)") }
            grads.append(g)
        }
        var total = 0.0
        for g in grads { total += ql_sumsq_all_f32(g.f32, Int64(g.count)) }
        let norm = total.squareRoot()
        if !norm.isFinite { return norm }
        if norm > maxNorm {
            var coef = Float(maxNorm / (norm + 1e-6))
            for g in grads { ql_binary_f32(Int32(QL_BIN_MUL.rawValue), g.f32, 1, &coef, 0, g.f32, Int64(g.count)) }
        }
        return norm
    }

    @discardableResult
    public static func clipGlobalNorm(_ params: [(String, Tensor)], maxNorm: Double) throws -> Double {
        try clipGlobalNorm(params.map { $0.1 }, maxNorm: maxNorm)
    }
}
