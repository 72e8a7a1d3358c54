// A 4-bit quantized tensor in bitsandbytes' layout: packed nibbles (high nibble first), one absmax
// per block, or with double quantization 8-bit absmax codes plus nested absmax, the 256-entry
// dynamic code and the offset. Quantize, dequantize, sizes, and export/import of the parts.

import CKernels
import Foundation
import Tensor

public final class QuantizedTensor {
    public let options: QuantOptions
    public let shape: [Int]
    public let count: Int
    /// u8 [(count + 1) / 2]
    public let packed: Tensor
    /// f32 [nblocks] (plain absmax), nil with double quantization
    public let absmax: Tensor?
    /// Double quantization: u8 [nblocks], f32 [ceil(nblocks / 256)], f32 [256], and the offset.
    public let absmaxCodes: Tensor?
    public let nestedAbsmax: Tensor?
    public let nestedCode: Tensor?
    public let offset: Float

    public var type: QuantType { options.type }
    public var block: Int { options.block }
    public var nblocks: Int { (count + block - 1) / block }

    init(options: QuantOptions, shape: [Int], count: Int, packed: Tensor, absmax: Tensor?,
         absmaxCodes: Tensor?, nestedAbsmax: Tensor?, nestedCode: Tensor?, offset: Float) {
        self.options = options
        self.shape = shape
        self.count = count
        self.packed = packed
        self.absmax = absmax
        self.absmaxCodes = absmaxCodes
        self.nestedAbsmax = nestedAbsmax
        self.nestedCode = nestedCode
        self.offset = offset
    }

    /// Quantizes any floating tensor (its values are read as f32).
    public static func quantize(_ t: Tensor, _ options: QuantOptions) throws -> QuantizedTensor {
        if !t.dtype.isFloat { throw QuantError("expected a floating tensor, got \(t.dtype.name)") }
        let x = try t.asF32()
        let n = t.count
        let nb = (n + options.block - 1) / options.block
        let packed = try Tensor(shape: [(n + 1) / 2], dtype: .u8, zeroed: false)
        let absmax = try Tensor(shape: [nb], dtype: .f32, zeroed: false)
        ql_quantize_4bit(options.type.kernelCode, x.f32, Int64(n), Int64(options.block), packed.raw.assumingMemoryBound(to: UInt8.self), absmax.f32)
        if !options.doubleQuant {
            return QuantizedTensor(options: options, shape: t.shape, count: n, packed: packed, absmax: absmax,
                                   absmaxCodes: nil, nestedAbsmax: nil, nestedCode: nil, offset: 0)
        }
        let codes = try Tensor(shape: [nb], dtype: .u8, zeroed: false)
        let nested = try Tensor(shape: [(nb + 255) / 256], dtype: .f32, zeroed: false)
        let code = try Tensor(shape: [256], dtype: .f32, zeroed: false)
        var offset: Float = 0
        ql_dynamic_map(code.f32)
        ql_double_quantize(absmax.f32, Int64(nb), codes.raw.assumingMemoryBound(to: UInt8.self), nested.f32, &offset)
        return QuantizedTensor(options: options, shape: t.shape, count: n, packed: packed, absmax: nil,
                               absmaxCodes: codes, nestedAbsmax: nested, nestedCode: code, offset: offset)
    }

    /// The per-block absmax as f32 (restored from the 8-bit codes with double quantization).
    public func blockAbsmax() throws -> Tensor {
        if let a = absmax { return a }
        guard let codes = absmaxCodes, let nested = nestedAbsmax, let code = nestedCode else {
            throw QuantError("quantized tensor has no absmax")
        }
        let out = try Tensor(shape: [nblocks], dtype: .f32, zeroed: false)
        ql_double_dequantize(codes.raw.assumingMemoryBound(to: UInt8.self), nested.f32, code.f32, offset, Int64(nblocks), out.f32)
        return out
    }

    /// The f32 values, in the original shape.
    public func dequantize() throws -> Tensor {
        let a = try blockAbsmax()
        let out = try Tensor(shape: shape, dtype: .f32, zeroed: false)
        ql_dequantize_4bit(type.kernelCode, packed.raw.assumingMemoryBound(to: UInt8.self), a.f32, Int64(count), Int64(block), out.f32)
        return out
    }

    /// Bytes of storage that scale with the weight: packed nibbles plus absmax (or its codes and
    /// nested absmax). The fixed 16- and 256-entry code tables and the offset are not counted.
    public var byteCount: Int {
        var b = packed.byteCount
        if let a = absmax { b += a.byteCount }
        if let c = absmaxCodes { b += c.byteCount }
        if let n = nestedAbsmax { b += n.byteCount }
        return b
    }

