// Tokenizers read from GGUF metadata (Tests/fixtures/gguf/tok-*.gguf: the pipelines of
// fixtures/tokenizers/pipelines converted as llama.cpp's converter does, by
// scripts/fixtures/make_gguf_models.py) give the ids and text the `tokenizers` library gives for
// the original tokenizer.json files: Llama 3 (llama-bpe), Qwen2, SmolLM pre-tokenizers and a
// SentencePiece (llama) vocabulary with scores and byte fallback. Bad metadata is an error
// naming the key.

import Foundation
import XCTest

import IO

final class GGUFTokenizerTests: XCTestCase {
    func testPipelinesMatchTheTokenizersLibrary() throws {
        let expected = try JSONValue.load(path: tokFixture("pipelines/expected.json"))
        for style in ["llama3_style", "qwen2_style", "smollm_style", "llama2_legacy"] {
            let tok = try Tokenizer(path: Fixtures.path("gguf/tok-\(style).gguf"))
            let cases = expected[style]?.arrayValue ?? []
            XCTAssertGreaterThan(cases.count, 10, style)
            // GGUF has no place for an added token's lstrip / rstrip / single_word flags nor for a
            // normalizer (Qwen2's NFC): llama.cpp tokenizes such text differently from the
            // `tokenizers` library too. Cases that touch them are left out (and counted).
            let original = try JSONValue.load(path: tokFixture("pipelines/\(style).json"))
            let flagged = (original["added_tokens"]?.arrayValue ?? []).filter { a in
                ["lstrip", "rstrip", "single_word"].contains { a[$0]?.boolValue == true }
            }.compactMap { $0["content"]?.stringValue }
            let normalizes = original["normalizer"].map { !$0.isNull } ?? false
            var wrong = 0, skipped = 0
            for c in cases {
                guard let text = c["text"]?.stringValue, let ids = c["ids"]?.arrayValue?.compactMap({ $0.intValue }) else {
                    XCTFail("\(style): malformed case"); continue
                }
                if flagged.contains(where: { text.utf8.count >= $0.utf8.count && text.contains($0) })
                    || (normalizes && Array(text.utf8) != Array(text.precomposedStringWithCanonicalMapping.utf8)) {
                    skipped += 1
                    continue
                }
                let got = try tok.encode(text)
                if got != ids {
                    wrong += 1
                    if wrong <= 3 { XCTFail("\(style) \(text.debugDescription): \(got) != \(ids)") }
                }
                if let plain = c["ids_no_special"]?.arrayValue?.compactMap({ $0.intValue }) {
                    XCTAssertEqual(try tok.encode(text, addSpecialTokens: false), plain, "\(style) \(text.debugDescription)")
                }
                if let d = c["decoded"]?.stringValue { assertSameText(try tok.decode(ids), d, "\(style) \(text.debugDescription)") }
            }
            XCTAssertEqual(wrong, 0, "\(style): \(wrong) of \(cases.count) cases differ")
            XCTAssertLessThan(skipped, cases.count / 4, "\(style): \(skipped) cases left out")
        }
    }

