// Chat templates from Lua: q.chat_template(text) -> a "qlora.ChatTemplate" with
// tmpl:render(messages [, vars]) and tmpl:source(); tok:chat_template([name]) (the tokenizer's
// own, rendering with its special tokens; nil when it has none) and
// tok:apply_chat_template(messages [, opts]) -> text, or ids with tokenize = true;
// model:chat(messages [, opts]) generates the assistant's answer, stopping at the end of its turn.
// Lua values become template values: tables with keys 1..n are lists, other tables dicts (their
// keys sorted, since Lua tables keep no order; give tools as a JSON string to keep the order).

import CLua
import Foundation
import IO
import Jinja
import NN

/// A parsed template and the variables it renders with unless told otherwise.
final class ChatTemplateHandle {
    let template: Template
    let source: String
    let defaults: [String: Value]
    init(template: Template, source: String, defaults: [String: Value]) {
        self.template = template; self.source = source; self.defaults = defaults
    }
}

enum ChatBindings {
    static let name = "qlora.ChatTemplate"

    static func install(_ L: LuaState) {
        ObjectUserdata.register(L, name: name, methods: methods()) { o in
            guard let h = o as? ChatTemplateHandle else { return "ChatTemplate" }
            return "ChatTemplate(\(h.source.utf8.count) bytes)"
        }
    }

    static func functions() -> [(String, LuaFunction)] {
        [
            // q.chat_template(text) -> template
            ("chat_template", { a in
                let src = try a.string(1)
                let t: Template
                do { t = try Template(src) } catch let e as JinjaError { throw a.fail(e.description) }
                ObjectUserdata.push(a.L, ChatTemplateHandle(template: t, source: src, defaults: [:]), name)
                return 1
            }),
        ]
    }

    static func methods() -> [(String, LuaFunction)] {
        func this(_ a: LuaArgs) throws -> ChatTemplateHandle { try a.object(1, name, as: ChatTemplateHandle.self) }
        return [
            // tmpl:render(messages [, vars]) -> string
            ("render", { a in
                let h = try this(a)
                let msgs = try messages(a, 2)
                var o = try renderOptions(a, 3, allowAny: true)
                o.variables = h.defaults.merging(o.variables) { _, given in given }
                do { luaPushString(a.L, try h.template.renderChat(msgs, o)) } catch let e as JinjaError { throw a.fail(e.description) }
                return 1
            }),
            ("source", { a in luaPushString(a.L, try this(a).source); return 1 }),
        ]
    }

    // MARK: tokenizer methods

    static func tokenizerMethods() -> [(String, LuaFunction)] {
        func tok(_ a: LuaArgs) throws -> Tokenizer { try a.object(1, TokenizerBindings.name, as: Tokenizer.self) }
        return [
            // tok:chat_template([name]) -> template or nil
            ("chat_template", { a in
                let t = try tok(a)
                let nameArg = a.isNil(2) ? nil : try a.string(2)
                guard let src = try TokenizerBindings.errors(a, { try t.chatTemplateSource(name: nameArg) }) else {
                    lua_pushnil(a.L); return 1
                }
                let compiled = try TokenizerBindings.errors(a) { try t.compiledChatTemplate(src) }
                ObjectUserdata.push(a.L, ChatTemplateHandle(template: compiled, source: src, defaults: t.chatSpecialTokens), name)
                return 1
            }),
            // tok:apply_chat_template(messages [, {add_generation_prompt, tokenize, tools, documents, template, ...}])
            ("apply_chat_template", { a in
                let t = try tok(a)
                let msgs = try messages(a, 2)
                let o = try renderOptions(a, 3, allowAny: true, extra: ["tokenize", "template"])
                let opts: Int32? = a.isNil(3) ? nil : 3
                let tokenize = try a.optionBool(opts, "tokenize") ?? false
                let named = try a.optionString(opts, "template")
                let text = try TokenizerBindings.errors(a) { try t.applyChatTemplate(msgs, options: o, template: named) }
                if tokenize {
                    let ids = try TokenizerBindings.errors(a) { try t.encode(text, addSpecialTokens: false) }
                    pushIds(a.L, ids)
                } else {
                    luaPushString(a.L, text)
                }
                return 1
            }),
        ]
    }

