// Methods templates call on values, as Python defines them: str (startswith, endswith, split,
// rsplit, strip/lstrip/rstrip, replace, upper, lower, title, capitalize, format, join, find,
// count, splitlines, is*...), dict (get, items, keys, values) and list (index, count). Methods
// that would modify a value are absent, as in transformers' immutable sandbox.

import Foundation

extension Interpreter {
    static let stringMethods: Set<String> = [
        "startswith", "endswith", "split", "rsplit", "strip", "lstrip", "rstrip", "replace", "upper", "lower",
        "title", "capitalize", "format", "join", "find", "rfind", "index", "rindex", "count", "splitlines",
        "isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower", "isnumeric", "isdecimal",
        "removeprefix", "removesuffix", "zfill", "ljust", "rjust", "center", "swapcase", "casefold", "partition",
        "rpartition", "expandtabs",
    ]
    static let dictMethods: Set<String> = ["get", "items", "keys", "values", "copy"]
    static let listMethods: Set<String> = ["index", "count", "copy"]

    /// Calls obj.name(args); nil when obj has no such method.
    func callMethod(_ obj: Value, _ name: String, _ args: [Value], _ kw: [(String, Value)]) throws -> Value? {
        let a = ArgReader(name, args, kw)
        switch obj {
        case .string(let s):
            guard Interpreter.stringMethods.contains(name) else { return nil }
            return try stringMethod(s, name, a)
        case .dict(let d):
            switch name {
            case "get":
                let key = try a.required(0, "key")
                let dflt = a.optional(1, "default") ?? .none
                guard case .string(let k) = key else { return dflt }
                return d[k] ?? dflt
            case "items": return .list(d.pairs.map { .tuple([.string($0.0), $0.1]) })
            case "keys": return .list(d.keys.map { .string($0) })
            case "values": return .list(d.pairs.map { $0.1 })
            case "copy": return obj
            default: return nil
            }
        case .list(let l), .tuple(let l):
            switch name {
            case "index":
                let x = try a.required(0, "value")
                guard let i = l.firstIndex(where: { $0.equals(x) }) else { throw JinjaError("\(x.repr) is not in list") }
                return .int(i)
            case "count":
                let x = try a.required(0, "value")
                return .int(l.filter { $0.equals(x) }.count)
            case "copy": return obj
            default: return nil
            }
        case .namespace(let ns):
            if let v = ns.attributes[name] { return try callValue(v, args, kw, name: name) }
            return nil
        default:
            return nil
        }
    }

