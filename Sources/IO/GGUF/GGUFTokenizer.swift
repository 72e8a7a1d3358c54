// A tokenizer from a GGUF file's tokenizer.ggml.* metadata, built as the tokenizer.json the
// same vocabulary has on the Hugging Face side, so encoding and decoding run through the one
// tokenizer implementation:
//   gpt2   byte-level BPE: vocab and merges as stored, the pre-tokenizer's split regexes as
//          llama.cpp defines them for tokenizer.ggml.pre (Llama 3, Qwen2, SmolLM/StarCoder,
//          GPT-2 and their aliases, llama.cpp's default), Llama 3's ignore_merges.
//   llama  SentencePiece BPE: merges ranked by the scores of the merged pieces (highest first),
//          "▁" for spaces (and a prefix one when add_space_prefix), byte fallback to <0xNN>.
// Control tokens become special added tokens, user-defined ones plain added tokens; bos, eos,
// pad, add_bos / add_eos come from the metadata; tokenizer.chat_template is kept on the result.

import Foundation

public enum GGUFTokenizer {
    /// llama.cpp's pre-tokenizer names -> (split regexes in order, ignore_merges, default add_bos).
    static func preTokenizer(_ name: String) -> (regexes: [String], ignoreMerges: Bool, addBos: Bool)? {
        let contractionsCI = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
        let gpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
        switch name {
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe":
            return ([contractionsCI + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
                    name != "dbrx" && name != "smaug-bpe", true)
        case "qwen2", "deepseek-r1-qwen", "megrez", "stablelm2":
            return ([contractionsCI + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
                    false, false)
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b":
            return (["\\p{N}", gpt2], false, false)
        case "gpt-2", "phi-2", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe",
             "gigachat", "mpt", "olmo", "jais", "trillion":
            return ([gpt2], false, false)
        case "default":
            return (["[\\p{P}\\$\\+<=>\\^~\\|]+", gpt2, "\\p{N}+", "[0-9][0-9][0-9]"], false, false)
        default:
            return nil
        }
    }

    static let supportedPre = "llama3/llama-bpe, qwen2, smollm/starcoder, gpt-2, default"

    /// Token types of tokenizer.ggml.token_type.
    enum TokenType: Int { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }

    /// The tokenizer of a GGUF file.
    public static func load(_ f: GGUFFile) throws -> Tokenizer {
        let p = try parts(f)
        let tok = try Tokenizer(file: f.path, json: p.json, directory: nil, specials: p.specials)
        if let t = p.chatTemplate { tok.setChatTemplate(t) }
        return tok
    }

    /// The tokenizer.json equivalent of the metadata, the special ids, and the chat template.
    static func parts(_ f: GGUFFile) throws -> (json: JSONValue, specials: Tokenizer.Specials, chatTemplate: String?) {
        func bad(_ reason: String) -> IOError { IOError(path: f.path, reason: reason) }
        guard let kind = try f.string("tokenizer.ggml.model") else { throw bad("missing metadata tokenizer.ggml.model (the file has no tokenizer)") }
        guard let tokenValues = try f.array("tokenizer.ggml.tokens") else { throw bad("missing metadata tokenizer.ggml.tokens") }
        guard tokenValues.count <= Tokenizer.maxId else { throw bad("tokenizer.ggml.tokens has \(tokenValues.count) tokens, too many") }
        var tokens: [String] = []
        tokens.reserveCapacity(tokenValues.count)
        for (i, v) in tokenValues.enumerated() {
            guard let s = v.string else { throw bad("tokenizer.ggml.tokens[\(i)] must be a string, got \(v.type.name)") }
            tokens.append(s)
        }
        var types = [Int](repeating: 1, count: tokens.count)
        if let tt = try f.array("tokenizer.ggml.token_type") {
            guard tt.count == tokens.count else { throw bad("tokenizer.ggml.token_type has \(tt.count) entries for \(tokens.count) tokens") }
            for (i, v) in tt.enumerated() {
                guard let t = v.int else { throw bad("tokenizer.ggml.token_type[\(i)] must be an integer") }
                types[i] = t
            }
        }
        func tokenId(_ key: String) throws -> Int? {
            guard let id = try f.int(key) else { return nil }
            guard id >= 0, id < tokens.count else { throw bad("\(key) is \(id), outside the vocabulary (\(tokens.count) tokens)") }
            return id
        }
        let bos = try tokenId("tokenizer.ggml.bos_token_id")
        var eos: [Int] = []
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let e = try tokenId(key), !eos.contains(e) { eos.append(e) }
        }
        let pad = try tokenId("tokenizer.ggml.padding_token_id")
        let unk = try tokenId("tokenizer.ggml.unknown_token_id")

        // vocab (a repeated token string keeps its first id, as llama.cpp's lookup does)
        var vocabPairs: [(String, JSONValue)] = []
        vocabPairs.reserveCapacity(tokens.count)
        var seen = Set<String>()
        var seenBytes = Set<[UInt8]>()
        for (i, t) in tokens.enumerated() {
            let b = Array(t.utf8)
            if seenBytes.insert(b).inserted { vocabPairs.append((t, .int(Int64(i)))) }
            _ = seen
        }
        var added: [JSONValue] = []
        for (i, t) in tokens.enumerated() where !t.isEmpty {
            switch TokenType(rawValue: types[i]) {
            case .control, .unknown:
                added.append(.object(JSONObject([("id", .int(Int64(i))), ("content", .string(t)), ("special", .bool(true)),
                                                 ("normalized", .bool(false))])))
            case .userDefined:
                added.append(.object(JSONObject([("id", .int(Int64(i))), ("content", .string(t)), ("special", .bool(false)),
                                                 ("normalized", .bool(false))])))
            default: break
            }
        }
        // Only the first id of a repeated token string can be an added token.
        var firstId: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where firstId[t] == nil { firstId[t] = i }
        added = added.filter { v in
            guard let c = v["content"]?.stringValue, let id = v["id"]?.intValue else { return false }
            return firstId[c] == id
        }

        var root: [(String, JSONValue)] = []
        var addBos: Bool, addEos = try f.bool("tokenizer.ggml.add_eos_token") ?? false
        switch kind {
        case "gpt2":
            let preName = try f.string("tokenizer.ggml.pre") ?? "default"
            guard let pre = preTokenizer(preName) else {
                throw bad("unsupported tokenizer.ggml.pre \"\(preName)\" (qlora knows \(supportedPre))")
            }
            guard let mergeValues = try f.array("tokenizer.ggml.merges") else { throw bad("missing metadata tokenizer.ggml.merges") }
            var merges: [JSONValue] = []
            merges.reserveCapacity(mergeValues.count)
            for (i, m) in mergeValues.enumerated() {
                guard let s = m.string else { throw bad("tokenizer.ggml.merges[\(i)] must be a string") }
                merges.append(.string(s))
            }
            addBos = try f.bool("tokenizer.ggml.add_bos_token") ?? pre.addBos
            root.append(("model", .object(JSONObject([
                ("type", "BPE"), ("vocab", .object(JSONObject(vocabPairs))), ("merges", .array(merges)),
                ("ignore_merges", .bool(pre.ignoreMerges)), ("byte_fallback", false), ("dropout", .null), ("unk_token", .null),
            ]))))
            var steps: [JSONValue] = pre.regexes.map { r in
                .object(JSONObject([("type", "Split"), ("pattern", .object(JSONObject([("Regex", .string(r))]))),
                                    ("behavior", "Isolated"), ("invert", false)]))
            }
            steps.append(.object(JSONObject([("type", "ByteLevel"), ("add_prefix_space", false), ("trim_offsets", false),
                                             ("use_regex", false)])))
            root.append(("pre_tokenizer", .object(JSONObject([("type", "Sequence"), ("pretokenizers", .array(steps))]))))
            root.append(("decoder", .object(JSONObject([("type", "ByteLevel"), ("add_prefix_space", false),
                                                        ("trim_offsets", false), ("use_regex", false)]))))
        case "llama":
            guard let scoreValues = try f.array("tokenizer.ggml.scores") else { throw bad("missing metadata tokenizer.ggml.scores") }
            guard scoreValues.count == tokens.count else {
                throw bad("tokenizer.ggml.scores has \(scoreValues.count) entries for \(tokens.count) tokens")
            }
            var scores: [Double] = []
            for (i, v) in scoreValues.enumerated() {
                guard let d = v.double, d.isFinite else { throw bad("tokenizer.ggml.scores[\(i)] must be a finite number") }
                scores.append(d)
            }
            addBos = try f.bool("tokenizer.ggml.add_bos_token") ?? true
            let prefixSpace = try f.bool("tokenizer.ggml.add_space_prefix") ?? true
            let unkName = unk.map { tokens[$0] } ?? (firstId["<unk>"] != nil ? "<unk>" : nil)
            root.append(("model", .object(JSONObject([
                ("type", "BPE"), ("vocab", .object(JSONObject(vocabPairs))),
                ("merges", .array(spmMerges(tokens, scores, types).map { .string($0) })),
                ("byte_fallback", true), ("fuse_unk", true), ("dropout", .null),
                ("unk_token", unkName.map { .string($0) } ?? .null),
            ]))))
            var norm: [JSONValue] = []
            if prefixSpace { norm.append(.object(JSONObject([("type", "Prepend"), ("prepend", "\u{2581}")]))) }
            norm.append(.object(JSONObject([("type", "Replace"), ("pattern", .object(JSONObject([("String", " ")]))), ("content", "\u{2581}")])))
            root.append(("normalizer", .object(JSONObject([("type", "Sequence"), ("normalizers", .array(norm))]))))
            var dec: [JSONValue] = [
                .object(JSONObject([("type", "Replace"), ("pattern", .object(JSONObject([("String", "\u{2581}")]))), ("content", " ")])),
                .object(JSONObject([("type", "ByteFallback")])), .object(JSONObject([("type", "Fuse")])),
            ]
            if prefixSpace { dec.append(.object(JSONObject([("type", "Strip"), ("content", " "), ("start", 1), ("stop", 0)]))) }
            root.append(("decoder", .object(JSONObject([("type", "Sequence"), ("decoders", .array(dec))]))))
        default:
            throw bad("unsupported tokenizer.ggml.model \"\(kind)\" (qlora reads gpt2 and llama tokenizers)")
        }
        if addBos && bos == nil { throw bad("tokenizer.ggml.add_bos_token is true but there is no tokenizer.ggml.bos_token_id") }
        if addEos && eos.isEmpty { addEos = false }
        root.append(("added_tokens", .array(added)))
        // bos / eos as a template post-processor, as the Hugging Face form of these tokenizers has it
        if (addBos && bos != nil) || addEos {
            var single: [JSONValue] = [], special: [(String, JSONValue)] = []
            func token(_ id: Int) -> JSONValue {
                special.append((tokens[id], .object(JSONObject([("id", .string(tokens[id])), ("ids", .array([.int(Int64(id))])),
                                                                ("tokens", .array([.string(tokens[id])]))]))))
                return .object(JSONObject([("SpecialToken", .object(JSONObject([("id", .string(tokens[id])), ("type_id", 0)])))]))
            }
            if addBos, let b = bos { single.append(token(b)) }
            single.append(.object(JSONObject([("Sequence", .object(JSONObject([("id", "A"), ("type_id", 0)])))])))
            if addEos, let e = eos.first { single.append(token(e)) }
            root.append(("post_processor", .object(JSONObject([("type", "TemplateProcessing"), ("single", .array(single)),
                                                               ("pair", .array(single)), ("special_tokens", .object(JSONObject(special)))]))))
        }
        return (.object(JSONObject(root)), Tokenizer.Specials(bos: bos, eos: eos, pad: pad, addBos: addBos, addEos: addEos),
                try f.string("tokenizer.chat_template"))
    }

    /// SentencePiece BPE merges from piece scores: every split of a normal piece into two pieces
    /// of the vocabulary is a merge, ranked by the merged piece's score (highest first), then by
    /// the longer left part, then by the vocabulary order.
    static func spmMerges(_ tokens: [String], _ scores: [Double], _ types: [Int]) -> [String] {
        var index: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where index[t] == nil { index[t] = i }
        var merges: [(score: Double, left: Int, right: Int, l: String, r: String)] = []
        for (i, t) in tokens.enumerated() where types[i] == TokenType.normal.rawValue || types[i] == TokenType.userDefined.rawValue {
            let chars = Array(t)
            if chars.count < 2 { continue }
            for k in 1..<chars.count {
                let l = String(chars[..<k]), r = String(chars[k...])
                if let li = index[l], let ri = index[r] { merges.append((scores[i], li, ri, l, r)) }
            }
        }
        merges.sort { a, b in
            if a.score != b.score { return a.score > b.score }
            if a.l.count != b.l.count { return a.l.count > b.l.count }
            return (a.left, a.right) < (b.left, b.right)
        }
        return merges.map { $0.l + " " + $0.r }
    }
}
