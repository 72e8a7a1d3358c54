// The Lua host: one lua_State with the standard libraries and the `qlora` module (preloaded for
// require, and global), running script files with `arg` set as the lua interpreter does.

import CLua
import CLuaTrampoline
import Foundation
import Tensor

public final class LuaHost {
    public let L: LuaState
    public static let version = "0.1.0"
    /// The running executable's path (resolved through /proc/self/exe where available).
    public static var executablePath: String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        if n > 0 { return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return CommandLine.arguments.first ?? "qlora"
    }

    public init() throws {
        guard let state = luaL_newstate() else { throw LuaError("qlora: cannot create a Lua state (out of memory)") }
        L = state
        Bindings.installDispatcher()
        if qlora_open_libs(L) != 0 {
            lua_close(L)
            throw LuaError("qlora: cannot open the Lua standard libraries")
        }
        try installModule()
    }

    deinit { lua_close(L) }

    private func installModule() throws {
        // The tensor metatable, in the registry.
        luaNewTable(L)
        let mt = lua_gettop(L)
        Bindings.register(L, mt, prefix: "qlora.Tensor.", TensorBindings.metamethods())
        luaPushString(L, TensorUserdata.metatableName); luaRawSetField(L, mt, "__name")
        luaPushString(L, TensorUserdata.metatableName); luaRawSetField(L, mt, "__metatable")
        lua_pushvalue(L, mt); luaRawSetField(L, LUA_REGISTRY, TensorUserdata.metatableName)

        // The module table.
        luaNewTable(L)
        let q = lua_gettop(L)
        Bindings.register(L, q, prefix: "qlora.", TensorBindings.moduleFunctions())
        Bindings.register(L, q, prefix: "qlora.", RuntimeBindings.functions())
        Bindings.register(L, q, prefix: "qlora.", IOBindings.functions())
        Bindings.register(L, q, prefix: "qlora.", QuantBindings.functions())
        QuantBindings.install(L)
        Bindings.register(L, q, prefix: "qlora.", ModelBindings.functions())
        ModelBindings.install(L)
        Bindings.register(L, q, prefix: "qlora.", TokenizerBindings.functions())
        TokenizerBindings.install(L)
        Bindings.register(L, q, prefix: "qlora.", ChatBindings.functions())
        ChatBindings.install(L)
        DataBindings.install(L, moduleIndex: q)
        OptimBindings.install(L, moduleIndex: q)
        Distributed.install(L, moduleIndex: q)
        Bindings.register(L, q, prefix: "qlora.", PlotBindings.functions())
        luaPushString(L, LuaHost.version); luaRawSetField(L, q, "version")

        luaNewTable(L)
        let methods = lua_gettop(L)
        Bindings.register(L, methods, prefix: "qlora.Tensor.", TensorBindings.methods())

        // prelude(q, mt, methods, property)
        let status = preludeSource.withCString { luaL_loadbufferx(L, $0, preludeSource.utf8.count, "=qlora.prelude", "t") }
        if status != 0 { throw LuaError("qlora: prelude does not compile: \(luaString(L, -1) ?? "")") }
        lua_pushvalue(L, q)
        lua_pushvalue(L, mt)
        lua_pushvalue(L, methods)
        Bindings.push(L, "qlora.Tensor.__index", TensorBindings.property)
        if qlora_pcall_traceback(L, 4, 1) != 0 { throw LuaError("qlora: prelude failed: \(luaString(L, -1) ?? "")") }
        luaPop(L, 1)
        try runModuleChunk(trainerSource, name: "=qlora.trainer", module: q)
        try runModuleChunk(tasksSource, name: "=qlora.tasks", module: q)
        try SweepBindings.install(L, moduleIndex: q)
        try AdapterBindings.install(L, moduleIndex: q)

        // require "qlora" and the global `qlora`.
        lua_getglobal(L, "package")
        luaRawGetField(L, -1, "loaded")
        lua_pushvalue(L, q); luaRawSetField(L, -2, "qlora")
        luaPop(L, 2)
        lua_pushvalue(L, q); lua_setglobal(L, "qlora")
        lua_settop(L, 0)
    }

    /// Runs a chunk of the module written in Lua, passing it the module table.
    private func runModuleChunk(_ source: String, name: String, module q: Int32) throws {
        let status = source.withCString { luaL_loadbufferx(L, $0, source.utf8.count, name, "t") }
        if status != 0 { throw LuaError("qlora: \(name) does not compile: \(luaString(L, -1) ?? "")") }
        lua_pushvalue(L, q)
        if qlora_pcall_traceback(L, 1, 0) != 0 { throw LuaError("qlora: \(name) failed: \(luaString(L, -1) ?? "")") }
    }

    /// Runs a script file with arguments; returns nil on success or the error text (message,
    /// file:line and traceback).
    public func runFile(_ path: String, args: [String]) -> String? {
        lua_settop(L, 0)
        // q.sweep's workers run this same script again; a worker learns its point here.
        WorkerProcess.claimAssignment()
        SweepBindings.script = (path, args)
        // arg table: arg[0] = script, arg[1...] = args
        lua_createtable(L, Int32(args.count), 1)
        luaPushString(L, path); lua_rawseti(L, -2, 0)
        // arg[-1]: the qlora executable, so a script can start another qlora process.
        luaPushString(L, LuaHost.executablePath); lua_rawseti(L, -2, -1)
        for (i, s) in args.enumerated() { luaPushString(L, s); lua_rawseti(L, -2, lua_Integer(i + 1)) }
        lua_setglobal(L, "arg")
        if luaL_loadfilex(L, path, nil) != 0 {
            let msg = luaString(L, -1) ?? "cannot load \(path)"
            lua_settop(L, 0)
            return msg
        }
        for s in args { luaPushString(L, s) }
        return finish(qlora_pcall_traceback(L, Int32(args.count), 0))
    }

    /// Runs a chunk with boolean arguments (passed as `...`); nil on success or the error text.
    public func runChunk(_ source: String, name: String, args: [Bool]) -> String? {
        runChunk(source, name: name, values: args.map { ChunkArgument.bool($0) })
    }

    /// A value passed to a chunk as one of its `...` arguments.
    public enum ChunkArgument {
        case bool(Bool), int(Int), string(String), none
    }

    /// Runs a chunk of Lua source with the given arguments; returns nil on success or the error text.
    public func runChunk(_ source: String, name: String, values args: [ChunkArgument]) -> String? {
        lua_settop(L, 0)
        let status = source.withCString { luaL_loadbufferx(L, $0, source.utf8.count, name, "t") }
        if status != 0 {
            let msg = luaString(L, -1) ?? "syntax error"
            lua_settop(L, 0)
            return msg
        }
        if lua_checkstack(L, Int32(args.count) + 1) == 0 { lua_settop(L, 0); return "too many chunk arguments" }
        for a in args {
            switch a {
            case .bool(let b): lua_pushboolean(L, b ? 1 : 0)
            case .int(let n): lua_pushinteger(L, lua_Integer(n))
            case .string(let s): s.withCString { _ = lua_pushlstring(L, $0, s.utf8.count) }
            case .none: lua_pushnil(L)
            }
        }
        return finish(qlora_pcall_traceback(L, Int32(args.count), 0))
    }

    /// Runs a chunk of Lua source; returns nil on success or the error text.
    public func runString(_ source: String, name: String = "=chunk") -> String? {
        runChunk(source, name: name, args: [])
    }

    private func finish(_ status: Int32) -> String? {
        defer { lua_settop(L, 0) }
        if status == 0 { return nil }
        return luaErrorText(L, -1)
    }
}
