// The strict JSON parser (RFC 8259) behind `JSONValue.parse`: iterative (an explicit stack, so
// deeply nested input cannot overflow the call stack), depth-limited, UTF-8 validating, with
// exact number handling; errors carry the byte offset and a short reason.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What the parser does with a key repeated inside one object.
public enum JSONDuplicateKeyPolicy: Sendable {
    /// Throw a JSONParseError at the repeated key.
    case reject
    /// Keep the first position and the last value (like Python's `json`).
    case lastWins
}

/// A parse failure: byte offset into the input and a short reason.
public struct JSONParseError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Offset (0-based) of the byte where the problem was found.
    public let offset: Int
    /// A short lowercase description, e.g. "leading zero in number".
    public let reason: String

    public init(offset: Int, reason: String) {
        self.offset = offset
        self.reason = reason
    }

    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

extension JSONValue {
    /// Containers may nest at most this deep; deeper input is an error.
    public static let maxDepth = 512

    /// Parses one JSON document. Rules: exactly one value, optionally surrounded by whitespace
    /// (space, tab, CR, LF); no byte-order mark; strings must be valid UTF-8 without raw control
    /// characters, and `\u` escapes must form valid scalars (an unpaired surrogate is an error,
    /// since a Swift String cannot hold it); numbers follow the RFC grammar (no leading zeros,
    /// no `+`, no bare `.5`) and must be finite as a Double (1e400 is an error; 1e-400 is 0);
    /// nesting deeper than `maxDepth` is an error. Duplicate keys are rejected by default.
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, duplicateKeys: JSONDuplicateKeyPolicy = .reject
    ) throws -> JSONValue {
        guard let base = bytes.baseAddress, bytes.count > 0 else {
            throw JSONParseError(offset: 0, reason: "empty input")
        }
        var parser = JSONParser(
            base: base.assumingMemoryBound(to: UInt8.self), count: bytes.count,
            policy: duplicateKeys)
        return try parser.parseDocument()
    }

    /// Parses one JSON document from bytes (see the UnsafeRawBufferPointer overload).
    public static func parse(
        _ bytes: [UInt8], duplicateKeys: JSONDuplicateKeyPolicy = .reject
    ) throws -> JSONValue {
        try bytes.withUnsafeBytes { try parse($0, duplicateKeys: duplicateKeys) }
    }

    /// Parses one JSON document from text (see the UnsafeRawBufferPointer overload).
    public static func parse(
        _ text: String, duplicateKeys: JSONDuplicateKeyPolicy = .reject
    ) throws -> JSONValue {
        var text = text
        return try text.withUTF8 { try parse(UnsafeRawBufferPointer($0), duplicateKeys: duplicateKeys) }
    }

    /// Reads and parses a JSON file. Any failure (missing file, directory, unreadable, invalid
    /// JSON) throws an IOError naming `path`; for invalid JSON the reason holds the byte offset.
    public static func load(
        path: String, duplicateKeys: JSONDuplicateKeyPolicy = .reject
    ) throws -> JSONValue {
        let bytes = try readFileBytes(path: path)
        do {
            return try parse(bytes, duplicateKeys: duplicateKeys)
        } catch let e as JSONParseError {
            throw IOError(path: path, reason: e.description)
        }
    }
}

// MARK: - Implementation

private let quote: UInt8 = 0x22  // "
private let backslash: UInt8 = 0x5C
private let slash: UInt8 = 0x2F
private let comma: UInt8 = 0x2C
private let colon: UInt8 = 0x3A
private let openBrace: UInt8 = 0x7B
private let closeBrace: UInt8 = 0x7D
private let openBracket: UInt8 = 0x5B
private let closeBracket: UInt8 = 0x5D
private let minus: UInt8 = 0x2D
private let plus: UInt8 = 0x2B
private let dot: UInt8 = 0x2E
private let zero: UInt8 = 0x30
private let nine: UInt8 = 0x39

/// Exact powers of ten for the fast (Clinger) path: 10^0 ... 10^22 are exact in Double.
private let exactPowersOfTen: [Double] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
]

