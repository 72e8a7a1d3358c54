// Reductions: sum, mean, max, min over all elements or one dim (with keepdim), argmax/argmin;
// forward through the C kernels, backward beside each. Integer sums stay exact in Int64; other
// integer reductions go through f32 (max/min return the input dtype, mean returns f32).

import CKernels

public enum ReduceOp: String { case sum, mean, max, min }

extension Tensor {
    /// [outer, n, inner] split around 0-based dim d.
    func split3(_ d: Int) -> (Int, Int, Int) {
        let outer = shape[..<d].reduce(1, *)
        let inner = shape[(d + 1)...].reduce(1, *)
        return (outer, shape[d], inner)
    }

    /// Reduction over 0-based dim d.
    public func reduceDim(_ op: ReduceOp, _ d: Int, keepDim: Bool) throws -> Tensor {
        let fn = "qlora.\(op.rawValue)"
        if d < 0 || d >= ndim { throw TensorError("\(fn): dim out of range") }
        let (outer, n, inner) = split3(d)
        if n == 0 && (op == .max || op == .min) {
            throw TensorError("\(fn): cannot take the \(op.rawValue) of an empty dim")
        }
        var outShape = shape
        if keepDim { outShape[d] = 1 } else { outShape.remove(at: d) }
        if !dtype.isFloat && op == .sum {
            let out = try Tensor(shape: outShape, dtype: .i64)
            for o in 0..<outer { for i in 0..<inner {
                var acc: Int64 = 0
                for k in 0..<n { acc = acc &+ intValue(at: (o * n + k) * inner + i) }
                out.store(int: acc, at: o * inner + i)
            } }
            return out
        }
        let x = try asF32()
        let out = try Tensor(shape: outShape, dtype: .f32, zeroed: false)
        let kop: ql_redop = op == .max ? QL_RED_MAX : op == .min ? QL_RED_MIN : QL_RED_SUM
        ql_reduce_f32(Int32(kop.rawValue), x.f32, Int64(outer), Int64(n), Int64(inner), out.f32)
        if op == .mean {
            ql_affine_f32(out.f32, n == 0 ? Float.nan : 1 / Float(n), 0, out.f32, Int64(out.count))
        }
        let resultType: DType = dtype.isFloat || op == .max || op == .min ? dtype : .f32
        let result = resultType == .f32 ? out : try out.converted(to: resultType)
        let input = self
        let keptShape: [Int] = { var s = shape; s[d] = 1; return s }()
        return result.recorded(op.rawValue, [input]) { g in
            let gk = try g.view(keptShape)
            switch op {
            case .sum: return [try gk.expanded(to: input.shape)]
            case .mean: return [try gk.expanded(to: input.shape).affine(1 / Double(n), 0)]
            case .max, .min:
                let idx = try input.argReduce(op == .max, d)
                return [try Tensor.scatterToArg(gk, idx, input.shape, d)]
            }
        }
    }

    /// Reduction over all elements to a 0-d tensor.
    public func reduceAll(_ op: ReduceOp) throws -> Tensor {
        let flat = try reshape([count])
        let r = try flat.reduceDim(op, 0, keepDim: false)
        return r
    }

    /// Index (0-based, i64) of the first max (or min) along 0-based dim d; keepDim keeps it as 1.
    public func argReduce(_ isMax: Bool, _ d: Int, keepDim: Bool = true) throws -> Tensor {
        let (outer, n, inner) = split3(d)
        if n == 0 { throw TensorError("qlora.\(isMax ? "argmax" : "argmin"): empty dim") }
        var outShape = shape
        if keepDim { outShape[d] = 1 } else { outShape.remove(at: d) }
        let x = try asF32()
        let out = try Tensor(shape: outShape, dtype: .i64, zeroed: false)
        let p = out.raw.assumingMemoryBound(to: Int64.self)
        if isMax { ql_argmax_f32(x.f32, Int64(outer), Int64(n), Int64(inner), p) } else { ql_argmin_f32(x.f32, Int64(outer), Int64(n), Int64(inner), p) }
        return out
    }

    /// A zero tensor of `shape` with g placed at index idx along dim d (g and idx have size 1 there).
    static func scatterToArg(_ g: Tensor, _ idx: Tensor, _ shape: [Int], _ d: Int) throws -> Tensor {
        let out = try Tensor(shape: shape, dtype: .f32)
        let (outer, n, inner) = out.split3(d)
        let gf = try g.asF32()
        let ip = idx.raw.assumingMemoryBound(to: Int64.self)
        for o in 0..<outer { for i in 0..<inner {
            let k = Int(ip[o * inner + i])
            out.f32[(o * n + k) * inner + i] = gf.f32[o * inner + i]
        } }
        return out
    }
}
