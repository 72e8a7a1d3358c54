// Shape ops: reshape (a view), transpose and permute (copies), slice (a copy), concat,
// index_select (embedding lookup) and gather; each with its backward beside it.
// Dims here are 0-based; the Lua bridge converts from Lua's 1-based dims.

import CKernels

extension Tensor {
    /// Same storage, new shape; one dim may be -1 (inferred).
    public func reshape(_ newShape: [Int]) throws -> Tensor {
        var target = newShape
        if let hole = target.firstIndex(of: -1) {
            if target.filter({ $0 == -1 }).count > 1 { throw TensorError("qlora.reshape: only one dim may be -1") }
            let rest = try Shape.numel(target.enumerated().filter { $0.offset != hole }.map { $0.element }, "qlora.reshape")
            if rest == 0 || count % rest != 0 {
                throw TensorError("qlora.reshape: cannot view \(Shape.describe(shape)) (\(count) elements) as \(Shape.describe(newShape))")
            }
            target[hole] = count / rest
        }
        let out = try view(target)
        let input = self
        return out.recorded("reshape", [input]) { g in [try g.view(input.shape)] }
    }

    /// A copy with dims reordered: out dim i is input dim perm[i].
    public func permute(_ perm: [Int]) throws -> Tensor {
        if perm.count != ndim || Set(perm).count != ndim || perm.contains(where: { $0 < 0 || $0 >= ndim }) {
            throw TensorError("qlora.permute: \(perm.map { $0 + 1 }) is not a permutation of the \(ndim) dims")
        }
        let outShape = perm.map { shape[$0] }
        let out = try Tensor(shape: outShape, dtype: dtype, zeroed: false)
        if count > 0 {
            let st = Shape.strides(shape)
            var sh = outShape.map(Int64.init)
            var ss = perm.map { Int64(st[$0]) }
            ql_strided_copy(dtype.byteSize, Int32(ndim), &sh, raw, &ss, out.raw)
        }
        var inverse = [Int](repeating: 0, count: perm.count)
        for (i, p) in perm.enumerated() { inverse[p] = i }
        let input = self
        return out.recorded("permute", [input]) { g in [try g.permute(inverse)] }
    }

    /// Swap of two 0-based dims (a copy).
    public func transpose(_ a: Int, _ b: Int) throws -> Tensor {
        var perm = Array(0..<ndim)
        perm.swapAt(a, b)
        return try permute(perm)
    }

    /// Elements from..<to (0-based, half-open) along 0-based dim d, as a copy.
    public func slice(_ d: Int, _ from: Int, _ to: Int) throws -> Tensor {
        if from < 0 || to > shape[d] || from > to {
            throw TensorError("qlora.slice: range \(from + 1)..\(to) out of bounds for dim \(d + 1) of size \(shape[d])")
        }
        var outShape = shape
        outShape[d] = to - from
        let out = try Tensor(shape: outShape, dtype: dtype, zeroed: false)
        if out.count > 0 {
            let st = Shape.strides(shape)
            var sh = outShape.map(Int64.init)
            var ss = st.map(Int64.init)
            let src = raw + from * st[d] * dtype.byteSize
            ql_strided_copy(dtype.byteSize, Int32(ndim), &sh, src, &ss, out.raw)
        }
        let input = self
        return out.recorded("slice", [input]) { g in
            let dx = try Tensor(shape: input.shape, dtype: .f32)
            try dx.assignSlice(d, from, g)
            return [dx]
        }
    }

    /// Copies src into this tensor at offset `from` along 0-based dim d (same dtype, in place).
    func assignSlice(_ d: Int, _ from: Int, _ src: Tensor) throws {
        let s = src.dtype == dtype ? src : try src.converted(to: dtype)
        if s.count == 0 { return }
        let (outer, n, inner) = split3(d)
        let (_, m, _) = s.split3(d)
        let es = dtype.byteSize
        for o in 0..<outer {
            let dst = raw + ((o * n + from) * inner) * es
            let srcp = s.raw + (o * m * inner) * es
            dst.copyMemory(from: srcp, byteCount: m * inner * es)
        }
        _ = outer
    }

