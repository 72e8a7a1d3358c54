// Reading tokenizer.json (and the model directory's config files) field by field: every
// accessor checks the JSON type and throws an IOError naming the file and the field
// ("model.vocab["abc"]: expected an integer id, got "x""), so no malformed file can crash.
// Also the byte-keyed dictionary key and the UTF-8 helpers the tokenizer files share.

/// Field accessors for one JSON file; errors are IOError(path: file, reason: "<field>: <problem>").
struct TokenizerFields {
    let path: String

    func fail(_ field: String, _ problem: String) -> IOError {
        IOError(path: path, reason: field.isEmpty ? problem : "\(field): \(problem)")
    }

    func object(_ v: JSONValue?, _ field: String) throws -> JSONObject {
        guard let v else { throw fail(field, "missing (expected an object)") }
        guard let o = v.objectValue else { throw fail(field, "expected an object, got \(tokDescribe(v))") }
        return o
    }

    func array(_ v: JSONValue?, _ field: String) throws -> [JSONValue] {
        guard let v else { throw fail(field, "missing (expected an array)") }
        guard let a = v.arrayValue else { throw fail(field, "expected an array, got \(tokDescribe(v))") }
        return a
    }

    func string(_ v: JSONValue?, _ field: String) throws -> String {
        guard let v else { throw fail(field, "missing (expected a string)") }
        guard let s = v.stringValue else { throw fail(field, "expected a string, got \(tokDescribe(v))") }
        return s
    }

    /// A string, or nil when absent or null.
    func optString(_ v: JSONValue?, _ field: String) throws -> String? {
        guard let v, !v.isNull else { return nil }
        return try string(v, field)
    }

    /// A boolean, or `def` when absent or null.
    func bool(_ v: JSONValue?, _ field: String, default def: Bool) throws -> Bool {
        guard let v, !v.isNull else { return def }
        guard let b = v.boolValue else { throw fail(field, "expected true or false, got \(tokDescribe(v))") }
        return b
    }

    /// A non-negative integer no larger than `max`, or `def` when absent or null.
    func count(_ v: JSONValue?, _ field: String, default def: Int, max: Int = 1 << 30) throws -> Int {
        guard let v, !v.isNull else { return def }
        guard let i = v.intValue else { throw fail(field, "expected an integer, got \(tokDescribe(v))") }
        guard i >= 0 && i <= max else { throw fail(field, "\(i) is out of range (0...\(max))") }
        return i
    }

    /// A token id: an integer in 0..<Tokenizer.maxId.
    func id(_ v: JSONValue?, _ field: String) throws -> Int {
        guard let v else { throw fail(field, "missing (expected an integer id)") }
        guard case .int(let i) = v else { throw fail(field, "expected an integer id, got \(tokDescribe(v))") }
        guard i >= 0 && i < Int64(Tokenizer.maxId) else {
            throw fail(field, "id \(i) is out of range (ids must be in 0..<\(Tokenizer.maxId))")
        }
        return Int(i)
    }

    /// The component's "type" string ("BPE", "Sequence", ...).
    func type(_ o: JSONObject, _ field: String) throws -> String {
        try string(o["type"], field + ".type")
    }

    /// A pattern object {"String": "..."} or {"Regex": "..."}.
    func pattern(_ v: JSONValue?, _ field: String) throws -> TokPattern {
        let o = try object(v, field)
        if let s = o["String"] { return .literal(Array(try string(s, field + ".String").utf8)) }
        if let r = o["Regex"] {
            let text = try string(r, field + ".Regex")
            do {
                return .regex(try TokenRegex(pattern: text))
            } catch let e as TokenRegexError {
                throw fail(field + ".Regex", e.message)
            }
        }
        throw fail(field, "expected {\"String\": ...} or {\"Regex\": ...}, got keys \(o.keys)")
    }

    /// A single character (Unicode scalar) given as a one-character string.
    func character(_ v: JSONValue?, _ field: String) throws -> Unicode.Scalar {
        let s = try string(v, field)
        let scalars = Array(s.unicodeScalars)
        guard scalars.count == 1 else { throw fail(field, "expected a single character, got \(quoted(s))") }
        return scalars[0]
    }
}

