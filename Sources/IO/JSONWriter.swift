// The JSON writer: `JSONValue.serialized(sortedKeys:pretty:)`. Output is always valid JSON
// (RFC 8259) that `JSONValue.parse` reads back to an equal value, with one documented
// exception: non-finite doubles (NaN, +-infinity) have no JSON form and are written as `null`.

extension JSONValue {
    /// JSON text for this value.
    ///
    /// - Strings: `"` `\` and control characters (< 0x20) are escaped (`\n` `\t` `\r` `\b` `\f`,
    ///   others as `\u00XX`); everything else, including non-ASCII, is written as UTF-8.
    /// - Integers (`.int`) are written as integers. Doubles use the shortest text that reads
    ///   back to the same Double and always contain `.` or `e` (1.0 is "1.0"), so they parse
    ///   back as `.double`. NaN and infinities are written as `null` (JSON has no such numbers).
    /// - `sortedKeys`: object members ordered by the UTF-8 bytes of their keys (= code point
    ///   order, as Python's `sort_keys`); otherwise in stored order.
    /// - `pretty`: two-space indentation, one member/element per line, `": "` after keys;
    ///   otherwise compact (no spaces at all).
    public func serialized(sortedKeys: Bool = false, pretty: Bool = false) -> String {
        String(decoding: serializedBytes(sortedKeys: sortedKeys, pretty: pretty), as: UTF8.self)
    }

    /// Like `serialized`, as UTF-8 bytes.
    public func serializedBytes(sortedKeys: Bool = false, pretty: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        var writer = JSONWriter(sortedKeys: sortedKeys, pretty: pretty)
        writer.write(self, into: &out, indent: 0)
        return out
    }
}

private let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

@inline(__always)
private func escape(_ c: UInt8, _ out: inout [UInt8]) {
    out.append(0x5C)
    out.append(c)
}

private struct JSONWriter {
    let sortedKeys: Bool
    let pretty: Bool

    mutating func newline(_ out: inout [UInt8], indent: Int) {
        out.append(0x0A)
        out.append(contentsOf: repeatElement(0x20, count: 2 * indent))
    }

    mutating func write(_ value: JSONValue, into out: inout [UInt8], indent: Int) {
        switch value {
        case .null:
            out.append(contentsOf: "null".utf8)
        case .bool(let b):
            out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i):
            out.append(contentsOf: String(i).utf8)
        case .double(let d):
            writeDouble(d, into: &out)
        case .string(let s):
            writeString(s, into: &out)
        case .array(let a):
            if a.isEmpty {
                out.append(contentsOf: "[]".utf8)
                return
            }
            out.append(0x5B)
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(0x2C) }
                if pretty { newline(&out, indent: indent + 1) }
                write(v, into: &out, indent: indent + 1)
            }
            if pretty { newline(&out, indent: indent) }
            out.append(0x5D)
        case .object(let o):
            if o.isEmpty {
                out.append(contentsOf: "{}".utf8)
                return
            }
            var members = o.entries
            if sortedKeys {
                members.sort { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            }
            out.append(0x7B)
            for (i, m) in members.enumerated() {
                if i > 0 { out.append(0x2C) }
                if pretty { newline(&out, indent: indent + 1) }
                writeString(m.key, into: &out)
                out.append(0x3A)
                if pretty { out.append(0x20) }
                write(m.value, into: &out, indent: indent + 1)
            }
            if pretty { newline(&out, indent: indent) }
            out.append(0x7D)
        }
    }

    func writeDouble(_ d: Double, into out: inout [UInt8]) {
        guard d.isFinite else {
            out.append(contentsOf: "null".utf8)
            return
        }
        // Swift's description is the shortest round-tripping form: "1.0", "0.1", "1e-07",
        // "1e+20", "-0.0" -- all valid JSON numbers containing '.' or 'e'.
        let text = d.description
        out.append(contentsOf: text.utf8)
        if !text.utf8.contains(where: { $0 == 0x2E || $0 == 0x65 || $0 == 0x45 }) {
            out.append(contentsOf: ".0".utf8)
        }
    }

    func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(0x22)
        for c in s.utf8 {
            switch c {
            case 0x22: escape(0x22, &out)
            case 0x5C: escape(0x5C, &out)
            case 0x0A: escape(0x6E, &out)
            case 0x0D: escape(0x72, &out)
            case 0x09: escape(0x74, &out)
            case 0x08: escape(0x62, &out)
            case 0x0C: escape(0x66, &out)
            case 0..<0x20:
                escape(0x75, &out)
                out.append(0x30)
                out.append(0x30)
                out.append(hexDigits[Int(c >> 4)])
                out.append(hexDigits[Int(c & 15)])
            default: out.append(c)
            }
        }
        out.append(0x22)
    }
}
