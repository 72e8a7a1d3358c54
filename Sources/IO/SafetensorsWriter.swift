// Safetensors writing: `SafetensorsTensorData` (one tensor to write: name, dtype, shape and its
// bytes) and `writeSafetensors`, which validates the tensors, builds the header and writes the
// file atomically (temporary file in the same directory, fsync, rename), tensor by tensor
// without gathering the data into one buffer.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One tensor to write. The bytes are the raw little-endian, C-order element data and must
/// number `elementCount * dtype.byteSize`. With the pointer form, the memory must stay valid
/// until `writeSafetensors` returns; nothing is copied.
public struct SafetensorsTensorData {
    public let name: String
    public let dtype: SafetensorsDType
    public let shape: [Int]

    enum Storage {
        case pointer(UnsafeRawBufferPointer)
        case array([UInt8])
    }
    let storage: Storage

    /// A tensor whose bytes live elsewhere (not copied).
    public init(name: String, dtype: SafetensorsDType, shape: [Int], bytes: UnsafeRawBufferPointer) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.storage = .pointer(bytes)
    }

    /// A tensor whose bytes are held in an array (convenient for small tensors).
    public init(name: String, dtype: SafetensorsDType, shape: [Int], data: [UInt8]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.storage = .array(data)
    }

    /// Number of bytes supplied.
    public var byteCount: Int {
        switch storage {
        case .pointer(let p): return p.count
        case .array(let a): return a.count
        }
    }

    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch storage {
        case .pointer(let p): return try body(p)
        case .array(let a): return try a.withUnsafeBytes(body)
        }
    }
}

/// Writes a safetensors file at `path`, replacing it atomically.
///
/// - Header: `__metadata__` first (if `metadata` is non-nil; its keys sorted), then the tensors
///   in the order given, with contiguous `data_offsets` in that order; compact JSON padded with
///   spaces so the header length (and so the data start) is a multiple of 8.
/// - Validation (before anything is written): every name unique (by UTF-8 bytes) and not
///   `"__metadata__"`, dims non-negative, byte count equal to elements * dtype size, no size
///   overflow.
/// - Atomicity: the file is written as `.<name>.tmp-<pid>-<random>` in the same directory,
///   fsynced, then renamed over `path` (and the directory fsynced). On any failure the
///   temporary file is removed and an IOError naming `path` is thrown; an existing file at
///   `path` is then left untouched.
public func writeSafetensors(
    path: String, tensors: [SafetensorsTensorData], metadata: [String: String]? = nil
) throws {
    func bad(_ reason: String) -> IOError { IOError(path: path, reason: reason) }

    // Validate and lay out.
    var header = JSONObject()
    if let metadata {
        var meta = JSONObject()
        for k in metadata.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            if let v = metadata[k] { meta[k] = .string(v) }
        }
        header["__metadata__"] = .object(meta)
    }
    var seen = Set<UTF8Key>()
    var offset = 0
    for t in tensors {
        let tensor = "tensor \(quoted(t.name))"
        if utf8Equal(t.name, "__metadata__") {
            throw bad("cannot write a tensor named \"__metadata__\" (reserved for metadata)")
        }
        if !seen.insert(UTF8Key(t.name)).inserted {
            throw bad("duplicate tensor name \(quoted(t.name))")
        }
        var count = 1
        for d in t.shape {
            if d < 0 { throw bad("\(tensor): negative dimension in shape \(t.shape)") }
            let (p, o) = count.multipliedReportingOverflow(by: d)
            if o { throw bad("\(tensor): shape \(t.shape) has too many elements (overflow)") }
            count = p
        }
        let (need, o1) = count.multipliedReportingOverflow(by: t.dtype.byteSize)
        if o1 { throw bad("\(tensor): byte size of shape \(t.shape) overflows") }
        if t.byteCount != need {
            throw bad(
                "\(tensor): \(t.byteCount) bytes given but dtype \(t.dtype.rawValue) and shape \(t.shape) need \(need)"
            )
        }
        let (end, o2) = offset.addingReportingOverflow(need)
        if o2 { throw bad("total data size overflows") }
        header[t.name] = .object([
            "dtype": .string(t.dtype.rawValue),
            "shape": .array(t.shape.map { .int(Int64($0)) }),
            "data_offsets": .array([.int(Int64(offset)), .int(Int64(end))]),
        ])
        offset = end
    }
    var headerBytes = JSONValue.object(header).serializedBytes()
    let padding = (8 - headerBytes.count % 8) % 8
    headerBytes.append(contentsOf: repeatElement(0x20, count: padding))
    var prefix = [UInt8](repeating: 0, count: 8)
    var n = UInt64(headerBytes.count)
    for i in 0..<8 {
        prefix[i] = UInt8(n & 0xFF)
        n >>= 8
    }

    // A temporary file beside the target, renamed into place (AtomicFile).
    try AtomicFile.write(path) { fd in
        try AtomicFile.writeAll(fd, prefix, path: path)
        try AtomicFile.writeAll(fd, headerBytes, path: path)
        for t in tensors {
            try t.withBytes { try AtomicFile.writeAll(fd, $0, path: path) }
        }
    }
}
