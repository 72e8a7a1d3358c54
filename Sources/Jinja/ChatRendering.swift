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
    /// Texts that end a turn (<|im_end|>, <|eot_id|>, the eos token...): an assistant span found
    /// by searching for the message's content extends over one that follows it.
    public var endOfTurnMarkers: [String] = []
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
        ctx["tools"] = o.tools ?? Value.none
        ctx["documents"] = o.documents ?? Value.none
        ctx["add_generation_prompt"] = .bool(o.addGenerationPrompt)
        return ctx
    }

    /// The conversation as text.
    public func renderChat(_ messages: [Value], _ o: ChatRenderOptions = ChatRenderOptions()) throws -> String {
        try render(chatContext(messages, o), now: o.now)
    }

    /// The conversation (no generation prompt) and the ranges of it that are the assistant's:
    /// the template's {% generation %} blocks when it has them. Otherwise, for each assistant
    /// message i, the text between the rendering of messages[..<i] with a generation prompt and
    /// that of messages[...i] (up to where it stops agreeing with the whole conversation), when
    /// that holds the message's content; else (templates that render earlier turns differently,
    /// e.g. without their reasoning) the message's content found in the conversation after the
    /// previous span, with the end-of-turn marker that follows it. A message found neither way
    /// is an error naming it.
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
        let markers = o.endOfTurnMarkers.filter { !$0.isEmpty }.map { Array($0.unicodeScalars) }
        func common(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
            var n = 0
            while n < a.count, n < b.count, a[n] == b[n] { n += 1 }
            return n
        }
        var spans: [Range<Int>] = []
        for (i, m) in messages.enumerated() {
            guard case .dict(let d) = m, case .string("assistant")? = d["role"] else { continue }
            var content: [Unicode.Scalar] = []
            if case .string(let c)? = d["content"] { content = Array(c.unicodeScalars) }
            let cursor = spans.last?.upperBound ?? 0
            var po = o
            po.addGenerationPrompt = true
            let prompt = Array(try renderChat(Array(messages[..<i]), po).unicodeScalars)
            let upTo = Array(try renderChat(Array(messages[...i]), o).unicodeScalars)
            if fullU.starts(with: prompt), upTo.starts(with: prompt), prompt.count >= cursor {
                var end = common(upTo, fullU)
                if end < upTo.count {
                    // The two diverge after this message (a trailing eos in one, the next turn in
                    // the other): do not end inside a tag both begin with ("<", "<|"), and take
                    // the end-of-turn marker that follows.
                    var j = end
                    while j > max(prompt.count, end - 16), fullU[j - 1] != ">" {
                        if fullU[j - 1] == "<" { end = j - 1; break }
                        j -= 1
                    }
                    if let mk = markers.first(where: { fullU[end...].starts(with: $0) }) { end += mk.count }
                }
                if end > prompt.count, content.isEmpty || Python.find(Array(fullU[prompt.count..<end]), content) >= 0 {
                    spans.append(prompt.count..<end)
                    continue
                }
            }
            // Search for the content after the shared part of the prompt and the previous span.
            let from = max(cursor, min(common(prompt, fullU), fullU.count))
            let at = content.isEmpty ? -1 : Python.find(Array(fullU[from...]), content)
            guard at >= 0 else {
                throw JinjaError("cannot find the text of message \(i + 1) (assistant) in the rendered conversation: the chat template renders it in a way that neither its conversation prefixes nor its content reveal; a template with {% generation %} blocks is needed to train on it")
            }
            var end = from + at + content.count
            if let mk = markers.first(where: { fullU[end...].starts(with: $0) }) { end += mk.count }
            spans.append((from + at)..<end)
        }
        let s = full.unicodeScalars
        return (full, spans.map { r in s.index(s.startIndex, offsetBy: r.lowerBound)..<s.index(s.startIndex, offsetBy: r.upperBound) })
    }
}
