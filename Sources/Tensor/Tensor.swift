// The Tensor: a dtype, a shape and contiguous row-major storage, plus the autograd fields
// (requiresGrad, grad, the node that produced it). Views (reshape) share storage; every other
// op writes a new tensor.

import Foundation
import CKernels

public final class Tensor {
    public let storage: Storage
    public let dtype: DType
    public let shape: [Int]
    public let count: Int

    /// Leaf tensors with requiresGrad collect gradients in `grad` on backward().
    public var requiresGrad: Bool = false
    /// The accumulated gradient (always f32, same shape), or nil before any backward().
    public var grad: Tensor?
    /// The op that produced this tensor, when it was computed from tensors that need gradients.
    var gradFn: GradNode?

    public var ndim: Int { shape.count }
    public var byteCount: Int { count * dtype.byteSize }
    public var isLeaf: Bool { gradFn == nil }

    /// This machine's RAM in bytes: no one tensor can be larger.
    static let physicalMemory = Int(clamping: ProcessInfo.processInfo.physicalMemory)

    /// A new tensor; its memory is zeroed unless `zeroed` is false (the caller fills it).
    public init(shape: [Int], dtype: DType = .f32, zeroed: Bool = true) throws {
        let n = try Shape.numel(shape)
        let (bytes, o) = n.multipliedReportingOverflow(by: dtype.byteSize)
        if o { throw TensorError("qlora: shape \(Shape.describe(shape)) is too large") }
        // More than the machine has can only fail: say so before asking for it (with overcommit,
        // the allocation could succeed and the OOM killer end the process while zeroing it).
        if bytes > Tensor.physicalMemory {
            throw TensorError("qlora: \(dtype.name) \(Shape.describe(shape)) needs \(bytes) bytes, more than this machine's memory (\(Tensor.physicalMemory) bytes)")
        }
        storage = try Storage(byteCount: bytes, zeroed: zeroed)
        self.dtype = dtype
        self.shape = shape
        count = n
    }

    /// A tensor over existing storage (a view, or bytes borrowed from a mapped file).
    public init(storage: Storage, dtype: DType, shape: [Int]) throws {
        let n = try Shape.numel(shape)
        if n * dtype.byteSize > storage.byteCount {
            throw TensorError("qlora: storage of \(storage.byteCount) bytes is too small for \(dtype.name) \(Shape.describe(shape))")
        }
        self.storage = storage
        self.dtype = dtype
        self.shape = shape
        count = n
    }

    /// An f32 tensor from values.
    public convenience init(_ values: [Float], shape: [Int]) throws {
        try self.init(shape: shape, dtype: .f32, zeroed: false)
        if values.count != count {
            throw TensorError("qlora.tensor: \(values.count) values do not fill shape \(Shape.describe(shape))")
        }
        values.withUnsafeBufferPointer { src in
            if let b = src.baseAddress { f32.update(from: b, count: count) }
        }
    }

    /// The storage as f32 (only valid when dtype == .f32).
    public var f32: UnsafeMutablePointer<Float> { storage.base.assumingMemoryBound(to: Float.self) }
    public var raw: UnsafeMutableRawPointer { storage.base }

    /// This tensor's values as an f32 tensor: itself when already f32, else a converted copy.
    public func asF32() throws -> Tensor {
        dtype == .f32 ? self : try converted(to: .f32)
    }

    /// Value i (flat index) as a Double, whatever the dtype.
    public func value(at i: Int) -> Double {
        let p = storage.base
        switch dtype {
        case .f32: return Double(p.load(fromByteOffset: i * 4, as: Float.self))
        case .bf16:
            let bits = UInt32(p.load(fromByteOffset: i * 2, as: UInt16.self)) << 16
            return Double(Float(bitPattern: bits))
        case .f16:
            var h = p.load(fromByteOffset: i * 2, as: UInt16.self)
            var f: Float = 0
            ql_f16_to_f32(&h, &f, 1)
            return Double(f)
        case .i32: return Double(p.load(fromByteOffset: i * 4, as: Int32.self))
        case .i64: return Double(p.load(fromByteOffset: i * 8, as: Int64.self))
        case .u8: return Double(p.load(fromByteOffset: i, as: UInt8.self))
        }
    }

    /// Integer value i (flat index) for integer dtypes (truncates floats).
    public func intValue(at i: Int) -> Int64 {
        let p = storage.base
        switch dtype {
        case .i32: return Int64(p.load(fromByteOffset: i * 4, as: Int32.self))
        case .i64: return p.load(fromByteOffset: i * 8, as: Int64.self)
        case .u8: return Int64(p.load(fromByteOffset: i, as: UInt8.self))
        default:
            let v = value(at: i)
            return v.isFinite && abs(v) < 9.2e18 ? Int64(v) : 0
        }
    }

    /// A tensor sharing this one's storage with another shape of the same element count.
    public func view(_ newShape: [Int]) throws -> Tensor {
        let n = try Shape.numel(newShape)
        if n != count {
            throw TensorError("qlora.reshape: cannot view \(Shape.describe(shape)) (\(count) elements) as \(Shape.describe(newShape)) (\(n) elements)")
        }
        return try Tensor(storage: storage, dtype: dtype, shape: newShape)
    }

    /// A copy with its own storage (no autograd link).
    public func copy() throws -> Tensor {
        let t = try Tensor(shape: shape, dtype: dtype, zeroed: false)
        t.raw.copyMemory(from: raw, byteCount: byteCount)
        return t
    }
}
