// Datasets from Lua: q.data.jsonl(path, opts) and q.data.from_table(rows, opts) build a
// "qlora.Dataset" (tokenized once at load; #ds, get, split, batches, ...), and ds:batches{...}
// a "qlora.Batches" iterator of padded tensor batches with a resumable (epoch, position).
// Errors read "qlora.data.jsonl: path: line 3: missing field \"completion\"".

import CLua
import Foundation
import IO
import Jinja
import Tensor
import Train

enum DataBindings {
    static let datasetName = "qlora.Dataset"
    static let batchesName = "qlora.Batches"
    static let loadOptions = ["format", "tokenizer", "max_len", "mask_prompt", "add_eos", "pack", "on_bad_line",
                              "text_field", "prompt_field", "completion_field", "messages_field", "template", "chat_vars", "pad_id"]

    /// Registers the userdata types and sets q.data = {jsonl, from_table} (q: the module table).
    static func install(_ L: LuaState, moduleIndex q: Int32) {
        let q = luaAbs(L, q)
        ObjectUserdata.register(L, name: datasetName, methods: datasetMethods()) { o in
            guard let d = o as? Dataset else { return "Dataset" }
            return "Dataset(\(d.count) \(d.packed ? "packed sequences" : "examples"), \(d.storage.format.rawValue), \(d.storage.sourceName))"
        }
        luaRawGetField(L, LUA_REGISTRY, datasetName)
        Bindings.push(L, "\(datasetName).__len") { a in
            lua_pushinteger(a.L, lua_Integer(try a.object(1, datasetName, as: Dataset.self).count))
            return 1
        }
        luaRawSetField(L, -2, "__len")
        luaPop(L, 1)
        ObjectUserdata.register(L, name: batchesName, methods: batchesMethods()) { o in
            guard let b = o as? BatchIterator else { return "Batches" }
            return "Batches(size \(b.size), \(b.batchesPerEpoch) per epoch, epoch \(b.epoch), position \(b.position))"
        }
        luaNewTable(L)
        Bindings.register(L, -1, prefix: "qlora.data.", functions())
        luaRawSetField(L, q, "data")
    }

    static func functions() -> [(String, LuaFunction)] {
        [
            // q.data.jsonl(path, opts) -> dataset
            ("jsonl", { a in
                let path = try a.string(1)
                let opts = try datasetOptions(a, 2)
                let ds = try errors(a) { try Dataset.load(jsonl: path, opts) }
                warnUntrained(a, ds, opts)
                ObjectUserdata.push(a.L, ds, datasetName)
                return 1
            }),
            // q.data.from_table(rows, opts) -> dataset; rows: a list of tables shaped like the JSON objects
            ("from_table", { a in
                let t = try a.table(1)
                let opts = try datasetOptions(a, 2)
                let n = luaRawLen(a.L, t)
                var values: [Result<JSONValue, DatasetLineError>] = []
                values.reserveCapacity(n)
                for i in 0..<n {
                    lua_rawgeti(a.L, t, lua_Integer(i + 1))
                    do { values.append(.success(try toJSON(a.L, -1, depth: 0))) } catch let e as DatasetLineError {
                        values.append(.failure(e))
                    }
                    luaPop(a.L, 1)
                }
                let ds = try errors(a) { try Dataset.from(values: values, opts, sourceName: "rows") }
                warnUntrained(a, ds, opts)
                ObjectUserdata.push(a.L, ds, datasetName)
                return 1
            }),
        ]
    }

    /// One line on stderr when examples were left out for having no trained token.
    static func warnUntrained(_ a: LuaArgs, _ ds: Dataset, _ opts: DatasetOptions) {
        let n = ds.untrainedRows
        if n == 0 { return }
        let why = opts.maxLen.map { "every label is masked within max_len = \($0) (a prompt that long or longer?)" } ?? "every label is masked"
        fputs("\(a.name): warning: \(n) of \(n + ds.count) examples have no trained token and are left out: \(why); ds:untrained() counts them\n", stderr)
    }

