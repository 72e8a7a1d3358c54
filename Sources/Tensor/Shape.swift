// Shape arithmetic: element counts with overflow checks, dims counted from the end, NumPy
// broadcasting, and the formatting of shapes in messages.

public enum Shape {
    /// The most dims a tensor may have (the C kernels' limit).
    public static let maxDims = 8
    /// The most elements a tensor may have (2^48).
    public static let maxElements = 1 << 48

    /// Product of dims, or an error on a negative dim or overflow.
    public static func numel(_ shape: [Int], _ fn: String = "qlora") throws -> Int {
        if shape.count > maxDims {
            throw TensorError("\(fn): a tensor has at most \(maxDims) dims, got \(shape.count)")
        }
        var n = 1
        for d in shape {
            if d < 0 { throw TensorError("\(fn): negative dimension \(d) in shape \(describe(shape))") }
            let (m, o) = n.multipliedReportingOverflow(by: d)
            if o || m > maxElements {
                throw TensorError("\(fn): shape \(describe(shape)) has too many elements")
            }
            n = m
        }
        return n
    }

    /// Row-major strides in elements.
    public static func strides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            s[i] = acc
            acc *= shape[i]
        }
        return s
    }

    /// A 1-based (or negative, from the end) Lua dim to a 0-based index.
    public static func normalizeDim(_ dim: Int, ndim: Int, _ fn: String) throws -> Int {
        let d = dim < 0 ? ndim + dim : dim - 1
        if d < 0 || d >= ndim {
            let range = ndim == 0 ? "a 0-d tensor has no dims" : "expected 1..\(ndim) or -\(ndim)..-1"
            throw TensorError("\(fn): dim \(dim) out of range (\(range))")
        }
        return d
    }

    /// NumPy broadcast of two shapes.
    public static func broadcast(_ a: [Int], _ b: [Int], _ fn: String) throws -> [Int] {
        let n = max(a.count, b.count)
        var out = [Int](repeating: 1, count: n)
        for i in 0..<n {
            let da = i < n - a.count ? 1 : a[i - (n - a.count)]
            let db = i < n - b.count ? 1 : b[i - (n - b.count)]
            if da == db || db == 1 { out[i] = da } else if da == 1 { out[i] = db } else {
                throw TensorError("\(fn): shapes \(describe(a)) and \(describe(b)) cannot be broadcast")
            }
        }
        return out
    }

    /// Element strides of a tensor of `shape` read as if it had `target` shape (0 where broadcast).
    public static func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
        let own = strides(shape)
        let off = target.count - shape.count
        var out = [Int](repeating: 0, count: target.count)
        for i in 0..<shape.count where shape[i] != 1 || target[i + off] == 1 {
            out[i + off] = shape[i] == 1 ? 0 : own[i]
        }
        return out
    }

    public static func describe(_ shape: [Int]) -> String {
        "[" + shape.map(String.init).joined(separator: ",") + "]"
    }
}
