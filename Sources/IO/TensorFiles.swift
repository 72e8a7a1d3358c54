// Tensors to and from safetensors files. Reading maps the file and borrows the bytes of f32,
// bf16, f16, i32, i64 and u8 tensors without a copy (when aligned); other file dtypes are
// converted on read: F64 and F8 to f32, I8/I16/U16 to i32, U32/U64 to i64, BOOL to u8.

import Foundation
import Tensor

public enum TensorFiles {
    /// Every tensor of a safetensors file (in the file's header order) and its metadata.
    public static func load(_ path: String) throws -> (tensors: [(name: String, tensor: Tensor)], metadata: [String: String]) {
        let file = try SafetensorsFile(path: path)
        var out: [(String, Tensor)] = []
        out.reserveCapacity(file.entries.count)
        for e in file.entries {
            out.append((e.name, try tensor(file, e)))
        }
        return (out, file.metadata)
    }

    /// The tensor for one entry of an open file.
    public static func tensor(_ file: SafetensorsFile, _ e: SafetensorsEntry) throws -> Tensor {
        let bytes = file.bytes(of: e)
        let shape = e.shape
        func borrowed(_ d: DType) throws -> Tensor {
            if let base = bytes.baseAddress, Int(bitPattern: base) % d.byteSize == 0 {
                return try Tensor(storage: Storage(borrowing: base, byteCount: bytes.count, owner: file), dtype: d, shape: shape)
            }
            let t = try Tensor(shape: shape, dtype: d, zeroed: false)
            if let base = bytes.baseAddress { t.raw.copyMemory(from: base, byteCount: bytes.count) }
            return t
        }
        func converted(_ d: DType, _ value: (Int) -> Double) throws -> Tensor {
            let t = try Tensor(shape: shape, dtype: d, zeroed: false)
            for i in 0..<t.count { t.storeValue(value(i), at: i) }
            return t
        }
        func load<T>(_ type: T.Type, _ i: Int) -> T { bytes.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self) }
        switch e.dtype {
        case .f32: return try borrowed(.f32)
        case .bf16: return try borrowed(.bf16)
        case .f16: return try borrowed(.f16)
        case .i32: return try borrowed(.i32)
        case .i64: return try borrowed(.i64)
        case .u8: return try borrowed(.u8)
        case .bool: return try converted(.u8) { load(UInt8.self, $0) != 0 ? 1 : 0 }
        case .f64: return try converted(.f32) { load(Double.self, $0) }
        case .i8: return try converted(.i32) { Double(load(Int8.self, $0)) }
        case .i16: return try converted(.i32) { Double(load(Int16.self, $0)) }
        case .u16: return try converted(.i32) { Double(load(UInt16.self, $0)) }
        case .u32:
            let t = try Tensor(shape: shape, dtype: .i64, zeroed: false)
            for i in 0..<t.count { t.storeInteger(Int64(load(UInt32.self, i)), at: i) }
            return t
        case .u64:
            let t = try Tensor(shape: shape, dtype: .i64, zeroed: false)
            for i in 0..<t.count {
                let v = load(UInt64.self, i)
                if v > UInt64(Int64.max) {
                    throw IOError(path: file.path, reason: "tensor \"\(e.name)\" holds U64 value \(v), beyond what an i64 tensor can hold")
                }
                t.storeInteger(Int64(v), at: i)
            }
            return t
        case .f8E4M3: return try converted(.f32) { decodeE4M3(load(UInt8.self, $0)) }
        case .f8E5M2: return try converted(.f32) { decodeE5M2(load(UInt8.self, $0)) }
        }
    }

    /// Writes tensors atomically, with optional string metadata. Tensors are laid out by element
    /// size, widest first (otherwise in the order given), so each starts at a multiple of its
    /// element size and readers can use the mapped bytes in place instead of copying them.
    public static func save(_ path: String, _ tensors: [(name: String, tensor: Tensor)], metadata: [String: String]?) throws {
        let ordered = tensors.enumerated().sorted { a, b in
            let wa = a.element.tensor.dtype.byteSize, wb = b.element.tensor.dtype.byteSize
            return wa != wb ? wa > wb : a.offset < b.offset
        }.map { $0.element }
        let data = ordered.map { (name, t) in
            SafetensorsTensorData(name: name, dtype: fileDType(t.dtype), shape: t.shape,
                                  bytes: UnsafeRawBufferPointer(start: t.raw, count: t.byteCount))
        }
        try withExtendedLifetime(tensors) {
            try writeSafetensors(path: path, tensors: data, metadata: metadata)
        }
    }

    public static func fileDType(_ d: DType) -> SafetensorsDType {
        switch d {
        case .f32: return .f32
        case .bf16: return .bf16
        case .f16: return .f16
        case .i32: return .i32
        case .i64: return .i64
        case .u8: return .u8
        }
    }

    /// float8 e4m3fn: bias 7, no infinities, S.1111.111 is NaN.
    static func decodeE4M3(_ b: UInt8) -> Double {
        let sign: Double = b & 0x80 != 0 ? -1 : 1
        let e = Int((b >> 3) & 0xF), m = Double(b & 0x7)
        if e == 0xF && b & 0x7 == 0x7 { return .nan }
        if e == 0 { return sign * m / 8 * pow(2, -6) }
        return sign * (1 + m / 8) * pow(2, Double(e - 7))
    }

    /// float8 e5m2: bias 15, IEEE-like (the top byte of an f16).
    static func decodeE5M2(_ b: UInt8) -> Double {
        let sign: Double = b & 0x80 != 0 ? -1 : 1
        let e = Int((b >> 2) & 0x1F), m = Double(b & 0x3)
        if e == 0x1F { return m == 0 ? sign * .infinity : .nan }
        if e == 0 { return sign * m / 4 * pow(2, -14) }
        return sign * (1 + m / 4) * pow(2, Double(e - 15))
    }
}