    static func datasetOptions(_ a: LuaArgs, _ i: Int32) throws -> DatasetOptions {
        let t = try a.options(i, allowed: loadOptions)
        var o = DatasetOptions()
        if let f = try a.optionString(t, "format") {
            guard let fmt = DatasetFormat(rawValue: f) else {
                throw a.fail("unknown format \"\(f)\" (expected one of text, completions, chat, tokens)")
            }
            o.format = fmt
        }
        if let v = try a.optionString(t, "text_field") { o.fields.text = v }
        if let v = try a.optionString(t, "prompt_field") { o.fields.prompt = v }
        if let v = try a.optionString(t, "completion_field") { o.fields.completion = v }
        if let v = try a.optionString(t, "messages_field") { o.fields.messages = v }
        o.maxLen = try a.optionInteger(t, "max_len")
        o.maskPrompt = try a.optionBool(t, "mask_prompt") ?? true
        o.addEOS = try a.optionBool(t, "add_eos")
        o.pack = try a.optionBool(t, "pack") ?? false
        o.padId = try a.optionInteger(t, "pad_id")
        if let b = try a.optionString(t, "on_bad_line") {
            guard b == "error" || b == "skip" else { throw a.fail("option 'on_bad_line' must be \"error\" or \"skip\", got \"\(b)\"") }
            o.skipBadRows = b == "skip"
        }
        if let t, a.optField(t, "tokenizer") != nil {
            defer { luaPop(a.L, 1) }
            if let tok = ObjectUserdata.object(a.L, -1, TokenizerBindings.name) as? Tokenizer {
                o.tokenizer = tok
            } else if let m = ObjectUserdata.object(a.L, -1, ModelBindings.modelName) as? ModelHandle {
                guard let tok = m.tokenizer else { throw a.fail("option 'tokenizer': the model has no tokenizer") }
                o.tokenizer = tok
            } else {
                throw a.fail("option 'tokenizer' must be a tokenizer or a model, got \(luaTypeName(a.L, -1))")
            }
        }
        // Chat rows: the tokenizer's own template unless 'template' says otherwise.
        var chosen: (Template, [String: Value])? = nil
        var roleFormat = false
        if let t, a.optField(t, "template") != nil {
            let L = a.L
            if lua_type(L, -1) == LUA_TFUNCTION {
                luaPop(L, 1)
                o.template = luaTemplate(a, optionsTable: t)
            } else if let h = ObjectUserdata.object(L, -1, ChatBindings.name) as? ChatTemplateHandle {
                luaPop(L, 1)
                chosen = (h.template, h.defaults)
            } else if lua_type(L, -1) == LUA_TSTRING, let s = luaString(L, -1) {
                luaPop(L, 1)
                if s == "role" {
                    roleFormat = true
                    o.template = ChatTemplates.defaultTemplate
                } else {
                    do { chosen = (try Template(s), [:]) } catch let e as JinjaError { throw a.fail("option 'template': \(e.description)") }
                }
            } else {
                luaPop(L, 1)
                throw a.fail("option 'template' must be \"role\", a chat template (q.chat_template or its text), or a function(messages) -> text | prompt, completion")
            }
        }
        var vars = ChatRenderOptions()
        if let t, a.optField(t, "chat_vars") != nil {
            let idx = lua_gettop(a.L)
            defer { luaPop(a.L, 1) }
            vars = try ChatBindings.renderOptions(a, idx, allowAny: true)
        }
        if o.template == nil, !roleFormat, let tok = o.tokenizer {
            if chosen == nil, let src = try TokenizerBindings.errors(a, { try tok.chatTemplateSource() }) {
                chosen = (try TokenizerBindings.errors(a) { try tok.compiledChatTemplate(src) }, [:])
            }
            if let (tmpl, defaults) = chosen {
                vars.variables = defaults.merging(vars.variables) { _, given in given }
                o.chatRenderer = ChatTemplates.model(tmpl, tokenizer: tok, options: vars)
            }
        }
        o.warnNoTemplate = { message in
            if DataBindings.warnedNoTemplate { return }
            DataBindings.warnedNoTemplate = true
            FileHandle.standardError.write(("warning: " + message + "\n").data(using: .utf8) ?? Data())
        }
        return o
    }

    /// The missing-template warning is given once per process.
    nonisolated(unsafe) static var warnedNoTemplate = false

    /// A chat template that calls opts.template(messages), the options table staying on the stack
    /// for the whole load. Results: text (all trained), or prompt, completion (prompt masked), or
    /// a list of {text = s, train = bool}.
    static func luaTemplate(_ a: LuaArgs, optionsTable t: Int32) -> ChatTemplate {
        let L = a.L
        return { messages in
            let top = lua_gettop(L)
            defer { lua_settop(L, top) }
            luaRawGetField(L, t, "template")
            lua_createtable(L, Int32(messages.count), 0)
            for (i, m) in messages.enumerated() {
                lua_createtable(L, 0, 2)
                luaPushString(L, m.role); luaRawSetField(L, -2, "role")
                luaPushString(L, m.content); luaRawSetField(L, -2, "content")
                lua_rawseti(L, -2, lua_Integer(i + 1))
            }
            if luaPcall(L, 1, 2) != 0 {
                throw LuaError("template failed: \(luaErrorText(L, -1))")
            }
            if let p = luaString(L, -2) {
                if lua_type(L, -1) <= 0 { return [TextSegment(p, trainable: true)] }
                guard let c = luaString(L, -1) else {
                    throw LuaError("template must return text, or prompt and completion strings; its second result is a \(luaTypeName(L, -1))")
                }
                return [TextSegment(p, trainable: false), TextSegment(c, trainable: true)]
            }
            if lua_type(L, -2) == LUA_TTABLE {
                var segs: [TextSegment] = []
                let n = luaRawLen(L, -2)
                for i in 0..<n {
                    lua_rawgeti(L, -2, lua_Integer(i + 1))
                    defer { luaPop(L, 1) }
                    luaRawGetField(L, -1, "text")
                    let text = luaString(L, -1)
                    luaPop(L, 1)
                    luaRawGetField(L, -1, "train")
                    let train = lua_toboolean(L, -1) != 0
                    luaPop(L, 1)
                    guard let text else { throw LuaError("template segment \(i + 1) has no string 'text'") }
                    segs.append(TextSegment(text, trainable: train))
                }
                return segs
            }
            throw LuaError("template must return a string, two strings or a list of {text, train}; got \(luaTypeName(L, -2))")
        }
    }

