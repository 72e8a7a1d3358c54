// Safetensors reading: the dtype table (`SafetensorsDType`), one tensor's header record
// (`SafetensorsEntry`) and `SafetensorsFile`, which memory-maps a .safetensors file read-only,
// validates its header completely and hands out zero-copy views of tensor bytes.
//
// Format: 8-byte little-endian header length N, N bytes of UTF-8 JSON (an object; may be padded
// with trailing spaces), then the data section. Each tensor is
// `"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}` with offsets relative
// to the data section; an optional `"__metadata__"` maps strings to strings. Tensor data is
// little-endian, C order. Like the reference implementation (huggingface/safetensors), the
// tensors, sorted by offset, must tile the data section exactly: no overlaps, no holes and no
// trailing bytes after the last tensor.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Element types of the safetensors format.
public enum SafetensorsDType: String, CaseIterable, Sendable {
    case bool = "BOOL"
    case u8 = "U8"
    case i8 = "I8"
    case i16 = "I16"
    case u16 = "U16"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"
    case u32 = "U32"
    case f32 = "F32"
    case f64 = "F64"
    case i64 = "I64"
    case u64 = "U64"
    case f8E4M3 = "F8_E4M3"
    case f8E5M2 = "F8_E5M2"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f8E4M3, .f8E5M2: return 1
        case .i16, .u16, .f16, .bf16: return 2
        case .i32, .u32, .f32: return 4
        case .f64, .i64, .u64: return 8
        }
    }
}

/// One tensor as described by the header. `begin`/`end` are byte offsets relative to the start
/// of the data section; `end - begin == elementCount * dtype.byteSize`.
public struct SafetensorsEntry: Equatable, Sendable {
    public let name: String
    public let dtype: SafetensorsDType
    /// Dimensions; `[]` is a 0-d scalar (one element); a 0 anywhere means no elements.
    public let shape: [Int]
    public let begin: Int
    public let end: Int
    /// Product of `shape` (1 for a scalar).
    public let elementCount: Int

    /// `end - begin`.
    public var byteCount: Int { end - begin }
}

/// A read-only, memory-mapped safetensors file with a fully validated header.
///
/// `entries` are in header order (the order of the members of the header's JSON object; for
/// files from the reference writer and from `writeSafetensors` that is also data order).
/// Tensor bytes are served straight from the mapping; they stay valid while this object lives.
/// Data is little-endian and a tensor's bytes need not be aligned for its dtype (the format does
/// not require it), so read them with unaligned loads or copy them.
///
/// Thread-safe: immutable after `init`. (If another process truncates the file while it is
/// mapped, touching the lost pages raises SIGBUS; the format cannot guard against that.)
public final class SafetensorsFile: @unchecked Sendable {
    /// The path as passed to `init`.
    public let path: String
    /// Tensors in header order.
    public let entries: [SafetensorsEntry]
    /// The `__metadata__` object ([:] if absent).
    public let metadata: [String: String]
    /// Size of the whole file in bytes.
    public let fileSize: Int
    /// The header length N (JSON bytes including padding).
    public let headerLength: Int

    private let base: UnsafeRawPointer
    private let byName: [UTF8Key: Int]

    /// Offset of the data section in the file (8 + N).
    public var dataOffset: Int { 8 + headerLength }
    /// Size of the data section in bytes.
    public var dataSize: Int { fileSize - dataOffset }

    /// Largest header accepted, as in the reference implementation.
    public static let maxHeaderLength = 100_000_000

