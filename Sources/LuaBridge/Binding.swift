// Binding Swift functions to Lua: the table of bound functions, the dispatcher the C trampoline
// calls (it turns every thrown Swift error into a Lua error message), and `LuaArgs`, our own
// argument checking with messages like "qlora.matmul: expected a tensor as argument 2, got nil".

import CLua
import CLuaTrampoline
import Tensor

public struct LuaError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

typealias LuaFunction = (LuaArgs) throws -> Int32

/// Every bound function, by index (the trampoline's upvalue).
nonisolated(unsafe) private var boundFunctions: [(name: String, body: LuaFunction)] = []

private let dispatcher: qlora_dispatch_fn = { state, index in
    guard let L = state else { return 0 }
    let i = Int(index)
    guard i >= 0 && i < boundFunctions.count else {
        luaPushString(L, "qlora: unknown bound function \(i)")
        return -1
    }
    let entry = boundFunctions[i]
    // The running thread, for Swift code that calls back into Lua (script adapters).
    let previous = Bindings.current
    Bindings.current = L
    defer { Bindings.current = previous }
    do {
        return try entry.body(LuaArgs(L, name: entry.name))
    } catch let e as LuaError {
        luaPushString(L, e.message)
    } catch let e as TensorError {
        luaPushString(L, named(e.message, entry.name))
    } catch {
        luaPushString(L, named("\(error)", entry.name))
    }
    return -1
}

/// A message from below the bindings, naming the function called: a bare "qlora: " (code that
/// does not know which function it serves) becomes the function's name.
private func named(_ text: String, _ function: String) -> String {
    if text.hasPrefix("qlora: ") { return "\(function): " + text.dropFirst("qlora: ".count) }
    return text.hasPrefix("qlora") ? text : "\(function): \(text)"
}

enum Bindings {
    nonisolated(unsafe) private static var installed = false
    /// The Lua thread of the bound function now running (nil outside any): callbacks into Lua
    /// run on it, under lua_pcall.
    nonisolated(unsafe) static var current: LuaState? = nil

    static func installDispatcher() {
        if installed { return }
        installed = true
        qlora_set_dispatcher(dispatcher)
    }

    /// Pushes a Lua function that runs body; `name` is how errors name it ("qlora.matmul").
    static func push(_ L: LuaState, _ name: String, _ body: @escaping LuaFunction) {
        boundFunctions.append((name, body))
        qlora_push_bound(L, Int32(boundFunctions.count - 1))
    }

    /// Sets table[key] = bound function for each entry (table at index t).
    static func register(_ L: LuaState, _ t: Int32, prefix: String, _ fns: [(String, LuaFunction)]) {
        let t = luaAbs(L, t)
        for (key, body) in fns {
            push(L, prefix + key, body)
            luaRawSetField(L, t, key)
        }
    }
}

/// The arguments of one call, with checks that throw LuaError naming the function.
struct LuaArgs {
    let L: LuaState
    let name: String

    init(_ L: LuaState, name: String) { self.L = L; self.name = name }

    var count: Int32 { lua_gettop(L) }

    /// A Lua error naming this function (once: a message that already starts with the name
    /// keeps it as it is).
    func fail(_ message: String) -> LuaError {
        LuaError(message.hasPrefix("\(name): ") ? message : "\(name): \(message)")
    }

    func typeError(_ i: Int32, _ expected: String) -> LuaError {
        fail("expected \(expected) as argument \(i), got \(i > count ? "nothing" : luaTypeName(L, i))")
    }

    func isNil(_ i: Int32) -> Bool { luaIsNoneOrNil(L, i) }

    func tensor(_ i: Int32) throws -> Tensor {
        guard let t = TensorUserdata.tensor(L, i) else { throw typeError(i, "a tensor") }
        return t
    }

    func optTensor(_ i: Int32) throws -> Tensor? { isNil(i) ? nil : try tensor(i) }

    func number(_ i: Int32) throws -> Double {
        guard lua_type(L, i) == LUA_TNUMBER else { throw typeError(i, "a number") }
        return lua_tonumberx(L, i, nil)
    }

    func optNumber(_ i: Int32, _ def: Double) throws -> Double { isNil(i) ? def : try number(i) }

    /// An integer-valued number (3 or 3.0), or an error.
    func integer(_ i: Int32) throws -> Int {
        guard lua_type(L, i) == LUA_TNUMBER else { throw typeError(i, "an integer") }
        var ok: Int32 = 0
        let v = lua_tointegerx(L, i, &ok)
        if ok == 0 { throw fail("expected an integer as argument \(i), got \(lua_tonumberx(L, i, nil))") }
        return Int(v)
    }

    func optInteger(_ i: Int32, _ def: Int) throws -> Int { isNil(i) ? def : try integer(i) }

