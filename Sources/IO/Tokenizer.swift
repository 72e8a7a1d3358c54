// Hugging Face tokenizer.json for the two BPE families (byte-level: GPT-2, Llama 3, Qwen2,
// SmolLM; SentencePiece-style with byte fallback: Llama 2, TinyLlama, Mistral): loading (every
// field checked; errors name the file and the field), encoding (added tokens, normalizer,
// pre-tokenizer, BPE, post-processor) and decoding, reproducing the `tokenizers` library's ids
// and text. truncation and padding settings in the file are ignored (qlora batches itself).

import Foundation

public final class Tokenizer: @unchecked Sendable {
    /// Ids must be below this (4M; real vocabularies have at most a few hundred thousand).
    static let maxId = 1 << 22

    /// The tokenizer.json file.
    public let path: String
    /// One more than the largest id (model vocab and added tokens).
    public let vocabSize: Int
    /// Beginning-of-sequence id, if the tokenizer (or the model directory's config) has one.
    public let bosId: Int?
    /// End-of-sequence ids: tokenizer_config.json's eos_token first, then the ids of
    /// generation_config.json and config.json (eos_token_id may be a list).
    public let eosIds: [Int]
    /// The first of `eosIds`.
    public var eosId: Int? { eosIds.first }
    /// Padding id, if any.
    public let padId: Int?

    let model: BPEModel
    let normalizer: TokenNormalizer?
    let preTokenizer: TokenPreTokenizer?
    let decoder: TokenDecoder?
    let postProcessor: TokenPostProcessor
    /// Ids added around the sequence besides the post-processor's (tokenizer_config.json's
    /// add_bos_token / add_eos_token when the file's post-processor adds nothing).
    let extraBefore: [Int32]
    let extraAfter: [Int32]
    let addedTokens: [TokAddedToken]
    let rawMatcher: TokAddedMatcher
    let normalizedMatcher: TokAddedMatcher
    /// id -> token text (added tokens over the model vocab).
    let idTokens: [[UInt8]?]
    let addedIds: [TokBytes: Int32]
    let specialIds: Set<Int32>
    /// Contents of the special tokens: decode(skipSpecialTokens:) leaves out tokens spelled so.
    let specialStrings: Set<TokBytes>

    private let lock = NSLock()
    private var state = BPEState()
    /// Chat templates (TokenizerChatTemplate.swift).
    let chatState = TokenizerChatState()

    /// Loads a tokenizer.json file, or a model directory holding one (then tokenizer_config.json,
    /// config.json and generation_config.json, when present, name the bos / eos / pad tokens),
    /// a repo id found in the local Hugging Face cache, or the tokenizer in a GGUF file's metadata
    /// (with its chat template).
    public convenience init(path given: String) throws {
        let path = try HubCache.resolve(given)
        if GGUFModel.isGGUF(path) {
            let p = try GGUFTokenizer.parts(try GGUFFile(path: path))
            try self.init(file: path, json: p.json, directory: nil, specials: p.specials)
            if let t = p.chatTemplate { setChatTemplate(t) }
            return
        }
        var isDir: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
        if exists && isDir.boolValue {
            let dir = path.hasSuffix("/") ? String(path.dropLast()) : path
            let file = dir + "/tokenizer.json"
            guard FileManager.default.fileExists(atPath: file) else {
                throw IOError(path: path, reason: "directory has no tokenizer.json")
            }
            try self.init(file: file, json: try JSONValue.load(path: file), directory: dir)
            chatState.info = try TokenizerChatInfo(directory: dir)
        } else {
            try self.init(file: path, json: try JSONValue.load(path: path), directory: nil)
        }
    }

    /// A tokenizer from tokenizer.json text; `name` is how errors name it.
    public convenience init(json: String, name: String = "tokenizer.json") throws {
        let value: JSONValue
        do {
            value = try JSONValue.parse(json)
        } catch let e as JSONParseError {
            throw IOError(path: name, reason: e.description)
        }
        try self.init(file: name, json: value, directory: nil)
    }

    /// bos / eos / pad ids and whether encode adds bos / eos, when the caller knows them (a GGUF
    /// file's tokenizer.ggml.* metadata) instead of a model directory's config files.
    struct Specials {
        var bos: Int?
        var eos: [Int]
        var pad: Int?
        var addBos: Bool
        var addEos: Bool
    }

