// Bad tokenizer files are IOErrors naming the file and the field, never crashes: unsupported
// model / normalizer / pre-tokenizer / decoder / post-processor types, malformed JSON, vocab
// and merge problems, inconsistent added tokens, bad model-directory configs; plus random
// mutations of a valid file.

import Foundation
import XCTest

@testable import IO

final class TokenizerErrorTests: XCTestCase {
    var dir: TempDir!

    override func setUp() { dir = TempDir() }
    override func tearDown() { dir.remove() }

    /// The sentencepiece fixture with `edit` applied to its root object, written to a file.
    func edited(_ edit: (inout JSONObject) -> Void, fixture: String = "sentencepiece_bpe.json") throws -> String {
        guard case .object(var root) = try JSONValue.load(path: tokFixture(fixture)) else {
            XCTFail("fixture is not an object")
            return ""
        }
        edit(&root)
        let path = dir.file("tokenizer-\(UInt32.random(in: 0...UInt32.max)).json")
        writeRaw(Array(JSONValue.object(root).serialized().utf8), to: path)
        return path
    }

    func editModel(_ edit: @escaping (inout JSONObject) -> Void, fixture: String = "sentencepiece_bpe.json") throws -> String {
        try edited({ root in
            guard case .object(var model)? = root["model"] else { return }
            edit(&model)
            root["model"] = .object(model)
        }, fixture: fixture)
    }

    func expectError(_ path: String, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        assertIOError(path: path, fragments, file: file, line: line) { _ = try Tokenizer(path: path) }
    }

    func testUnsupportedModelTypes() throws {
        for type in ["Unigram", "WordPiece", "WordLevel"] {
            let p = try editModel { $0["type"] = .string(type) }
            expectError(p, ["unsupported model type \"\(type)\" (qlora supports BPE)"])
        }
    }

    func testUnsupportedComponents() throws {
        expectError(try edited { $0["normalizer"] = ["type": "Precompiled", "precompiled_charsmap": "AAAA"] },
                    ["normalizer", "unsupported normalizer type \"Precompiled\""])
        expectError(try edited { $0["normalizer"] = ["type": "Sequence", "normalizers": [["type": "BertNormalizer"]]] },
                    ["normalizer.normalizers[0]", "\"BertNormalizer\""])
        expectError(try edited { $0["pre_tokenizer"] = ["type": "Whitespace"] },
                    ["pre_tokenizer", "unsupported pre_tokenizer type \"Whitespace\""])
        expectError(try edited { $0["decoder"] = ["type": "WordPiece", "prefix": "##"] },
                    ["decoder", "unsupported decoder type \"WordPiece\""])
        expectError(try edited { $0["decoder"] = ["type": "Sequence", "decoders": [["type": "CTC"]]] },
                    ["decoder.decoders[0]", "\"CTC\""])
        expectError(try edited { $0["post_processor"] = ["type": "Foo"] },
                    ["post_processor", "unsupported post_processor type \"Foo\""])
        expectError(try edited { $0["pre_tokenizer"] = ["type": "Split", "pattern": ["Regex": "(unclosed"], "behavior": "Isolated"] },
                    ["pre_tokenizer.pattern.Regex", "invalid regular expression"])
        expectError(try edited { $0["pre_tokenizer"] = ["type": "Split", "pattern": ["String": " "], "behavior": "Sideways"] },
                    ["pre_tokenizer.behavior", "unknown behavior \"Sideways\""])
        expectError(try edited { $0["normalizer"] = ["pattern": ["String": " "]] },
                    ["normalizer.type", "missing"])
    }

    func testMalformedFiles() throws {
        let missing = dir.file("missing.json")
        expectError(missing, ["cannot open"])
        for (name, text) in [("truncated", "{\"model\": "), ("empty", ""), ("garbage", "tokenizer"), ("trailing", "{} x")] {
            let p = dir.file(name + ".json")
            writeRaw(Array(text.utf8), to: p)
            expectError(p, ["invalid JSON"])
        }
        let array = dir.file("array.json")
        writeRaw(Array("[1, 2]".utf8), to: array)
        expectError(array, ["expected an object, got an array"])
        expectError(try edited { $0["model"] = nil }, ["model: missing"])
        expectError(try edited { $0["model"] = "BPE" }, ["model: expected an object"])
        expectError(try edited { $0["added_tokens"] = ["id": 0] }, ["added_tokens: expected an array"])
        // A directory without tokenizer.json.
        assertIOError(path: dir.path, ["directory has no tokenizer.json"]) { _ = try Tokenizer(path: dir.path) }
        // JSON text directly.
        assertIOError(path: "tokenizer.json", ["invalid JSON"]) { _ = try Tokenizer(json: "{") }
    }

