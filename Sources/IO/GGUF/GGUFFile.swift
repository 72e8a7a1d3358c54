// Reading GGUF files (versions 2 and 3), as llama.cpp writes them: magic "GGUF", version,
// tensor and metadata counts, the metadata key/values, the tensor infos (name, dims with the
// fastest-varying first, ggml type, offset), then the data section at the next multiple of
// general.alignment (32 by default). The file is memory-mapped read-only and every count, length,
// type, dimension and offset is checked before use: a truncated or lying file is an IOError that
// names the field, never a crash or an out-of-bounds read.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Tensor

/// One tensor of a GGUF file.
public struct GGUFTensorInfo: Equatable, Sendable {
    public let name: String
    public let type: GGMLType
    /// ggml's dims: ne[0] (the row length, contiguous) first.
    public let dims: [Int]
    /// Byte offset in the data section (a multiple of the alignment).
    public let offset: Int
    public let byteCount: Int
    /// Row-major shape as qlora and PyTorch write it: dims reversed ([rows, cols] for a matrix).
    public var shape: [Int] { dims.reversed() }
    public var elementCount: Int { dims.reduce(1, *) }
}

public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: Int
    /// Metadata keys in file order, and their values.
    public let keys: [String]
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    public let dataOffset: Int
    public let fileSize: Int
    private let index: [String: Int]
    private let base: UnsafeRawPointer?

    /// Limits no real file comes near; they keep a lying header from costing much before the
    /// file runs out.
    static let maxDims = 4
    static let maxStringBytes = 1 << 30
    static let maxArrayDepth = 3

    public convenience init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw IOError(path: path, reason: "cannot open: \(errnoText(errno))") }
        defer { _ = close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw IOError(path: path, reason: "cannot stat: \(errnoText(errno))") }
        if (st.st_mode & S_IFMT) != S_IFREG { throw IOError(path: path, reason: "is not a regular file") }
        let size = Int(st.st_size)
        if size == 0 { throw IOError(path: path, reason: "GGUF file is empty") }
        guard let raw = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), raw != MAP_FAILED else {
            throw IOError(path: path, reason: "cannot map: \(errnoText(errno))")
        }
        do {
            try self.init(path: path, mapping: UnsafeRawPointer(raw), size: size)
        } catch {
            munmap(raw, size)
            throw error
        }
    }

    /// Parses `size` mapped bytes at `mapping`; the object owns (and unmaps) them from here on.
    private init(path: String, mapping: UnsafeRawPointer, size: Int) throws {
        var r = GGUFCursor(UnsafeRawBufferPointer(start: mapping, count: size), path: path)
        let magic = try r.bytes(4, "magic")
        guard magic.elementsEqual("GGUF".utf8) else {
            throw IOError(path: path, reason: "not a GGUF file (magic is not \"GGUF\")")
        }
        let v = try r.u32("version")
        guard v == 2 || v == 3 else {
            throw IOError(path: path, reason: v == 1 ? "GGUF version 1 is not supported (qlora reads versions 2 and 3)"
                : "unsupported GGUF version \(v) (qlora reads versions 2 and 3; a big-endian file also looks like this)")
        }
        let tensorCount = try r.count("tensor_count", minItemBytes: 24)
        let kvCount = try r.count("metadata_kv_count", minItemBytes: 12)

        var keys: [String] = [], metadata: [String: GGUFValue] = [:]
        for i in 0..<kvCount {
            let key = try r.string("metadata key #\(i)")
            if metadata[key] != nil { throw IOError(path: path, reason: "metadata key \"\(key)\" appears twice") }
            let rawType = try r.u32("type of metadata \"\(key)\"")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw IOError(path: path, reason: "metadata \"\(key)\" has unknown value type \(rawType)")
            }
            metadata[key] = try r.value(type, field: "metadata \"\(key)\"", depth: 0)
            keys.append(key)
        }

        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard case .u32(let av) = a, av > 0, av & (av - 1) == 0, av <= 1 << 20 else {
                throw IOError(path: path, reason: "general.alignment must be a u32 power of two, got \(a)")
            }
            alignment = Int(av)
        }

        var infos: [(name: String, type: GGMLType, dims: [Int], offset: UInt64)] = []
        var seen = Set<String>()
        for i in 0..<tensorCount {
            let name = try r.string("name of tensor #\(i)")
            guard seen.insert(name).inserted else { throw IOError(path: path, reason: "tensor \"\(name)\" appears twice") }
            let nd = try r.u32("n_dims of tensor \"\(name)\"")
            guard nd >= 1, nd <= UInt32(GGUFFile.maxDims) else {
                throw IOError(path: path, reason: "tensor \"\(name)\" has \(nd) dimensions (1 to \(GGUFFile.maxDims) allowed)")
            }
            var dims: [Int] = []
            for d in 0..<Int(nd) {
                let x = try r.u64("dimension \(d) of tensor \"\(name)\"")
                guard x <= UInt64(Int32.max) else {
                    throw IOError(path: path, reason: "tensor \"\(name)\" dimension \(d) is \(x), too large")
                }
                dims.append(Int(x))
            }
            let type = GGMLType(id: try r.u32("type of tensor \"\(name)\""))
            let offset = try r.u64("offset of tensor \"\(name)\"")
            infos.append((name, type, dims, offset))
        }
        let headerEnd = r.position
        let dataOffset = (headerEnd + alignment - 1) / alignment * alignment
        guard dataOffset <= size else {
            throw IOError(path: path, reason: "truncated file: the data section would start at byte \(dataOffset), past the end (\(size) bytes)")
        }
        let dataSize = size - dataOffset

        var tensors: [GGUFTensorInfo] = []
        for t in infos {
            var n = 1
            for d in t.dims {
                let (p, o) = n.multipliedReportingOverflow(by: d)
                guard !o, p <= 1 << 40 else { throw IOError(path: path, reason: "tensor \"\(t.name)\" has too many elements") }
                n = p
            }
            guard let (blockElems, _) = t.type.block else {
                throw IOError(path: path, reason: "tensor \"\(t.name)\" has type \(t.type) (id \(t.type.id)), which qlora cannot read (it reads \(GGMLType.readable.joined(separator: ", ")))")
            }
            guard t.dims[0] % blockElems == 0, let bytes = t.type.byteCount(elements: n) else {
                throw IOError(path: path, reason: "tensor \"\(t.name)\": row length \(t.dims[0]) is not a multiple of the \(t.type) block (\(blockElems))")
            }
            guard t.offset % UInt64(alignment) == 0 else {
                throw IOError(path: path, reason: "offset of tensor \"\(t.name)\" (\(t.offset)) is not a multiple of the alignment \(alignment)")
            }
            guard t.offset <= UInt64(dataSize), bytes <= dataSize - Int(t.offset) else {
                throw IOError(path: path, reason: "tensor \"\(t.name)\" (offset \(t.offset), \(bytes) bytes) lies past the end of the file (data section holds \(dataSize) bytes)")
            }
            tensors.append(GGUFTensorInfo(name: t.name, type: t.type, dims: t.dims, offset: Int(t.offset), byteCount: bytes))
        }
        // Tensors may not overlap (llama.cpp lays them out back to back).
        let sorted = tensors.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw IOError(path: path, reason: "tensors \"\(a.name)\" and \"\(b.name)\" overlap")
        }

        self.path = path
        self.version = Int(v)
        self.keys = keys
        self.metadata = metadata
        self.tensors = tensors
        self.alignment = alignment
        self.dataOffset = dataOffset
        self.fileSize = size
        self.base = mapping
        var idx: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { idx[t.name] = i }
        self.index = idx
    }

    deinit {
        if let b = base { munmap(UnsafeMutableRawPointer(mutating: b), fileSize) }
    }

    public func info(_ name: String) -> GGUFTensorInfo? { index[name].map { tensors[$0] } }

    /// The bytes of a tensor, straight from the mapping (valid while this object lives).
    public func bytes(of t: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base.map { $0 + dataOffset + t.offset }, count: t.byteCount)
    }

    /// A tensor decoded to f32 with its row-major shape.
    public func tensor(_ name: String) throws -> Tensor {
        guard let t = info(name) else { throw IOError(path: path, reason: "missing tensor \"\(name)\"") }
        return try tensor(t)
    }

    public func tensor(_ t: GGUFTensorInfo) throws -> Tensor {
        let out = try Tensor(shape: t.shape, dtype: .f32, zeroed: false)
        let ok = t.type.dequantize(bytes(of: t), count: t.elementCount,
                                   into: out.raw.bindMemory(to: Float.self, capacity: max(1, t.elementCount)))
        if !ok { throw IOError(path: path, reason: "tensor \"\(t.name)\": cannot decode type \(t.type)") }
        return out
    }

    // Typed metadata accessors; errors name the key.
    public func string(_ key: String) throws -> String? {
        guard let v = metadata[key] else { return nil }
        guard let s = v.string else { throw IOError(path: path, reason: "metadata \(key) must be a string, got \(v.type.name)") }
        return s
    }

    public func int(_ key: String) throws -> Int? {
        guard let v = metadata[key] else { return nil }
        guard let i = v.int else { throw IOError(path: path, reason: "metadata \(key) must be an integer, got \(v.type.name) \(v)") }
        return i
    }

    public func double(_ key: String) throws -> Double? {
        guard let v = metadata[key] else { return nil }
        guard let d = v.double else { throw IOError(path: path, reason: "metadata \(key) must be a number, got \(v.type.name)") }
        return d
    }

    public func bool(_ key: String) throws -> Bool? {
        guard let v = metadata[key] else { return nil }
        guard let b = v.bool else { throw IOError(path: path, reason: "metadata \(key) must be a bool, got \(v.type.name)") }
        return b
    }

    public func array(_ key: String) throws -> [GGUFValue]? {
        guard let v = metadata[key] else { return nil }
        guard let a = v.array else { throw IOError(path: path, reason: "metadata \(key) must be an array, got \(v.type.name)") }
        return a
    }
}