    /// Storage bits per element (4.5 for NF4 at block 64; 4.127 with double quantization).
    public var bitsPerParam: Double { count == 0 ? 0 : Double(byteCount * 8) / Double(count) }

    /// The parts in bitsandbytes' layout: packed, absmax or (absmax_q, nested_absmax,
    /// nested_code, offset), and code.
    public func export() throws -> [(String, Tensor)] {
        var out: [(String, Tensor)] = [("packed", packed)]
        if let a = absmax { out.append(("absmax", a)) }
        if let c = absmaxCodes, let n = nestedAbsmax, let code = nestedCode {
            out.append(("absmax_q", c))
            out.append(("nested_absmax", n))
            out.append(("nested_code", code))
            out.append(("offset", try Tensor([offset], shape: [1])))
        }
        out.append(("code", try Tensor(type.code, shape: [16])))
        return out
    }

    /// Rebuilds a quantized tensor from exported parts, checking every size. The parts are copied
    /// unless `copy` is false: then the tensor keeps their storage (the model loader passes bytes
    /// borrowed from a mapped file, which every process loading that file then shares).
    public static func fromParts(_ parts: [String: Tensor], shape: [Int], _ options: QuantOptions,
                                 copy: Bool = true) throws -> QuantizedTensor {
        let n = try Shape.numel(shape, "qlora.quantized")
        let nb = (n + options.block - 1) / options.block
        func part(_ name: String, _ dtype: DType, _ count: Int) throws -> Tensor {
            guard let t = parts[name] else { throw QuantError("missing '\(name)'") }
            if t.dtype != dtype { throw QuantError("'\(name)' must be \(dtype.name), got \(t.dtype.name)") }
            if t.count != count { throw QuantError("'\(name)' must have \(count) elements for shape \(Shape.describe(shape)) at block \(options.block), got \(t.count)") }
            return copy ? try t.copy() : t
        }
        let packed = try part("packed", .u8, (n + 1) / 2)
        if options.doubleQuant {
            let codes = try part("absmax_q", .u8, nb)
            let nested = try part("nested_absmax", .f32, (nb + 255) / 256)
            let code = try part("nested_code", .f32, 256)
            let off = try part("offset", .f32, 1)
            return QuantizedTensor(options: options, shape: shape, count: n, packed: packed, absmax: nil, absmaxCodes: codes,
                                   nestedAbsmax: nested, nestedCode: code, offset: off.f32[0])
        }
        let absmax = try part("absmax", .f32, nb)
        return QuantizedTensor(options: options, shape: shape, count: n, packed: packed, absmax: absmax,
                               absmaxCodes: nil, nestedAbsmax: nil, nestedCode: nil, offset: 0)
    }

    /// The kernels' view of this tensor as a [rows, cols] weight matrix (valid inside body).
    public func withWeight<T>(_ body: (UnsafePointer<ql_qweight>) throws -> T) throws -> T {
        if shape.count != 2 { throw QuantError("expected a 2-d quantized weight, got shape \(Shape.describe(shape))") }
        var w = ql_qweight()
        w.type = type.kernelCode
        w.rows = Int64(shape[0])
        w.cols = Int64(shape[1])
        w.block = Int64(block)
        w.packed = UnsafePointer(packed.raw.assumingMemoryBound(to: UInt8.self))
        w.absmax = absmax.map { UnsafePointer($0.f32) }
        w.absmax_q = absmaxCodes.map { UnsafePointer($0.raw.assumingMemoryBound(to: UInt8.self)) }
        w.nested_absmax = nestedAbsmax.map { UnsafePointer($0.f32) }
        w.nested_code = nestedCode.map { UnsafePointer($0.f32) }
        w.offset = offset
        return try withExtendedLifetime(self) { try withUnsafePointer(to: &w) { try body($0) } }
    }
}

/// Quantization error of a tensor: root mean square, max absolute error, signal to noise in dB.
public struct QuantErrorStats {
    public var rmse: Double
    public var maxAbs: Double
    public var snrDb: Double

    public static func measure(_ original: Tensor, _ q: QuantizedTensor) throws -> QuantErrorStats {
        let x = try original.asF32()
        let y = try q.dequantize()
        var se = 0.0, sx = 0.0, mx = 0.0
        for i in 0..<x.count {
            let a = Double(x.f32[i]), e = a - Double(y.f32[i])
            se += e * e; sx += a * a; mx = max(mx, abs(e))
        }
        let n = Double(max(x.count, 1))
        let snr = se == 0 ? Double.infinity : 10 * log10(sx / se)
        return QuantErrorStats(rmse: (se / n).squareRoot(), maxAbs: mx, snrDb: snr)
    }
}