    func testVocabProblems() throws {
        expectError(try editModel { m in
            guard case .object(var v)? = m["vocab"] else { return }
            v["a"] = "x"
            m["vocab"] = .object(v)
        }, ["model.vocab[\"a\"]", "expected an integer id, got \"x\""])
        expectError(try editModel { m in
            guard case .object(var v)? = m["vocab"] else { return }
            v["a"] = 1.5
            m["vocab"] = .object(v)
        }, ["model.vocab[\"a\"]", "expected an integer id"])
        expectError(try editModel { m in
            guard case .object(var v)? = m["vocab"] else { return }
            v["a"] = -3
            m["vocab"] = .object(v)
        }, ["model.vocab[\"a\"]", "out of range"])
        expectError(try editModel { m in
            guard case .object(var v)? = m["vocab"] else { return }
            v["a"] = .int(1 << 40)
            m["vocab"] = .object(v)
        }, ["model.vocab[\"a\"]", "out of range"])
        expectError(try editModel { m in
            guard case .object(var v)? = m["vocab"] else { return }
            v["zzz-new"] = v["a"]
            m["vocab"] = .object(v)
        }, ["model.vocab", "duplicate id"])
        expectError(try editModel { $0["vocab"] = [1, 2] }, ["model.vocab: expected an object"])
        expectError(try editModel { $0["dropout"] = 0.1 }, ["model.dropout", "not supported"])
        expectError(try editModel { $0["byte_fallback"] = "yes" }, ["model.byte_fallback", "expected true or false"])
    }

    func testMergeProblems() throws {
        expectError(try editModel { $0["merges"] = [["a", "zzz"]] }, ["model.merges[0]", "token \"zzz\" is not in the vocab"])
        expectError(try editModel { $0["merges"] = [["a", "n"], ["qqq", "a"]] }, ["model.merges[1]", "\"qqq\" is not in the vocab"])
        expectError(try editModel { $0["merges"] = ["a b c"] }, ["model.merges[0]", "two tokens"])
        expectError(try editModel { $0["merges"] = ["ab"] }, ["model.merges[0]", "two tokens"])
        expectError(try editModel { $0["merges"] = [["a"]] }, ["model.merges[0]", "pair"])
        expectError(try editModel { $0["merges"] = [5] }, ["model.merges[0]"])
        expectError(try editModel { $0["merges"] = "a b" }, ["model.merges: expected an array"])
        // Both tokens known but their concatenation is not.
        expectError(try editModel { $0["merges"] = [["<0x41>", "a"]] }, ["model.merges[0]", "merged token", "not in the vocab"])
    }

    func testAddedTokenProblems() throws {
        expectError(try edited { root in
            root["added_tokens"] = [["id": 5, "content": "<s>", "special": true]]
        }, ["added_tokens[0].id", "\"<s>\" has id 5", "vocab gives it id 1"])
        expectError(try edited { root in
            root["added_tokens"] = [["id": 900, "content": "<new>", "special": true]]
        }, ["added_tokens[0].id", "next free id", "(500)"])
        expectError(try edited { root in
            root["added_tokens"] = [["id": 500, "content": "", "special": true]]
        }, ["added_tokens[0].content", "must not be empty"])
        expectError(try edited { root in
            root["added_tokens"] = [["id": 500, "content": 7]]
        }, ["added_tokens[0].content", "expected a string"])
        expectError(try edited { root in
            root["added_tokens"] = [["id": "1", "content": "<s>"]]
        }, ["added_tokens[0].id", "expected an integer id"])
        // With a hole in the vocab ids, the next id the library would give is taken already.
        expectError(try edited({ root in
            guard case .object(var model)? = root["model"], case .object(var vocab)? = model["vocab"] else { return }
            vocab["%"] = nil
            model["vocab"] = .object(vocab)
            root["model"] = .object(model)
            root["added_tokens"] = [["id": 349, "content": "<new>", "special": true]]
        }, fixture: "bytelevel.json"), ["added_tokens[0].id", "duplicate id 349"])
        // Added tokens after the vocab take the next ids.
        let ok = try edited { root in
            root["added_tokens"] = [["id": 1, "content": "<s>", "special": true], ["id": 500, "content": "<new>", "special": true],
                                    ["id": 501, "content": "<other>", "special": false, "normalized": false]]
        }
        let tok = try Tokenizer(path: ok)
        XCTAssertEqual(tok.vocabSize, 502)
        XCTAssertEqual(try tok.encode("a<new>b<other>", addSpecialTokens: false).filter { $0 >= 500 }, [500, 501])
    }

    func testPostProcessorProblems() throws {
        expectError(try edited { $0["post_processor"] = [
            "type": "TemplateProcessing", "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
            "special_tokens": [:]] }, ["post_processor.single[0]", "\"<s>\" is missing from special_tokens"])
        expectError(try edited { $0["post_processor"] = [
            "type": "TemplateProcessing", "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
            "special_tokens": ["<s>": ["id": "<s>", "ids": [70000], "tokens": ["<s>"]]]] }, ["ids[0]", "70000", "not in the vocab"])
        let p = try edited { $0["post_processor"] = [
            "type": "TemplateProcessing", "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                                                     ["SpecialToken": ["id": "</s>", "type_id": 0]]],
            "special_tokens": ["<s>": ["id": "<s>", "ids": [1], "tokens": ["<s>"]], "</s>": ["id": "</s>", "ids": [2], "tokens": ["</s>"]]]] }
        let tok = try Tokenizer(path: p)
        XCTAssertEqual(try tok.encode("Hello world"), [1, 409, 431, 2])
        XCTAssertEqual(try tok.encode("Hello world", addSpecialTokens: false), [409, 431])
    }