    /// tokenizer.json -> GGUF metadata (merged exports of directory models) -> tokenizer: the same
    /// ids as the tokenizer.json itself.
    func testTokenizerJSONToGGUFRoundTrip() throws {
        let expected = try JSONValue.load(path: tokFixture("pipelines/expected.json"))
        let dir = TempDir()
        defer { dir.remove() }
        let pres = ["llama3_style": "llama-bpe", "qwen2_style": "qwen2", "smollm_style": "smollm", "llama2_legacy": ""]
        for (style, pre) in pres {
            let sub = dir.file(style)
            try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: tokFixture("pipelines/\(style).json"), toPath: sub + "/tokenizer.json")
            try "{\"chat_template\": \"{{ messages }}\"}".write(toFile: sub + "/tokenizer_config.json", atomically: true, encoding: .utf8)
            var w = GGUFWriter()
            w.set("general.architecture", .string("llama"))
            for (k, v) in try GGUFTokenizerExport.metadata(directory: sub) { w.set(k, v) }
            if !pre.isEmpty { XCTAssertEqual(w.metadata.first { $0.key == "tokenizer.ggml.pre" }?.value, .string(pre), style) }
            try w.write(to: sub + "/t.gguf")
            let fromGGUF = try Tokenizer(path: sub + "/t.gguf"), original = try Tokenizer(path: sub)
            XCTAssertEqual(try fromGGUF.chatTemplateSource(), "{{ messages }}")
            XCTAssertEqual(fromGGUF.bosId, original.bosId, style)
            var compared = 0
            for c in expected[style]?.arrayValue ?? [] {
                guard let text = c["text"]?.stringValue, !text.contains("<mask>"), !text.contains("[R]"), !text.contains("word"),
                      Array(text.utf8) == Array(text.precomposedStringWithCanonicalMapping.utf8) else { continue }
                XCTAssertEqual(try fromGGUF.encode(text), try original.encode(text), "\(style) \(text.debugDescription)")
                compared += 1
            }
            XCTAssertGreaterThan(compared, 30, style)
        }
    }

    func testSpecialIdsAndTemplate() throws {
        let l3 = try Tokenizer(path: Fixtures.path("gguf/tok-llama3_style.gguf"))
        XCTAssertEqual(l3.bosId, 600)
        XCTAssertEqual(l3.eosId, 601)
        XCTAssertEqual(l3.isSpecial(600), true)
        XCTAssertNil(try l3.chatTemplateSource())
        let q2 = try Tokenizer(path: Fixtures.path("gguf/tok-qwen2_style.gguf"))
        XCTAssertNil(q2.bosId)
        XCTAssertEqual(try q2.encode("a").first.map { $0 == 600 }, false)
    }

    func testBadTokenizerMetadata() throws {
        let dir = TempDir()
        defer { dir.remove() }
        func check(_ edit: (inout GGUFWriter) -> Void, _ fragment: String) {
            var w = GGUFWriter()
            w.set("general.architecture", .string("llama"))
            w.set("tokenizer.ggml.model", .string("gpt2"))
            w.set("tokenizer.ggml.pre", .string("qwen2"))
            w.set("tokenizer.ggml.tokens", .array(.string, ["a", "b", "ab"].map { .string($0) }))
            w.set("tokenizer.ggml.merges", .array(.string, [.string("a b")]))
            edit(&w)
            let path = dir.file("t.gguf")
            try? w.write(to: path)
            XCTAssertThrowsError(try Tokenizer(path: path), fragment) { e in
                XCTAssertTrue("\(e)".contains(fragment), "\"\(e)\" lacks \"\(fragment)\"")
            }
        }
        check({ $0.set("tokenizer.ggml.model", .string("bert")) }, "unsupported tokenizer.ggml.model \"bert\"")
        check({ $0.set("tokenizer.ggml.pre", .string("nonesuch")) }, "unsupported tokenizer.ggml.pre \"nonesuch\"")
        check({ $0.set("tokenizer.ggml.tokens", .array(.i32, [.i32(1)])) }, "tokenizer.ggml.tokens[0] must be a string")
        check({ $0.set("tokenizer.ggml.token_type", .array(.i32, [.i32(1)])) }, "token_type has 1 entries for 3 tokens")
        check({ $0.set("tokenizer.ggml.bos_token_id", .u32(99)) }, "tokenizer.ggml.bos_token_id is 99, outside the vocabulary")
        check({ $0.set("tokenizer.ggml.merges", .array(.string, [.string("a c")])) }, "not in the vocab")
        check({ $0.set("tokenizer.ggml.merges", .string("x")) }, "tokenizer.ggml.merges must be an array")
        check({ $0.set("tokenizer.ggml.model", .string("llama")) }, "missing metadata tokenizer.ggml.scores")
    }
}
