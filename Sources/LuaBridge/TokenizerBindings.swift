// Tokenizers from Lua: q.tokenizer(path) loads a Hugging Face tokenizer.json (or a model
// directory holding one) as a "qlora.Tokenizer" userdata with encode / decode / vocabulary
// methods. Ids are 0-based, as in the file. Errors read "qlora.tokenizer: <path>: <problem>"
// (methods: "qlora.Tokenizer.decode: <path>: <problem>").

import CLua
import IO
import Tensor

enum TokenizerBindings {
    static let name = "qlora.Tokenizer"

    static func install(_ L: LuaState) {
        ObjectUserdata.register(L, name: name, methods: methods()) { o in
            guard let t = o as? Tokenizer else { return "Tokenizer" }
            return "Tokenizer(\(t.path), vocab \(t.vocabSize))"
        }
    }

    static func functions() -> [(String, LuaFunction)] {
        [
            // q.tokenizer(path) -> tokenizer
            ("tokenizer", { a in
                let path = try a.string(1)
                let t = try errors(a) { try Tokenizer(path: path) }
                ObjectUserdata.push(a.L, t, name)
                return 1
            }),
        ]
    }

    static func methods() -> [(String, LuaFunction)] {
        func this(_ a: LuaArgs) throws -> Tokenizer { try a.object(1, name, as: Tokenizer.self) }
        func pushOptionalInt(_ a: LuaArgs, _ v: Int?) -> Int32 {
            if let v { lua_pushinteger(a.L, lua_Integer(v)) } else { lua_pushnil(a.L) }
            return 1
        }
        return [
            // tok:encode(s [, {special = true}]) -> {ids...}
            ("encode", { a in
                let t = try this(a)
                guard let bytes = luaBytes(a.L, 2) else { throw a.typeError(2, "a string") }
                let opts = try a.options(3, allowed: ["special"])
                let special = try a.optionBool(opts, "special") ?? true
                guard let text = String(validating: bytes, as: UTF8.self) else {
                    throw a.fail("text is not valid UTF-8")
                }
                let ids = try errors(a) { try t.encode(text, addSpecialTokens: special) }
                lua_createtable(a.L, Int32(min(ids.count, 1 << 24)), 0)
                for (i, id) in ids.enumerated() {
                    lua_pushinteger(a.L, lua_Integer(id))
                    lua_rawseti(a.L, -2, lua_Integer(i + 1))
                }
                return 1
            }),
            // tok:decode(ids [, {skip_special = false}]) -> string; ids: a table or an integer tensor
            ("decode", { a in
                let t = try this(a)
                let ids: [Int]
                if let x = TensorUserdata.tensor(a.L, 2) {
                    guard !x.dtype.isFloat else {
                        throw a.fail("expected an integer tensor of ids as argument 2, got \(x.dtype.name)")
                    }
                    ids = (0..<x.count).map { i in
                        let v = x.intValue(at: i)
                        return v >= Int64(Int.min) && v <= Int64(Int.max) ? Int(v) : -1
                    }
                } else if lua_type(a.L, 2) == LUA_TTABLE {
                    ids = try a.intList(2, what: "ids")
                } else {
                    throw a.typeError(2, "a table of ids or an integer tensor")
                }
                let opts = try a.options(3, allowed: ["skip_special"])
                let skip = try a.optionBool(opts, "skip_special") ?? false
                let text = try errors(a) { try t.decode(ids, skipSpecialTokens: skip) }
                luaPushString(a.L, text)
                return 1
            }),
            ("vocab_size", { a in lua_pushinteger(a.L, lua_Integer(try this(a).vocabSize)); return 1 }),
            ("bos_id", { a in pushOptionalInt(a, try this(a).bosId) }),
            ("eos_id", { a in pushOptionalInt(a, try this(a).eosId) }),
            ("pad_id", { a in pushOptionalInt(a, try this(a).padId) }),
            // tok:chat_template() -> the template text that came with the tokenizer (GGUF), or nil
            ("chat_template", { a in
                if let s = try this(a).chatTemplate { lua_pushstring(a.L, s) } else { lua_pushnil(a.L) }
                return 1
            }),
            // tok:eos_ids() -> {ids...} (a model may stop on several)
            ("eos_ids", { a in
                let ids = try this(a).eosIds
                lua_createtable(a.L, Int32(ids.count), 0)
                for (i, id) in ids.enumerated() {
                    lua_pushinteger(a.L, lua_Integer(id))
                    lua_rawseti(a.L, -2, lua_Integer(i + 1))
                }
                return 1
            }),
            // tok:id_to_token(id) -> string or nil
            ("id_to_token", { a in
                let t = try this(a)
                if let s = t.idToToken(try a.integer(2)) { luaPushString(a.L, s) } else { lua_pushnil(a.L) }
                return 1
            }),
            // tok:token_to_id(s) -> integer or nil
            ("token_to_id", { a in
                let t = try this(a)
                guard let bytes = luaBytes(a.L, 2) else { throw a.typeError(2, "a string") }
                guard let s = String(validating: bytes, as: UTF8.self) else { lua_pushnil(a.L); return 1 }
                return pushOptionalInt(a, t.tokenToId(s))
            }),
            // tok:is_special(id) -> boolean
            ("is_special", { a in
                let t = try this(a)
                lua_pushboolean(a.L, t.isSpecial(try a.integer(2)) ? 1 : 0)
                return 1
            }),
        ]
    }

    /// Runs body, turning IO errors into "qlora.fn: path: problem".
    static func errors<T>(_ a: LuaArgs, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as IOError { throw a.fail(e.description) }
    }
}