    static func pushIds(_ L: LuaState, _ ids: [Int]) {
        lua_createtable(L, Int32(min(ids.count, 1 << 24)), 0)
        for (i, id) in ids.enumerated() {
            lua_pushinteger(L, lua_Integer(id))
            lua_rawseti(L, -2, lua_Integer(i + 1))
        }
    }

    // MARK: Lua -> template values

    /// Messages: a list of {role =, content =, ...} tables, a JSON string of such a list, or a
    /// plain string (one user message).
    static func messages(_ a: LuaArgs, _ i: Int32) throws -> [Value] {
        if lua_type(a.L, i) == LUA_TSTRING {
            let s = try a.string(i)
            let trimmed = s.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("[") {
                guard case .list(let l) = try json(a, s, "messages") else { throw a.fail("messages: expected a JSON list") }
                return l
            }
            return [.dict(OrderedDict([("role", .string("user")), ("content", .string(s))]))]
        }
        guard lua_type(a.L, i) == LUA_TTABLE else { throw a.typeError(i, "a list of messages ({role =, content =} tables)") }
        guard case .list(let l) = try value(a, i, depth: 0, what: "messages") else {
            throw a.fail("messages must be a list of {role =, content =} tables")
        }
        for (k, m) in l.enumerated() {
            guard case .dict(let d) = m else { throw a.fail("message \(k + 1) is not a table") }
            guard case .string? = d["role"] else { throw a.fail("message \(k + 1) has no string 'role'") }
        }
        return l
    }

    static func json(_ a: LuaArgs, _ s: String, _ what: String) throws -> Value {
        do { return try JSONValue.parse(s).templateValue } catch { throw a.fail("\(what): not valid JSON: \(error)") }
    }

    /// The Lua value at i as a template value (depth-limited: a table holding itself is an error).
    static func value(_ a: LuaArgs, _ i0: Int32, depth: Int, what: String) throws -> Value {
        let L = a.L
        let i = luaAbs(L, i0)
        if depth > 64 { throw a.fail("\(what): tables nested deeper than 64 (a cycle?)") }
        guard lua_checkstack(L, 8) != 0 else { throw a.fail("\(what): out of Lua stack space") }
        switch lua_type(L, i) {
        case LUA_TNIL, LUA_TNONE: return .none
        case LUA_TBOOLEAN: return .bool(lua_toboolean(L, i) != 0)
        case LUA_TNUMBER:
            if lua_isinteger(L, i) != 0 { return .int(Int(lua_tointegerx(L, i, nil))) }
            return .double(lua_tonumberx(L, i, nil))
        case LUA_TSTRING:
            guard let b = luaBytes(L, i), let s = String(validating: b, as: UTF8.self) else {
                throw a.fail("\(what): a string is not valid UTF-8")
            }
            return .string(s)
        case LUA_TTABLE:
            let n = luaRawLen(L, i)
            var count = 0
            var stringKeys: [String] = []
            lua_pushnil(L)
            while lua_next(L, i) != 0 {
                luaPop(L, 1)
                count += 1
                if lua_type(L, -1) == LUA_TSTRING, let k = luaString(L, -1) { stringKeys.append(k) }
            }
            if count == n {
                var items: [Value] = []
                items.reserveCapacity(n)
                for k in 0..<n {
                    lua_rawgeti(L, i, lua_Integer(k + 1))
                    defer { luaPop(L, 1) }
                    items.append(try value(a, -1, depth: depth + 1, what: "\(what)[\(k + 1)]"))
                }
                return .list(items)
            }
            guard stringKeys.count == count else { throw a.fail("\(what): a table mixes list entries and other keys") }
            var d = OrderedDict()
            for k in stringKeys.sorted() {
                luaRawGetField(L, i, k)
                defer { luaPop(L, 1) }
                d[k] = try value(a, -1, depth: depth + 1, what: "\(what).\(k)")
            }
            return .dict(d)
        default:
            throw a.fail("\(what): a \(luaTypeName(L, i)) cannot be given to a template")
        }
    }

