// dtype conversion: every pair through f32 (floats) or Int64 (integers) with the C converters for
// bf16 and f16. Float to integer truncates toward zero; NaN becomes 0; out-of-range saturates.

import CKernels

extension Tensor {
    /// A copy of this tensor in `target` dtype (no autograd; see `to(_:)` for the tracked op).
    public func converted(to target: DType) throws -> Tensor {
        if target == dtype { return try copy() }
        let out = try Tensor(shape: shape, dtype: target, zeroed: false)
        let n = count
        if dtype.isFloat && target.isFloat {
            // float -> f32 -> float
            let mid: Tensor
            if dtype == .f32 { mid = self } else {
                mid = target == .f32 ? out : try Tensor(shape: shape, dtype: .f32, zeroed: false)
                let src = raw.assumingMemoryBound(to: UInt16.self)
                if dtype == .bf16 { ql_bf16_to_f32(src, mid.f32, Int64(n)) } else { ql_f16_to_f32(src, mid.f32, Int64(n)) }
            }
            if target == .f32 { if mid !== out { out.f32.update(from: mid.f32, count: n) }; return out }
            let dst = out.raw.assumingMemoryBound(to: UInt16.self)
            if target == .bf16 { ql_f32_to_bf16(mid.f32, dst, Int64(n)) } else { ql_f32_to_f16(mid.f32, dst, Int64(n)) }
            return out
        }
        if dtype.isFloat {
            let src = try asF32()
            let p = src.f32
            for i in 0..<n { out.store(double: Double(p[i]), at: i) }
            return out
        }
        if target.isFloat {
            let mid = target == .f32 ? out : try Tensor(shape: shape, dtype: .f32, zeroed: false)
            let p = mid.f32
            for i in 0..<n { p[i] = Float(intValue(at: i)) }
            if target == .f32 { return out }
            let dst = out.raw.assumingMemoryBound(to: UInt16.self)
            if target == .bf16 { ql_f32_to_bf16(p, dst, Int64(n)) } else { ql_f32_to_f16(p, dst, Int64(n)) }
            return out
        }
        for i in 0..<n { out.store(int: intValue(at: i), at: i) }
        return out
    }

    static func saturatingInt(_ v: Double) -> Int64 {
        if v.isNaN { return 0 }
        if v >= 9.223372036854775e18 { return Int64.max }
        if v <= -9.223372036854775e18 { return Int64.min }
        return Int64(v)
    }

    /// Stores an integer at flat index i, wrapping to the dtype's width (integer dtypes) or
    /// converting (float dtypes).
    func store(int v: Int64, at i: Int) {
        let p = raw
        switch dtype {
        case .i32: p.storeBytes(of: Int32(truncatingIfNeeded: v), toByteOffset: i * 4, as: Int32.self)
        case .i64: p.storeBytes(of: v, toByteOffset: i * 8, as: Int64.self)
        case .u8: p.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: i, as: UInt8.self)
        default: store(double: Double(v), at: i)
        }
    }

    /// Stores a number at flat index i in this tensor's dtype.
    func store(double v: Double, at i: Int) {
        let p = raw
        switch dtype {
        case .f32: p.storeBytes(of: Float(v), toByteOffset: i * 4, as: Float.self)
        case .bf16:
            var f = Float(v); var h: UInt16 = 0
            ql_f32_to_bf16(&f, &h, 1)
            p.storeBytes(of: h, toByteOffset: i * 2, as: UInt16.self)
        case .f16:
            var f = Float(v); var h: UInt16 = 0
            ql_f32_to_f16(&f, &h, 1)
            p.storeBytes(of: h, toByteOffset: i * 2, as: UInt16.self)
        // A number converts to an integer dtype saturating at that dtype's range, as a tensor does.
        case .i32: store(int: max(Int64(Int32.min), min(Int64(Int32.max), Tensor.saturatingInt(v))), at: i)
        case .u8: store(int: max(0, min(255, Tensor.saturatingInt(v))), at: i)
        default: store(int: Tensor.saturatingInt(v), at: i)
        }
    }

    /// Writes f32 values (count elements) into this tensor, converting to its dtype.
    func fill(fromF32 src: UnsafePointer<Float>) {
        let n = Int64(count)
        switch dtype {
        case .f32: f32.update(from: src, count: count)
        case .bf16: ql_f32_to_bf16(src, raw.assumingMemoryBound(to: UInt16.self), n)
        case .f16: ql_f32_to_f16(src, raw.assumingMemoryBound(to: UInt16.self), n)
        default: for i in 0..<count { store(double: Double(src[i]), at: i) }
        }
    }
}

extension Tensor {
    /// Writes a number at flat index i in this tensor's dtype (public form of store(double:)).
    public func storeValue(_ v: Double, at i: Int) { store(double: v, at: i) }
    /// Writes an integer at flat index i (public form of store(int:)).
    public func storeInteger(_ v: Int64, at i: Int) { store(int: v, at: i) }
}

extension Tensor {
    /// This tensor in dtype d (itself when it already is), with gradients passed through between
    /// floating types.
    public func to(_ d: DType) throws -> Tensor {
        if d == dtype { return self }
        let out = try converted(to: d)
        if d.isFloat && dtype.isFloat { out.recorded("to", [self]) { g in [g] } }
        return out
    }

    /// A copy with its own storage that stays in the graph.
    public func clone() throws -> Tensor {
        try copy().recorded("clone", [self]) { g in [g] }
    }
}
