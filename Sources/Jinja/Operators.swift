// Arithmetic, concatenation and comparison with Python's rules: int arithmetic that overflows
// is an error (Python would grow the integer; a template never needs that), / always gives a
// float, // and % floor toward negative infinity, + joins strings and lists, * repeats them
// (bounded by the output limit), ~ joins the str() of both sides, comparisons order numbers,
// strings (by code point) and lists; "in" tests substrings, list items and dict keys.

import Foundation

extension Interpreter {
    private func intValue(_ v: Value) -> Int? {
        switch v {
        case .int(let n): return n
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    private func unsupported(_ op: String, _ a: Value, _ b: Value) -> JinjaError {
        if case .undefined(let w) = a { return JinjaError("'\(w)' is undefined") }
        if case .undefined(let w) = b { return JinjaError("'\(w)' is undefined") }
        return JinjaError("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
    }

    private func overflow(_ op: String) -> JinjaError { JinjaError("integer overflow in \(op)") }

    func negate(_ v: Value) throws -> Value {
        if let n = intValue(v) {
            guard n != Int.min else { throw overflow("-") }
            return .int(-n)
        }
        if case .double(let d) = v { return .double(-d) }
        if case .undefined(let w) = v { throw JinjaError("'\(w)' is undefined") }
        throw JinjaError("bad operand type for unary -: '\(v.typeName)'")
    }

    private func repeated(_ n: Int, _ unit: Int) throws -> Int {
        if unit == 0 { return 0 }
        let count = max(0, n)
        if count > limits.maxOutput / unit {
            throw JinjaError("repetition would build more than \(limits.maxOutput) items")
        }
        try charge(items: count * unit / 64)
        return count
    }

    private func joined(_ x: [Value], _ y: [Value]) throws -> [Value] {
        if x.count + y.count > limits.maxOutput { throw JinjaError("list longer than \(limits.maxOutput) items") }
        try charge(items: x.count + y.count)
        return x + y
    }

    func binary(_ op: String, _ a: Value, _ b: Value) throws -> Value {
        if op == "~" {
            let s = a.str + b.str
            let n = s.unicodeScalars.count
            if n > limits.maxOutput { throw JinjaError("string longer than \(limits.maxOutput) characters") }
            try charge(characters: n)
            return .string(s)
        }
        if let x = intValue(a), let y = intValue(b) {
            switch op {
            case "+": let (r, o) = x.addingReportingOverflow(y); if o { throw overflow(op) }; return .int(r)
            case "-": let (r, o) = x.subtractingReportingOverflow(y); if o { throw overflow(op) }; return .int(r)
            case "*": let (r, o) = x.multipliedReportingOverflow(by: y); if o { throw overflow(op) }; return .int(r)
            case "/":
                guard y != 0 else { throw JinjaError("division by zero") }
                return .double(Double(x) / Double(y))
            case "//", "%":
                guard y != 0 else { throw JinjaError(op == "%" ? "integer modulo by zero" : "integer division by zero") }
                if x == Int.min && y == -1 { throw overflow(op) }
                var q = x / y, r = x % y
                if r != 0 && ((r < 0) != (y < 0)) { q -= 1; r += y }
                return .int(op == "//" ? q : r)
            case "**":
                if y < 0 { return .double(pow(Double(x), Double(y))) }
                var result = 1, base = x, e = y
                while e > 0 {
                    if e & 1 == 1 { let (r, o) = result.multipliedReportingOverflow(by: base); if o { throw overflow(op) }; result = r }
                    e >>= 1
                    if e > 0 { let (r, o) = base.multipliedReportingOverflow(by: base); if o { throw overflow(op) }; base = r }
                }
                return .int(result)
            default: break
            }
        }
        if let x = a.number, let y = b.number {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                guard y != 0 else { throw JinjaError("float division by zero") }
                return .double(x / y)
            case "//":
                guard y != 0 else { throw JinjaError("float floor division by zero") }
                return .double((x / y).rounded(.down))
            case "%":
                guard y != 0 else { throw JinjaError("float modulo") }
                var r = fmod(x, y)
                if r != 0 && ((r < 0) != (y < 0)) { r += y }
                return .double(r)
            case "**": return .double(pow(x, y))
            default: break
            }
        }
        switch (op, a, b) {
        case ("+", .string(let x), .string(let y)):
            let n = x.unicodeScalars.count + y.unicodeScalars.count
            if n > limits.maxOutput { throw JinjaError("string longer than \(limits.maxOutput) characters") }
            try charge(characters: n)
            return .string(x + y)
        case ("+", .list(let x), .list(let y)): return .list(try joined(x, y))
        case ("+", .tuple(let x), .tuple(let y)): return .tuple(try joined(x, y))
        case ("*", .string(let s), _), ("*", _, .string(let s)):
            guard let n = intValue(a.isNumber ? a : b) else { throw unsupported(op, a, b) }
            return .string(String(repeating: s, count: try repeated(n, s.unicodeScalars.count)))
        case ("*", .list(let l), _), ("*", _, .list(let l)):
            guard let n = intValue(a.isNumber ? a : b) else { throw unsupported(op, a, b) }
            let count = try repeated(n, l.count)
            return .list(Array([[Value]](repeating: l, count: count).joined()))
        case ("%", .string(let fmt), _):
            return .string(try percentFormat(fmt, b))
        default:
            throw unsupported(op, a, b)
        }
    }

    /// printf-style "%s" / "%d" / "%r" formatting of a string with one value or a tuple.
    private func percentFormat(_ fmt: String, _ arg: Value) throws -> String {
        let args: [Value]
        if case .tuple(let t) = arg { args = t } else { args = [arg] }
        var out = "", k = 0
        var it = fmt.unicodeScalars.makeIterator()
        while let c = it.next() {
            guard c == "%" else { out.unicodeScalars.append(c); continue }
            guard let spec = it.next() else { throw JinjaError("incomplete format") }
            if spec == "%" { out += "%"; continue }
            guard k < args.count else { throw JinjaError("not enough arguments for format string") }
            let v = args[k]; k += 1
            switch spec {
            case "s": out += v.str
            case "r": out += v.repr
            case "d", "i":
                guard let n = intValue(v) ?? v.number.flatMap({ $0.isFinite && abs($0) < 9.2e18 ? Int($0) : nil }) else {
                    throw JinjaError("%d format: a finite number is required")
                }
                out += String(n)
            default: throw JinjaError("unsupported format character '\(spec)'")
            }
        }
        return out
    }

    /// Python ordering; nil when the two cannot be ordered.
    func order(_ a: Value, _ b: Value) -> Int? {
        if let x = intValue(a), let y = intValue(b) { return x < y ? -1 : x > y ? 1 : 0 }
        if let x = a.number, let y = b.number { return x < y ? -1 : x > y ? 1 : 0 }
        switch (a, b) {
        case (.string(let x), .string(let y)):
            var i = x.unicodeScalars.makeIterator(), j = y.unicodeScalars.makeIterator()
            while true {
                switch (i.next(), j.next()) {
                case (nil, nil): return 0
                case (nil, _): return -1
                case (_, nil): return 1
                case (let p?, let q?): if p != q { return p.value < q.value ? -1 : 1 }
                }
            }
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            for (p, q) in zip(x, y) where !p.equals(q) { return order(p, q) }
            return x.count < y.count ? -1 : x.count > y.count ? 1 : 0
        default: return nil
        }
    }

    func contains(_ container: Value, _ v: Value) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let sub) = v else {
                throw JinjaError("'in <string>' requires string as left operand, not \(v.typeName)")
            }
            return sub.isEmpty || s.contains(sub)
        case .list(let l), .tuple(let l): return l.contains { $0.equals(v) }
        case .dict(let d):
            guard case .string(let k) = v else { return false }
            return d[k] != nil
        case .namespace(let ns):
            guard case .string(let k) = v else { return false }
            return ns.attributes[k] != nil
        case .undefined: return false
        default: throw JinjaError("argument of type '\(container.typeName)' is not iterable")
        }
    }

    func compare(_ op: String, _ a: Value, _ b: Value) throws -> Bool {
        switch op {
        case "==": return a.equals(b)
        case "!=": return !a.equals(b)
        case "in": return try contains(b, a)
        case "not in": return !(try contains(b, a))
        default:
            guard let o = order(a, b) else {
                if case .undefined(let w) = a { throw JinjaError("'\(w)' is undefined") }
                if case .undefined(let w) = b { throw JinjaError("'\(w)' is undefined") }
                throw JinjaError("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
            }
            switch op {
            case "<": return o < 0
            case "<=": return o <= 0
            case ">": return o > 0
            default: return o >= 0
            }
        }
    }
}
