// A model's chat template, as transformers finds and applies it: chat_template.jinja in the model
// directory, else tokenizer_config.json's "chat_template" (a string, or a list of
// {"name", "template"} of which "default" -- or "tool_use" when tools are given -- is used);
// a GGUF's tokenizer.chat_template can be set by its loader. Applying it renders the messages
// with the tokenizer's special tokens (bos_token, eos_token, unk_token, pad_token...) as
// variables and, with tokenize, encodes the text without adding special tokens. Template
// errors become IOErrors naming the template ("chat template: line 3, column 5: ...").

import Foundation
import Jinja

/// The chat templates and special-token strings of a tokenizer's directory.
public struct TokenizerChatInfo {
    /// Template sources by name ("default" for a single template).
    public var templates: [String: String] = [:]
    /// The special tokens transformers passes to templates (bos_token, eos_token, ...).
    public var specialTokens: [String: String] = [:]
    public init() {}

    static let specialNames = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]

    init(directory: String) throws {
        let configPath = directory + "/tokenizer_config.json"
        if FileManager.default.fileExists(atPath: configPath) {
            let f = TokenizerFields(path: configPath)
            let o = try f.object(try JSONValue.load(path: configPath), "")
            for name in TokenizerChatInfo.specialNames {
                switch o[name] {
                case .string(let s)?: specialTokens[name] = s
                case .object(let t)?: if let s = t["content"]?.stringValue { specialTokens[name] = s }
                default: break
                }
            }
            switch o["chat_template"] {
            case nil, .null?: break
            case .string(let s)?: templates["default"] = s
            case .array(let list)?:
                for (i, item) in list.enumerated() {
                    let t = try f.object(item, "chat_template[\(i)]")
                    templates[try f.string(t["name"], "chat_template[\(i)].name")] = try f.string(t["template"], "chat_template[\(i)].template")
                }
            case let v?:
                throw f.fail("chat_template", "expected a string or a list of {name, template}, got \(tokDescribe(v))")
            }
        }
        let jinjaPath = directory + "/chat_template.jinja"
        if FileManager.default.fileExists(atPath: jinjaPath) {
            let bytes = try readFileBytes(path: jinjaPath)
            guard let s = String(validating: bytes, as: UTF8.self) else {
                throw IOError(path: jinjaPath, reason: "not valid UTF-8")
            }
            templates["default"] = s
        }
    }
}

extension Tokenizer {
    /// The template source to use (transformers' get_chat_template): a named one, "tool_use"
    /// when tools are given and the tokenizer has it, else "default"; nil when there is none.
    public func chatTemplateSource(name: String? = nil, withTools: Bool = false) throws -> String? {
        let t = chatInfo.templates
        if let name {
            guard let s = t[name] else {
                throw IOError(path: path, reason: "no chat template named \"\(name)\" (has: \(t.keys.sorted().joined(separator: ", ")))")
            }
            return s
        }
        if withTools, let s = t["tool_use"] { return s }
        if let s = t["default"] { return s }
        if t.isEmpty { return nil }
        throw IOError(path: path, reason: "several chat templates and none named \"default\": pass a name (\(t.keys.sorted().joined(separator: ", ")))")
    }

    /// Sets a chat template (from a GGUF's metadata, or to replace the directory's).
    public func setChatTemplate(_ source: String, name: String = "default") {
        lockedChat { $0.info.templates[name] = source }
    }

    /// The special tokens as template variables: tokenizer_config.json's strings, else the text of
    /// the bos / eos / pad ids.
    public var chatSpecialTokens: [String: Value] {
        var out: [String: Value] = [:]
        if let b = bosId, let s = idToToken(b) { out["bos_token"] = .string(s) }
        if let e = eosId, let s = idToToken(e) { out["eos_token"] = .string(s) }
        if let p = padId, let s = idToToken(p) { out["pad_token"] = .string(s) }
        for (k, v) in chatInfo.specialTokens { out[k] = .string(v) }
        return out
    }

    /// A parsed template, cached by source.
    public func compiledChatTemplate(_ source: String) throws -> Template {
        if let t = lockedChat({ $0.cache[source] }) { return t }
        let t: Template
        do { t = try Template(source) } catch let e as JinjaError {
            throw IOError(path: "chat template", reason: e.description)
        }
        lockedChat { $0.cache = [source: t] }  // the last one parsed
        return t
    }