    private func stringMethod(_ s: String, _ name: String, _ a: ArgReader) throws -> Value {
        let u = Array(s.unicodeScalars)
        func chars(_ v: Value?) throws -> Set<Unicode.Scalar>? {
            guard let v, !v.isNone else { return nil }
            guard case .string(let c) = v else { throw JinjaError("\(name)() arg must be None or str") }
            return Set(c.unicodeScalars)
        }
        func str(_ x: [Unicode.Scalar]) -> Value { .string(Python.string(x)) }
        switch name {
        case "startswith", "endswith":
            let p = try a.required(0, "prefix")
            let options: [Value]
            if case .tuple(let t) = p { options = t } else if case .list(let t) = p { options = t } else { options = [p] }
            for o in options {
                guard case .string(let x) = o else { throw JinjaError("\(name) first arg must be str or a tuple of str, not \(o.typeName)") }
                let xs = Array(x.unicodeScalars)
                if name == "startswith" ? u.starts(with: xs) : u.reversed().starts(with: xs.reversed()) { return .bool(true) }
            }
            return .bool(false)
        case "strip", "lstrip", "rstrip":
            let set = try chars(a.optional(0, "chars"))
            func strip(_ c: Unicode.Scalar) -> Bool { set?.contains(c) ?? Python.isSpace(c) }
            var lo = 0, hi = u.count
            if name != "rstrip" { while lo < hi, strip(u[lo]) { lo += 1 } }
            if name != "lstrip" { while hi > lo, strip(u[hi - 1]) { hi -= 1 } }
            return str(Array(u[lo..<hi]))
        case "split", "rsplit":
            let sep = a.optional(0, "sep")
            let maxsplit = try a.int(1, "maxsplit") ?? -1
            var sepText: String? = nil
            if let sep, !sep.isNone {
                guard case .string(let t) = sep else { throw JinjaError("must be str or None, not \(sep.typeName)") }
                if t.isEmpty { throw JinjaError("empty separator") }
                sepText = t
            }
            let parts = Python.split(u, sep: sepText.map { Array($0.unicodeScalars) }, maxsplit: maxsplit, fromRight: name == "rsplit")
            return .list(parts.map { str($0) })
        case "splitlines":
            return .list(Python.splitlines(u, keepends: (a.optional(0, "keepends") ?? .bool(false)).truthy).map { str($0) })
        case "replace":
            guard case .string(let old) = try a.required(0, "old"), case .string(let new) = try a.required(1, "new") else {
                throw JinjaError("replace() arguments must be strings")
            }
            let count = try a.int(2, "count") ?? -1
            let r = Python.replace(u, Array(old.unicodeScalars), Array(new.unicodeScalars), count: count)
            if r.count > limits.maxOutput { throw JinjaError("string longer than \(limits.maxOutput) characters") }
            return str(r)
        case "upper": return .string(s.uppercased())
        case "lower": return .string(s.lowercased())
        case "casefold": return .string(s.lowercased())
        case "swapcase": return .string(String(s.map { $0.isUppercase ? Character($0.lowercased()) : Character($0.uppercased()) }))
        case "title": return .string(Python.title(s))
        case "capitalize": return .string(Python.capitalize(s))
        case "format": return .string(try Python.format(s, a.args, a.kw))
        case "join":
            let items = try iterate(try a.required(0, "iterable"))
            var parts: [String] = []
            for x in items {
                guard case .string(let t) = x else { throw JinjaError("sequence item: expected str instance, \(x.typeName) found") }
                parts.append(t)
            }
            return .string(parts.joined(separator: s))
        case "find", "rfind", "index", "rindex":
            guard case .string(let sub) = try a.required(0, "sub") else { throw JinjaError("\(name)() argument must be str") }
            let i = Python.find(u, Array(sub.unicodeScalars), fromRight: name.hasPrefix("r"))
            if i < 0 && name.hasSuffix("index") { throw JinjaError("substring not found") }
            return .int(i)
        case "count":
            guard case .string(let sub) = try a.required(0, "sub") else { throw JinjaError("count() argument must be str") }
            return .int(Python.count(u, Array(sub.unicodeScalars)))
        case "isdigit", "isnumeric", "isdecimal":
            return .bool(!u.isEmpty && u.allSatisfy { $0.properties.numericType != nil })
        case "isalpha": return .bool(!u.isEmpty && u.allSatisfy { $0.properties.isAlphabetic })
        case "isalnum": return .bool(!u.isEmpty && u.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil })
        case "isspace": return .bool(!u.isEmpty && u.allSatisfy(Python.isSpace))
        case "isupper": return .bool(s.contains { $0.isCased } && !s.contains { $0.isLowercase })
        case "islower": return .bool(s.contains { $0.isCased } && !s.contains { $0.isUppercase })
        case "removeprefix", "removesuffix":
            guard case .string(let x) = try a.required(0, "affix") else { throw JinjaError("\(name)() argument must be str") }
            let xs = Array(x.unicodeScalars)
            if name == "removeprefix", u.starts(with: xs) { return str(Array(u[xs.count...])) }
            if name == "removesuffix", !xs.isEmpty, u.reversed().starts(with: xs.reversed()) { return str(Array(u[..<(u.count - xs.count)])) }
            return .string(s)
        case "zfill", "ljust", "rjust", "center":
            let width = try a.int(0, "width") ?? 0
            if width > limits.maxOutput { throw JinjaError("string longer than \(limits.maxOutput) characters") }
            var fill: Unicode.Scalar = name == "zfill" ? "0" : " "
            if name != "zfill", case .string(let f)? = a.optional(1, "fillchar"), let c = f.unicodeScalars.first { fill = c }
            let pad = max(0, width - u.count)
            if pad == 0 { return .string(s) }
            let p = [Unicode.Scalar](repeating: fill, count: pad)
            switch name {
            case "ljust": return str(u + p)
            case "rjust": return str(p + u)
            case "zfill":
                if let f = u.first, f == "-" || f == "+" { return str([f] + p + u.dropFirst()) }
                return str(p + u)
            default:
                let left = pad / 2 + (pad & width & 1)
                return str(Array(p[..<left]) + u + Array(p[left...]))
            }
        case "partition", "rpartition":
            guard case .string(let sep) = try a.required(0, "sep"), !sep.isEmpty else { throw JinjaError("empty separator") }
            let sepU = Array(sep.unicodeScalars)
            let i = Python.find(u, sepU, fromRight: name == "rpartition")
            if i < 0 { return name == "partition" ? .tuple([.string(s), .string(""), .string("")]) : .tuple([.string(""), .string(""), .string(s)]) }
            return .tuple([str(Array(u[..<i])), .string(sep), str(Array(u[(i + sepU.count)...]))])
        case "expandtabs": return .string(s.replacingOccurrences(of: "\t", with: "        "))
        default:
            throw JinjaError("'str' object has no attribute '\(name)'")
        }
    }
}

/// Positional and keyword arguments of a call, read by position or name.
struct ArgReader {
    let fn: String
    let args: [Value]
    let kw: [(String, Value)]
    init(_ fn: String, _ args: [Value], _ kw: [(String, Value)]) { self.fn = fn; self.args = args; self.kw = kw }

    func optional(_ i: Int, _ name: String) -> Value? {
        if i < args.count { return args[i] }
        return kw.first { $0.0 == name }?.1
    }

    func required(_ i: Int, _ name: String) throws -> Value {
        guard let v = optional(i, name) else { throw JinjaError("\(fn)() missing required argument '\(name)'") }
        return v
    }

    func int(_ i: Int, _ name: String) throws -> Int? {
        guard let v = optional(i, name), !v.isNone else { return nil }
        switch v {
        case .int(let n): return n
        case .bool(let b): return b ? 1 : 0
        default: throw JinjaError("\(fn)(): '\(name)' must be an integer, got \(v.typeName)")
        }
    }

    func bool(_ i: Int, _ name: String, default d: Bool) -> Bool {
        optional(i, name)?.truthy ?? d
    }
}
