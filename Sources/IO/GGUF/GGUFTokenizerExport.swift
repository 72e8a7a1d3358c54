// A Hugging Face tokenizer.json as GGUF tokenizer metadata, for merged exports of models loaded
// from a directory: BPE vocabularies only. Byte-level ones become "gpt2" with the
// tokenizer.ggml.pre name whose split regexes match the file's pre-tokenizer (Llama 3, Qwen2,
// SmolLM, GPT-2); byte-fallback ones become "llama" with scores that rank pieces by the merge
// that first makes them. Added tokens: special -> control, others -> user-defined. bos / eos
// and add_bos come from the loaded tokenizer, the chat template from tokenizer_config.json or
// chat_template.jinja.

import Foundation

public enum GGUFTokenizerExport {
    static let llama3Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
    static let qwen2Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

    /// The llama.cpp pre-tokenizer name for a byte-level tokenizer.json's pre_tokenizer.
    static func preName(_ pre: JSONValue?) -> String? {
        guard let pre, let type = pre["type"]?.stringValue else { return nil }
        if type == "ByteLevel" { return pre["use_regex"]?.boolValue == false ? nil : "gpt-2" }
        guard type == "Sequence", let steps = pre["pretokenizers"]?.arrayValue else { return nil }
        let types = steps.compactMap { $0["type"]?.stringValue }
        if types == ["Digits", "ByteLevel"], steps[0]["individual_digits"]?.boolValue == true,
           steps[1]["use_regex"]?.boolValue != false { return "smollm" }
        if types == ["Split", "ByteLevel"], steps[1]["use_regex"]?.boolValue == false,
           let r = steps[0]["pattern"]?["Regex"]?.stringValue {
            if r == llama3Regex { return "llama-bpe" }
            if r == qwen2Regex { return "qwen2" }
        }
        return nil
    }

    public static func metadata(directory dir: String) throws -> [(String, GGUFValue)] {
        let path = dir + "/tokenizer.json"
        let json = try JSONValue.load(path: path)
        func bad(_ r: String) -> IOError { IOError(path: path, reason: r) }
        guard let model = json["model"], model["type"]?.stringValue == "BPE", let vocab = model["vocab"]?.objectValue else {
            throw bad("only BPE tokenizers have a GGUF form in qlora")
        }
        var byId: [Int: String] = [:]
        for (tok, v) in vocab { if let i = v.intValue, i >= 0, i < Tokenizer.maxId { byId[i] = tok } }
        var added: [String: Bool] = [:]  // content -> special
        for a in json["added_tokens"]?.arrayValue ?? [] {
            guard let c = a["content"]?.stringValue, let i = a["id"]?.intValue, i >= 0, i < Tokenizer.maxId else { continue }
            byId[i] = c
            added[c] = a["special"]?.boolValue ?? false
        }
        let n = (byId.keys.max() ?? -1) + 1
        guard n > 0 else { throw bad("empty vocabulary") }
        var tokens: [GGUFValue] = [], types: [GGUFValue] = []
        let byteFallback = model["byte_fallback"]?.boolValue == true
        for i in 0..<n {
            guard let t = byId[i] else {
                tokens.append(.string("[PAD\(i)]")); types.append(.i32(5)); continue
            }
            tokens.append(.string(t))
            if let special = added[t] { types.append(.i32(special ? 3 : 4)) }
            else if byteFallback, t.hasPrefix("<0x"), t.hasSuffix(">"), t.utf8.count == 6 { types.append(.i32(6)) }
            else { types.append(.i32(1)) }
        }
        var merges: [String] = []
        for m in model["merges"]?.arrayValue ?? [] {
            if let s = m.stringValue { merges.append(s) }
            else if let p = m.arrayValue, p.count == 2, let a = p[0].stringValue, let b = p[1].stringValue { merges.append(a + " " + b) }
        }
        var out: [(String, GGUFValue)] = [("tokenizer.ggml.tokens", .array(.string, tokens)),
                                          ("tokenizer.ggml.token_type", .array(.i32, types))]
        if byteFallback {
            out.insert(("tokenizer.ggml.model", .string("llama")), at: 0)
            var made: [String: Int] = [:]
            for (r, m) in merges.enumerated() {
                let parts = m.split(separator: " ", omittingEmptySubsequences: false)
                if parts.count == 2 { let k = String(parts[0]) + String(parts[1]); if made[k] == nil { made[k] = r } }
            }
            let scores: [GGUFValue] = (0..<n).map { i in
                guard let t = byId[i], let r = made[t] else { return .f32(-1e6) }
                return .f32(-Float(r))
            }
            out.append(("tokenizer.ggml.scores", .array(.f32, scores)))
            let prepends = "\(json["normalizer"] ?? .null)".contains("Prepend")
            out.append(("tokenizer.ggml.add_space_prefix", .bool(prepends)))
            if let unk = model["unk_token"]?.stringValue, let id = byId.first(where: { $0.value == unk })?.key {
                out.append(("tokenizer.ggml.unknown_token_id", .u32(UInt32(id))))
            }
        } else {
            guard let pre = preName(json["pre_tokenizer"]) else {
                throw bad("this byte-level pre-tokenizer has no llama.cpp name qlora knows (Llama 3, Qwen2, SmolLM, GPT-2)")
            }
            out.insert(("tokenizer.ggml.model", .string("gpt2")), at: 0)
            out.append(("tokenizer.ggml.pre", .string(pre)))
            out.append(("tokenizer.ggml.merges", .array(.string, merges.map { .string($0) })))
        }
        let tok = try Tokenizer(path: dir)
        if let b = tok.bosId { out.append(("tokenizer.ggml.bos_token_id", .u32(UInt32(b)))) }
        if let e = tok.eosId { out.append(("tokenizer.ggml.eos_token_id", .u32(UInt32(e)))) }
        if let p = tok.padId { out.append(("tokenizer.ggml.padding_token_id", .u32(UInt32(p)))) }
        let empty = try tok.encode("")
        out.append(("tokenizer.ggml.add_bos_token", .bool(tok.bosId.map { empty.first == $0 } ?? false)))
        out.append(("tokenizer.ggml.add_eos_token", .bool(tok.eosId.map { empty.count > 0 && empty.last == $0 && empty.first != $0 } ?? false)))
        if let t = try? String(contentsOfFile: dir + "/chat_template.jinja", encoding: .utf8) {
            out.append(("tokenizer.chat_template", .string(t)))
        } else if let cfg = try? JSONValue.load(path: dir + "/tokenizer_config.json"), let t = cfg["chat_template"]?.stringValue {
            out.append(("tokenizer.chat_template", .string(t)))
        }
        return out
    }
}
