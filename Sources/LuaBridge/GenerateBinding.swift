// model:generate(prompt, opts): a string prompt (encoded with the model's tokenizer; the result is
// the generated text) or token ids (the result is a table of ids); greedy or sampled; stops on
// eos, on stop strings, after max_tokens, or when on_token returns false.

import CLua
import IO
import NN
import Tensor

enum GenerateBinding {
    static func generate(_ a: LuaArgs) throws -> Int32 {
        let L = a.L
        let handle = try a.object(1, ModelBindings.modelName, as: ModelHandle.self)
        let model = handle.model
        let opts = try a.options(3, allowed: ["max_tokens", "temperature", "top_k", "top_p", "seed", "stop", "on_token"])
        var o = GenerationOptions()
        o.maxTokens = try a.optionInteger(opts, "max_tokens") ?? 32
        o.temperature = try a.optionNumber(opts, "temperature") ?? 0
        o.topK = try a.optionInteger(opts, "top_k") ?? 0
        o.topP = try a.optionNumber(opts, "top_p") ?? 1
        if let s = try a.optionInteger(opts, "seed") { o.seed = UInt64(max(0, s)) }
        o.stopIds = model.config.eosTokenIds + (handle.tokenizer?.eosIds ?? [])
        var stops: [String] = []
        if let t = opts, a.optField(t, "stop") != nil {
            defer { luaPop(L, 1) }
            if let s = luaString(L, -1) { stops = [s] } else if lua_type(L, -1) == LUA_TTABLE {
                let idx = lua_gettop(L)
                for k in 1...max(luaRawLen(L, idx), 1) where k <= luaRawLen(L, idx) {
                    lua_rawgeti(L, idx, lua_Integer(k))
                    defer { luaPop(L, 1) }
                    guard let s = luaString(L, -1) else { throw a.fail("stop entries must be strings") }
                    stops.append(s)
                }
            } else { throw a.fail("option 'stop' must be a string or a list of strings") }
        }
        var callback: Int32? = nil
        if let t = opts, a.optField(t, "on_token") != nil {
            guard lua_type(L, -1) == LUA_TFUNCTION else { luaPop(L, 1); throw a.fail("option 'on_token' must be a function") }
            callback = lua_gettop(L)  // stays on the stack for the call
        }

        let textPrompt = luaString(L, 2)
        let prompt: [Int]
        if let text = textPrompt {
            guard let tok = handle.tokenizer else { throw a.fail("this model has no tokenizer (no tokenizer.json in its directory); pass token ids") }
            prompt = try ModelBindings.modelErrors(a) { try tok.encode(text) }
        } else {
            let ids = try ModelBindings.idsTensor(a, 2)
            if ids.shape[0] != 1 { throw a.fail("generate takes one sequence, got a batch of \(ids.shape[0])") }
            try ModelBindings.checkVocab(a, ids, handle.model.config.vocabSize)
            prompt = (0..<ids.count).map { Int(ids.intValue(at: $0)) }
        }
        if !stops.isEmpty && handle.tokenizer == nil { throw a.fail("stop strings need the model's tokenizer") }
        var generated: [Int] = []
        let ids = try ModelBindings.modelErrors(a) {
            try model.generate(prompt, o) { id in
                generated.append(id)
                if let cb = callback {
                    lua_pushvalue(L, cb)
                    lua_pushinteger(L, lua_Integer(id))
                    if luaPcall(L, 1, 1) != 0 {
                        let msg = luaErrorText(L, -1)
                        luaPop(L, 1)
                        throw LuaError("qlora.Model.generate: on_token raised an error: \(msg)")
                    }
                    let stop = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1) == 0
                    luaPop(L, 1)
                    if stop { return false }
                }
                if !stops.isEmpty, let tok = handle.tokenizer {
                    let text = try tok.decode(generated)
                    if stops.contains(where: { text.contains($0) }) { return false }
                }
                return true
            }
        }
        if textPrompt != nil, let tok = handle.tokenizer {
            var text = try ModelBindings.modelErrors(a) { try tok.decode(ids.filter { !o.stopIds.contains($0) }, skipSpecialTokens: true) }
            for s in stops { if let r = text.range(of: s) { text = String(text[..<r.lowerBound]) } }
            luaPushString(L, text)
        } else {
            lua_createtable(L, Int32(ids.count), 0)
            for (i, t) in ids.enumerated() { lua_pushinteger(L, lua_Integer(t)); lua_rawseti(L, -2, lua_Integer(i + 1)) }
        }
        return 1
    }
}
