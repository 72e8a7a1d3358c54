// Template values, with Python's semantics as Jinja2 has them: none, booleans, integers, floats,
// strings (indexed by Unicode code point), lists (also tuples), insertion-ordered dicts, the
// mutable namespace() object, macros and built-in callables, and Undefined (a missing name,
// attribute or item: empty when printed, false when tested, an error when used as a value).
// Also: truthiness, equality and ordering, str() and repr() as Python writes them.

import Foundation

/// An insertion-ordered dictionary with string keys (what JSON and chat templates hold).
public struct OrderedDict: Equatable {
    public private(set) var keys: [String] = []
    private var storage: [String: Value] = [:]
    public init() {}
    public init(_ pairs: [(String, Value)]) { for (k, v) in pairs { self[k] = v } }
    public subscript(key: String) -> Value? {
        get { storage[key] }
        set {
            if let v = newValue {
                if storage.updateValue(v, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }
    public var count: Int { keys.count }
    public var pairs: [(String, Value)] { keys.map { ($0, storage[$0] ?? .none) } }
    public static func == (a: OrderedDict, b: OrderedDict) -> Bool {
        a.keys.count == b.keys.count && a.keys.allSatisfy { k in
            guard let x = a.storage[k], let y = b.storage[k] else { return false }
            return x.equals(y)
        }
    }
}

/// namespace(): the one mutable object a template can build (attributes set with {% set ns.x = %}).
public final class Namespace {
    var attributes = OrderedDict()
    init() {}
}

/// A callable value: a macro, a bound method, or a global function such as range().
public final class Callable {
    let name: String
    let call: (Interpreter, [Value], [(String, Value)]) throws -> Value
    init(_ name: String, _ call: @escaping (Interpreter, [Value], [(String, Value)]) throws -> Value) {
        self.name = name; self.call = call
    }
}

public indirect enum Value {
    case undefined(String)      // what was missing, for the error message
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([Value])
    case tuple([Value])
    case dict(OrderedDict)
    case namespace(Namespace)
    case callable(Callable)

    public var isUndefined: Bool { if case .undefined = self { return true }; return false }
    public var isNone: Bool { if case .none = self { return true }; return false }

    /// Python's truthiness.
    public var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let n): return n != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let l), .tuple(let l): return !l.isEmpty
        case .dict(let d): return d.count > 0
        case .namespace, .callable: return true
        }
    }

    /// The Python type name, for error messages.
    public var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .list: return "list"
        case .tuple: return "tuple"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .callable: return "function"
        }
    }

    /// A number as a Double (bools count as 0 / 1, as in Python); nil otherwise.
    var number: Double? {
        switch self {
        case .bool(let b): return b ? 1 : 0
        case .int(let n): return Double(n)
        case .double(let d): return d
        default: return nil
        }
    }

    var isNumber: Bool { number != nil }

    /// Items of a list or tuple.
    var items: [Value]? {
        switch self {
        case .list(let l), .tuple(let l): return l
        default: return nil
        }
    }

    /// Python ==.
    public func equals(_ other: Value) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined): return true
        case (.none, .none): return true
        case (.string(let a), .string(let b)): return a.unicodeScalars.elementsEqual(b.unicodeScalars)
        case (.list(let a), .list(let b)), (.tuple(let a), .tuple(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.equals($1) }
        case (.dict(let a), .dict(let b)): return a == b
        case (.namespace(let a), .namespace(let b)): return a === b
        case (.callable(let a), .callable(let b)): return a === b
        case (.int(let a), .int(let b)): return a == b
        default:
            if let x = number, let y = other.number { return x == y }
            return false
        }
    }

    /// Python str().
    public var str: String {
        switch self {
        case .undefined: return ""
        case .string(let s): return s
        default: return repr
        }
    }

    /// Python repr().
    public var repr: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let n): return String(n)
        case .double(let d): return Value.pythonFloat(d)
        case .string(let s): return Value.pythonRepr(s)
        case .list(let l): return "[" + l.map { $0.repr }.joined(separator: ", ") + "]"
        case .tuple(let l): return "(" + l.map { $0.repr }.joined(separator: ", ") + (l.count == 1 ? ",)" : ")")
        case .dict(let d): return "{" + d.pairs.map { Value.pythonRepr($0.0) + ": " + $0.1.repr }.joined(separator: ", ") + "}"
        case .namespace(let ns): return "<Namespace " + Value.dict(ns.attributes).repr + ">"
        case .callable(let c): return "<function \(c.name)>"
        }
    }

    /// Python's repr of a float: the shortest text that reads back the same.
    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == d.rounded(), abs(d) < 1e16 {
            let s = String(format: "%.1f", d)
            return s
        }
        var s = "\(d)"
        // Swift writes "1e-05" / "1e+16" as Python does; keep its mantissa form.
        if let e = s.firstIndex(of: "e") {
            let mant = s[..<e], exp = s[s.index(after: e)...]
            var expDigits = String(exp)
            var sign = "+"
            if expDigits.hasPrefix("-") { sign = "-"; expDigits.removeFirst() } else if expDigits.hasPrefix("+") { expDigits.removeFirst() }
            if expDigits.count < 2 { expDigits = "0" + expDigits }
            s = mant + "e" + sign + expDigits
        }
        return s
    }

    /// Python's repr of a string: single quotes unless the text holds ' and no ".
    static func pythonRepr(_ s: String) -> String {
        let useDouble = s.contains("'") && !s.contains("\"")
        let q: Character = useDouble ? "\"" : "'"
        var out = String(q)
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if c == q.unicodeScalars.first! { out += "\\" + String(q); continue }
                if c.value < 0x20 || c.value == 0x7f { out += String(format: "\\x%02x", c.value); continue }
                if c.value >= 0x80 && c.value < 0xa0 { out += String(format: "\\x%02x", c.value); continue }
                out.unicodeScalars.append(c)
            }
        }
        out.append(q)
        return out
    }
}