    /// Render options from the table at i: add_generation_prompt, tools, documents (a table or a
    /// JSON string), and every other key a template variable (`extra` keys are left to the caller).
    static func renderOptions(_ a: LuaArgs, _ i: Int32, allowAny: Bool, extra: Set<String> = []) throws -> ChatRenderOptions {
        var o = ChatRenderOptions()
        if a.isNil(i) { return o }
        let t = try a.table(i)
        let L = a.L
        var keys: [String] = []
        lua_pushnil(L)
        while lua_next(L, t) != 0 {
            luaPop(L, 1)
            guard lua_type(L, -1) == LUA_TSTRING, let k = luaString(L, -1) else { luaPop(L, 1); throw a.fail("variable names must be strings") }
            keys.append(k)
        }
        for k in keys.sorted() where !extra.contains(k) {
            luaRawGetField(L, t, k)
            defer { luaPop(L, 1) }
            switch k {
            case "add_generation_prompt":
                guard lua_type(L, -1) == LUA_TBOOLEAN else { throw a.fail("option 'add_generation_prompt' must be a boolean") }
                o.addGenerationPrompt = lua_toboolean(L, -1) != 0
            case "tools", "documents":
                let v: Value = lua_type(L, -1) == LUA_TSTRING ? try json(a, luaString(L, -1) ?? "", k) : try value(a, -1, depth: 0, what: k)
                if k == "tools" { o.tools = v } else { o.documents = v }
            case "date":
                guard let s = luaString(L, -1), let d = Template.parseDate(s) else {
                    throw a.fail("option 'date' must be \"YYYY-MM-DD\" or \"YYYY-MM-DDTHH:MM:SS\" (what strftime_now reads)")
                }
                o.now = d
            default:
                o.variables[k] = try value(a, -1, depth: 0, what: k)
            }
        }
        return o
    }

    // MARK: model:chat

    /// model:chat(messages [, {system, max_tokens, temperature, top_k, top_p, seed, vars, tools}])
    /// -> the assistant's answer (text).
    static func chat(_ a: LuaArgs) throws -> Int32 {
        let L = a.L
        let handle = try a.object(1, ModelBindings.modelName, as: ModelHandle.self)
        guard let tok = handle.tokenizer else { throw a.fail("this model has no tokenizer (no tokenizer.json in its directory)") }
        var msgs = try messages(a, 2)
        let opts = try a.options(3, allowed: ["system", "max_tokens", "temperature", "top_k", "top_p", "seed", "vars", "tools"])
        if let s = try a.optionString(opts, "system") {
            msgs.insert(.dict(OrderedDict([("role", .string("system")), ("content", .string(s))])), at: 0)
        }
        var ro = ChatRenderOptions()
        if let t = opts, a.optField(t, "vars") != nil {
            let idx = lua_gettop(L)
            defer { luaPop(L, 1) }
            ro = try renderOptions(a, idx, allowAny: true)
        }
        if let t = opts, a.optField(t, "tools") != nil {
            defer { luaPop(L, 1) }
            ro.tools = lua_type(L, -1) == LUA_TSTRING ? try json(a, luaString(L, -1) ?? "", "tools") : try value(a, -1, depth: 0, what: "tools")
        }
        var o = GenerationOptions()
        o.maxTokens = try a.optionInteger(opts, "max_tokens") ?? 128
        o.temperature = try a.optionNumber(opts, "temperature") ?? 0
        o.topK = try a.optionInteger(opts, "top_k") ?? 0
        o.topP = try a.optionNumber(opts, "top_p") ?? 1
        if let s = try a.optionInteger(opts, "seed") { o.seed = UInt64(max(0, s)) }
        let model = handle.model
        let (prompt, stopIds, _) = try TokenizerBindings.errors(a) { try tok.chatPrompt(msgs, options: ro) }
        if let id = prompt.first(where: { $0 >= model.config.vocabSize }) {
            throw a.fail("the prompt has token id \(id), but the model's vocab_size is \(model.config.vocabSize)")
        }
        o.stopIds = model.config.eosTokenIds + stopIds
        let ids = try ModelBindings.modelErrors(a) { try model.generate(prompt, o) { _ in true } }
        let text = try TokenizerBindings.errors(a) { try tok.decode(ids.filter { !o.stopIds.contains($0) }, skipSpecialTokens: true) }
        luaPushString(L, text)
        return 1
    }
}
