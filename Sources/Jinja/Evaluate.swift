// Expression evaluation: names (scope chain, then globals), literals, attribute and item access
// as Jinja2 does it (an attribute first for methods, else the item; a missing one is Undefined;
// anything taken from Undefined is an error), slices, calls, filters, tests, boolean logic and
// the conditional expression.

extension Interpreter {
    func eval(_ e: Expr, _ frame: Frame) throws -> Value {
        try step()
        evalDepth += 1
        defer { evalDepth -= 1 }
        if evalDepth > limits.maxDepth * 4 { throw JinjaError("expression nesting is deeper than \(limits.maxDepth * 4)").at(e.pos) }
        do {
            return try evalKind(e, frame)
        } catch let err as JinjaError {
            throw err.at(e.pos)
        }
    }

    private func evalKind(_ e: Expr, _ frame: Frame) throws -> Value {
        switch e.kind {
        case .literal(let v): return v
        case .name(let n):
            if let v = frame.lookup(n) { return v }
            if let g = globalValue(n) { return g }
            return .undefined(n)
        case .list(let items): return .list(try items.map { try eval($0, frame) })
        case .tuple(let items): return .tuple(try items.map { try eval($0, frame) })
        case .dict(let pairs):
            var d = OrderedDict()
            for (k, v) in pairs {
                let key = try eval(k, frame)
                guard case .string(let s) = key else { throw JinjaError("dict keys must be strings here, got \(key.typeName)") }
                d[s] = try eval(v, frame)
            }
            return .dict(d)
        case .attribute(let obj, let name):
            return try attribute(try eval(obj, frame), name, what: describe(obj))
        case .item(let obj, let index):
            return try item(try eval(obj, frame), try eval(index, frame), what: describe(obj))
        case .slice(let obj, let a, let b, let c):
            return try slice(try eval(obj, frame), try a.map { try eval($0, frame) }, try b.map { try eval($0, frame) },
                             try c.map { try eval($0, frame) })
        case .call(let fn, let args):
            let (pos, kw) = try evalArgs(args, frame)
            if case .attribute(let objExpr, let name) = fn.kind {
                let obj = try eval(objExpr, frame)
                if case .undefined(let what) = obj { throw JinjaError("'\(what)' is undefined") }
                if let r = try callMethod(obj, name, pos, kw) { return r }
                let f = try attribute(obj, name, what: describe(objExpr))
                return try callValue(f, pos, kw, name: describe(fn))
            }
            return try callValue(try eval(fn, frame), pos, kw, name: describe(fn))
        case .filter(let x, let name, let args):
            return try applyFilter(name, try eval(x, frame), try evalArgs(args, frame), frame)
        case .test(let x, let name, let args, let negated):
            let v = try eval(x, frame)
            let r = try applyTest(name, v, try evalArgs(args, frame).0, frame)
            return .bool(negated ? !r : r)
        case .not(let x): return .bool(!(try eval(x, frame).truthy))
        case .negate(let x): return try negate(try eval(x, frame))
        case .plus(let x):
            let v = try eval(x, frame)
            guard v.isNumber else { throw JinjaError("bad operand type for unary +: '\(v.typeName)'") }
            return v
        case .binary(let op, let a, let b):
            return try binary(op, try eval(a, frame), try eval(b, frame))
        case .and(let a, let b):
            let x = try eval(a, frame)
            return x.truthy ? try eval(b, frame) : x
        case .or(let a, let b):
            let x = try eval(a, frame)
            return x.truthy ? x : try eval(b, frame)
        case .compare(let first, let ops):
            var left = try eval(first, frame)
            for (op, rightExpr) in ops {
                let right = try eval(rightExpr, frame)
                if !(try compare(op, left, right)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .conditional(let cond, let then, let other):
            if try eval(cond, frame).truthy { return try eval(then, frame) }
            if let other { return try eval(other, frame) }
            return .undefined("conditional expression")
        }
    }

    /// A short name for an expression, for "'x' is undefined" messages.
    func describe(_ e: Expr) -> String {
        switch e.kind {
        case .name(let n): return n
        case .attribute(let o, let n): return describe(o) + "." + n
        case .item(let o, let i):
            if case .literal(let v) = i.kind { return describe(o) + "[" + v.repr + "]" }
            return describe(o) + "[...]"
        case .call(let f, _): return describe(f) + "()"
        default: return "expression"
        }
    }

    func evalArgs(_ args: Args, _ frame: Frame) throws -> ([Value], [(String, Value)]) {
        (try args.positional.map { try eval($0, frame) }, try args.keywords.map { ($0.0, try eval($0.1, frame)) })
    }

    func callValue(_ f: Value, _ args: [Value], _ kwargs: [(String, Value)], name: String) throws -> Value {
        switch f {
        case .callable(let c): return try c.call(self, args, kwargs)
        case .undefined(let what): throw JinjaError("'\(what)' is undefined")
        default: throw JinjaError("'\(f.typeName)' object is not callable")
        }
    }

    func attribute(_ obj: Value, _ name: String, what: String) throws -> Value {
        switch obj {
        case .undefined(let w): throw JinjaError("'\(w)' is undefined")
        case .dict(let d):
            if Interpreter.dictMethods.contains(name) { return boundMethod(obj, name) }
            return d[name] ?? .undefined("\(what).\(name)")
        case .namespace(let ns):
            return ns.attributes[name] ?? .undefined("\(what).\(name)")
        case .string:
            if Interpreter.stringMethods.contains(name) { return boundMethod(obj, name) }
            return .undefined("\(what).\(name)")
        case .list, .tuple:
            if Interpreter.listMethods.contains(name) { return boundMethod(obj, name) }
            return .undefined("\(what).\(name)")
        default:
            return .undefined("\(what).\(name)")
        }
    }

    func boundMethod(_ obj: Value, _ name: String) -> Value {
        .callable(Callable(name) { interp, args, kw in
            guard let r = try interp.callMethod(obj, name, args, kw) else {
                throw JinjaError("'\(obj.typeName)' object has no attribute '\(name)'")
            }
            return r
        })
    }

    func item(_ obj: Value, _ key: Value, what: String) throws -> Value {
        switch (obj, key) {
        case (.undefined(let w), _): throw JinjaError("'\(w)' is undefined")
        case (.list(let l), .int(let i)), (.tuple(let l), .int(let i)):
            let k = i < 0 ? l.count + i : i
            return k >= 0 && k < l.count ? l[k] : .undefined("\(what)[\(i)]")
        case (.list(let l), .bool(let b)), (.tuple(let l), .bool(let b)):
            let k = b ? 1 : 0
            return k < l.count ? l[k] : .undefined("\(what)[\(b)]")
        case (.string(let s), .int(let i)):
            let u = Array(s.unicodeScalars)
            let k = i < 0 ? u.count + i : i
            return k >= 0 && k < u.count ? .string(String(u[k])) : .undefined("\(what)[\(i)]")
        case (.dict(let d), .string(let k)):
            if let v = d[k] { return v }
            return try attribute(obj, k, what: what)
        case (.namespace, .string(let k)), (.string, .string(let k)), (.list, .string(let k)), (.tuple, .string(let k)):
            return try attribute(obj, k, what: what)
        default:
            return .undefined("\(what)[\(key.repr)]")
        }
    }

    /// Python slice semantics on lists, tuples and strings.
    func slice(_ obj: Value, _ a: Value?, _ b: Value?, _ c: Value?) throws -> Value {
        func int(_ v: Value?) throws -> Int? {
            guard let v, !v.isNone else { return nil }
            if case .int(let n) = v { return n }
            if case .bool(let x) = v { return x ? 1 : 0 }
            throw JinjaError("slice indices must be integers or None, got \(v.typeName)")
        }
        let step = try int(c) ?? 1
        if step == 0 { throw JinjaError("slice step cannot be zero") }
        func indices(_ n: Int) throws -> [Int] {
            var start = try int(a), stop = try int(b)
            if step > 0 {
                var s = start ?? 0, e = stop ?? n
                if s < 0 { s = max(0, s + n) } else { s = min(s, n) }
                if e < 0 { e = max(0, e + n) } else { e = min(e, n) }
                return s < e ? Array(stride(from: s, to: e, by: step)) : []
            } else {
                if let x = start { start = x < 0 ? max(-1, x + n) : min(x, n - 1) }
                if let x = stop { stop = x < 0 ? max(-1, x + n) : min(x, n - 1) }
                let s = start ?? n - 1, e = stop ?? -1
                return s > e ? Array(stride(from: s, to: e, by: step)) : []
            }
        }
        switch obj {
        case .list(let l): return .list(try indices(l.count).map { l[$0] })
        case .tuple(let l): return .tuple(try indices(l.count).map { l[$0] })
        case .string(let s):
            let u = Array(s.unicodeScalars)
            var v = String.UnicodeScalarView()
            for i in try indices(u.count) { v.append(u[i]) }
            return .string(String(v))
        case .undefined(let w): throw JinjaError("'\(w)' is undefined")
        default: throw JinjaError("'\(obj.typeName)' object is not subscriptable")
        }
    }
}
