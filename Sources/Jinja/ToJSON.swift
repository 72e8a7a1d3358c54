// The tojson filter as transformers defines it: Python's json.dumps(x, ensure_ascii=False,
// indent=None, separators=None, sort_keys=False) -- no HTML escaping, ", " and ": " between
// items unless an indent is given (then "," and newlines), floats as Python writes them.

extension Interpreter {
    func toJSON(_ v: Value, ensureASCII: Bool, indent: String?, separators: (String, String)?, sortKeys: Bool) throws -> String {
        let (itemSep, keySep) = separators ?? (indent == nil ? (", ", ": ") : (",", ": "))
        var out = ""
        func escape(_ s: String) {
            out += "\""
            for c in s.unicodeScalars {
                switch c {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case "\u{08}": out += "\\b"
                case "\u{0C}": out += "\\f"
                default:
                    if c.value < 0x20 || (ensureASCII && c.value > 0x7e) {
                        if c.value > 0xFFFF {
                            let v = c.value - 0x10000
                            out += hex4(0xD800 + (v >> 10)) + hex4(0xDC00 + (v & 0x3FF))
                        } else {
                            out += hex4(c.value)
                        }
                    } else {
                        out.unicodeScalars.append(c)
                    }
                }
            }
            out += "\""
        }
        func hex4(_ v: UInt32) -> String {
            let h = String(v, radix: 16)
            return "\\u" + String(repeating: "0", count: max(0, 4 - h.count)) + h
        }
        func emit(_ v: Value, _ level: Int) throws {
            try step()
            if level > limits.maxDepth { throw JinjaError("tojson: value nested deeper than \(limits.maxDepth)") }
            if out.utf8.count > limits.maxOutput { throw JinjaError("tojson: output larger than \(limits.maxOutput) characters") }
            func newline(_ l: Int) {
                if let indent { out += "\n" + String(repeating: indent, count: l) }
            }
            switch v {
            case .none: out += "null"
            case .bool(let b): out += b ? "true" : "false"
            case .int(let n): out += String(n)
            case .double(let d):
                if d.isNaN { out += "NaN" } else if d.isInfinite { out += d < 0 ? "-Infinity" : "Infinity" } else { out += Value.pythonFloat(d) }
            case .string(let s): escape(s)
            case .list(let l), .tuple(let l):
                if l.isEmpty { out += "[]"; return }
                out += "["
                for (i, x) in l.enumerated() {
                    if i > 0 { out += itemSep }
                    newline(level + 1)
                    try emit(x, level + 1)
                }
                newline(level)
                out += "]"
            case .dict(let d):
                if d.count == 0 { out += "{}"; return }
                out += "{"
                var keys = d.keys
                if sortKeys { keys.sort { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) } }
                for (i, k) in keys.enumerated() {
                    if i > 0 { out += itemSep }
                    newline(level + 1)
                    escape(k)
                    out += keySep
                    try emit(d[k] ?? .none, level + 1)
                }
                newline(level)
                out += "}"
            case .undefined, .namespace, .callable:
                throw JinjaError("Object of type \(v.typeName) is not JSON serializable")
            }
        }
        try emit(v, 0)
        return out
    }

    func tojsonFilter(_ v: Value, _ a: ArgReader) throws -> Value {
        let ensureASCII = a.optional(0, "ensure_ascii")?.truthy ?? false
        var indent: String? = nil
        if let i = a.optional(1, "indent"), !i.isNone {
            switch i {
            case .int(let n): indent = String(repeating: " ", count: max(0, min(n, 64)))
            case .string(let s): indent = s
            default: throw JinjaError("tojson: indent must be an integer or a string")
            }
        }
        var seps: (String, String)? = nil
        if let s = a.optional(2, "separators"), !s.isNone {
            guard let items = s.items, items.count == 2, case .string(let x) = items[0], case .string(let y) = items[1] else {
                throw JinjaError("tojson: separators must be a pair of strings")
            }
            seps = (x, y)
        }
        let sortKeys = a.optional(3, "sort_keys")?.truthy ?? false
        return .string(try toJSON(v, ensureASCII: ensureASCII, indent: indent, separators: seps, sortKeys: sortKeys))
    }
}