/// A bounds-checked little-endian reader over the mapped header.
struct GGUFCursor {
    let buf: UnsafeRawBufferPointer
    let path: String
    var position = 0

    init(_ buf: UnsafeRawBufferPointer, path: String) {
        self.buf = buf
        self.path = path
    }

    func truncated(_ field: String) -> IOError {
        IOError(path: path, reason: "truncated file reading \(field) (at byte \(position) of \(buf.count))")
    }

    mutating func bytes(_ n: Int, _ field: String) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= buf.count - position else { throw truncated(field) }
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: buf[position..<position + n])
    }

    mutating func u8(_ f: String) throws -> UInt8 { try bytes(1, f)[0] }
    mutating func u16(_ f: String) throws -> UInt16 { UInt16(littleEndian: try bytes(2, f).loadUnaligned(as: UInt16.self)) }
    mutating func u32(_ f: String) throws -> UInt32 { UInt32(littleEndian: try bytes(4, f).loadUnaligned(as: UInt32.self)) }
    mutating func u64(_ f: String) throws -> UInt64 { UInt64(littleEndian: try bytes(8, f).loadUnaligned(as: UInt64.self)) }

    /// A u64 count of items that each take at least `minItemBytes`: more than the rest of the
    /// file could hold is an error now, not after a long loop.
    mutating func count(_ field: String, minItemBytes: Int) throws -> Int {
        let n = try u64(field)
        let room = UInt64((buf.count - position) / max(1, minItemBytes))
        guard n <= room else {
            throw IOError(path: path, reason: "\(field) is \(n), more than the \(buf.count) byte file can hold")
        }
        return Int(n)
    }

    mutating func string(_ field: String) throws -> String {
        let n = try u64("length of " + field)
        guard n <= UInt64(buf.count - position), n <= UInt64(GGUFFile.maxStringBytes) else {
            throw IOError(path: path, reason: "\(field): string length \(n) runs past the end of the file")
        }
        let b = try bytes(Int(n), field)
        // Invalid UTF-8 is repaired (U+FFFD), as llama.cpp treats these bytes as opaque.
        return String(decoding: b, as: UTF8.self)
    }

    mutating func value(_ type: GGUFValueType, field: String, depth: Int) throws -> GGUFValue {
        switch type {
        case .u8: return .u8(try u8(field))
        case .i8: return .i8(Int8(bitPattern: try u8(field)))
        case .u16: return .u16(try u16(field))
        case .i16: return .i16(Int16(bitPattern: try u16(field)))
        case .u32: return .u32(try u32(field))
        case .i32: return .i32(Int32(bitPattern: try u32(field)))
        case .u64: return .u64(try u64(field))
        case .i64: return .i64(Int64(bitPattern: try u64(field)))
        case .f32: return .f32(Float(bitPattern: try u32(field)))
        case .f64: return .f64(Double(bitPattern: try u64(field)))
        case .bool:
            let b = try u8(field)
            guard b <= 1 else { throw IOError(path: path, reason: "\(field): bool byte is \(b), expected 0 or 1") }
            return .bool(b == 1)
        case .string: return .string(try string(field))
        case .array:
            guard depth < GGUFFile.maxArrayDepth else {
                throw IOError(path: path, reason: "\(field): arrays nested deeper than \(GGUFFile.maxArrayDepth)")
            }
            let raw = try u32("element type of " + field)
            guard let et = GGUFValueType(rawValue: raw) else {
                throw IOError(path: path, reason: "\(field): unknown array element type \(raw)")
            }
            let n = try count("element count of " + field, minItemBytes: et.fixedSize ?? (et == .string ? 8 : 12))
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(et, field: field, depth: depth + 1)) }
            return .array(et, items)
        }
    }
}