    init(file: String, json: JSONValue, directory: String?, specials: Specials? = nil) throws {
        path = file
        let f = TokenizerFields(path: file)
        let root = try f.object(json, "")
        guard let modelValue = root["model"] else { throw f.fail("model", "missing") }
        model = try BPEModel(try f.object(modelValue, "model"), f)
        normalizer = try TokenNormalizer.parse(root["normalizer"], f, "normalizer")
        preTokenizer = try TokenPreTokenizer.parse(root["pre_tokenizer"], f, "pre_tokenizer")
        decoder = try TokenDecoder.parse(root["decoder"], f, "decoder")

        // Added tokens: ids as the tokenizers library assigns them (the model's id for a token
        // in the vocab, else the next id after the vocab and the added tokens so far).
        var added: [TokAddedToken] = []
        var addedIds: [TokBytes: Int32] = [:]
        var maxAdded: Int? = nil
        let modelCount = model.vocab.count
        let list = try f.array(root["added_tokens"] ?? .array([]), "added_tokens")
        for (i, v) in list.enumerated() {
            let field = "added_tokens[\(i)]"
            let o = try f.object(v, field)
            let content = try f.string(o["content"], field + ".content")
            guard !content.isEmpty else { throw f.fail(field + ".content", "must not be empty") }
            let id = try f.id(o["id"], field + ".id")
            let bytes = Array(content.utf8)
            if let previous = addedIds[TokBytes(bytes)] {
                guard Int(previous) == id else {
                    throw f.fail(field, "\(quoted(content)) appears twice, with ids \(previous) and \(id)")
                }
                continue
            }
            let expected: Int
            if let vid = model.vocab[TokBytes(bytes)] {
                expected = Int(vid)
            } else if let m = maxAdded {
                expected = m >= modelCount ? m + 1 : modelCount
            } else {
                expected = modelCount
            }
            guard id == expected else {
                if model.vocab[TokBytes(bytes)] != nil {
                    throw f.fail(field + ".id", "\(quoted(content)) has id \(id) but the model vocab gives it id \(expected)")
                }
                throw f.fail(field + ".id", "\(quoted(content)) has id \(id), but added tokens not in the model vocab must take the next free id after it (\(expected))")
            }
            if model.vocab[TokBytes(bytes)] == nil, id < model.tokens.count, let other = model.tokens[id] {
                throw f.fail(field + ".id", "duplicate id \(id) (also the model vocab's \(quoted(String(decoding: other, as: UTF8.self))))")
            }
            maxAdded = max(maxAdded ?? id, id)
            let special = try f.bool(o["special"], field + ".special", default: false)
            added.append(TokAddedToken(
                content: content, bytes: bytes, id: Int32(id), special: special,
                singleWord: try f.bool(o["single_word"], field + ".single_word", default: false),
                lstrip: try f.bool(o["lstrip"], field + ".lstrip", default: false),
                rstrip: try f.bool(o["rstrip"], field + ".rstrip", default: false),
                normalized: try f.bool(o["normalized"], field + ".normalized", default: !special)))
            addedIds[TokBytes(bytes)] = Int32(id)
        }
        addedTokens = added
        self.addedIds = addedIds
        specialIds = Set(added.filter { $0.special }.map { $0.id })
        // Special tokens are matched first, as the library builds its matcher.
        let ordered = added.filter { $0.special } + added.filter { !$0.special }
        rawMatcher = TokAddedMatcher(ordered.filter { !$0.normalized }.map { ($0.bytes, $0) })
        let norm = normalizer
        normalizedMatcher = TokAddedMatcher(try ordered.filter { $0.normalized }.map { (try norm?.apply($0.bytes) ?? $0.bytes, $0) })

        var table = model.tokens
        let top = max(table.count, (maxAdded ?? -1) + 1)
        if top > table.count { table.append(contentsOf: repeatElement(nil, count: top - table.count)) }
        // Like the library (0.23), an added token with normalized == true reads back in its
        // normalized form (idToToken, decode).
        for t in added { table[Int(t.id)] = t.normalized ? (try norm?.apply(t.bytes) ?? t.bytes) : t.bytes }
        idTokens = table
        specialStrings = Set(added.filter { $0.special }.map { TokBytes($0.bytes) })
        vocabSize = table.count

        let tokensTable = table
        postProcessor = try TokenPostProcessor.parse(root["post_processor"], f, "post_processor") { id in
            id < tokensTable.count && tokensTable[id] != nil
        }

        // bos / eos / pad.
        let modelVocab = model.vocab
        let find: (String) -> Int? = { name in
            let key = TokBytes(name)
            return (addedIds[key] ?? modelVocab[key]).map(Int.init)
        }
        var padding: Int? = nil
        if let p = root["padding"], !p.isNull {
            let po = try f.object(p, "padding")
            if let pid = po["pad_id"], !pid.isNull {
                let id = try f.id(pid, "padding.pad_id")
                if id < table.count && table[id] != nil { padding = id }
            }
        }
        let inferredBos = postProcessor.prefixIds.first.map(Int.init)
            ?? ["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"].lazy.compactMap(find).first
        let inferredEos = postProcessor.suffixIds.last.map(Int.init)
            ?? ["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>"].lazy.compactMap(find).first
        let inferredPad = padding ?? find("<pad>")

        if let sp = specials {
            bosId = sp.bos
            eosIds = sp.eos
            padId = sp.pad
            let templateAddsNothing = postProcessor.prefixIds.isEmpty && postProcessor.suffixIds.isEmpty
            extraBefore = templateAddsNothing && sp.addBos ? (sp.bos.map { [Int32($0)] } ?? []) : []
            extraAfter = templateAddsNothing && sp.addEos ? (sp.eos.first.map { [Int32($0)] } ?? []) : []
        } else if let directory {
            let cfg = try TokenizerDirectoryConfig(directory: directory, vocabSize: table.count,
                                                   valid: { $0 < tokensTable.count && tokensTable[$0] != nil },
                                                   find: find)
            bosId = cfg.bos ?? inferredBos
            eosIds = cfg.eos ?? inferredEos.map { [$0] } ?? []
            padId = cfg.pad ?? inferredPad
            let templateAddsNothing = postProcessor.prefixIds.isEmpty && postProcessor.suffixIds.isEmpty
            extraBefore = templateAddsNothing && cfg.addBos == true ? (bosId.map { [Int32($0)] } ?? []) : []
            extraAfter = templateAddsNothing && cfg.addEos == true ? (eosIds.first.map { [Int32($0)] } ?? []) : []
        } else {
            bosId = inferredBos
            eosIds = inferredEos.map { [$0] } ?? []
            padId = inferredPad
            extraBefore = []
            extraAfter = []
        }
    }

