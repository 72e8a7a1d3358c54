// Tensors as Lua userdata: a retained reference to the Swift Tensor in a one-pointer userdata,
// released by __gc; the metatable lives in the registry as "qlora.Tensor". Also paces Lua's
// collector by the bytes tensors hold, which Lua cannot see on its own.

import CLua
import CLuaTrampoline
import Tensor

enum TensorUserdata {
    static let metatableName = "qlora.Tensor"
    /// Bytes of tensor memory allocated between forced collections (grows with live memory).
    static let collectThreshold = 256 << 20

    static func push(_ L: LuaState, _ t: Tensor) {
        if Storage.allocatedSinceReset > collectThreshold + Storage.liveBytes / 2 {
            Storage.allocatedSinceReset = 0
            qlora_gc_collect(L)
        }
        guard let ud = lua_newuserdatauv(L, MemoryLayout<UnsafeRawPointer?>.size, 0) else { return }
        ud.storeBytes(of: UnsafeRawPointer(Unmanaged.passRetained(t).toOpaque()), as: UnsafeRawPointer?.self)
        luaRawGetField(L, LUA_REGISTRY, metatableName)
        lua_setmetatable(L, -2)
    }

    /// The tensor at index i, or nil when the value is not a live qlora tensor.
    static func tensor(_ L: LuaState, _ i: Int32) -> Tensor? {
        guard lua_type(L, i) == LUA_TUSERDATA, let ud = lua_touserdata(L, i) else { return nil }
        guard lua_getmetatable(L, i) != 0 else { return nil }
        luaRawGetField(L, LUA_REGISTRY, metatableName)
        let same = lua_rawequal(L, -1, -2) != 0
        luaPop(L, 2)
        guard same, let p = ud.load(as: UnsafeRawPointer?.self) else { return nil }
        return Unmanaged<Tensor>.fromOpaque(p).takeUnretainedValue()
    }

    /// __gc: drops the reference once (a second call, or one on a foreign value, does nothing).
    static func release(_ L: LuaState, _ i: Int32) {
        guard tensor(L, i) != nil, let ud = lua_touserdata(L, i),
              let p = ud.load(as: UnsafeRawPointer?.self) else { return }
        ud.storeBytes(of: nil, as: UnsafeRawPointer?.self)
        Unmanaged<Tensor>.fromOpaque(p).release()
    }
}
