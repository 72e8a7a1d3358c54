// Chat rendering: messages become text segments, each marked trainable or not. The default
// template writes every message as "<|role|>\n" (never trained) followed by "content\n"
// (trained when the role is "assistant"); the dataset appends eos. Scripts may supply their own
// template (a Swift closure here; a Lua function through the bindings).

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
}
