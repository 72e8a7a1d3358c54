// Swift objects other than tensors as Lua userdata (quantized tensors, 4-bit layers, ...): a
// retained reference released by __gc, one metatable per type in the registry, whose __index is
// the type's method table. Type checks compare metatables, so scripts cannot forge objects.

import CLua
import Tensor

enum ObjectUserdata {
    /// Creates the metatable `name` (methods as __index, __gc, __tostring) in the registry.
    static func register(_ L: LuaState, name: String, methods: [(String, LuaFunction)],
                         describe: @escaping (AnyObject) -> String) {
        luaNewTable(L)
        let mt = lua_gettop(L)
        luaNewTable(L)
        Bindings.register(L, -1, prefix: "\(name).", methods)
        luaRawSetField(L, mt, "__index")
        Bindings.push(L, "\(name).__gc") { a in release(a.L, 1, name); return 0 }
        luaRawSetField(L, mt, "__gc")
        Bindings.push(L, "\(name).__tostring") { a in
            guard let o = object(a.L, 1, name) else { throw a.typeError(1, name) }
            luaPushString(a.L, describe(o))
            return 1
        }
        luaRawSetField(L, mt, "__tostring")
        luaPushString(L, name); luaRawSetField(L, mt, "__name")
        luaPushString(L, name); luaRawSetField(L, mt, "__metatable")
        luaRawSetField(L, LUA_REGISTRY, name)
    }

    static func push(_ L: LuaState, _ object: AnyObject, _ name: String) {
        guard let ud = lua_newuserdatauv(L, MemoryLayout<UnsafeRawPointer?>.size, 0) else { return }
        ud.storeBytes(of: UnsafeRawPointer(Unmanaged.passRetained(object).toOpaque()), as: UnsafeRawPointer?.self)
        luaRawGetField(L, LUA_REGISTRY, name)
        lua_setmetatable(L, -2)
    }

    static func object(_ L: LuaState, _ i: Int32, _ name: String) -> AnyObject? {
        guard lua_type(L, i) == LUA_TUSERDATA, let ud = lua_touserdata(L, i) else { return nil }
        guard lua_getmetatable(L, i) != 0 else { return nil }
        luaRawGetField(L, LUA_REGISTRY, name)
        let same = lua_rawequal(L, -1, -2) != 0
        luaPop(L, 2)
        guard same, let p = ud.load(as: UnsafeRawPointer?.self) else { return nil }
        return Unmanaged<AnyObject>.fromOpaque(p).takeUnretainedValue()
    }

    static func release(_ L: LuaState, _ i: Int32, _ name: String) {
        guard object(L, i, name) != nil, let ud = lua_touserdata(L, i),
              let p = ud.load(as: UnsafeRawPointer?.self) else { return }
        ud.storeBytes(of: nil, as: UnsafeRawPointer?.self)
        Unmanaged<AnyObject>.fromOpaque(p).release()
    }
}

extension LuaArgs {
    /// The object of type T at i, registered under metatable `name` (its Lua-facing type name).
    func object<T: AnyObject>(_ i: Int32, _ name: String, as: T.Type) throws -> T {
        guard let o = ObjectUserdata.object(L, i, name) as? T else {
            throw typeError(i, "a \(shortTypeName(name))")
        }
        return o
    }
}
