// Chat rendering: messages become text segments, each marked trainable or not. By default the
// model's own chat template (Jinja) renders the whole conversation and only the assistant's
// parts are trainable (see `ChatTemplates.model`); the text then carries its own special tokens.
// The older "role" format writes every message as "<|role|>\n" (never trained) followed by
// "content\n" (trained when the role is "assistant"), and the dataset appends eos. Scripts may
// supply their own template (a Swift closure here; a Lua function through the bindings).

import IO
import Jinja

/// One chat message.
public struct ChatMessage: Equatable {
    public let role: String
    public let content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// A piece of an example's text and whether its tokens are training targets (when the prompt is
/// masked; without masking every token is trained).
public struct TextSegment: Equatable {
    public let text: String
    public let trainable: Bool
    public init(_ text: String, trainable: Bool) { self.text = text; self.trainable = trainable }
}

/// A chat template: messages -> segments. Throws to reject an example.
public typealias ChatTemplate = ([ChatMessage]) throws -> [TextSegment]

/// A renderer of whole JSON messages (tool calls and all) into segments whose text already holds
/// its special tokens (encoded without adding any).
public typealias ChatRenderer = ([JSONValue]) throws -> [TextSegment]

public enum ChatTemplates {
    /// "<|role|>\n" + "content\n" per message; assistant contents are the trained part.
    public static func defaultTemplate(_ messages: [ChatMessage]) -> [TextSegment] {
        var out: [TextSegment] = []
        out.reserveCapacity(messages.count * 2)
        for m in messages {
            out.append(TextSegment("<|\(m.role)|>\n", trainable: false))
            out.append(TextSegment(m.content + "\n", trainable: m.role == "assistant"))
        }
        return out
    }

    /// The default template as one string (for documentation and tests).
    public static func render(_ messages: [ChatMessage]) -> String {
        defaultTemplate(messages).map { $0.text }.joined()
    }

    /// The model's Jinja template as a renderer: the conversation rendered without a generation
    /// prompt, cut into segments at the assistant spans (the template's {% generation %} blocks,
    /// or what each assistant message adds to the conversation before it), which alone are
    /// trainable. Template errors (raise_exception for a bad role order...) reject the row.
    public static func model(_ template: Template, tokenizer: Tokenizer, options: ChatRenderOptions) -> ChatRenderer {
        { messages in
            let values = messages.map { $0.templateValue }
            let text: String, spans: [Range<String.Index>]
            do { (text, spans) = try tokenizer.chatAssistantSpans(template, values, options) } catch let e as IOError {
                throw DatasetLineError(e.description)
            }
            if spans.isEmpty { throw DatasetLineError("the conversation has no assistant message to train on") }
            var segs: [TextSegment] = []
            var pos = text.startIndex
            for r in spans {
                if pos < r.lowerBound { segs.append(TextSegment(String(text[pos..<r.lowerBound]), trainable: false)) }
                segs.append(TextSegment(String(text[r]), trainable: true))
                pos = r.upperBound
            }
            if pos < text.endIndex { segs.append(TextSegment(String(text[pos...]), trainable: false)) }
            return segs
        }
    }
}