    /// Tensors joined along 0-based dim d (all other dims equal).
    public static func concat(_ parts: [Tensor], _ d: Int) throws -> Tensor {
        guard let first = parts.first else { throw TensorError("qlora.concat: expected at least one tensor") }
        if d < 0 || d >= first.ndim { throw TensorError("qlora.concat: dim \(d + 1) out of range for \(first.ndim)-d tensors") }
        var type = first.dtype
        var total = 0
        for (i, p) in parts.enumerated() {
            if p.ndim != first.ndim || (0..<p.ndim).contains(where: { $0 != d && p.shape[$0] != first.shape[$0] }) {
                throw TensorError("qlora.concat: tensor \(i + 1) has shape \(Shape.describe(p.shape)), which does not match \(Shape.describe(first.shape)) outside dim \(d + 1)")
            }
            type = DType.promote(type, p.dtype)
            total += p.shape[d]
        }
        var outShape = first.shape
        outShape[d] = total
        let out = try Tensor(shape: outShape, dtype: type, zeroed: false)
        var offset = 0
        var ranges: [(Int, Int)] = []
        for p in parts {
            try out.assignSlice(d, offset, p)
            ranges.append((offset, offset + p.shape[d]))
            offset += p.shape[d]
        }
        return out.recorded("concat", parts) { g in
            try ranges.map { try g.slice(d, $0.0, $0.1) }
        }
    }

    /// Rows of this tensor picked along 0-based dim d by an integer index tensor of 0-based
    /// positions; out shape = shape[..<d] + index.shape + shape[(d+1)...]. The embedding lookup.
    public func indexSelect(_ d: Int, _ index: Tensor) throws -> Tensor {
        if index.dtype.isFloat { throw TensorError("qlora.index_select: the index must be an integer tensor (i32, i64, u8), got \(index.dtype.name)") }
        let (outer, n, inner) = split3(d)
        var positions = [Int](repeating: 0, count: index.count)
        for i in 0..<index.count {
            let v = index.intValue(at: i)
            if v < 0 || v >= n {
                throw TensorError("qlora.index_select: index \(v) out of range for dim \(d + 1) of size \(n) (indices are 0-based)")
            }
            positions[i] = Int(v)
        }
        let outShape = Array(shape[..<d]) + index.shape + Array(shape[(d + 1)...])
        let out = try Tensor(shape: outShape, dtype: dtype, zeroed: false)
        let es = dtype.byteSize, m = positions.count
        for o in 0..<outer {
            for (j, k) in positions.enumerated() {
                (out.raw + ((o * m + j) * inner) * es).copyMemory(from: raw + ((o * n + k) * inner) * es, byteCount: inner * es)
            }
        }
        let input = self
        return out.recorded("index_select", [input]) { g in
            let dx = try Tensor(shape: input.shape, dtype: .f32)
            let gf = try g.asF32()
            for o in 0..<outer {
                for (j, k) in positions.enumerated() {
                    ql_axpy_f32(1, gf.f32 + (o * m + j) * inner, dx.f32 + (o * n + k) * inner, Int64(inner))
                }
            }
            return [dx]
        }
    }

    /// out[..., j, ...] = self[..., index[..., j, ...], ...] along 0-based dim d; index has the same
    /// number of dims, and sizes no larger than self's outside d.
    public func gather(_ d: Int, _ index: Tensor) throws -> Tensor {
        if index.dtype.isFloat { throw TensorError("qlora.gather: the index must be an integer tensor, got \(index.dtype.name)") }
        if index.ndim != ndim { throw TensorError("qlora.gather: index has \(index.ndim) dims, the tensor \(ndim)") }
        for i in 0..<ndim where i != d && index.shape[i] > shape[i] {
            throw TensorError("qlora.gather: index shape \(Shape.describe(index.shape)) exceeds tensor shape \(Shape.describe(shape)) at dim \(i + 1)")
        }
        let st = Shape.strides(shape)
        let ist = Shape.strides(index.shape)
        var srcOffsets = [Int](repeating: 0, count: index.count)
        for flat in 0..<index.count {
            var rem = flat, off = 0
            for k in 0..<ndim {
                let c = rem / ist[k]; rem %= ist[k]
                if k == d {
                    let v = index.intValue(at: flat)
                    if v < 0 || v >= shape[d] {
                        throw TensorError("qlora.gather: index \(v) out of range for dim \(d + 1) of size \(shape[d]) (indices are 0-based)")
                    }
                    off += Int(v) * st[k]
                } else { off += c * st[k] }
            }
            srcOffsets[flat] = off
        }
        let x = try asF32()
        let out = try Tensor(shape: index.shape, dtype: .f32, zeroed: false)
        for (i, o) in srcOffsets.enumerated() { out.f32[i] = x.f32[o] }
        let result = dtype == .f32 ? out : try out.converted(to: dtype)
        let input = self
        return result.recorded("gather", [input]) { g in
            let dx = try Tensor(shape: input.shape, dtype: .f32)
            let gf = try g.asF32()
            for (i, o) in srcOffsets.enumerated() { dx.f32[o] += gf.f32[i] }
            return [dx]
        }
    }
}
