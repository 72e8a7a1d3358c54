// Between Lua values and tensors: nested tables to tensors (q.tensor), tensors to nested tables
// (t:totable()), numbers pushed with their Lua type, and print(t)'s text.

import CLua
import Tensor

enum TensorConversions {
    /// A tensor from a number or a rectangular nested table of numbers at index i.
    /// With `integersOnly` every entry must be an integer (indices: 2.5 or NaN is an error, not
    /// a saturated conversion).
    static func fromLua(_ a: LuaArgs, _ i: Int32, dtype: DType, integersOnly: Bool = false) throws -> Tensor {
        let L = a.L
        if lua_type(L, i) == LUA_TNUMBER {
            return try Tensor.scalar(lua_tonumberx(L, i, nil), dtype: dtype)
        }
        _ = try a.table(i)
        // Shape from the first elements, then a full walk that checks every row.
        var shape: [Int] = []
        lua_pushvalue(L, i)
        var depth: Int32 = 0
        while lua_type(L, -1) == LUA_TTABLE {
            if shape.count >= Shape.maxDims { luaPop(L, depth + 1); throw a.fail("nested table is deeper than \(Shape.maxDims) dims") }
            let n = luaRawLen(L, -1)
            shape.append(n)
            if n == 0 { break }
            lua_rawgeti(L, -1, 1)
            depth += 1
        }
        luaPop(L, depth + 1)
        let t = try Tensor(shape: shape, dtype: dtype, zeroed: false)
        var flat = 0
        var path: [Int] = []
        try fill(a, luaAbs(L, i), shape, 0, t, &flat, &path, integersOnly)
        return t
    }

    private static func fill(_ a: LuaArgs, _ table: Int32, _ shape: [Int], _ level: Int, _ t: Tensor, _ flat: inout Int, _ path: inout [Int], _ integersOnly: Bool) throws {
        let L = a.L
        let n = luaRawLen(L, table)
        if n != shape[level] {
            throw a.fail("nested table is not rectangular: entry \(path.map(String.init).joined(separator: ".")) has \(n) elements, expected \(shape[level])")
        }
        for k in 1...max(n, 1) where k <= n {
            path.append(k)
            lua_rawgeti(L, table, lua_Integer(k))
            let top = lua_gettop(L)
            if level == shape.count - 1 {
                guard lua_type(L, top) == LUA_TNUMBER else {
                    let got = luaTypeName(L, top)
                    luaPop(L, 1)
                    throw a.fail("expected a number at entry \(path.map(String.init).joined(separator: ".")), got \(got)")
                }
                var isInt: Int32 = 0
                let iv = lua_tointegerx(L, top, &isInt)
                if integersOnly && isInt == 0 {
                    let v = lua_tonumberx(L, top, nil)
                    luaPop(L, 1)
                    throw a.fail("expected an integer at entry \(path.map(String.init).joined(separator: ".")), got \(v)")
                }
                if isInt != 0 && !t.dtype.isFloat {
                    t.storeInteger(iv, at: flat)
                } else {
                    t.storeValue(lua_tonumberx(L, top, nil), at: flat)
                }
                flat += 1
            } else {
                guard lua_type(L, top) == LUA_TTABLE else {
                    let got = luaTypeName(L, top)
                    luaPop(L, 1)
                    throw a.fail("expected a table at entry \(path.map(String.init).joined(separator: ".")), got \(got)")
                }
                do { try fill(a, top, shape, level + 1, t, &flat, &path, integersOnly) } catch { luaPop(L, 1); throw error }
            }
            luaPop(L, 1)
            path.removeLast()
        }
    }

    /// Pushes element i as a Lua integer (integer dtypes) or float.
    static func pushElement(_ L: LuaState, _ t: Tensor, _ i: Int) {
        if t.dtype.isFloat { lua_pushnumber(L, t.value(at: i)) } else { lua_pushinteger(L, lua_Integer(t.intValue(at: i))) }
    }

    /// Pushes the tensor as nested tables (a number for a 0-d tensor).
    static func pushTable(_ L: LuaState, _ t: Tensor) {
        if t.ndim == 0 { pushElement(L, t, 0); return }
        var flat = 0
        pushLevel(L, t, 0, &flat)
    }

    private static func pushLevel(_ L: LuaState, _ t: Tensor, _ level: Int, _ flat: inout Int) {
        let n = t.shape[level]
        lua_createtable(L, Int32(min(n, 1 << 24)), 0)
        for k in 0..<n {
            if level == t.ndim - 1 { pushElement(L, t, flat); flat += 1 } else { pushLevel(L, t, level + 1, &flat) }
            lua_rawseti(L, -2, lua_Integer(k + 1))
        }
    }

    /// "tensor(f32, [2,3], requires_grad) {1, 2, 3, 4, 5, 6}" with at most 8 values shown.
    static func describe(_ t: Tensor) -> String {
        var head = "tensor(\(t.dtype.name), \(Shape.describe(t.shape))"
        if t.requiresGrad { head += ", requires_grad" } else if let op = t.gradOp { head += ", grad_fn=\(op)" }
        head += ")"
        let shown = min(t.count, 8)
        var values: [String] = []
        for i in 0..<shown {
            if t.dtype.isFloat {
                let v = t.value(at: i)
                values.append(v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(format4(v)))
            } else { values.append(String(t.intValue(at: i))) }
        }
        if t.count > shown { values.append("...") }
        return head + " {" + values.joined(separator: ", ") + "}"
    }

    private static func format4(_ v: Double) -> String {
        if !v.isFinite { return v.isNaN ? "nan" : (v > 0 ? "inf" : "-inf") }
        var s = String(Float(v))
        if s.hasSuffix(".0") { s.removeLast(2) }
        return s
    }
}
