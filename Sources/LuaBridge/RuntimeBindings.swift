// Runtime functions of the `qlora` module: the ISA level and thread count in use.

import CLua
import Tensor

enum RuntimeBindings {
    static func functions() -> [(String, LuaFunction)] {
        [
            ("isa", { a in luaPushString(a.L, Runtime.isaName); return 1 }),
            ("supported_isas", { a in
                let names = Runtime.supportedIsas
                lua_createtable(a.L, Int32(names.count), 0)
                for (i, n) in names.enumerated() { luaPushString(a.L, n); lua_rawseti(a.L, -2, lua_Integer(i + 1)) }
                return 1
            }),
            ("set_isa", { a in
                let name = try a.string(1)
                if !Runtime.setIsa(name) {
                    throw a.fail("ISA level \"\(name)\" is unknown or not supported by this CPU (supported: \(Runtime.supportedIsas.joined(separator: ", ")))")
                }
                return 0
            }),
            ("threads", { a in lua_pushinteger(a.L, lua_Integer(Runtime.threads)); return 1 }),
            ("set_threads", { a in
                let n = try a.integer(1)
                if n < 1 || n > 256 { throw a.fail("thread count must be 1..256, got \(n)") }
                Runtime.setThreads(n)
                return 0
            }),
        ]
    }
}