/// A short description of a JSON value for error messages.
func tokDescribe(_ v: JSONValue) -> String {
    switch v {
    case .null: return "null"
    case .bool(let b): return b ? "true" : "false"
    case .int(let i): return "\(i)"
    case .double(let d): return "\(d)"
    case .string(let s): return s.count > 40 ? quoted(String(s.prefix(40)) + "...") : quoted(s)
    case .array: return "an array"
    case .object: return "an object"
    }
}

// MARK: - Bytes

/// A dictionary key comparing and hashing raw bytes (Swift String equality would merge
/// canonically equivalent spellings, which a vocabulary must keep apart).
struct TokBytes: Hashable {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    init(_ s: String) { bytes = Array(s.utf8) }

    static func == (a: TokBytes, b: TokBytes) -> Bool { a.bytes == b.bytes }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

/// Decodes the UTF-8 scalar starting at `i` of a valid UTF-8 buffer: (value, byte length).
@inline(__always)
func tokUTF8Scalar(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> (UInt32, Int) {
    let b0 = UInt32(p[i])
    if b0 < 0x80 { return (b0, 1) }
    let n = p.count
    if b0 < 0xE0, i + 1 < n { return ((b0 & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F), 2) }
    if b0 < 0xF0, i + 2 < n {
        return ((b0 & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F), 3)
    }
    if i + 3 < n {
        return ((b0 & 0x07) << 18 | UInt32(p[i + 1] & 0x3F) << 12 | UInt32(p[i + 2] & 0x3F) << 6
            | UInt32(p[i + 3] & 0x3F), 4)
    }
    return (0xFFFD, 1)  // truncated sequence: cannot happen for bytes from a Swift String
}

/// Byte length of the UTF-8 sequence whose lead byte is `b`.
@inline(__always)
func tokUTF8Length(_ b: UInt8) -> Int {
    b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4
}

/// Appends the UTF-8 encoding of scalar `u`.
@inline(__always)
func tokAppendUTF8(_ u: UInt32, to out: inout [UInt8]) {
    if u < 0x80 {
        out.append(UInt8(u))
    } else if u < 0x800 {
        out.append(UInt8(0xC0 | (u >> 6)))
        out.append(UInt8(0x80 | (u & 0x3F)))
    } else if u < 0x10000 {
        out.append(UInt8(0xE0 | (u >> 12)))
        out.append(UInt8(0x80 | ((u >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (u & 0x3F)))
    } else {
        out.append(UInt8(0xF0 | (u >> 18)))
        out.append(UInt8(0x80 | ((u >> 12) & 0x3F)))
        out.append(UInt8(0x80 | ((u >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (u & 0x3F)))
    }
}

/// The scalars of valid UTF-8 bytes.
func tokScalars(_ bytes: [UInt8]) -> [UInt32] {
    var out: [UInt32] = []
    out.reserveCapacity(bytes.count)
    bytes.withUnsafeBufferPointer { p in
        var i = 0
        while i < p.count {
            let (u, l) = tokUTF8Scalar(p, i)
            out.append(u)
            i += l
        }
    }
    return out
}

/// Lossy UTF-8 decoding (each maximal invalid subsequence becomes U+FFFD, as Rust's
/// `String::from_utf8_lossy` does), returned as valid UTF-8 bytes.
func tokLossyUTF8(_ bytes: [UInt8]) -> [UInt8] {
    Array(String(decoding: bytes, as: UTF8.self).utf8)
}

/// Strict UTF-8 validity.
func tokIsValidUTF8(_ bytes: [UInt8]) -> Bool {
    var it = bytes.makeIterator()
    var decoder = UTF8()
    while true {
        switch decoder.decode(&it) {
        case .scalarValue: continue
        case .emptyInput: return true
        case .error: return false
        }
    }
}

/// Unicode White_Space (Rust's `char::is_whitespace`, regex `\s`, Oniguruma's Unicode `\s`).
@inline(__always)
func tokIsWhiteSpace(_ u: UInt32) -> Bool {
    if u < 0x80 { return u == 0x20 || (u >= 0x09 && u <= 0x0D) }
    guard let s = Unicode.Scalar(u) else { return false }
    return s.properties.isWhitespace
}