    func testMissingUnkTokenFailsOnlyWhenNeeded() throws {
        let p = try editModel { m in
            m["byte_fallback"] = false
            m["unk_token"] = "<nope>"
        }
        let tok = try Tokenizer(path: p)
        XCTAssertEqual(try tok.encode("Hello world"), [409, 431])
        assertIOError(path: p, ["model.unk_token", "\"<nope>\" is not in the vocab"]) { _ = try tok.encode("龘") }
        // With the unk token present: unknown characters become <unk> (fused when fuse_unk).
        let q = try editModel { m in
            m["byte_fallback"] = false
            m["fuse_unk"] = true
        }
        let tok2 = try Tokenizer(path: q)
        XCTAssertEqual(try tok2.encode("龘龘", addSpecialTokens: false), [297, 0])
    }

    func testBadDirectoryConfigs() throws {
        writeRaw(readRaw(tokFixture("bytelevel.json")), to: dir.file("tokenizer.json"))
        let tc = dir.file("tokenizer_config.json")
        writeRaw(Array(#"{"eos_token": "<nope>"}"#.utf8), to: tc)
        assertIOError(path: tc, ["eos_token", "\"<nope>\" is not in the tokenizer's vocabulary"]) { _ = try Tokenizer(path: dir.path) }
        writeRaw(Array(#"{"bos_token": 5}"#.utf8), to: tc)
        assertIOError(path: tc, ["bos_token", "expected a token string"]) { _ = try Tokenizer(path: dir.path) }
        writeRaw(Array(#"{"bos_token": "#.utf8), to: tc)
        assertIOError(path: tc, ["invalid JSON"]) { _ = try Tokenizer(path: dir.path) }
        writeRaw(Array("{}".utf8), to: tc)
        let cfg = dir.file("config.json")
        writeRaw(Array(#"{"eos_token_id": [2, 9999]}"#.utf8), to: cfg)
        assertIOError(path: cfg, ["eos_token_id[1]", "9999", "vocab size 350"]) { _ = try Tokenizer(path: dir.path) }
        writeRaw(Array(#"{"eos_token_id": "2"}"#.utf8), to: cfg)
        assertIOError(path: cfg, ["eos_token_id", "expected an integer id"]) { _ = try Tokenizer(path: dir.path) }
    }

    /// Random edits anywhere in a valid file: loading either works or throws an IOError.
    func testRandomMutationsNeverCrash() throws {
        var rng = SplitMix64(seed: 7)
        let replacements: [JSONValue] = [
            .null, true, 0, -1, 3, 1.5, 1e300, "", "x", "Unigram", [], [:], ["a"], [1, 2], ["type": "Sequence"],
            ["type": "Split", "pattern": ["Regex": "\\s+"], "behavior": "Removed"], ["String": "▁"], ["Regex": "["],
        ]
        for fixture in ["bytelevel.json", "sentencepiece_bpe.json"] {
            let original = try JSONValue.load(path: tokFixture(fixture))
            var loaded = 0
            for _ in 0..<250 {
                let mutated = mutate(original, &rng, replacements, depth: 0)
                let text = mutated.serialized()
                do {
                    let tok = try Tokenizer(json: text, name: fixture)
                    loaded += 1
                    for s in ["", "Hello world", "über 日本語 🙂 <s> <|endoftext|>", "  \n\t x"] {
                        let ids = try tok.encode(s)
                        _ = try tok.decode(ids)
                        _ = try tok.decode(ids, skipSpecialTokens: true)
                    }
                } catch let e as IOError {
                    XCTAssertEqual(e.path, fixture)
                } catch {
                    XCTFail("unexpected error \(error)")
                }
            }
            XCTAssertGreaterThan(loaded, 0)
        }
    }

    private func mutate(_ v: JSONValue, _ rng: inout SplitMix64, _ pool: [JSONValue], depth: Int) -> JSONValue {
        // Walk down a random path (preferring small containers' members), then replace or delete.
        switch v {
        case .object(var o) where !o.isEmpty && (depth == 0 || rng.below(3) > 0):
            let k = o.keys[rng.below(o.count)]
            if let child = o[k] {
                if rng.below(8) == 0 {
                    o[k] = nil
                } else {
                    o[k] = mutate(child, &rng, pool, depth: depth + 1)
                }
            }
            return .object(o)
        case .array(var a) where !a.isEmpty && rng.below(3) > 0:
            let i = rng.below(a.count)
            a[i] = mutate(a[i], &rng, pool, depth: depth + 1)
            return .array(a)
        default:
            return pool[rng.below(pool.count)]
        }
    }
}
