// Writing GGUF (version 3): metadata in the order given, tensor infos with offsets aligned to
// general.alignment (32), then the data section. The file is written to a temporary name in the
// same directory, fsynced and renamed into place, so a reader never sees half a file.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public struct GGUFWriter {
    public var metadata: [(key: String, value: GGUFValue)] = []
    public var tensors: [(name: String, type: GGMLType, dims: [Int], data: [UInt8])] = []
    public let alignment = 32

    public init() {}

    public mutating func set(_ key: String, _ value: GGUFValue) {
        if let i = metadata.firstIndex(where: { $0.key == key }) { metadata[i].value = value } else { metadata.append((key, value)) }
    }

    /// Adds a tensor given its row-major `shape` (stored reversed, ggml's way) and its bytes.
    public mutating func add(_ name: String, type: GGMLType, shape: [Int], data: [UInt8]) {
        tensors.append((name, type, Array(shape.reversed()), data))
    }

    /// The whole file as bytes.
    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func value(_ v: GGUFValue) {
            switch v {
            case .u8(let x): out.append(x)
            case .i8(let x): out.append(UInt8(bitPattern: x))
            case .u16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .i16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .u32(let x): u32(x)
            case .i32(let x): u32(UInt32(bitPattern: x))
            case .u64(let x): u64(x)
            case .i64(let x): u64(UInt64(bitPattern: x))
            case .f32(let x): u32(x.bitPattern)
            case .f64(let x): u64(x.bitPattern)
            case .bool(let b): out.append(b ? 1 : 0)
            case .string(let s): str(s)
            case .array(let t, let items):
                u32(t.rawValue)
                u64(UInt64(items.count))
                for i in items { value(i) }
            }
        }
        out.append(contentsOf: "GGUF".utf8)
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (k, v) in metadata {
            str(k)
            u32(v.type.rawValue)
            value(v)
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset += (t.data.count + alignment - 1) / alignment * alignment
        }
        for (t, off) in zip(tensors, offsets) {
            str(t.name)
            u32(UInt32(t.dims.count))
            for d in t.dims { u64(UInt64(d)) }
            u32(t.type.id)
            u64(UInt64(off))
        }
        out.append(contentsOf: repeatElement(0, count: (alignment - out.count % alignment) % alignment))
        for t in tensors {
            out.append(contentsOf: t.data)
            out.append(contentsOf: repeatElement(0, count: (alignment - t.data.count % alignment) % alignment))
        }
        return out
    }

    /// Writes the file atomically.
    public func write(to path: String) throws {
        try writeFileAtomically(path: path, bytes: encode())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, fsync and rename.
public func writeFileAtomically(path: String, bytes: [UInt8]) throws {
    let slash = path.utf8.lastIndex(of: 0x2F)
    let dirPrefix = slash.map { String(path[...$0]) } ?? ""
    let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
    if name.isEmpty || name == "." || name == ".." { throw IOError(path: path, reason: "not a file path") }
    let tmp = "\(dirPrefix).\(name).tmp-\(getpid())-\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    if fd < 0 { throw IOError(path: path, reason: "cannot create a temporary file: \(errnoText(errno))") }
    var ok = false
    defer { if !ok { _ = unlink(tmp) } }
    var done = 0
    let failure: String? = bytes.withUnsafeBytes { b -> String? in
        while done < b.count {
            let r = Glibc.write(fd, b.baseAddress! + done, min(b.count - done, 1 << 30))
            if r < 0 { if errno == EINTR { continue }; return "write failed: \(errnoText(errno))" }
            if r == 0 { return "write failed: no progress" }
            done += r
        }
        return nil
    }
    if let f = failure { _ = close(fd); throw IOError(path: path, reason: f) }
    if fsync(fd) != 0 { let e = errnoText(errno); _ = close(fd); throw IOError(path: path, reason: "fsync failed: \(e)") }
    if close(fd) != 0 { throw IOError(path: path, reason: "close failed: \(errnoText(errno))") }
    if rename(tmp, path) != 0 { throw IOError(path: path, reason: "cannot rename the temporary file into place: \(errnoText(errno))") }
    ok = true
}
