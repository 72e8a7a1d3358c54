// The filters chat templates use, with Jinja2's semantics: trim, tojson, length/count, items,
// select/reject/selectattr/rejectattr, map, join, upper/lower/title/capitalize, replace,
// default, first/last, list, string, int, float, indent, unique, reverse, sort, dictsort, safe,
// abs, round, min/max/sum, batch, center, wordcount, format, escape, attr.

import Foundation

extension Interpreter {
    func applyFilter(_ name: String, _ v: Value, _ argsKw: ([Value], [(String, Value)]), _ frame: Frame) throws -> Value {
        let a = ArgReader(name, argsKw.0, argsKw.1)
        // Work in proportion to the value's size.
        switch v {
        case .list(let l), .tuple(let l): try charge(items: l.count)
        case .dict(let d): try charge(items: d.count)
        case .string(let s): try charge(characters: s.utf8.count)
        default: break
        }
        switch name {
        case "default", "d":
            let dflt = a.optional(0, "default_value") ?? .string("")
            let boolean = a.bool(1, "boolean", default: false)
            if v.isUndefined || (boolean && !v.truthy) { return dflt }
            return v
        case "trim":
            let set = a.optional(0, "chars").flatMap { c -> Set<Unicode.Scalar>? in
                if case .string(let s) = c { return Set(s.unicodeScalars) }
                return nil
            }
            let u = Array(v.str.unicodeScalars)
            func strip(_ c: Unicode.Scalar) -> Bool { set?.contains(c) ?? Python.isSpace(c) }
            var lo = 0, hi = u.count
            while lo < hi, strip(u[lo]) { lo += 1 }
            while hi > lo, strip(u[hi - 1]) { hi -= 1 }
            return .string(Python.string(u[lo..<hi]))
        case "tojson": return try tojsonFilter(v, a)
        case "length", "count":
            switch v {
            case .undefined: return .int(0)
            case .string(let s): return .int(s.unicodeScalars.count)
            case .list(let l), .tuple(let l): return .int(l.count)
            case .dict(let d): return .int(d.count)
            case .namespace(let ns): return .int(ns.attributes.count)
            default: throw JinjaError("object of type '\(v.typeName)' has no len()")
            }
        case "items":
            switch v {
            case .undefined: return .list([])
            case .dict(let d): return .list(d.pairs.map { .tuple([.string($0.0), $0.1]) })
            default: throw JinjaError("items filter: can only get item pairs from a mapping, not \(v.typeName)")
            }
        case "list": return .list(try iterate(v))
        case "string": return .string(v.str)
        case "safe": return v.isUndefined ? .string("") : v
        case "upper": return .string(v.str.uppercased())
        case "lower": return .string(v.str.lowercased())
        case "capitalize": return .string(Python.capitalize(v.str))
        case "title": return .string(jinjaTitle(v.str))
        case "replace":
            let old = try a.required(0, "old").str, new = try a.required(1, "new").str
            let count = try a.int(2, "count") ?? -1
            let r = Python.replace(Array(v.str.unicodeScalars), Array(old.unicodeScalars), Array(new.unicodeScalars), count: count)
            if r.count > limits.maxOutput { throw JinjaError("string longer than \(limits.maxOutput) characters") }
            return .string(Python.string(r))
        case "first":
            if case .undefined = v { return .undefined("first of undefined") }
            return try iterate(v).first ?? .undefined("first of an empty sequence")
        case "last":
            if case .undefined = v { return .undefined("last of undefined") }
            return try iterate(v).last ?? .undefined("last of an empty sequence")
        case "reverse":
            if case .string(let s) = v { return .string(Python.string(s.unicodeScalars.reversed())) }
            return .list(try iterate(v).reversed())
        case "join":
            var items = try iterate(v)
            if let attr = a.optional(1, "attribute"), !attr.isNone { items = try items.map { try attributePath($0, attr) } }
            let sep = (a.optional(0, "d") ?? .string("")).str
            let s = items.map { $0.str }.joined(separator: sep)
            if s.unicodeScalars.count > limits.maxOutput { throw JinjaError("string longer than \(limits.maxOutput) characters") }
            return .string(s)
        case "int":
            let dflt = a.optional(0, "default") ?? .int(0)
            let base = try a.int(1, "base") ?? 10
            switch v {
            case .int: return v
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return d.isFinite && abs(d) < 9.2e18 ? .int(Int(d)) : dflt
            case .string(let s):
                let t = s.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "_", with: "")
                if let n = Int(t, radix: base) { return .int(n) }
                if let d = Double(t), d.isFinite, abs(d) < 9.2e18 { return .int(Int(d)) }
                return dflt
            default: return dflt
            }
        case "float":
            let dflt = a.optional(0, "default") ?? .double(0)
            switch v {
            case .double: return v
            case .int(let n): return .double(Double(n))
            case .bool(let b): return .double(b ? 1 : 0)
            case .string(let s):
                let t = s.trimmingCharacters(in: .whitespaces).lowercased()
                if t == "inf" || t == "+inf" || t == "infinity" { return .double(.infinity) }
                if t == "-inf" || t == "-infinity" { return .double(-.infinity) }
                if t == "nan" { return .double(.nan) }
                return Double(t).map { .double($0) } ?? dflt
            default: return dflt
            }
        case "abs":
            switch v {
            case .int(let n): guard n != Int.min else { throw JinjaError("integer overflow in abs") }; return .int(abs(n))
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return .double(abs(d))
            default: throw JinjaError("bad operand type for abs(): '\(v.typeName)'")
            }
        case "round":
            guard let x = v.number else { throw JinjaError("round: expected a number, got \(v.typeName)") }
            let precision = try a.int(0, "precision") ?? 0
            let method = (a.optional(1, "method") ?? .string("common")).str
            let scale = pow(10.0, Double(max(-300, min(300, precision))))
            switch method {
            case "common": return .double((x * scale).rounded(.toNearestOrEven) / scale)
            case "ceil": return .double((x * scale).rounded(.up) / scale)
            case "floor": return .double((x * scale).rounded(.down) / scale)
            default: throw JinjaError("round: method must be common, ceil or floor")
            }
        case "indent": return .string(indent(v.str, a))
        case "center":
            let width = try a.int(0, "width") ?? 80
            return try callMethod(.string(v.str), "center", [.int(width)], []) ?? v
        case "wordcount": return .int(Python.split(Array(v.str.unicodeScalars), sep: nil, maxsplit: -1, fromRight: false).count)
        case "format":
            let args: [Value] = a.args
            return try binary("%", .string(v.str), args.count == 1 ? args[0] : .tuple(args))
        case "escape", "e", "forceescape":
            var s = ""
            for c in v.str.unicodeScalars {
                switch c {
                case "&": s += "&amp;"
                case "<": s += "&lt;"
                case ">": s += "&gt;"
                case "\"": s += "&#34;"
                case "'": s += "&#39;"
                default: s.unicodeScalars.append(c)
                }
            }
            return .string(s)
        case "attr": return try attribute(v, try a.required(0, "name").str, what: "value")
        case "select", "reject", "selectattr", "rejectattr":
            return .list(try selectFilter(name, try iterate(v), a, frame))
        case "map":
            let items = try iterate(v)
            if let attr = a.kw.first(where: { $0.0 == "attribute" })?.1 {
                let dflt = a.kw.first { $0.0 == "default" }?.1
                return .list(try items.map { x in
                    let r = try attributePath(x, attr)
                    if r.isUndefined, let dflt { return dflt }
                    return r
                })
            }
            guard case .string(let f)? = a.args.first else { throw JinjaError("map: expected a filter name or attribute=") }
            let rest = (Array(a.args.dropFirst()), a.kw)
            return .list(try items.map { try applyFilter(f, $0, rest, frame) })
        case "unique":
            let caseSensitive = a.bool(0, "case_sensitive", default: false)
            let attr = a.optional(1, "attribute")
            var seen: [Value] = [], out: [Value] = []
            for x in try iterate(v) {
                var key = attr.map { (try? attributePath(x, $0)) ?? .undefined("") } ?? x
                if !caseSensitive, case .string(let s) = key { key = .string(s.lowercased()) }
                if !seen.contains(where: { $0.equals(key) }) { seen.append(key); out.append(x) }
            }
            return .list(out)
        case "sort":
            let reverse = a.bool(0, "reverse", default: false)
            let caseSensitive = a.bool(1, "case_sensitive", default: false)
            let attr = a.optional(2, "attribute")
            let items = try iterate(v)
            let keys = try items.map { x -> Value in
                var k = try attr.map { try attributePath(x, $0) } ?? x
                if !caseSensitive, case .string(let s) = k { k = .string(s.lowercased()) }
                return k
            }
            return .list(try stableSort(items, keys, reverse: reverse))
        case "dictsort":
            guard case .dict(let d) = v else { throw JinjaError("dictsort: expected a dict, got \(v.typeName)") }
            let caseSensitive = a.bool(0, "case_sensitive", default: false)
            let byValue = (a.optional(1, "by") ?? .string("key")).str == "value"
            let reverse = a.bool(2, "reverse", default: false)
            let items = d.pairs.map { Value.tuple([.string($0.0), $0.1]) }
            let keys = d.pairs.map { p -> Value in
                var k = byValue ? p.1 : .string(p.0)
                if !caseSensitive, case .string(let s) = k { k = .string(s.lowercased()) }
                return k
            }
            return .list(try stableSort(items, keys, reverse: reverse))
        case "min", "max":
            let caseSensitive = a.bool(0, "case_sensitive", default: false)
            let attr = a.optional(1, "attribute")
            let items = try iterate(v)
            guard !items.isEmpty else { return .undefined("\(name) of an empty sequence") }
            var best = 0
            for i in 1..<items.count {
                func key(_ x: Value) throws -> Value {
                    var k = try attr.map { try attributePath(x, $0) } ?? x
                    if !caseSensitive, case .string(let s) = k { k = .string(s.lowercased()) }
                    return k
                }
                guard let o = order(try key(items[i]), try key(items[best])) else { throw JinjaError("\(name): values cannot be compared") }
                if name == "min" ? o < 0 : o > 0 { best = i }
            }
            return items[best]
        case "sum":
            let attr = a.optional(0, "attribute")
            var total = a.optional(1, "start") ?? .int(0)
            for x in try iterate(v) {
                total = try binary("+", total, try attr.map { try attributePath(x, $0) } ?? x)
            }
            return total
        case "batch":
            let n = try a.int(0, "linecount") ?? 1
            guard n > 0 else { throw JinjaError("batch: linecount must be positive") }
            let fill = a.optional(1, "fill_with")
            var out: [Value] = [], cur: [Value] = []
            for x in try iterate(v) {
                cur.append(x)
                if cur.count == n { out.append(.list(cur)); cur = [] }
            }
            if !cur.isEmpty {
                if let fill, !fill.isNone { while cur.count < n { cur.append(fill) } }
                out.append(.list(cur))
            }
            return .list(out)
        default:
            throw JinjaError("no filter named '\(name)'")
        }
    }

    /// Jinja's title filter: words begin after whitespace, '-', '(', '{', '[' or '<'.
    private func jinjaTitle(_ s: String) -> String {
        var out = ""
        var atStart = true
        for c in s.unicodeScalars {
            let boundary = Python.isSpace(c) || "-({[<".unicodeScalars.contains(c)
            if boundary { out.unicodeScalars.append(c); atStart = true; continue }
            out += atStart ? Python.upper(c) : Python.lower(c)
            atStart = false
        }
        return out
    }

    private func indent(_ s0: String, _ a: ArgReader) -> String {
        var indention = "    "
        if let w = a.optional(0, "width") {
            if case .string(let t) = w { indention = t } else if case .int(let n) = w { indention = String(repeating: " ", count: max(0, min(n, 1024))) }
        }
        let first = a.bool(1, "first", default: false)
        let blank = a.bool(2, "blank", default: false)
        let lines = Python.splitlines(Array((s0 + "\n").unicodeScalars), keepends: false).map { Python.string($0) }
        var rv: String
        if blank {
            rv = lines.joined(separator: "\n" + indention)
        } else {
            rv = lines.first ?? ""
            let rest = lines.dropFirst()
            if !rest.isEmpty { rv += "\n" + rest.map { $0.isEmpty ? $0 : indention + $0 }.joined(separator: "\n") }
        }
        if first { rv = indention + rv }
        return rv
    }

    /// Follows a dotted attribute path ("function.name", "0.x") as Jinja's attribute getters do.
    func attributePath(_ v: Value, _ path: Value) throws -> Value {
        if case .int = path { return try item(v, path, what: "item") }
        var cur = v
        for part in path.str.split(separator: ".", omittingEmptySubsequences: false) {
            if let n = Int(part) { cur = try item(cur, .int(n), what: "item") } else { cur = try item(cur, .string(String(part)), what: "item") }
        }
        return cur
    }

    private func selectFilter(_ name: String, _ items: [Value], _ a: ArgReader, _ frame: Frame) throws -> [Value] {
        let byAttr = name.hasSuffix("attr")
        let keep = name.hasPrefix("select")
        var args = a.args
        var attr: Value? = nil
        if byAttr {
            guard !args.isEmpty else { throw JinjaError("\(name): missing the attribute name") }
            attr = args.removeFirst()
        }
        let test = args.isEmpty ? nil : args.removeFirst().str
        var out: [Value] = []
        for x in items {
            try step()
            let subject = try attr.map { try attributePath(x, $0) } ?? x
            let ok = try test.map { try applyTest($0, subject, args, frame) } ?? subject.truthy
            if ok == keep { out.append(x) }
        }
        return out
    }

    private func stableSort(_ items: [Value], _ keys: [Value], reverse: Bool) throws -> [Value] {
        var failed = false
        let idx = Array(items.indices).sorted { i, j in
            guard let o = order(keys[i], keys[j]) else { failed = true; return i < j }
            if o == 0 { return i < j }
            return reverse ? o > 0 : o < 0
        }
        if failed { throw JinjaError("sort: values cannot be compared") }
        return idx.map { items[$0] }
    }
}
