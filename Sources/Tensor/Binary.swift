// Binary elementwise ops with NumPy broadcasting (+ - * / pow max min and comparisons): the
// forward through the C kernels (f32; bf16/f16 computed in f32 and rounded back; integers in
// Int64 with wrap-around to the dtype) and, beside it, each op's backward.

import CKernels

public enum BinaryOp: String, CaseIterable {
    case add, sub, mul, div, pow, maximum, minimum, eq, ne, lt, le, gt, ge

    var kernel: ql_binop {
        switch self {
        case .add: return QL_BIN_ADD
        case .sub: return QL_BIN_SUB
        case .mul: return QL_BIN_MUL
        case .div: return QL_BIN_DIV
        case .pow: return QL_BIN_POW
        case .maximum: return QL_BIN_MAX
        case .minimum: return QL_BIN_MIN
        case .eq: return QL_BIN_EQ
        case .ne: return QL_BIN_NE
        case .lt: return QL_BIN_LT
        case .le: return QL_BIN_LE
        case .gt: return QL_BIN_GT
        case .ge: return QL_BIN_GE
        }
    }

    public var isComparison: Bool {
        switch self {
        case .eq, .ne, .lt, .le, .gt, .ge: return true
        default: return false
        }
    }
}

extension Tensor {
    /// a op b with broadcasting. Comparisons give u8 tensors of 0/1 and have no gradient.
    public func binary(_ op: BinaryOp, _ other: Tensor) throws -> Tensor {
        let fn = "qlora.\(op.rawValue)"
        let outShape = try Shape.broadcast(shape, other.shape, fn)
        let computeType = DType.promote(dtype, other.dtype)
        if !computeType.isFloat {
            return try Tensor.integerBinary(op, self, other, outShape, fn)
        }
        let out = try Tensor.floatBinary(op, self, other, outShape)
        if op.isComparison {
            return try out.converted(to: .u8)
        }
        let result = computeType == .f32 ? out : try out.converted(to: computeType)
        let a = self, b = other
        // The closure keeps the output's values through a detached alias: capturing the result
        // itself would make a reference cycle (result -> node -> closure -> result) that leaks.
        let saved = try out.detach()
        return result.recorded(op.rawValue, [a, b]) { g in
            try Tensor.binaryBackward(op, a, b, saved, g)
        }
    }

