// Runs a parsed template: statements write to an output buffer, with Jinja's scoping (a for
// loop's body has its own scope; macros see the scope they were defined in), loop.* variables,
// break/continue, macros and {% call %}, filter and set blocks, and {% generation %} blocks whose
// output ranges are recorded (for training only on assistant text). Counts steps, output size
// and call depth against the limits.

import Foundation

final class Frame {
    var vars: [String: Value] = [:]
    let parent: Frame?
    init(parent: Frame?) { self.parent = parent }

    func lookup(_ name: String) -> Value? {
        var f: Frame? = self
        while let cur = f {
            if let v = cur.vars[name] { return v }
            f = cur.parent
        }
        return nil
    }
}

enum Flow { case normal, breakLoop, continueLoop }

public final class Interpreter {
    let limits: JinjaLimits
    let now: Date
    var out = String.UnicodeScalarView()
    var outCount = 0
    var capturing = 0          // > 0 while output goes to a macro, set block or filter block
    var steps = 0
    var callDepth = 0
    var evalDepth = 0
    var generationRanges: [Range<Int>] = []   // unicode-scalar offsets into the output

    init(limits: JinjaLimits, now: Date) { self.limits = limits; self.now = now }

    func step() throws {
        steps += 1
        if steps > limits.maxSteps { throw JinjaError("template took more than \(limits.maxSteps) steps") }
    }

    /// Counts the work of building a value of n items (or 64 characters per step for strings).
    func charge(items n: Int) throws {
        steps += max(0, n)
        if steps > limits.maxSteps { throw JinjaError("template took more than \(limits.maxSteps) steps") }
    }

    func charge(characters n: Int) throws { try charge(items: n / 64) }

    func write(_ s: String) throws {
        if s.isEmpty { return }
        let n = s.unicodeScalars.count
        outCount += n
        if outCount > limits.maxOutput { throw JinjaError("template output is larger than \(limits.maxOutput) characters") }
        out.append(contentsOf: s.unicodeScalars)
    }

    /// Runs body with its output captured and returned instead of written.
    func capture(_ body: () throws -> Void) throws -> String {
        let saved = out
        let savedCount = outCount
        out = String.UnicodeScalarView()
        capturing += 1
        defer { capturing -= 1 }
        do { try body() } catch { out = saved; throw error }
        let text = String(out)
        out = saved
        outCount = savedCount
        return text
    }

    func execute(_ stmts: [Stmt], _ frame: Frame) throws -> Flow {
        for s in stmts {
            let flow = try executeOne(s, frame)
            if flow != .normal { return flow }
        }
        return .normal
    }

    private func executeOne(_ s: Stmt, _ frame: Frame) throws -> Flow {
        do {
            switch s.kind {
            case .text(let t):
                try write(t)
            case .output(let e):
                let v = try eval(e, frame)
                try write(v.str)
            case .ifChain(let branches, let orElse):
                for (cond, body) in branches where try eval(cond, frame).truthy {
                    return try execute(body, frame)
                }
                if let orElse { return try execute(orElse, frame) }
            case .forLoop(let target, let iterExpr, let filter, let body, let orElse, let recursive):
                if recursive { throw JinjaError("recursive for loops are not supported") }
                return try runFor(target, try eval(iterExpr, frame), filter, body, orElse, frame)
            case .set(let target, let e):
                try assign(target, try eval(e, frame), frame)
            case .setBlock(let target, let filters, let body):
                var v = Value.string(try capture { _ = try execute(body, frame) })
                for (name, args, pos) in filters {
                    do { v = try applyFilter(name, v, try evalArgs(args, frame), frame) } catch let e as JinjaError { throw e.at(pos) }
                }
                try assign(target, v, frame)
            case .macro(let def):
                frame.vars[def.name] = .callable(makeMacro(def, frame, caller: nil))
            case .callBlock(let callExpr, let callerParams, let body):
                let caller = makeMacro(MacroDef(name: "caller", params: callerParams, body: body), frame, caller: nil)
                guard case .call(let fnExpr, let args) = callExpr.kind else { throw JinjaError("expected a call") }
                let fn = try eval(fnExpr, frame)
                guard case .callable(let c) = fn else { throw JinjaError("'\(fn.typeName)' object is not callable") }
                let (positional, keywords) = try evalArgs(args, frame)
                try write(try c.call(self, positional, keywords + [("caller", .callable(caller))]).str)
            case .filterBlock(let filters, let body):
                var v = Value.string(try capture { _ = try execute(body, frame) })
                for (name, args, pos) in filters {
                    do { v = try applyFilter(name, v, try evalArgs(args, frame), frame) } catch let e as JinjaError { throw e.at(pos) }
                }
                try write(v.str)
            case .generation(let body):
                let start = outCount
                let flow = try execute(body, frame)
                if capturing == 0 { generationRanges.append(start..<outCount) }
                return flow
            case .breakLoop: return .breakLoop
            case .continueLoop: return .continueLoop
            }
        } catch let e as JinjaError {
            throw e.at(s.pos)
        }
        return .normal
    }

