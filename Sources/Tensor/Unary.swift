// Unary elementwise ops (neg exp log sqrt abs silu sigmoid tanh relu square rsqrt), pow by a
// scalar, clamp, affine and where: forward through the C kernels, backward beside it.

import CKernels

public enum UnaryOp: String, CaseIterable {
    case neg, exp, log, sqrt, abs, silu, sigmoid, tanh, relu, square, rsqrt

    var kernel: ql_unop {
        switch self {
        case .neg: return QL_UN_NEG
        case .exp: return QL_UN_EXP
        case .log: return QL_UN_LOG
        case .sqrt: return QL_UN_SQRT
        case .abs: return QL_UN_ABS
        case .silu: return QL_UN_SILU
        case .sigmoid: return QL_UN_SIGMOID
        case .tanh: return QL_UN_TANH
        case .relu: return QL_UN_RELU
        case .square: return QL_UN_SQUARE
        case .rsqrt: return QL_UN_RSQRT
        }
    }
}

extension Tensor {
    /// The f32 result of a kernel over this tensor's values, then stored in `dtype`.
    private func floatMap(_ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int64) -> Void) throws -> (result: Tensor, f32: Tensor) {
        let x = try asF32()
        let y = try Tensor(shape: shape, dtype: .f32, zeroed: false)
        body(x.f32, y.f32, Int64(count))
        return (dtype == .f32 ? y : try y.converted(to: dtype), y)
    }

    private func requireFloat(_ fn: String) throws {
        if !dtype.isFloat {
            throw TensorError("qlora.\(fn): expected a floating tensor (f32, bf16, f16), got \(dtype.name); convert with :to(\"f32\")")
        }
    }

    public func unary(_ op: UnaryOp) throws -> Tensor {
        if !dtype.isFloat {
            switch op {
            case .neg: return try binary(.mul, scalar: -1)
            case .abs:
                let out = try Tensor(shape: shape, dtype: dtype, zeroed: false)
                for i in 0..<count { out.store(int: Swift.abs(intValue(at: i) == Int64.min ? Int64.max : intValue(at: i)), at: i) }
                return out
            case .relu: return try binary(.maximum, scalar: 0)
            case .square: return try binary(.mul, self)
            default: try requireFloat(op.rawValue)
            }
        }
        let (result, out) = try floatMap { ql_unary_f32(Int32(op.kernel.rawValue), $0, $1, $2) }
        let y = try out.detach()  // an alias, so the node does not keep its own output alive in a cycle
        let x = self
        return result.recorded(op.rawValue, [x]) { g in
            let xf = try x.asF32()
            let dx = try Tensor(shape: g.shape, dtype: .f32, zeroed: false)
            ql_unary_backward_f32(Int32(op.kernel.rawValue), xf.f32, y.f32, g.f32, dx.f32, Int64(g.count))
            return [dx]
        }
    }

    /// x ^ p for a number p.
    public func pow(_ p: Double) throws -> Tensor {
        if !dtype.isFloat { return try binary(.pow, scalar: p) }
        let pf = Float(p)
        let (result, _) = try floatMap { ql_pow_scalar_f32($0, pf, $1, $2) }
        let x = self
        return result.recorded("pow", [x]) { g in
            let xf = try x.asF32()
            let dx = try Tensor(shape: g.shape, dtype: .f32, zeroed: false)
            ql_pow_scalar_backward_f32(xf.f32, pf, g.f32, dx.f32, Int64(g.count))
            return [dx]
        }
    }

    /// Values limited to [lo, hi]; the gradient passes where lo <= x <= hi.
    public func clamp(_ lo: Double, _ hi: Double) throws -> Tensor {
        if lo > hi { throw TensorError("qlora.clamp: min \(lo) is greater than max \(hi)") }
        if !dtype.isFloat {
            return try binary(.maximum, scalar: lo).binary(.minimum, scalar: hi)
        }
        let l = Float(lo), h = Float(hi)
        let (result, _) = try floatMap { ql_clamp_f32($0, l, h, $1, $2) }
        let x = self
        return result.recorded("clamp", [x]) { g in
            let xf = try x.asF32()
            let dx = try Tensor(shape: g.shape, dtype: .f32, zeroed: false)
            ql_clamp_backward_f32(xf.f32, l, h, g.f32, dx.f32, Int64(g.count))
            return [dx]
        }
    }

    /// a * x + b for numbers a and b (f32 result for integer inputs).
    public func affine(_ a: Double, _ b: Double) throws -> Tensor {
        let src = dtype.isFloat ? self : try converted(to: .f32)
        let fa = Float(a), fb = Float(b)
        let (result, _) = try src.floatMap { ql_affine_f32($0, fa, fb, $1, $2) }
        let x = self
        return result.recorded("affine", [x]) { g in [try g.affine(a, 0)] }
    }

    /// cond ? a : b elementwise with broadcasting of all three; cond is nonzero-true.
    public static func where_(_ cond: Tensor, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        let fn = "qlora.where"
        let outShape = try Shape.broadcast(Shape.broadcast(cond.shape, a.shape, fn), b.shape, fn)
        let type = DType.promote(a.dtype, b.dtype)
        let c = try cond.asF32().expanded(to: outShape)
        let af = try a.asF32().expanded(to: outShape), bf = try b.asF32().expanded(to: outShape)
        let out = try Tensor(shape: outShape, dtype: .f32, zeroed: false)
        ql_where_f32(c.f32, af.f32, bf.f32, out.f32, Int64(out.count))
        let result = type == .f32 ? out : try out.converted(to: type)
        return result.recorded("where", [a, b]) { g in
            let zero = try Tensor(shape: [], dtype: .f32)
            let ga = a.tracksGrad ? try Tensor.where_(c, g, zero).sumTo(a.shape) : nil
            let gb = b.tracksGrad ? try Tensor.where_(c, zero, g).sumTo(b.shape) : nil
            return [ga, gb]
        }
    }

    /// A contiguous copy broadcast to `target` (itself when the shape already matches).
    public func expanded(to target: [Int]) throws -> Tensor {
        if shape == target { return self }
        if try Shape.broadcast(shape, target, "qlora.expand") != target {
            throw TensorError("qlora.expand: shape \(Shape.describe(shape)) cannot be expanded to \(Shape.describe(target))")
        }
        let out = try Tensor(shape: target, dtype: dtype, zeroed: false)
        if out.count == 0 { return out }
        var sh = target.map(Int64.init)
        var st = Shape.broadcastStrides(shape, to: target).map(Int64.init)
        ql_strided_copy(dtype.byteSize, Int32(target.count), &sh, raw, &st, out.raw)
        let x = self
        return out.recorded("expand", [x]) { g in [try g.sumTo(x.shape)] }
    }
}