    /// A Lua value as JSON: strings (valid UTF-8), numbers, booleans, tables (a list when all keys
    /// are 1...n, else an object with string keys).
    static func toJSON(_ L: LuaState, _ i: Int32, depth: Int) throws -> JSONValue {
        let i = luaAbs(L, i)
        if depth > 64 { throw DatasetLineError("tables nest too deeply") }
        switch lua_type(L, i) {
        case LUA_TSTRING:
            guard let b = luaBytes(L, i), let s = String(validating: b, as: UTF8.self) else {
                throw DatasetLineError("a string is not valid UTF-8")
            }
            return .string(s)
        case LUA_TNUMBER:
            if lua_isinteger(L, i) != 0 { return .int(Int64(lua_tointegerx(L, i, nil))) }
            return .double(lua_tonumberx(L, i, nil))
        case LUA_TBOOLEAN: return .bool(lua_toboolean(L, i) != 0)
        case LUA_TNIL: return .null
        case LUA_TTABLE:
            let n = luaRawLen(L, i)
            var isList = true
            var keys = 0
            lua_pushnil(L)
            while lua_next(L, i) != 0 {
                keys += 1
                if lua_type(L, -2) != LUA_TNUMBER || lua_isinteger(L, -2) == 0 { isList = false }
                luaPop(L, 1)
            }
            if isList && keys == n {
                var arr: [JSONValue] = []
                arr.reserveCapacity(n)
                for k in 0..<n {
                    lua_rawgeti(L, i, lua_Integer(k + 1))
                    defer { luaPop(L, 1) }
                    arr.append(try toJSON(L, -1, depth: depth + 1))
                }
                return .array(arr)
            }
            var pairs: [(String, JSONValue)] = []
            lua_pushnil(L)
            while lua_next(L, i) != 0 {
                guard let k = luaString(L, -2) else {
                    luaPop(L, 2)
                    throw DatasetLineError("table keys must be strings (or 1...n for a list)")
                }
                do { pairs.append((k, try toJSON(L, -1, depth: depth + 1))) } catch { luaPop(L, 2); throw error }
                luaPop(L, 1)
            }
            return .object(JSONObject(pairs))
        default:
            throw DatasetLineError("unsupported value of type \(luaTypeName(L, i))")
        }
    }

    static func pushInts(_ L: LuaState, _ xs: ArraySlice<Int32>) {
        lua_createtable(L, Int32(xs.count), 0)
        for (k, v) in xs.enumerated() {
            lua_pushinteger(L, lua_Integer(v))
            lua_rawseti(L, -2, lua_Integer(k + 1))
        }
    }

    static func seed(_ a: LuaArgs, _ t: Int32?) throws -> UInt64 {
        let s = try a.optionInteger(t, "seed") ?? 0
        if s < 0 { throw a.fail("seed must be >= 0, got \(s)") }
        return UInt64(s)
    }