    /// apply_chat_template: the rendered conversation. `variables` override the special tokens.
    public func applyChatTemplate(_ messages: [Value], options: ChatRenderOptions = ChatRenderOptions(),
                                  template: String? = nil) throws -> String {
        let src: String
        if let template { src = try chatTemplateSource(name: template) ?? "" } else {
            guard let s = try chatTemplateSource(withTools: options.tools.map { !$0.isNone } ?? false) else {
                throw IOError(path: path, reason: "the tokenizer has no chat template")
            }
            src = s
        }
        return try renderChat(try compiledChatTemplate(src), messages, options)
    }

    /// Renders with the special tokens added to the variables, template errors as IOErrors.
    public func renderChat(_ t: Template, _ messages: [Value], _ options: ChatRenderOptions) throws -> String {
        var o = options
        o.variables = chatSpecialTokens.merging(options.variables) { _, given in given }
        do { return try t.renderChat(messages, o) } catch let e as JinjaError {
            throw IOError(path: "chat template", reason: e.description)
        }
    }

    /// The conversation and its assistant spans (see Template.assistantSpans), special tokens given.
    public func chatAssistantSpans(_ t: Template, _ messages: [Value], _ options: ChatRenderOptions) throws
        -> (text: String, spans: [Range<String.Index>]) {
        var o = options
        o.variables = chatSpecialTokens.merging(options.variables) { _, given in given }
        if o.endOfTurnMarkers.isEmpty {
            o.endOfTurnMarkers = chatStopIds(templateSource: t.source).compactMap { idToToken($0) }
        }
        do { return try t.assistantSpans(messages, o) } catch let e as JinjaError {
            throw IOError(path: "chat template", reason: e.description)
        }
    }
}

/// The mutable chat state of a tokenizer (templates may be set after loading; parsed ones cached).
final class TokenizerChatState {
    var info = TokenizerChatInfo()
    var cache: [String: Template] = [:]
    let lock = NSLock()
}

extension Tokenizer {
    /// The templates and special-token strings (a copy).
    public var chatInfo: TokenizerChatInfo { lockedChat { $0.info } }

    /// Runs body with the chat state locked.
    func lockedChat<T>(_ body: (TokenizerChatState) -> T) -> T {
        chatState.lock.lock()
        defer { chatState.lock.unlock() }
        return body(chatState)
    }
}

extension JSONValue {
    /// The value as a template sees it (objects keep their key order).
    public var templateValue: Jinja.Value {
        switch self {
        case .null: return .none
        case .bool(let b): return .bool(b)
        case .int(let n): return Int(exactly: n).map { .int($0) } ?? .double(Double(n))
        case .double(let d): return .double(d)
        case .string(let s): return .string(s)
        case .array(let a): return .list(a.map { $0.templateValue })
        case .object(let o): return .dict(OrderedDict(o.entries.map { ($0.key, $0.value.templateValue) }))
        }
    }
}

extension Tokenizer {
    /// Tokens that end a turn in the common chat formats.
    static let endOfTurnTokens = ["<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|END_OF_TURN_TOKEN|>",
                                  "<｜end▁of▁sentence｜>", "<|return|>", "<|call|>", "<|end_of_text|>", "<turn|>", "<|endoftext|>"]

    /// Where generation in chat stops: the eos ids, plus the end-of-turn tokens the template
    /// writes (as literal text or through eos_token) that the vocabulary holds as added tokens.
    public func chatStopIds(templateSource: String) -> [Int] {
        var ids = eosIds
        var names = Tokenizer.endOfTurnTokens.filter { templateSource.contains($0) }
        if templateSource.contains("eos_token"), case .string(let e)? = chatSpecialTokens["eos_token"] { names.append(e) }
        for n in names {
            if let id = tokenToId(n), isSpecial(id) || addedIds[TokBytes(Array(n.utf8))] != nil, !ids.contains(id) { ids.append(id) }
        }
        return ids
    }

    /// A conversation ready for generation: the template applied with a generation prompt,
    /// encoded without adding special tokens (as apply_chat_template(tokenize=True) does), and
    /// the ids that end the assistant's turn.
    public func chatPrompt(_ messages: [Value], options: ChatRenderOptions = ChatRenderOptions()) throws -> (ids: [Int], stopIds: [Int], text: String) {
        var o = options
        o.addGenerationPrompt = true
        guard let src = try chatTemplateSource(withTools: o.tools.map { !$0.isNone } ?? false) else {
            throw IOError(path: path, reason: "the tokenizer has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja)")
        }
        let text = try renderChat(try compiledChatTemplate(src), messages, o)
        return (try encode(text, addSpecialTokens: false), chatStopIds(templateSource: src), text)
    }
}