private struct Frame {
    var isObject: Bool
    /// Start of this container's pending items in `values` (array) or `members` (object).
    var start: Int
    /// Object: the key whose value is being parsed, and its offset (for error messages).
    var key: String = ""
    var keyOffset: Int = 0
    /// Object with many members: key -> position relative to `start`.
    var index: [UTF8Key: Int]? = nil
}

private struct JSONParser {
    let base: UnsafePointer<UInt8>
    let count: Int
    let policy: JSONDuplicateKeyPolicy
    var pos = 0
    var frames: [Frame] = []
    var values: [JSONValue] = []
    var members: [JSONObject.Element] = []
    var scratch: [UInt8] = []

    init(base: UnsafePointer<UInt8>, count: Int, policy: JSONDuplicateKeyPolicy) {
        self.base = base
        self.count = count
        self.policy = policy
    }

    @inline(__always)
    func fail(_ reason: String, at offset: Int? = nil) -> JSONParseError {
        JSONParseError(offset: offset ?? pos, reason: reason)
    }

    @inline(__always)
    mutating func skipWhitespace() {
        while pos < count {
            let c = base[pos]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 {
                pos += 1
            } else {
                return
            }
        }
    }

    func describeByte(at p: Int) -> String {
        guard p < count else { return "end of input" }
        let c = base[p]
        if c >= 0x21 && c < 0x7F { return "'\(Character(Unicode.Scalar(c)))'" }
        let hex = String(c, radix: 16, uppercase: true)
        return "byte 0x\(hex.count < 2 ? "0" + hex : hex)"
    }

    mutating func parseDocument() throws -> JSONValue {
        skipWhitespace()
        var value: JSONValue
        parseValue: while true {
            // Here `pos` is at the first byte of a value (whitespace already skipped).
            guard pos < count else { throw fail("unexpected end of input, expected a value") }
            let c = base[pos]
            switch c {
            case openBrace:
                try checkDepth()
                pos += 1
                skipWhitespace()
                if pos < count && base[pos] == closeBrace {
                    pos += 1
                    value = .object(JSONObject())
                } else {
                    frames.append(Frame(isObject: true, start: members.count))
                    try readKeyAndColon()
                    continue parseValue
                }
            case openBracket:
                try checkDepth()
                pos += 1
                skipWhitespace()
                if pos < count && base[pos] == closeBracket {
                    pos += 1
                    value = .array([])
                } else {
                    frames.append(Frame(isObject: false, start: values.count))
                    continue parseValue
                }
            case quote:
                value = .string(try parseString())
            case minus, zero...nine:
                value = try parseNumber()
            case 0x74:  // t
                try expectLiteral("true")
                value = .bool(true)
            case 0x66:  // f
                try expectLiteral("false")
                value = .bool(false)
            case 0x6E:  // n
                try expectLiteral("null")
                value = .null
            default:
                throw fail("unexpected \(describeByte(at: pos)), expected a value")
            }

            // A value is complete: hand it to the enclosing container(s).
            while true {
                let depth = frames.count
                if depth == 0 {
                    skipWhitespace()
                    if pos != count {
                        throw fail("unexpected \(describeByte(at: pos)) after the JSON value")
                    }
                    return value
                }
                if frames[depth - 1].isObject {
                    try addMember(value)
                    skipWhitespace()
                    guard pos < count else { throw fail("unexpected end of input in object") }
                    let d = base[pos]
                    if d == comma {
                        pos += 1
                        skipWhitespace()
                        try readKeyAndColon()
                        continue parseValue
                    } else if d == closeBrace {
                        pos += 1
                        value = .object(popObject())
                    } else {
                        throw fail("expected ',' or '}' in object, found \(describeByte(at: pos))")
                    }
                } else {
                    values.append(value)
                    skipWhitespace()
                    guard pos < count else { throw fail("unexpected end of input in array") }
                    let d = base[pos]
                    if d == comma {
                        pos += 1
                        skipWhitespace()
                        continue parseValue
                    } else if d == closeBracket {
                        pos += 1
                        value = .array(popArray())
                    } else {
                        throw fail("expected ',' or ']' in array, found \(describeByte(at: pos))")
                    }
                }
            }
        }
    }

