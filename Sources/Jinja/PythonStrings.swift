// Python's string algorithms on Unicode code points, for the str methods and filters: split and
// rsplit (with and without a separator), splitlines, replace, find, count, title, capitalize,
// str.format ("{}", "{0}", "{name}", "{{" and "}}"), and what Python counts as whitespace.

enum Python {
    static func string(_ u: [Unicode.Scalar]) -> String {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: u)
        return String(v)
    }

    static func string<S: Sequence>(_ u: S) -> String where S.Element == Unicode.Scalar {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: u)
        return String(v)
    }

    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: return true
        default: return false
        }
    }

    static func find(_ u: [Unicode.Scalar], _ sub: [Unicode.Scalar], fromRight: Bool = false) -> Int {
        if sub.isEmpty { return fromRight ? u.count : 0 }
        if sub.count > u.count { return -1 }
        let range = 0...(u.count - sub.count)
        for i in (fromRight ? Array(range.reversed()) : Array(range)) where u[i] == sub[0] {
            if u[i..<(i + sub.count)].elementsEqual(sub) { return i }
        }
        return -1
    }

    static func count(_ u: [Unicode.Scalar], _ sub: [Unicode.Scalar]) -> Int {
        if sub.isEmpty { return u.count + 1 }
        var n = 0, i = 0
        while i + sub.count <= u.count {
            if u[i..<(i + sub.count)].elementsEqual(sub) { n += 1; i += sub.count } else { i += 1 }
        }
        return n
    }

    static func replace(_ u: [Unicode.Scalar], _ old: [Unicode.Scalar], _ new: [Unicode.Scalar], count: Int) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        var done = 0
        if old.isEmpty {
            for c in u {
                if count < 0 || done < count { out += new; done += 1 }
                out.append(c)
            }
            if count < 0 || done < count { out += new }
            return out
        }
        var i = 0
        while i < u.count {
            if (count < 0 || done < count), i + old.count <= u.count, u[i..<(i + old.count)].elementsEqual(old) {
                out += new; i += old.count; done += 1
            } else {
                out.append(u[i]); i += 1
            }
        }
        return out
    }

    static func split(_ u: [Unicode.Scalar], sep: [Unicode.Scalar]?, maxsplit: Int, fromRight: Bool) -> [[Unicode.Scalar]] {
        guard let sep else {
            // Runs of whitespace separate; leading and trailing whitespace gives no empty parts.
            var parts: [[Unicode.Scalar]] = []
            if fromRight {
                var i = u.count
                while true {
                    while i > 0, isSpace(u[i - 1]) { i -= 1 }
                    if i == 0 { break }
                    if maxsplit >= 0, parts.count == maxsplit { parts.append(Array(u[0..<i])); break }
                    var j = i
                    while j > 0, !isSpace(u[j - 1]) { j -= 1 }
                    parts.append(Array(u[j..<i]))
                    i = j
                }
                return parts.reversed()
            }
            var i = 0
            while true {
                while i < u.count, isSpace(u[i]) { i += 1 }
                if i == u.count { break }
                if maxsplit >= 0, parts.count == maxsplit { parts.append(Array(u[i...])); break }
                var j = i
                while j < u.count, !isSpace(u[j]) { j += 1 }
                parts.append(Array(u[i..<j]))
                i = j
            }
            return parts
        }
        var parts: [[Unicode.Scalar]] = []
        if fromRight {
            var end = u.count, i = u.count - sep.count
            while i >= 0 {
                if maxsplit >= 0, parts.count == maxsplit { break }
                if u[i..<(i + sep.count)].elementsEqual(sep) {
                    parts.append(Array(u[(i + sep.count)..<end]))
                    end = i
                    i -= sep.count
                } else { i -= 1 }
            }
            parts.append(Array(u[0..<end]))
            return parts.reversed()
        }
        var start = 0, i = 0
        while i + sep.count <= u.count {
            if maxsplit >= 0, parts.count == maxsplit { break }
            if u[i..<(i + sep.count)].elementsEqual(sep) {
                parts.append(Array(u[start..<i]))
                i += sep.count
                start = i
            } else { i += 1 }
        }
        parts.append(Array(u[start...]))
        return parts
    }

    static func isLineBreak(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029: return true
        default: return false
        }
    }

    static func splitlines(_ u: [Unicode.Scalar], keepends: Bool) -> [[Unicode.Scalar]] {
        var out: [[Unicode.Scalar]] = []
        var start = 0, i = 0
        while i < u.count {
            if isLineBreak(u[i]) {
                var end = i + 1
                if u[i] == "\r", end < u.count, u[end] == "\n" { end += 1 }
                out.append(Array(u[start..<(keepends ? end : i)]))
                start = end
                i = end
            } else { i += 1 }
        }
        if start < u.count { out.append(Array(u[start...])) }
        return out
    }

    static func isCased(_ c: Unicode.Scalar) -> Bool {
        c.properties.isUppercase || c.properties.isLowercase || c.properties.generalCategory == .titlecaseLetter
    }

    static func upper(_ c: Unicode.Scalar) -> String { c.properties.uppercaseMapping }
    static func lower(_ c: Unicode.Scalar) -> String { c.properties.lowercaseMapping }
    static func titleCase(_ c: Unicode.Scalar) -> String { c.properties.titlecaseMapping }

    /// str.title(): a cased character after an uncased one starts a word.
    static func title(_ s: String) -> String {
        var out = ""
        var prevCased = false
        for c in s.unicodeScalars {
            if isCased(c) {
                out += prevCased ? lower(c) : titleCase(c)
                prevCased = true
            } else {
                out.unicodeScalars.append(c)
                prevCased = false
            }
        }
        return out
    }

    /// str.capitalize(): the first character in title case, the rest lower case.
    static func capitalize(_ s: String) -> String {
        var out = ""
        for (i, c) in s.unicodeScalars.enumerated() { out += i == 0 ? titleCase(c) : lower(c) }
        return out
    }

    /// str.format with "{}", "{0}", "{name}" fields (a format spec after ':' is not supported).
    static func format(_ s: String, _ args: [Value], _ kw: [(String, Value)]) throws -> String {
        var out = ""
        let u = Array(s.unicodeScalars)
        var i = 0, auto = 0
        while i < u.count {
            let c = u[i]
            if c == "{" {
                if i + 1 < u.count, u[i + 1] == "{" { out += "{"; i += 2; continue }
                guard let close = u[i...].firstIndex(of: "}") else { throw JinjaError("Single '{' encountered in format string") }
                let field = string(Array(u[(i + 1)..<close]))
                if field.contains(":") || field.contains("!") { throw JinjaError("format specs in str.format are not supported") }
                let v: Value
                if field.isEmpty {
                    guard auto < args.count else { throw JinjaError("Replacement index \(auto) out of range") }
                    v = args[auto]; auto += 1
                } else if let n = Int(field) {
                    guard n >= 0, n < args.count else { throw JinjaError("Replacement index \(n) out of range") }
                    v = args[n]
                } else {
                    guard let x = kw.first(where: { $0.0 == field })?.1 else { throw JinjaError("KeyError: '\(field)'") }
                    v = x
                }
                out += v.str
                i = close + 1
            } else if c == "}" {
                if i + 1 < u.count, u[i + 1] == "}" { out += "}"; i += 2; continue }
                throw JinjaError("Single '}' encountered in format string")
            } else {
                out.unicodeScalars.append(c)
                i += 1
            }
        }
        return out
    }
}