    /// Opens, maps and validates `path`. Throws an IOError naming the path on any problem: the
    /// file is missing, a directory or unreadable, or its header is malformed in any way (see
    /// the file comment for the rules).
    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            throw IOError(path: path, reason: "cannot open: \(errnoText(errno))")
        }
        defer { _ = close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 {
            throw IOError(path: path, reason: "cannot stat: \(errnoText(errno))")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw IOError(path: path, reason: "is a directory, not a safetensors file")
        }
        if (st.st_mode & S_IFMT) != S_IFREG {
            throw IOError(path: path, reason: "is not a regular file")
        }
        let size = Int(st.st_size)
        if size < 8 {
            throw IOError(
                path: path,
                reason: "file is \(size) bytes, too short for the 8-byte header length field")
        }
        guard let raw = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0),
            raw != UnsafeMutableRawPointer(bitPattern: -1)
        else {
            throw IOError(path: path, reason: "cannot memory-map: \(errnoText(errno))")
        }
        let base = UnsafeRawPointer(raw)
        let parsed: ParsedHeader
        do {
            parsed = try SafetensorsFile.parseHeader(
                UnsafeRawBufferPointer(start: base, count: size), path: path)
        } catch {
            munmap(raw, size)
            throw error
        }
        self.path = path
        self.base = base
        self.fileSize = size
        self.headerLength = parsed.headerLength
        self.entries = parsed.entries
        self.metadata = parsed.metadata
        var byName = [UTF8Key: Int](minimumCapacity: parsed.entries.count)
        for (i, e) in parsed.entries.enumerated() { byName[UTF8Key(e.name)] = i }
        self.byName = byName
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), fileSize)
    }

    /// Tensor names in header order.
    public var names: [String] { entries.map { $0.name } }

    /// The entry called `name` (exact UTF-8 match), if any.
    public func entry(named name: String) -> SafetensorsEntry? {
        guard let i = byName[UTF8Key(name)] else { return nil }
        return entries[i]
    }

    /// Zero-copy view of a tensor's bytes, valid while this SafetensorsFile lives. `entry` must
    /// come from this file; one whose range lies outside the data section gets an empty buffer.
    public func bytes(of entry: SafetensorsEntry) -> UnsafeRawBufferPointer {
        // An entry from another file could point outside this mapping: give it no bytes.
        guard entry.begin >= 0 && entry.begin <= entry.end && entry.end <= dataSize else {
            return UnsafeRawBufferPointer(start: nil, count: 0)
        }
        return UnsafeRawBufferPointer(start: base + dataOffset + entry.begin, count: entry.byteCount)
    }

    /// Drops a tensor's pages from this process's memory once it has been read for the last time
    /// through the mapping (e.g. quantized or converted into a buffer of its own): the whole pages
    /// inside its range leave the resident set (they stay in the page cache and are read back if
    /// touched again). Pages shared with a neighbouring tensor stay.
    public func release(_ entry: SafetensorsEntry) {
        let bytes = self.bytes(of: entry)
        guard let start = bytes.baseAddress, bytes.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard page > 0 else { return }
        let lo = (Int(bitPattern: start) + page - 1) / page * page
        let hi = (Int(bitPattern: start) + bytes.count) / page * page
        if hi > lo, let p = UnsafeMutableRawPointer(bitPattern: lo) { _ = madvise(p, hi - lo, Int32(MADV_DONTNEED)) }
    }

    /// A copy of a tensor's bytes (usable after this SafetensorsFile is gone).
    public func copyBytes(of entry: SafetensorsEntry) -> [UInt8] {
        Array(bytes(of: entry))
    }

    /// Zero-copy view of the named tensor's bytes, or nil if there is no such tensor.
    public func bytes(named name: String) -> UnsafeRawBufferPointer? {
        guard let e = entry(named: name) else { return nil }
        return bytes(of: e)
    }

    /// The whole mapped file (header included).
    public var mappedBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base, count: fileSize)
    }

    /// The data section.
    public var dataSection: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + dataOffset, count: dataSize)
    }

    // MARK: - Header validation

    struct ParsedHeader {
        var headerLength: Int
        var entries: [SafetensorsEntry]
        var metadata: [String: String]
    }

    /// Validates the header of a whole file image. Every failure is an IOError naming `path`.
    static func parseHeader(_ file: UnsafeRawBufferPointer, path: String) throws -> ParsedHeader {
        func bad(_ reason: String) -> IOError { IOError(path: path, reason: reason) }

        let size = file.count
        guard size >= 8 else {
            throw bad("file is \(size) bytes, too short for the 8-byte header length field")
        }
        var n64: UInt64 = 0
        for i in (0..<8).reversed() { n64 = n64 << 8 | UInt64(file[i]) }
        if n64 > UInt64(size - 8) {
            throw bad("header length \(n64) exceeds the file size (\(size) bytes)")
        }
        let n = Int(n64)
        if n > maxHeaderLength {
            throw bad("header length \(n) is larger than the \(maxHeaderLength)-byte limit")
        }
        if n == 0 {
            throw bad("header is empty (header length 0)")
        }
        let header = UnsafeRawBufferPointer(rebasing: file[8..<(8 + n)])
        if header[0] != 0x7B {
            throw bad("header is not a JSON object (does not start with '{')")
        }
        let json: JSONValue
        do {
            json = try JSONValue.parse(header, duplicateKeys: .reject)
        } catch let e as JSONParseError {
            if e.reason.hasPrefix("duplicate key") {
                throw bad(
                    "header has a \(e.reason) (tensor names and entry fields must be unique)")
            }
            throw bad("header is not valid JSON: \(e.reason) (at header byte \(e.offset))")
        }
        guard case .object(let top) = json else {
            throw bad("header is not a JSON object")
        }

        let dataSize = size - 8 - n
        var entries: [SafetensorsEntry] = []
        entries.reserveCapacity(top.count)
        var metadata: [String: String] = [:]

        for (name, value) in top {
            if utf8Equal(name, "__metadata__") {
                guard case .object(let meta) = value else {
                    throw bad("\"__metadata__\" is not a JSON object of strings")
                }
                for (k, v) in meta {
                    guard case .string(let s) = v else {
                        throw bad(
                            "\"__metadata__\" value for \(quoted(k)) is not a string (found \(truncatedJSON(v)))"
                        )
                    }
                    metadata[k] = s
                }
                continue
            }
            let tensor = "tensor \(quoted(name))"
            guard case .object(let info) = value else {
                throw bad("\(tensor): entry is not a JSON object (found \(truncatedJSON(value)))")
            }
            // dtype
            guard let dtypeValue = info["dtype"] else { throw bad("\(tensor): missing \"dtype\"") }
            guard case .string(let dtypeName) = dtypeValue else {
                throw bad("\(tensor): \"dtype\" is not a string (found \(truncatedJSON(dtypeValue)))")
            }
            guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
                throw bad("\(tensor): unknown dtype \(quoted(dtypeName))")
            }
            // shape
            guard let shapeValue = info["shape"] else { throw bad("\(tensor): missing \"shape\"") }
            guard case .array(let dims) = shapeValue else {
                throw bad("\(tensor): \"shape\" is not an array (found \(truncatedJSON(shapeValue)))")
            }
            var shape: [Int] = []
            shape.reserveCapacity(dims.count)
            for d in dims {
                guard case .int(let v) = d, v >= 0, let dim = Int(exactly: v) else {
                    throw bad(
                        "\(tensor): shape dimension \(truncatedJSON(d)) is not a non-negative integer")
                }
                shape.append(dim)
            }
            // data_offsets
            guard let offsetsValue = info["data_offsets"] else {
                throw bad("\(tensor): missing \"data_offsets\"")
            }
            guard case .array(let offs) = offsetsValue, offs.count == 2,
                case .int(let b64) = offs[0], b64 >= 0, let begin = Int(exactly: b64),
                case .int(let e64) = offs[1], e64 >= 0, let end = Int(exactly: e64)
            else {
                throw bad(
                    "\(tensor): \"data_offsets\" must be [begin, end] with non-negative integers (found \(truncatedJSON(offsetsValue)))"
                )
            }
            // sizes
            var count = 1
            for dim in shape {
                let (p, o) = count.multipliedReportingOverflow(by: dim)
                if o {
                    throw bad("\(tensor): shape \(shape) has too many elements (overflow)")
                }
                count = p
            }
            let (byteCount, o) = count.multipliedReportingOverflow(by: dtype.byteSize)
            if o {
                throw bad("\(tensor): byte size of dtype \(dtype.rawValue) and shape \(shape) overflows")
            }
            if end < begin {
                throw bad("\(tensor): data_offsets [\(begin), \(end)] end before they begin")
            }
            if end - begin != byteCount {
                throw bad(
                    "\(tensor) data_offsets [\(begin), \(end)] do not match dtype \(dtype.rawValue) and shape \(shape) (\(byteCount) bytes)"
                )
            }
            if end > dataSize {
                throw bad(
                    "\(tensor): data_offsets [\(begin), \(end)] extend beyond the data section (\(dataSize) bytes)"
                )
            }
            entries.append(
                SafetensorsEntry(
                    name: name, dtype: dtype, shape: shape, begin: begin, end: end,
                    elementCount: count))
        }

        // Sorted by offset, the tensors must tile [0, dataSize) exactly.
        let order = entries.indices.sorted {
            (entries[$0].begin, entries[$0].end) < (entries[$1].begin, entries[$1].end)
        }
        var covered = 0
        var previous: Int? = nil
        for i in order {
            let e = entries[i]
            if e.begin < covered, let p = previous {
                let q = entries[p]
                throw bad(
                    "tensor \(quoted(e.name)) data_offsets [\(e.begin), \(e.end)] overlap tensor \(quoted(q.name)) [\(q.begin), \(q.end)]"
                )
            }
            if e.begin > covered {
                throw bad(
                    "hole in the data section: no tensor covers bytes [\(covered), \(e.begin)) (before tensor \(quoted(e.name)))"
                )
            }
            covered = e.end
            previous = i
        }
        if covered != dataSize {
            throw bad(
                "data section is \(dataSize) bytes but the tensors cover only \(covered): \(dataSize - covered) trailing bytes"
            )
        }
        return ParsedHeader(headerLength: n, entries: entries, metadata: metadata)
    }
}

/// Compact JSON of a value for error messages, cut to a readable length.
func truncatedJSON(_ v: JSONValue) -> String {
    let s = v.serialized()
    if s.utf8.count <= 60 { return s }
    return String(decoding: Array(s.utf8.prefix(57)), as: UTF8.self) + "..."
}