    func string(_ i: Int32) throws -> String {
        guard let s = luaString(L, i) else { throw typeError(i, "a string") }
        return s
    }

    func bool(_ i: Int32) throws -> Bool {
        guard lua_type(L, i) == LUA_TBOOLEAN else { throw typeError(i, "a boolean") }
        return lua_toboolean(L, i) != 0
    }

    func table(_ i: Int32) throws -> Int32 {
        guard lua_type(L, i) == LUA_TTABLE else { throw typeError(i, "a table") }
        return luaAbs(L, i)
    }

    func function(_ i: Int32) throws -> Int32 {
        guard lua_type(L, i) == LUA_TFUNCTION else { throw typeError(i, "a function") }
        return luaAbs(L, i)
    }

    /// A shape: a table of non-negative integers, or integers as the remaining arguments.
    func shape(_ i: Int32) throws -> [Int] {
        if lua_type(L, i) == LUA_TTABLE {
            return try intList(i, what: "shape")
        }
        var dims: [Int] = []
        var j = i
        while j <= count && lua_type(L, j) == LUA_TNUMBER {
            dims.append(try integer(j))
            j += 1
        }
        if dims.isEmpty && !(i > count) { throw typeError(i, "a shape (a table of integers)") }
        return dims
    }

    /// A Lua array of integers.
    func intList(_ i: Int32, what: String) throws -> [Int] {
        let t = try table(i)
        let n = luaRawLen(L, t)
        if n > 1 << 20 { throw fail("\(what) has too many entries (\(n))") }
        var out: [Int] = []
        out.reserveCapacity(n)
        for k in 1...max(n, 1) where k <= n {
            lua_rawgeti(L, t, lua_Integer(k))
            defer { luaPop(L, 1) }
            var ok: Int32 = 0
            let v = lua_tointegerx(L, -1, &ok)
            if lua_type(L, -1) != LUA_TNUMBER || ok == 0 {
                throw fail("\(what) entry \(k) must be an integer, got \(luaTypeName(L, -1))")
            }
            out.append(Int(v))
        }
        return out
    }

    // Options tables: opt(i, "key") reads t.key raw; nil when absent.

    func optField(_ t: Int32, _ key: String) -> Int32? {
        let ty = luaRawGetField(L, t, key)
        if ty <= 0 { luaPop(L, 1); return nil }
        return ty  // value left on the stack; caller pops
    }

    func optionString(_ t: Int32?, _ key: String) throws -> String? {
        guard let t = t, optField(t, key) != nil else { return nil }
        defer { luaPop(L, 1) }
        guard let s = luaString(L, -1) else { throw fail("option '\(key)' must be a string, got \(luaTypeName(L, -1))") }
        return s
    }

    func optionNumber(_ t: Int32?, _ key: String) throws -> Double? {
        guard let t = t, optField(t, key) != nil else { return nil }
        defer { luaPop(L, 1) }
        guard lua_type(L, -1) == LUA_TNUMBER else { throw fail("option '\(key)' must be a number, got \(luaTypeName(L, -1))") }
        return lua_tonumberx(L, -1, nil)
    }

    func optionInteger(_ t: Int32?, _ key: String) throws -> Int? {
        guard let t = t, optField(t, key) != nil else { return nil }
        defer { luaPop(L, 1) }
        var ok: Int32 = 0
        let v = lua_tointegerx(L, -1, &ok)
        guard lua_type(L, -1) == LUA_TNUMBER, ok != 0 else { throw fail("option '\(key)' must be an integer, got \(luaTypeName(L, -1))") }
        return Int(v)
    }

    func optionBool(_ t: Int32?, _ key: String) throws -> Bool? {
        guard let t = t, optField(t, key) != nil else { return nil }
        defer { luaPop(L, 1) }
        guard lua_type(L, -1) == LUA_TBOOLEAN else { throw fail("option '\(key)' must be a boolean, got \(luaTypeName(L, -1))") }
        return lua_toboolean(L, -1) != 0
    }

    func optionDType(_ t: Int32?, _ key: String = "dtype") throws -> DType? {
        guard let s = try optionString(t, key) else { return nil }
        guard let d = DType.parse(s) else {
            throw fail("unknown dtype \"\(s)\" (expected one of \(DType.allCases.map { $0.name }.joined(separator: ", ")))")
        }
        return d
    }

    /// The options table at i (nil when absent), rejecting keys not in `allowed`.
    func options(_ i: Int32, allowed: [String]) throws -> Int32? {
        if isNil(i) { return nil }
        let t = try table(i)
        lua_pushnil(L)
        while lua_next(L, t) != 0 {
            defer { luaPop(L, 1) }
            guard let k = luaString(L, -2) else { throw fail("option names must be strings") }
            if !allowed.contains(k) {
                throw fail("unknown option '\(k)' (expected one of \(allowed.joined(separator: ", ")))")
            }
        }
        return t
    }
}
