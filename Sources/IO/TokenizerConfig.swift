// The bos / eos / pad tokens of a model directory: tokenizer_config.json (bos_token, eos_token,
// pad_token as a string or {"content": ...}; add_bos_token / add_eos_token), then
// generation_config.json and config.json (bos_token_id, eos_token_id (an id or a list of ids),
// pad_token_id; a negative id means none). Each file is optional; a malformed one, or a token
// or id it names that the tokenizer does not have, is an IOError naming that file and field.

import Foundation

struct TokenizerDirectoryConfig {
    /// nil: no file says (then the tokenizer's own guess is used); .some(nil): explicitly none.
    var bos: Int?? = nil
    var eos: [Int]? = nil
    var pad: Int?? = nil
    var addBos: Bool? = nil
    var addEos: Bool? = nil

    init(directory: String, vocabSize: Int, valid: (Int) -> Bool, find: (String) -> Int?) throws {
        func load(_ name: String) throws -> (TokenizerFields, JSONObject)? {
            let file = directory + "/" + name
            guard FileManager.default.fileExists(atPath: file) else { return nil }
            let f = TokenizerFields(path: file)
            return (f, try f.object(try JSONValue.load(path: file), ""))
        }

        /// A token named by tokenizer_config.json: absent -> nil, null -> .some(nil).
        func named(_ f: TokenizerFields, _ o: JSONObject, _ key: String) throws -> Int?? {
            guard let v = o[key] else { return nil }
            var name: String
            switch v {
            case .null: return .some(nil)
            case .string(let s): name = s
            case .object(let t): name = try f.string(t["content"], key + ".content")
            default: throw f.fail(key, "expected a token string, an object with \"content\", or null, got \(tokDescribe(v))")
            }
            guard let id = find(name) else {
                throw f.fail(key, "token \(quoted(name)) is not in the tokenizer's vocabulary")
            }
            return .some(id)
        }

        /// An id or a list of ids (config.json / generation_config.json).
        func ids(_ f: TokenizerFields, _ o: JSONObject, _ key: String) throws -> [Int]? {
            guard let v = o[key], !v.isNull else { return nil }
            let list: [JSONValue]
            if case .array(let a) = v { list = a } else { list = [v] }
            return try list.enumerated().compactMap { i, x in
                let field = v.arrayValue == nil ? key : "\(key)[\(i)]"
                if case .int(let n) = x, n < 0 { return nil }  // -1: "none", as some configs write it
                let id = try f.id(x, field)
                guard valid(id) else {
                    throw f.fail(field, "id \(id) is not in the tokenizer's vocabulary (vocab size \(vocabSize))")
                }
                return id
            }
        }

        var eosList: [Int] = []
        var eosSaid = false
        func appendEos(_ l: [Int]) {
            eosSaid = true
            for id in l where !eosList.contains(id) { eosList.append(id) }
        }

        if let (f, o) = try load("tokenizer_config.json") {
            bos = try named(f, o, "bos_token")
            pad = try named(f, o, "pad_token")
            if let e = try named(f, o, "eos_token") {
                eosSaid = true
                if let id = e { eosList.append(id) }
            }
            if let v = o["add_bos_token"], !v.isNull { addBos = try f.bool(v, "add_bos_token", default: false) }
            if let v = o["add_eos_token"], !v.isNull { addEos = try f.bool(v, "add_eos_token", default: false) }
        }
        for name in ["generation_config.json", "config.json"] {
            guard let (f, o) = try load(name) else { continue }
            if bos == nil, let b = try ids(f, o, "bos_token_id") { bos = .some(b.first) }
            if pad == nil, let p = try ids(f, o, "pad_token_id") { pad = .some(p.first) }
            if let e = try ids(f, o, "eos_token_id") { appendEos(e) }
        }
        eos = eosSaid ? eosList : nil
    }
}
