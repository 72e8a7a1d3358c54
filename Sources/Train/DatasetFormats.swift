// Dataset row formats: how one JSON object (a JSONL line or a Lua table) becomes an example --
// text segments to tokenize ("text", "completions", "chat") or ready token ids ("tokens").
// Field problems are DatasetLineErrors ("missing field \"completion\"").

import IO

public enum DatasetFormat: String, CaseIterable {
    case text, completions, chat, tokens

    /// The format a row's fields suggest: messages -> chat, input_ids -> tokens, prompt ->
    /// completions, text -> text.
    public static func detect(_ row: JSONValue, _ f: DatasetFields) -> DatasetFormat? {
        guard let o = row.objectValue else { return nil }
        if o[f.messages] != nil { return .chat }
        if o["input_ids"] != nil { return .tokens }
        if o[f.prompt] != nil { return .completions }
        if o[f.text] != nil { return .text }
        return nil
    }
}

/// Field names (configurable for text, prompt/completion and messages).
public struct DatasetFields {
    public var text = "text"
    public var prompt = "prompt"
    public var completion = "completion"
    public var messages = "messages"
    public init() {}
}

/// An example before tokenization, or already tokenized.
public enum RawExample {
    case segments([TextSegment])
    /// Segments of a chat template's rendering: they carry their special tokens (none added).
    case rendered([TextSegment])
    case tokens(ids: [Int], labels: [Int]?)
}

enum DatasetRows {
    static func object(_ row: JSONValue) throws -> JSONObject {
        guard let o = row.objectValue else { throw DatasetLineError("expected a JSON object, got \(kind(row))") }
        return o
    }

    static func kind(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    static func string(_ o: JSONObject, _ key: String, in what: String = "") throws -> String {
        guard let v = o[key] else { throw DatasetLineError("\(what)missing field \"\(key)\"") }
        guard let s = v.stringValue else { throw DatasetLineError("\(what)field \"\(key)\" is not a string (got \(kind(v)))") }
        return s
    }

    static func intArray(_ o: JSONObject, _ key: String) throws -> [Int] {
        guard let v = o[key] else { throw DatasetLineError("missing field \"\(key)\"") }
        guard let a = v.arrayValue else { throw DatasetLineError("field \"\(key)\" is not an array (got \(kind(v)))") }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for (i, x) in a.enumerated() {
            guard let n = x.intValue else {
                throw DatasetLineError("field \"\(key)\" entry \(i + 1) is not an integer (got \(kind(x)))")
            }
            out.append(n)
        }
        return out
    }

    static func messages(_ o: JSONObject, _ key: String) throws -> [ChatMessage] {
        guard let v = o[key] else { throw DatasetLineError("missing field \"\(key)\"") }
        guard let a = v.arrayValue else { throw DatasetLineError("field \"\(key)\" is not an array (got \(kind(v)))") }
        if a.isEmpty { throw DatasetLineError("field \"\(key)\" is empty") }
        var out: [ChatMessage] = []
        for (i, m) in a.enumerated() {
            let what = "message \(i + 1): "
            guard let mo = m.objectValue else { throw DatasetLineError("\(what)expected an object, got \(kind(m))") }
            out.append(ChatMessage(role: try string(mo, "role", in: what), content: try string(mo, "content", in: what)))
        }
        return out
    }

    /// The example a row holds in `format`.
    static func extract(_ row: JSONValue, format: DatasetFormat, fields: DatasetFields,
                        template: ChatTemplate?, renderer: ChatRenderer? = nil) throws -> RawExample {
        let o = try object(row)
        switch format {
        case .text:
            return .segments([TextSegment(try string(o, fields.text), trainable: true)])
        case .completions:
            let p = try string(o, fields.prompt)
            let c = try string(o, fields.completion)
            return .segments([TextSegment(p, trainable: false), TextSegment(c, trainable: true)])
        case .chat:
            if template == nil, let renderer {
                guard let v = o[fields.messages] else { throw DatasetLineError("missing field \"\(fields.messages)\"") }
                guard let a = v.arrayValue else { throw DatasetLineError("field \"\(fields.messages)\" is not an array (got \(kind(v)))") }
                if a.isEmpty { throw DatasetLineError("field \"\(fields.messages)\" is empty") }
                for (i, m) in a.enumerated() {
                    guard let mo = m.objectValue else { throw DatasetLineError("message \(i + 1): expected an object, got \(kind(m))") }
                    _ = try string(mo, "role", in: "message \(i + 1): ")
                }
                return .rendered(try renderer(a))
            }
            let msgs = try messages(o, fields.messages)
            if let template { return .segments(try template(msgs)) }
            return .segments(ChatTemplates.defaultTemplate(msgs))
        case .tokens:
            let ids = try intArray(o, "input_ids")
            var labels: [Int]? = nil
            if let v = o["labels"], !v.isNull {
                let l = try intArray(o, "labels")
                if l.count != ids.count {
                    throw DatasetLineError("field \"labels\" has \(l.count) entries but \"input_ids\" has \(ids.count)")
                }
                labels = l
            }
            return .tokens(ids: ids, labels: labels)
        }
    }
}