    func assign(_ target: Target, _ v: Value, _ frame: Frame) throws {
        switch target {
        case .name(let n):
            frame.vars[n] = v
        case .names(let names):
            let items = try iterate(v)
            guard items.count == names.count else {
                throw JinjaError("cannot unpack \(items.count) values into \(names.count) names")
            }
            for (n, x) in zip(names, items) { frame.vars[n] = x }
        case .attribute(let obj, let attr):
            guard case .namespace(let ns)? = frame.lookup(obj) else {
                throw JinjaError("cannot assign attribute '\(attr)' on '\(obj)': it is not a namespace()")
            }
            ns.attributes[attr] = v
        }
    }

    /// The values a for loop (or a filter) walks: list items, dict keys, string characters.
    func iterate(_ v: Value) throws -> [Value] {
        switch v {
        case .undefined: return []
        case .list(let l), .tuple(let l): return l
        case .dict(let d): return d.keys.map { .string($0) }
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .namespace(let ns): return ns.attributes.keys.map { .string($0) }
        default: throw JinjaError("'\(v.typeName)' object is not iterable")
        }
    }

    private func runFor(_ target: Target, _ iterable: Value, _ filter: Expr?, _ body: [Stmt], _ orElse: [Stmt]?,
                        _ frame: Frame) throws -> Flow {
        var items = try iterate(iterable)
        let inner = Frame(parent: frame)
        if let filter {
            var kept: [Value] = []
            for x in items {
                try step()
                try assign(target, x, inner)
                if try eval(filter, inner).truthy { kept.append(x) }
            }
            items = kept
        }
        if items.isEmpty {
            if let orElse { return try execute(orElse, frame) }
            return .normal
        }
        let n = items.count
        for (k, x) in items.enumerated() {
            try step()
            let loop: [(String, Value)] = [
                ("index", .int(k + 1)), ("index0", .int(k)),
                ("revindex", .int(n - k)), ("revindex0", .int(n - k - 1)),
                ("first", .bool(k == 0)), ("last", .bool(k == n - 1)), ("length", .int(n)),
                ("depth", .int(1)), ("depth0", .int(0)),
                ("previtem", k > 0 ? items[k - 1] : .undefined("loop.previtem")),
                ("nextitem", k + 1 < n ? items[k + 1] : .undefined("loop.nextitem")),
                ("cycle", .callable(Callable("loop.cycle") { _, args, _ in
                    guard !args.isEmpty else { throw JinjaError("loop.cycle() needs at least one value") }
                    return args[k % args.count]
                })),
            ]
            inner.vars = ["loop": .dict(OrderedDict(loop))]
            try assign(target, x, inner)
            let flow = try execute(body, inner)
            if flow == .breakLoop { break }
        }
        return .normal
    }

    func makeMacro(_ def: MacroDef, _ frame: Frame, caller: Callable?) -> Callable {
        Callable(def.name) { [unowned self] _, args, kwargs in
            self.callDepth += 1
            defer { self.callDepth -= 1 }
            if self.callDepth > self.limits.maxDepth {
                throw JinjaError("macro calls nested deeper than \(self.limits.maxDepth) (runaway recursion?)")
            }
            let f = Frame(parent: frame)
            var extra: [Value] = []
            for (i, v) in args.enumerated() {
                if i < def.params.count { f.vars[def.params[i].0] = v } else { extra.append(v) }
            }
            var extraKw: [(String, Value)] = []
            for (k, v) in kwargs {
                if k == "caller" { f.vars["caller"] = v; continue }
                if def.params.contains(where: { $0.0 == k }) { f.vars[k] = v } else { extraKw.append((k, v)) }
            }
            for (name, dflt) in def.params where f.vars[name] == nil {
                f.vars[name] = try dflt.map { try self.eval($0, f) } ?? .undefined(name)
            }
            f.vars["varargs"] = .list(extra)
            f.vars["kwargs"] = .dict(OrderedDict(extraKw))
            let text = try self.capture { _ = try self.execute(def.body, f) }
            return .string(text)
        }
    }
}