    static func datasetMethods() -> [(String, LuaFunction)] {
        func this(_ a: LuaArgs) throws -> Dataset { try a.object(1, datasetName, as: Dataset.self) }
        return [
            // ds:get(i) -> {input_ids, labels [, segment_ids, position_ids]} (i from 1)
            ("get", { a in
                let d = try this(a)
                let i = try a.integer(2)
                guard i >= 1 && i <= d.count else { throw a.fail("index \(i) is out of range 1...\(d.count)") }
                let ex = d.example(i - 1)
                lua_createtable(a.L, 0, 4)
                pushInts(a.L, ex.inputIds); luaRawSetField(a.L, -2, "input_ids")
                pushInts(a.L, ex.labels); luaRawSetField(a.L, -2, "labels")
                if let s = ex.segmentIds { pushInts(a.L, s); luaRawSetField(a.L, -2, "segment_ids") }
                if let p = ex.positionIds { pushInts(a.L, p); luaRawSetField(a.L, -2, "position_ids") }
                return 1
            }),
            // ds:split(frac [, {seed = 0}]) -> first, rest
            ("split", { a in
                let d = try this(a)
                let frac = try a.number(2)
                let t = try a.options(3, allowed: ["seed"])
                let (x, y) = try errors(a) { try d.split(frac, seed: try seed(a, t)) }
                ObjectUserdata.push(a.L, x, datasetName)
                ObjectUserdata.push(a.L, y, datasetName)
                return 2
            }),
            // ds:batches{size, shuffle = true, seed = 0, drop_last = false} -> batches
            ("batches", { a in
                let d = try this(a)
                let t = try a.options(2, allowed: ["size", "shuffle", "seed", "drop_last"])
                guard let size = try a.optionInteger(t, "size") else { throw a.fail("missing option 'size'") }
                let it = try errors(a) {
                    try BatchIterator(d, size: size, shuffle: try a.optionBool(t, "shuffle") ?? true,
                                      seed: try seed(a, t), dropLast: try a.optionBool(t, "drop_last") ?? false)
                }
                ObjectUserdata.push(a.L, it, batchesName)
                return 1
            }),
            ("bad_lines", { a in lua_pushinteger(a.L, lua_Integer(try this(a).badRows)); return 1 }),
            ("untrained", { a in lua_pushinteger(a.L, lua_Integer(try this(a).untrainedRows)); return 1 }),
            ("num_tokens", { a in lua_pushinteger(a.L, lua_Integer(try this(a).tokenCount)); return 1 }),
            ("packed", { a in lua_pushboolean(a.L, try this(a).packed ? 1 : 0); return 1 }),
            ("format", { a in luaPushString(a.L, try this(a).storage.format.rawValue); return 1 }),
        ]
    }

    static func batchesMethods() -> [(String, LuaFunction)] {
        func this(_ a: LuaArgs) throws -> BatchIterator { try a.object(1, batchesName, as: BatchIterator.self) }
        return [
            // it:next() -> batch table, or nil at the end of an epoch (then the next epoch begins)
            ("next", { a in
                let it = try this(a)
                guard let b = try errors(a, { try it.next() }) else { lua_pushnil(a.L); return 1 }
                lua_createtable(a.L, 0, 7)
                TensorUserdata.push(a.L, b.inputIds); luaRawSetField(a.L, -2, "input_ids")
                TensorUserdata.push(a.L, b.labels); luaRawSetField(a.L, -2, "labels")
                TensorUserdata.push(a.L, b.attentionMask); luaRawSetField(a.L, -2, "attention_mask")
                if let s = b.segmentIds { TensorUserdata.push(a.L, s); luaRawSetField(a.L, -2, "segment_ids") }
                if let p = b.positionIds { TensorUserdata.push(a.L, p); luaRawSetField(a.L, -2, "position_ids") }
                lua_pushinteger(a.L, lua_Integer(b.tokens)); luaRawSetField(a.L, -2, "tokens")
                lua_createtable(a.L, Int32(b.indices.count), 0)
                for (k, v) in b.indices.enumerated() { lua_pushinteger(a.L, lua_Integer(v + 1)); lua_rawseti(a.L, -2, lua_Integer(k + 1)) }
                luaRawSetField(a.L, -2, "indices")
                return 1
            }),
            // it:iter() -> for batch in it:iter() do ... end (one epoch)
            ("iter", { a in
                _ = try this(a)
                luaRawGetField(a.L, LUA_REGISTRY, batchesName)
                luaRawGetField(a.L, -1, "__index")
                luaRawGetField(a.L, -1, "next")
                lua_pushvalue(a.L, 1)
                return 2
            }),
            // it:reset([epoch = 0])
            ("reset", { a in
                let it = try this(a)
                let e = try a.optInteger(2, 0)
                try errors(a) { try it.reset(epoch: e) }
                return 0
            }),
            ("epoch", { a in lua_pushinteger(a.L, lua_Integer(try this(a).epoch)); return 1 }),
            ("position", { a in lua_pushinteger(a.L, lua_Integer(try this(a).position)); return 1 }),
            // it:set_position(n [, epoch]) -- n batches already taken in that epoch
            ("set_position", { a in
                let it = try this(a)
                let n = try a.integer(2)
                let e = a.isNil(3) ? nil : try a.integer(3)
                try errors(a) { try it.setPosition(n, epoch: e) }
                return 0
            }),
            ("num_batches", { a in lua_pushinteger(a.L, lua_Integer(try this(a).batchesPerEpoch)); return 1 }),
        ]
    }

    /// Runs body, turning dataset and IO errors into "qlora.data.fn: problem".
    static func errors<T>(_ a: LuaArgs, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as TrainError { throw a.fail(e.message) } catch let e as IOError {
            throw a.fail(e.description)
        }
    }
}