    /// The f32 forward of a op b into a new f32 tensor of outShape.
    static func floatBinary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, _ outShape: [Int]) throws -> Tensor {
        let af = try a.asF32(), bf = try b.asF32()
        let out = try Tensor(shape: outShape, dtype: .f32, zeroed: false)
        let n = Int64(out.count)
        if a.shape == b.shape {
            ql_binary_f32(Int32(op.kernel.rawValue), af.f32, 1, bf.f32, 1, out.f32, n)
        } else if b.count == 1 && a.count == out.count {
            ql_binary_f32(Int32(op.kernel.rawValue), af.f32, 1, bf.f32, 0, out.f32, n)
        } else if a.count == 1 && b.count == out.count {
            ql_binary_f32(Int32(op.kernel.rawValue), af.f32, 0, bf.f32, 1, out.f32, n)
        } else {
            var sh = outShape.map(Int64.init)
            var sa = Shape.broadcastStrides(a.shape, to: outShape).map(Int64.init)
            var sb = Shape.broadcastStrides(b.shape, to: outShape).map(Int64.init)
            ql_binary_bcast_f32(Int32(op.kernel.rawValue), Int32(outShape.count), &sh, af.f32, &sa, bf.f32, &sb, out.f32)
        }
        return out
    }

    static func binaryBackward(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, _ out: Tensor, _ g: Tensor) throws -> [Tensor?] {
        switch op {
        case .add:
            return [try g.sumTo(a.shape), try g.sumTo(b.shape)]
        case .sub:
            return [try g.sumTo(a.shape), try g.affine(-1, 0).sumTo(b.shape)]
        case .mul:
            return [a.tracksGrad ? try g.binary(.mul, b).sumTo(a.shape) : nil,
                    b.tracksGrad ? try g.binary(.mul, a).sumTo(b.shape) : nil]
        case .div:
            // d(a/b)/da = 1/b; d(a/b)/db = -(a/b)/b
            let ga = a.tracksGrad ? try g.binary(.div, b).sumTo(a.shape) : nil
            let gb = b.tracksGrad ? try g.binary(.mul, out).binary(.div, b).affine(-1, 0).sumTo(b.shape) : nil
            return [ga, gb]
        case .pow:
            // d(a^b)/da = b * a^(b-1); d(a^b)/db = a^b * log(a)
            let ga = a.tracksGrad ? try g.binary(.mul, b).binary(.mul, a.binary(.pow, b.affine(1, -1))).sumTo(a.shape) : nil
            let gb = b.tracksGrad ? try g.binary(.mul, out).binary(.mul, a.unary(.log)).sumTo(b.shape) : nil
            return [ga, gb]
        case .maximum, .minimum:
            // The gradient goes to the input that was chosen; ties go to a.
            let pickA = try a.binary(op == .maximum ? .ge : .le, b).converted(to: .f32)
            let ga = try g.binary(.mul, pickA).sumTo(a.shape)
            let gb = try g.binary(.mul, pickA.affine(-1, 1)).sumTo(b.shape)
            return [ga, gb]
        default:
            return [nil, nil]
        }
    }

    /// Integer arithmetic in Int64, wrapped to the result dtype. Division floors (as Lua's //)
    /// and a zero divisor is an error.
    static func integerBinary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, _ outShape: [Int], _ fn: String) throws -> Tensor {
        let outType: DType = op.isComparison ? .u8 : DType.promote(a.dtype, b.dtype)
        let out = try Tensor(shape: outShape, dtype: outType, zeroed: false)
        let sa = Shape.broadcastStrides(a.shape, to: outShape)
        let sb = Shape.broadcastStrides(b.shape, to: outShape)
        var idx = [Int](repeating: 0, count: outShape.count)
        var ia = 0, ib = 0
        for i in 0..<out.count {
            let x = a.intValue(at: ia), y = b.intValue(at: ib)
            let r: Int64
            switch op {
            case .add: r = x &+ y
            case .sub: r = x &- y
            case .mul: r = x &* y
            case .div:
                if y == 0 { throw TensorError("\(fn): integer division by zero") }
                if x == Int64.min && y == -1 { r = Int64.min } else {
                    let q = x / y
                    r = (x % y != 0 && ((x < 0) != (y < 0))) ? q - 1 : q
                }
            case .pow:
                if y < 0 { throw TensorError("\(fn): negative integer exponent \(y); convert to f32 first") }
                var acc: Int64 = 1, base = x, e = y
                while e > 0 { if e & 1 == 1 { acc = acc &* base }; base = base &* base; e >>= 1 }
                r = acc
            case .maximum: r = max(x, y)
            case .minimum: r = min(x, y)
            case .eq: r = x == y ? 1 : 0
            case .ne: r = x != y ? 1 : 0
            case .lt: r = x < y ? 1 : 0
            case .le: r = x <= y ? 1 : 0
            case .gt: r = x > y ? 1 : 0
            case .ge: r = x >= y ? 1 : 0
            }
            out.store(int: r, at: i)
            // advance the multi-index
            var d = outShape.count - 1
            while d >= 0 {
                idx[d] += 1; ia += sa[d]; ib += sb[d]
                if idx[d] < outShape[d] { break }
                ia -= sa[d] * idx[d]; ib -= sb[d] * idx[d]; idx[d] = 0
                d -= 1
            }
        }
        return out
    }

    /// a op scalar, the scalar taking this tensor's dtype (or f32 for a fractional scalar on an
    /// integer tensor).
    public func binary(_ op: BinaryOp, scalar: Double, scalarFirst: Bool = false) throws -> Tensor {
        var type = dtype
        if !dtype.isFloat && scalar != scalar.rounded() { type = .f32 }
        let s = try Tensor.scalar(scalar, dtype: type)
        return scalarFirst ? try s.binary(op, self) : try binary(op, s)
    }

    /// A 0-d tensor holding v.
    public static func scalar(_ v: Double, dtype: DType = .f32) throws -> Tensor {
        let t = try Tensor(shape: [], dtype: dtype, zeroed: false)
        t.store(double: v, at: 0)
        return t
    }

    /// Sums a broadcast gradient back down to `target` shape (no-op when shapes match).
    public func sumTo(_ target: [Int]) throws -> Tensor {
        if shape == target { return self }
        var t = try asF32()
        // Sum away leading dims that target does not have.
        while t.ndim > target.count {
            t = try t.reduceDim(.sum, 0, keepDim: false)
        }
        for d in 0..<target.count where target[d] == 1 && t.shape[d] != 1 {
            t = try t.reduceDim(.sum, d, keepDim: true)
        }
        return t
    }
}
