// Rendering a conversation the way transformers' apply_chat_template does: messages lose their
// keys whose value is none, reasoning given as "thinking"/"reasoning" is also offered as
// "reasoning_content" (and the reverse), `tools` and `documents` are always defined (none when
// not given), the special tokens and any other variables are passed beside them. Also: which
// parts of a rendered conversation are the assistant's (for training on them only), from the
// template's {% generation %} blocks or else by rendering the conversation's prefixes.

import Foundation

public struct ChatRenderOptions {
    public var addGenerationPrompt = false
    public var tools: Value? = nil
    public var documents: Value? = nil
    /// bos_token, eos_token, ... and any other variable the template reads (enable_thinking...).
    public var variables: [String: Value] = [:]
    /// The clock strftime_now() reads; nil: QLORA_CHAT_DATE or now.
    public var now: Date? = nil
    public init() {}
}

extension Template {
    static let reasoningFields = ["reasoning_content", "thinking", "reasoning"]

    /// A message as transformers hands it to the template.
    static func normalize(_ m: Value) -> Value {
        guard case .dict(let d) = m else { return m }
        var out = OrderedDict()
        for (k, v) in d.pairs where !v.isNone { out[k] = v }
        if let r = reasoningFields.lazy.compactMap({ out[$0] }).first {
            var aliased = OrderedDict()
            aliased["thinking"] = r
            for (k, v) in out.pairs { aliased[k] = v }
            aliased["reasoning_content"] = r
            out = aliased
        }
        return .dict(out)
    }

    func chatContext(_ messages: [Value], _ o: ChatRenderOptions) -> [String: Value] {
        var ctx = o.variables
        ctx["messages"] = .list(messages.map(Template.normalize))
        ctx["tools"] = o.tools ?? .none
        ctx["documents"] = o.documents ?? .none
        ctx["add_generation_prompt"] = .bool(o.addGenerationPrompt)
        return ctx
    }

    /// The conversation as text.
    public func renderChat(_ messages: [Value], _ o: ChatRenderOptions = ChatRenderOptions()) throws -> String {
        try render(chatContext(messages, o), now: o.now)
    }

    /// The conversation (no generation prompt) and the ranges of it that are the assistant's:
    /// the template's {% generation %} blocks when it has them; otherwise, for each assistant
    /// message i, the text between the rendering of messages[..<i] with a generation prompt and
    /// that of messages[...i] (up to where it stops agreeing with the whole conversation). A
    /// template whose prefixes do not begin the whole rendering is an error naming the message.
    public func assistantSpans(_ messages: [Value], _ o0: ChatRenderOptions = ChatRenderOptions())
        throws -> (text: String, spans: [Range<String.Index>]) {
        var o = o0
        o.addGenerationPrompt = false
        if hasGenerationBlocks {
            let (text, ranges) = try renderTracked(chatContext(messages, o), now: o.now)
            return (text, ranges.filter { !$0.isEmpty })
        }
        let full = try renderChat(messages, o)
        let fullU = Array(full.unicodeScalars)
        var spans: [Range<Int>] = []
        for (i, m) in messages.enumerated() {
            guard case .dict(let d) = m, case .string("assistant")? = d["role"] else { continue }
            var po = o
            po.addGenerationPrompt = true
            let prompt = Array(try renderChat(Array(messages[..<i]), po).unicodeScalars)
            let upTo = Array(try renderChat(Array(messages[...i]), o).unicodeScalars)
            guard fullU.starts(with: prompt), upTo.starts(with: prompt) else {
                throw JinjaError("the chat template renders message \(i + 1) (assistant) so that the conversation up to it, with a generation prompt, is not a prefix of the whole conversation; a template with {% generation %} blocks is needed to find the assistant's text")
            }
            var end = prompt.count
            while end < upTo.count, end < fullU.count, upTo[end] == fullU[end] { end += 1 }
            if let last = spans.last, prompt.count < last.upperBound {
                throw JinjaError("the chat template's rendering of message \(i + 1) (assistant) overlaps the previous one")
            }
            if end > prompt.count { spans.append(prompt.count..<end) }
        }
        let s = full.unicodeScalars
        return (full, spans.map { r in s.index(s.startIndex, offsetBy: r.lowerBound)..<s.index(s.startIndex, offsetBy: r.upperBound) })
    }
}
