// Swift spellings of the Lua C API macros Swift cannot import, and small stack helpers that
// never raise a Lua error (raw access only: no metamethods run from Swift frames).

import CLua
import CLuaTrampoline

public typealias LuaState = OpaquePointer

let LUA_REGISTRY = qlora_registry_index()

@inline(__always) func luaPop(_ L: LuaState, _ n: Int32) { lua_settop(L, -n - 1) }
@inline(__always) func luaNewTable(_ L: LuaState) { lua_createtable(L, 0, 0) }
@inline(__always) func luaType(_ L: LuaState, _ i: Int32) -> Int32 { lua_type(L, i) }
@inline(__always) func luaIsNoneOrNil(_ L: LuaState, _ i: Int32) -> Bool { lua_type(L, i) <= 0 }
@inline(__always) func luaAbs(_ L: LuaState, _ i: Int32) -> Int32 { lua_absindex(L, i) }

func luaPushString(_ L: LuaState, _ s: String) {
    var s = s
    s.withUTF8 { buf in
        buf.withMemoryRebound(to: CChar.self) { _ = lua_pushlstring(L, $0.baseAddress, $0.count) }
    }
}

/// The string at index i (only when it really is a string; numbers are not converted).
/// The text of an error value (a string, a value with __tostring, a table's message field...);
/// never raises (CLuaTrampoline's qlora_push_error_text).
func luaErrorText(_ L: LuaState, _ i: Int32) -> String {
    qlora_push_error_text(L, i)
    defer { luaPop(L, 1) }
    return luaString(L, -1) ?? "(error object cannot be shown)"
}

func luaString(_ L: LuaState, _ i: Int32) -> String? {
    guard lua_type(L, i) == LUA_TSTRING else { return nil }
    var len = 0
    guard let p = lua_tolstring(L, i, &len) else { return nil }
    return p.withMemoryRebound(to: UInt8.self, capacity: len) {
        String(decoding: UnsafeBufferPointer(start: $0, count: len), as: UTF8.self)
    }
}

/// The bytes of the string at index i.
func luaBytes(_ L: LuaState, _ i: Int32) -> [UInt8]? {
    guard lua_type(L, i) == LUA_TSTRING else { return nil }
    var len = 0
    guard let p = lua_tolstring(L, i, &len) else { return nil }
    return p.withMemoryRebound(to: UInt8.self, capacity: len) { Array(UnsafeBufferPointer(start: $0, count: len)) }
}

/// The Lua type name of the value at i, as scripts know them.
func luaTypeName(_ L: LuaState, _ i: Int32) -> String {
    if lua_type(L, i) == LUA_TUSERDATA, lua_getmetatable(L, i) != 0 {
        luaRawGetField(L, -1, "__name")
        let name = luaString(L, -1)
        luaPop(L, 2)
        if let n = name { return shortTypeName(n) }
    }
    return String(cString: lua_typename(L, lua_type(L, i)))
}

/// t[key] of the table at index t, without metamethods; pushes the value.
@discardableResult
func luaRawGetField(_ L: LuaState, _ t: Int32, _ key: String) -> Int32 {
    let t = luaAbs(L, t)
    luaPushString(L, key)
    return lua_rawget(L, t)
}

/// t[key] = value on top (popped), without metamethods.
func luaRawSetField(_ L: LuaState, _ t: Int32, _ key: String) {
    let t = luaAbs(L, t)
    luaPushString(L, key)
    lua_rotate(L, -2, 1)
    lua_rawset(L, t)
}

/// Number of array elements (raw length) of the table at i.
func luaRawLen(_ L: LuaState, _ i: Int32) -> Int { Int(lua_rawlen(L, i)) }

func luaPcall(_ L: LuaState, _ nargs: Int32, _ nresults: Int32) -> Int32 {
    lua_pcallk(L, nargs, nresults, 0, 0, nil)
}

/// "qlora.QuantizedTensor" -> "QuantizedTensor", "qlora.Tensor" -> "tensor".
func shortTypeName(_ name: String) -> String {
    let short = name.hasPrefix("qlora.") ? String(name.dropFirst(6)) : name
    return short == "Tensor" ? "tensor" : short
}
