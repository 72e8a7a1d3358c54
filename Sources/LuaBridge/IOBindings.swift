// File functions of the `qlora` module: q.load_tensors and q.save_tensors (safetensors).

import CLua
import IO
import Tensor

enum IOBindings {
    static func functions() -> [(String, LuaFunction)] {
        [
            // q.load_tensors(path) -> {name = tensor, ...}, metadata
            ("load_tensors", { a in
                let path = try a.string(1)
                // a GGUF file: every tensor dequantized to f32 under its GGUF name, row-major shape
                let (tensors, metadata) = try ioErrors(a) { GGUFModel.isGGUF(path) ? try GGUFTensors.load(path) : try TensorFiles.load(path) }
                lua_createtable(a.L, 0, Int32(min(tensors.count, 1 << 20)))
                for (name, t) in tensors {
                    TensorUserdata.push(a.L, t)
                    luaRawSetField(a.L, -2, name)
                }
                lua_createtable(a.L, 0, Int32(min(metadata.count, 1 << 20)))
                for (k, v) in metadata.sorted(by: { $0.key < $1.key }) {
                    luaPushString(a.L, v)
                    luaRawSetField(a.L, -2, k)
                }
                return 2
            }),
            // q.save_tensors(path, {name = tensor, ...} [, metadata]); tensors are written sorted by name.
            ("save_tensors", { a in
                let path = try a.string(1)
                let t = try a.table(2)
                var list: [(name: String, tensor: Tensor)] = []
                lua_pushnil(a.L)
                while lua_next(a.L, t) != 0 {
                    defer { luaPop(a.L, 1) }
                    guard let name = luaString(a.L, -2) else { throw a.fail("tensor names must be strings, got a \(luaTypeName(a.L, -2)) key") }
                    guard let x = TensorUserdata.tensor(a.L, -1) else { throw a.fail("value of \"\(name)\" is a \(luaTypeName(a.L, -1)), expected a tensor") }
                    list.append((name, x))
                }
                list.sort { $0.name < $1.name }
                var metadata: [String: String]? = nil
                if !a.isNil(3) {
                    let m = try a.table(3)
                    var md: [String: String] = [:]
                    lua_pushnil(a.L)
                    while lua_next(a.L, m) != 0 {
                        defer { luaPop(a.L, 1) }
                        guard let k = luaString(a.L, -2), let v = luaString(a.L, -1) else {
                            throw a.fail("metadata must map strings to strings")
                        }
                        md[k] = v
                    }
                    metadata = md
                }
                try ioErrors(a) { try TensorFiles.save(path, list, metadata: metadata) }
                return 0
            }),
        ]
    }

    /// Runs body, turning IO errors into "qlora.fn: path: problem".
    static func ioErrors<T>(_ a: LuaArgs, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as IOError { throw a.fail(e.description) }
    }
}
