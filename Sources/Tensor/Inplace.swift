// In-place updates for optimizers and hand-written training loops: copy_, add_ (with a scale),
// mul_ and zero_. They write into a tensor's storage, are not recorded by autograd, and work on
// f32 tensors (what parameters are).

import CKernels

extension Tensor {
    private func requireInplaceTarget(_ fn: String) throws {
        if dtype != .f32 { throw TensorError("qlora.\(fn): in-place updates need an f32 tensor, got \(dtype.name)") }
        if gradFn != nil { throw TensorError("qlora.\(fn): cannot update a tensor computed by the graph in place; detach() it first") }
    }

    /// self = src (same number of elements; src converted to f32).
    public func copyIn(_ src: Tensor) throws {
        try requireInplaceTarget("copy_")
        if src.count != count { throw TensorError("qlora.copy_: source has \(src.count) elements, the tensor \(count)") }
        let s = try src.asF32()
        f32.update(from: s.f32, count: count)
    }

    /// self += alpha * other (other broadcast to self's shape).
    public func addIn(_ other: Tensor, alpha: Double = 1) throws {
        try requireInplaceTarget("add_")
        let o = try other.asF32().expanded(to: shape)
        ql_axpy_f32(Float(alpha), o.f32, f32, Int64(count))
    }

    /// self *= a
    public func scaleIn(_ a: Double) throws {
        try requireInplaceTarget("mul_")
        ql_affine_f32(f32, Float(a), 0, f32, Int64(count))
    }
}
