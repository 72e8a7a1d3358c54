// Creating tensors: zeros, ones, full, arange, and seeded random draws (uniform, normal) from
// the counter-based generator, so values never depend on the thread count.

import CKernels

/// The process-wide random stream: a seed and the number of values drawn so far. A draw with
/// an explicit seed uses its own stream starting at 0 and leaves this one alone.
public enum RandomState {
    nonisolated(unsafe) public static var seed: UInt64 = 0
    nonisolated(unsafe) public static var offset: UInt64 = 0

    public static func manualSeed(_ s: UInt64) { seed = s; offset = 0 }

    /// (seed, offset) for a draw of n values; advances the global stream when no seed is given.
    static func take(_ n: Int, seed explicit: UInt64?) -> (UInt64, UInt64) {
        if let s = explicit { return (s, 0) }
        let start = offset
        offset &+= UInt64(n)
        return (seed, start)
    }
}

extension Tensor {
    public static func full(_ shape: [Int], _ value: Double, dtype: DType = .f32) throws -> Tensor {
        let t = try Tensor(shape: shape, dtype: dtype, zeroed: value == 0)
        if value != 0 {
            if dtype == .f32 {
                t.f32.update(repeating: Float(value), count: t.count)
            } else {
                let one = try Tensor.scalar(value, dtype: dtype)
                let es = dtype.byteSize
                for i in 0..<t.count { (t.raw + i * es).copyMemory(from: one.raw, byteCount: es) }
            }
        }
        return t
    }

    /// start, start+step, ... up to but excluding stop. i64 when all three are integers.
    public static func arange(_ start: Double, _ stop: Double, _ step: Double, dtype: DType?) throws -> Tensor {
        if step == 0 || !step.isFinite || !start.isFinite || !stop.isFinite {
            throw TensorError("qlora.arange: start, stop and step must be finite and step nonzero")
        }
        // The count in Double first: a tiny step or a huge range gives a count no Int holds.
        let count = ((stop - start) / step).rounded(.up)
        // (a count an Int holds goes on to the usual size checks and their messages)
        if !(count < 0x1p62) {
            throw TensorError("qlora.arange: start \(start), stop \(stop) and step \(step) give too many elements (\(count))")
        }
        let n = count > 0 ? Int(count) : 0
        let isInt = start == start.rounded() && step == step.rounded() && stop == stop.rounded()
        let t = try Tensor(shape: [n], dtype: dtype ?? (isInt ? .i64 : .f32), zeroed: false)
        for i in 0..<n { t.store(double: start + Double(i) * step, at: i) }
        return t
    }

    /// Uniform values in [lo, hi).
    public static func rand(_ shape: [Int], seed: UInt64? = nil, lo: Double = 0, hi: Double = 1, dtype: DType = .f32) throws -> Tensor {
        if !(lo.isFinite && hi.isFinite && lo <= hi) {
            throw TensorError("qlora.rand: min and max must be finite with min <= max, got min \(lo), max \(hi)")
        }
        let t = try Tensor(shape: shape, dtype: .f32, zeroed: false)
        let (s, off) = RandomState.take(t.count, seed: seed)
        ql_rand_uniform_f32(s, off, t.f32, Int64(t.count))
        if lo != 0 || hi != 1 { ql_affine_f32(t.f32, Float(hi - lo), Float(lo), t.f32, Int64(t.count)) }
        return dtype == .f32 ? t : try t.converted(to: dtype)
    }

    /// Normal values with the given mean and standard deviation.
    public static func randn(_ shape: [Int], seed: UInt64? = nil, mean: Double = 0, std: Double = 1, dtype: DType = .f32) throws -> Tensor {
        if !(mean.isFinite && std.isFinite && std >= 0) {
            throw TensorError("qlora.randn: mean must be finite and std a finite number >= 0, got mean \(mean), std \(std)")
        }
        let t = try Tensor(shape: shape, dtype: .f32, zeroed: false)
        let (s, off) = RandomState.take(t.count, seed: seed)
        ql_rand_normal_f32(s, off, t.f32, Int64(t.count))
        if mean != 0 || std != 1 { ql_affine_f32(t.f32, Float(std), Float(mean), t.f32, Int64(t.count)) }
        return dtype == .f32 ? t : try t.converted(to: dtype)
    }
}
