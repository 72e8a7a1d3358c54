// The 4-bit formats qlora quantizes to (NF4, FP4 as bitsandbytes defines them) and the options
// of one quantization: type, block size, double quantization, each validated once here.

import CKernels

public enum QuantType: String, CaseIterable {
    case nf4, fp4

    /// The format number the C kernels take.
    public var kernelCode: Int32 { self == .nf4 ? Int32(QL_Q_NF4.rawValue) : Int32(QL_Q_FP4.rawValue) }

    /// The 16 code values, indexed by the 4-bit code.
    public var code: [Float] {
        guard let p = ql_quant_code(kernelCode) else { return [] }
        return Array(UnsafeBufferPointer(start: p, count: 16))
    }
}

public struct QuantOptions: Equatable {
    public var type: QuantType
    public var block: Int
    public var doubleQuant: Bool

    public static let blockRange = 32...4096

    public init(type: QuantType = .nf4, block: Int = 64, doubleQuant: Bool = true) throws {
        if !QuantOptions.blockRange.contains(block) || block & (block - 1) != 0 {
            throw QuantError("block size must be a power of two from 32 to 4096, got \(block)")
        }
        self.type = type
        self.block = block
        self.doubleQuant = doubleQuant
    }

    /// bitsandbytes' default block of 64 (always valid, so this cannot fail).
    public static func defaultBlock(_ type: QuantType, doubleQuant: Bool) -> QuantOptions {
        QuantOptions(checked: type, block: 64, doubleQuant: doubleQuant)
    }

    private init(checked type: QuantType, block: Int, doubleQuant: Bool) {
        self.type = type
        self.block = block
        self.doubleQuant = doubleQuant
    }
}

extension QuantOptions {
    /// Bytes a tensor of `count` elements takes in this format, as `QuantizedTensor.byteCount`
    /// counts them: packed nibbles plus one f32 absmax per block, or with double quantization one
    /// u8 code per block plus one f32 per 256 blocks (the fixed code tables are not counted).
    public func storageBytes(count: Int) -> Int {
        let blocks = (count + block - 1) / block
        let absmax = doubleQuant ? blocks + (blocks + 255) / 256 * 4 : blocks * 4
        return (count + 1) / 2 + absmax
    }
}

public struct QuantError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
