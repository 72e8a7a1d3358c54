// The ggml tensor types a GGUF file can hold: their names and ids, the block geometry of those
// qlora reads (from the C traits table), and dequantization of a tensor's bytes to f32 by the
// C reference kernels (bit-identical to ggml's dequantize_row_*).

import CKernels

public struct GGMLType: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let id: UInt32
    public init(id: UInt32) { self.id = id }

    public static let f32 = GGMLType(id: 0), f16 = GGMLType(id: 1), q4_0 = GGMLType(id: 2)
    public static let q4_1 = GGMLType(id: 3), q5_0 = GGMLType(id: 6), q5_1 = GGMLType(id: 7)
    public static let q8_0 = GGMLType(id: 8), q2_K = GGMLType(id: 10), q3_K = GGMLType(id: 11)
    public static let q4_K = GGMLType(id: 12), q5_K = GGMLType(id: 13), q6_K = GGMLType(id: 14)
    public static let iq4_nl = GGMLType(id: 20), bf16 = GGMLType(id: 30)

    /// ggml's names for every type id it has defined (qlora reads only some of them).
    static let names: [UInt32: String] = [
        0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
        10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
        17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
        23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
        30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
    ]

    /// "Q4_K", or "type 77" for an id ggml does not define.
    public var description: String { GGMLType.names[id] ?? "type \(id)" }

    /// A type by its name ("q8_0", "F16"; case-insensitive).
    public init?(name: String) {
        let up = name.uppercased()
        guard let (id, _) = GGMLType.names.first(where: { $0.value.uppercased() == up }) else { return nil }
        self.id = id
    }

    /// Elements and bytes per block, or nil when qlora cannot read the type.
    public var block: (elements: Int, bytes: Int)? {
        var e: Int64 = 0, b: Int64 = 0
        guard id <= UInt32(Int32.max), ql_ggml_block(Int32(id), &e, &b) != 0 else { return nil }
        return (Int(e), Int(b))
    }

    /// The types qlora reads, by name.
    public static var readable: [String] {
        names.keys.sorted().compactMap { GGMLType(id: $0).block != nil ? names[$0] : nil }
    }

    /// Bytes that `count` elements take, or nil if the type is unreadable or `count` is not a
    /// whole number of blocks (or the size overflows).
    public func byteCount(elements count: Int) -> Int? {
        guard let (e, b) = block, count >= 0, count % e == 0 else { return nil }
        let (n, o) = (count / e).multipliedReportingOverflow(by: b)
        return o ? nil : n
    }

    /// Decodes `count` elements from `bytes` (which must hold exactly byteCount(count) bytes)
    /// into `out`. Returns false for an unreadable type or a size mismatch.
    public func dequantize(_ bytes: UnsafeRawBufferPointer, count: Int, into out: UnsafeMutablePointer<Float>) -> Bool {
        guard let need = byteCount(elements: count), bytes.count == need else { return false }
        if count == 0 { return true }
        guard let base = bytes.baseAddress else { return false }
        return ql_ggml_dequantize(Int32(id), base, out, Int64(count)) != 0
    }

    /// The same into a new array.
    public func dequantize(_ bytes: [UInt8], count: Int) -> [Float]? {
        var out = [Float](repeating: 0, count: count)
        let ok = bytes.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { o in
            o.baseAddress.map { dequantize(b, count: count, into: $0) } ?? (count == 0)
        } }
        return ok ? out : nil
    }

    /// Quantizes `values` (a multiple of 32) to Q8_0 or Q4_0 blocks as ggml's reference does.
    public func quantize(_ values: UnsafeBufferPointer<Float>) -> [UInt8]? {
        guard self == .q8_0 || self == .q4_0, let need = byteCount(elements: values.count) else { return nil }
        var out = [UInt8](repeating: 0, count: need)
        if values.isEmpty { return out }
        let ok = out.withUnsafeMutableBytes { o in
            ql_ggml_quantize(Int32(id), values.baseAddress!, o.baseAddress!, Int64(values.count)) != 0
        }
        return ok ? out : nil
    }
}