    // MARK: - Vocabulary

    /// The token text of `id` (added tokens included; one with normalized == true in its
    /// normalized form, as the library gives it), or nil when no token has that id.
    public func idToToken(_ id: Int) -> String? {
        guard id >= 0 && id < idTokens.count, let t = idTokens[id] else { return nil }
        return String(decoding: t, as: UTF8.self)
    }

    /// The id of the token spelled exactly `token` (compared by UTF-8 bytes), or nil.
    public func tokenToId(_ token: String) -> Int? {
        let key = TokBytes(token)
        if let id = addedIds[key] { return Int(id) }
        return model.vocab[key].map(Int.init)
    }

    /// True for the ids of added tokens marked special.
    public func isSpecial(_ id: Int) -> Bool {
        id >= 0 && id < Int(Int32.max) && specialIds.contains(Int32(id))
    }

    /// The ids of the special added tokens, ascending.
    public var specialTokenIds: [Int] { specialIds.map(Int.init).sorted() }

    // MARK: - Encoding

    /// The ids of `text`. With `addSpecialTokens`, the post-processor's tokens (e.g. bos) are
    /// added as the `tokenizers` library does.
    public func encode(_ text: String, addSpecialTokens: Bool = true) throws -> [Int] {
        var ids: [Int32] = []
        ids.reserveCapacity(text.utf8.count / 3 + 4)
        let bytes = Array(text.utf8)
        lock.lock()
        defer { lock.unlock() }
        do {
            for s1 in rawMatcher.split(bytes) {
                if let id = s1.id {
                    ids.append(id)
                    continue
                }
                if s1.range.isEmpty { continue }
                var piece = s1.range.count == bytes.count ? bytes : Array(bytes[s1.range])
                if let normalizer { piece = try normalizer.apply(piece) }
                for s2 in normalizedMatcher.split(piece) {
                    if let id = s2.id {
                        ids.append(id)
                        continue
                    }
                    if s2.range.isEmpty { continue }
                    let text = TokPiece(bytes: s2.range.count == piece.count ? piece : Array(piece[s2.range]),
                                         atOrigin: s1.range.lowerBound == 0 && s2.range.lowerBound == 0)
                    if let preTokenizer {
                        for w in try preTokenizer.apply([text]) { try model.tokenize(w.bytes, &state, into: &ids) }
                    } else {
                        try model.tokenize(text.bytes, &state, into: &ids)
                    }
                }
            }
        } catch let e as BPEMissingUnk {
            throw IOError(path: path, reason: "model.unk_token: \(quoted(e.name)) is not in the vocab")
        } catch let e as TokenRegexError {
            throw IOError(path: path, reason: "cannot encode: \(e.message)")
        }
        if addSpecialTokens {
            ids = extraBefore + postProcessor.apply(ids) + extraAfter
        }
        return ids.map { Int($0) }
    }

    // MARK: - Decoding

    /// The text of `ids`; an id no token has is an error. With `skipSpecialTokens`, tokens
    /// spelled like a special added token are left out (as the library does it: by text).
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) throws -> String {
        var tokens: [[UInt8]] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard id >= 0 && id < idTokens.count, let t = idTokens[id] else {
                throw IOError(path: path, reason: "cannot decode id \(id): not in the vocabulary (vocab size \(vocabSize))")
            }
            if skipSpecialTokens && specialStrings.contains(TokBytes(t)) { continue }
            tokens.append(t)
        }
        var out: [UInt8] = []
        if let decoder {
            for t in try decoder.decodeChain(tokens) { out.append(contentsOf: t) }
        } else {
            for (i, t) in tokens.enumerated() {
                if i > 0 { out.append(0x20) }
                out.append(contentsOf: t)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