    /// At an opening bracket or brace: the container it opens must not exceed `maxDepth`.
    func checkDepth() throws {
        if frames.count >= JSONValue.maxDepth {
            throw fail("nesting deeper than \(JSONValue.maxDepth) levels")
        }
    }

    mutating func readKeyAndColon() throws {
        guard pos < count, base[pos] == quote else {
            throw fail("expected a string key, found \(describeByte(at: pos))")
        }
        let keyOffset = pos
        let key = try parseString()
        skipWhitespace()
        guard pos < count, base[pos] == colon else {
            throw fail("expected ':' after object key, found \(describeByte(at: pos))")
        }
        pos += 1
        skipWhitespace()
        let top = frames.count - 1
        frames[top].key = key
        frames[top].keyOffset = keyOffset
    }

    mutating func addMember(_ value: JSONValue) throws {
        let top = frames.count - 1
        let start = frames[top].start
        let key = frames[top].key
        let n = members.count - start
        var existing: Int? = nil
        if frames[top].index != nil {
            existing = frames[top].index?[UTF8Key(key)]
        } else {
            var i = start
            while i < members.count {
                if utf8Equal(members[i].key, key) {
                    existing = i - start
                    break
                }
                i += 1
            }
        }
        if let e = existing {
            switch policy {
            case .reject:
                throw fail("duplicate key \(quoted(key))", at: frames[top].keyOffset)
            case .lastWins:
                members[start + e].value = value
                return
            }
        }
        members.append((key: key, value: value))
        if frames[top].index != nil {
            frames[top].index?[UTF8Key(key)] = n
        } else if n + 1 > JSONObject.indexThreshold {
            var idx = [UTF8Key: Int](minimumCapacity: 2 * (n + 1))
            for i in start..<members.count { idx[UTF8Key(members[i].key)] = i - start }
            frames[top].index = idx
        }
    }

    mutating func popObject() -> JSONObject {
        let frame = frames.removeLast()
        let items = Array(members[frame.start...])
        members.removeSubrange(frame.start...)
        return JSONObject(uniqueEntries: items, index: frame.index)
    }

    mutating func popArray() -> [JSONValue] {
        let frame = frames.removeLast()
        let items = Array(values[frame.start...])
        values.removeSubrange(frame.start...)
        return items
    }

    mutating func expectLiteral(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        let w = word.utf8Start
        guard count - pos >= n else { throw fail("invalid literal (expected \(word))") }
        for i in 0..<n where base[pos + i] != w[i] {
            throw fail("invalid literal (expected \(word))")
        }
        pos += n
    }

    // MARK: Strings

    /// Parses a string starting at the opening quote; leaves `pos` after the closing quote.
    mutating func parseString() throws -> String {
        let open = pos
        pos += 1
        let start = pos
        // Fast path: no escapes.
        while pos < count {
            let c = base[pos]
            if c == quote {
                let s = String(
                    decoding: UnsafeBufferPointer(start: base + start, count: pos - start),
                    as: UTF8.self)
                pos += 1
                return s
            }
            if c == backslash {
                return try parseStringWithEscapes(open: open, start: start)
            }
            if c < 0x20 {
                throw fail("unescaped control character 0x\(String(c, radix: 16)) in string")
            }
            if c < 0x80 {
                pos += 1
            } else {
                try skipUTF8Sequence()
            }
        }
        throw fail("unterminated string", at: open)
    }

