// Jinja tests (`x is defined`, `x is not none`, `x is divisibleby 3`...): defined, undefined,
// none, boolean, true, false, integer, float, number, string, mapping, iterable, sequence,
// callable, sameas, escaped, eq/equalto, ne, lt/le/gt/ge, in, odd, even, divisibleby, lower,
// upper.

extension Interpreter {
    func applyTest(_ name: String, _ v: Value, _ args: [Value], _ frame: Frame) throws -> Bool {
        func arg() throws -> Value {
            guard let x = args.first else { throw JinjaError("test '\(name)' needs an argument") }
            return x
        }
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": return v.isNone
        case "boolean": if case .bool = v { return true }; return false
        case "true": if case .bool(true) = v { return true }; return false
        case "false": if case .bool(false) = v { return true }; return false
        case "integer": if case .int = v { return true }; return false
        case "float": if case .double = v { return true }; return false
        case "number": return v.isNumber
        case "string": if case .string = v { return true }; return false
        case "mapping": if case .dict = v { return true }; return false
        case "iterable":
            switch v {
            case .undefined, .string, .list, .tuple, .dict: return true
            default: return false
            }
        case "sequence":
            switch v {
            case .string, .list, .tuple, .dict: return true
            default: return false
            }
        case "callable": if case .callable = v { return true }; return false
        case "escaped": return false
        case "sameas":
            let x = try arg()
            switch (v, x) {
            case (.none, .none): return true
            case (.bool(let p), .bool(let q)): return p == q
            case (.namespace(let p), .namespace(let q)): return p === q
            case (.callable(let p), .callable(let q)): return p === q
            case (.int(let p), .int(let q)): return p == q && p >= -5 && p <= 256  // CPython's small-int cache
            default: return false
            }
        case "eq", "equalto", "==": return v.equals(try arg())
        case "ne", "!=": return !v.equals(try arg())
        case "lt", "lessthan", "<": return try compare("<", v, try arg())
        case "le", "<=": return try compare("<=", v, try arg())
        case "gt", "greaterthan", ">": return try compare(">", v, try arg())
        case "ge", ">=": return try compare(">=", v, try arg())
        case "in": return try contains(try arg(), v)
        case "odd", "even", "divisibleby":
            guard case .int(let n) = v else {
                if case .undefined(let w) = v { throw JinjaError("'\(w)' is undefined") }
                throw JinjaError("test '\(name)' needs an integer, got \(v.typeName)")
            }
            if name == "odd" { return n & 1 == 1 }
            if name == "even" { return n & 1 == 0 }
            guard case .int(let d) = try arg(), d != 0 else { throw JinjaError("divisibleby needs a non-zero integer") }
            return n % d == 0
        case "lower": return v.str == v.str.lowercased()
        case "upper": return v.str == v.str.uppercased()
        default:
            throw JinjaError("no test named '\(name)'")
        }
    }
}