    /// Slow path once a backslash is seen: bytes so far are copied to `scratch`, escapes decoded.
    mutating func parseStringWithEscapes(open: Int, start: Int) throws -> String {
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(start: base + start, count: pos - start))
        while pos < count {
            let c = base[pos]
            if c == quote {
                pos += 1
                return String(decoding: scratch, as: UTF8.self)
            }
            if c == backslash {
                try parseEscape()
            } else if c < 0x20 {
                throw fail("unescaped control character 0x\(String(c, radix: 16)) in string")
            } else if c < 0x80 {
                scratch.append(c)
                pos += 1
            } else {
                let s = pos
                try skipUTF8Sequence()
                scratch.append(contentsOf: UnsafeBufferPointer(start: base + s, count: pos - s))
            }
        }
        throw fail("unterminated string", at: open)
    }

    /// At a backslash: decodes one escape into `scratch`.
    mutating func parseEscape() throws {
        let at = pos
        guard pos + 1 < count else { throw fail("unterminated string") }
        let e = base[pos + 1]
        pos += 2
        switch e {
        case quote: scratch.append(quote)
        case backslash: scratch.append(backslash)
        case slash: scratch.append(slash)
        case 0x62: scratch.append(0x08)  // b
        case 0x66: scratch.append(0x0C)  // f
        case 0x6E: scratch.append(0x0A)  // n
        case 0x72: scratch.append(0x0D)  // r
        case 0x74: scratch.append(0x09)  // t
        case 0x75:  // u
            var scalar = try readHex4(escapeAt: at)
            if scalar >= 0xD800 && scalar <= 0xDBFF {
                // High surrogate: must be followed by \u + low surrogate.
                guard pos + 1 < count, base[pos] == backslash, base[pos + 1] == 0x75 else {
                    throw fail("unpaired high surrogate in \\u escape", at: at)
                }
                let lowAt = pos
                pos += 2
                let low = try readHex4(escapeAt: lowAt)
                guard low >= 0xDC00 && low <= 0xDFFF else {
                    throw fail("high surrogate not followed by a low surrogate", at: lowAt)
                }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
                throw fail("unpaired low surrogate in \\u escape", at: at)
            }
            appendUTF8(scalar)
        default:
            throw fail("invalid escape sequence", at: at)
        }
    }

    mutating func readHex4(escapeAt: Int) throws -> UInt32 {
        guard count - pos >= 4 else { throw fail("truncated \\u escape", at: escapeAt) }
        var v: UInt32 = 0
        for i in 0..<4 {
            let c = base[pos + i]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw fail("invalid hex digit in \\u escape", at: pos + i)
            }
            v = v << 4 | d
        }
        pos += 4
        return v
    }

    mutating func appendUTF8(_ s: UInt32) {
        if s < 0x80 {
            scratch.append(UInt8(s))
        } else if s < 0x800 {
            scratch.append(UInt8(0xC0 | (s >> 6)))
            scratch.append(UInt8(0x80 | (s & 0x3F)))
        } else if s < 0x10000 {
            scratch.append(UInt8(0xE0 | (s >> 12)))
            scratch.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            scratch.append(UInt8(0x80 | (s & 0x3F)))
        } else {
            scratch.append(UInt8(0xF0 | (s >> 18)))
            scratch.append(UInt8(0x80 | ((s >> 12) & 0x3F)))
            scratch.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            scratch.append(UInt8(0x80 | (s & 0x3F)))
        }
    }

    /// At a byte >= 0x80: checks one well-formed UTF-8 sequence (Unicode Table 3-7: no
    /// overlongs, no surrogates, nothing above U+10FFFF) and moves past it.
    @inline(__always)
    mutating func skipUTF8Sequence() throws {
        let b0 = base[pos]
        let avail = count - pos
        @inline(__always) func cont(_ i: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
            i < avail && base[pos + i] >= lo && base[pos + i] <= hi
        }
        switch b0 {
        case 0xC2...0xDF:
            guard cont(1) else { break }
            pos += 2
            return
        case 0xE0:
            guard cont(1, 0xA0, 0xBF), cont(2) else { break }
            pos += 3
            return
        case 0xE1...0xEC, 0xEE...0xEF:
            guard cont(1), cont(2) else { break }
            pos += 3
            return
        case 0xED:
            guard cont(1, 0x80, 0x9F), cont(2) else { break }
            pos += 3
            return
        case 0xF0:
            guard cont(1, 0x90, 0xBF), cont(2), cont(3) else { break }
            pos += 4
            return
        case 0xF1...0xF3:
            guard cont(1), cont(2), cont(3) else { break }
            pos += 4
            return
        case 0xF4:
            guard cont(1, 0x80, 0x8F), cont(2), cont(3) else { break }
            pos += 4
            return
        default:
            break
        }
        throw fail("invalid UTF-8 in string")
    }

    // MARK: Numbers

    mutating func parseNumber() throws -> JSONValue {
        let start = pos
        var negative = false
        if base[pos] == minus {
            negative = true
            pos += 1
        }
        guard pos < count, base[pos] >= zero, base[pos] <= nine else {
            throw fail("expected a digit after '-'")
        }
        var mantissa: UInt64 = 0
        var mantissaOverflow = false
        @inline(__always) func accumulate(_ c: UInt8) {
            if mantissaOverflow { return }
            let (m1, o1) = mantissa.multipliedReportingOverflow(by: 10)
            let (m2, o2) = m1.addingReportingOverflow(UInt64(c - zero))
            if o1 || o2 { mantissaOverflow = true } else { mantissa = m2 }
        }
        if base[pos] == zero {
            pos += 1
            if pos < count && base[pos] >= zero && base[pos] <= nine {
                throw fail("leading zero in number", at: start)
            }
        } else {
            while pos < count && base[pos] >= zero && base[pos] <= nine {
                accumulate(base[pos])
                pos += 1
            }
        }
        var isInteger = true
        var fractionDigits = 0
        if pos < count && base[pos] == dot {
            isInteger = false
            pos += 1
            guard pos < count, base[pos] >= zero, base[pos] <= nine else {
                throw fail("expected a digit after '.' in number")
            }
            while pos < count && base[pos] >= zero && base[pos] <= nine {
                if !mantissaOverflow {
                    accumulate(base[pos])
                    fractionDigits += 1
                }
                pos += 1
            }
        }
        var exponent = 0
        if pos < count && (base[pos] == 0x65 || base[pos] == 0x45) {
            isInteger = false
            pos += 1
            var expNegative = false
            if pos < count && (base[pos] == plus || base[pos] == minus) {
                expNegative = base[pos] == minus
                pos += 1
            }
            guard pos < count, base[pos] >= zero, base[pos] <= nine else {
                throw fail("expected a digit in number exponent")
            }
            while pos < count && base[pos] >= zero && base[pos] <= nine {
                if exponent < 1_000_000 { exponent = exponent * 10 + Int(base[pos] - zero) }
                pos += 1
            }
            if expNegative { exponent = -exponent }
        }

        if isInteger && !mantissaOverflow {
            if negative {
                if mantissa <= UInt64(Int64.max) { return .int(-Int64(mantissa)) }
                if mantissa == UInt64(Int64.max) + 1 { return .int(Int64.min) }
            } else if mantissa <= UInt64(Int64.max) {
                return .int(Int64(mantissa))
            }
        }

        // Exact fast path: mantissa <= 2^53 and |power of ten| <= 22 give one correct rounding.
        let power = exponent - fractionDigits
        if !mantissaOverflow && mantissa <= (1 << 53) && power >= -22 && power <= 22 {
            var d = Double(mantissa)
            d = power < 0 ? d / exactPowersOfTen[-power] : d * exactPowersOfTen[power]
            return .double(negative ? -d : d)
        }
        // General case: the standard library's correctly rounded conversion.
        let text = String(
            decoding: UnsafeBufferPointer(start: base + start, count: pos - start), as: UTF8.self)
        guard let d = Double(text), d.isFinite else {
            throw fail("number out of range", at: start)
        }
        return .double(d)
    }
}

/// `"text"` with quotes and escapes, for error messages (long keys shortened).
func quoted(_ s: String) -> String {
    var t = s
    if t.unicodeScalars.count > 80 {
        t = String(String.UnicodeScalarView(t.unicodeScalars.prefix(80))) + "..."
    }
    return JSONValue.string(t).serialized()
}
