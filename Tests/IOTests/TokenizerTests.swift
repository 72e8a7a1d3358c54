// Tokenizer (tokenizer.json): ids and decoded text exactly as the Hugging Face `tokenizers`
// library gives them (fixtures/tokenizers/expected.json for the two shared fixtures,
// fixtures/tokenizers/pipelines/ for Llama 3 / Qwen2 / SmolLM / Metaspace / Llama 2 style
// pipelines made with the library), added tokens, byte fallback, round trips, vocabulary
// accessors and the bos / eos / pad of a model directory.

import Foundation
import XCTest

@testable import IO

func tokFixture(_ name: String) -> String { Fixtures.path("tokenizers/" + name) }

/// Byte-exact string comparison (Swift's == treats canonically equivalent strings as equal).
func assertSameText(_ a: String, _ b: String, _ message: @autoclosure () -> String = "",
                    file: StaticString = #filePath, line: UInt = #line) {
    if Array(a.utf8) != Array(b.utf8) {
        XCTFail("\(a.debugDescription) != \(b.debugDescription) \(message())", file: file, line: line)
    }
}

final class TokenizerTests: XCTestCase {
    /// Checks every case of `cases`: "ids" (encode with special tokens), "ids_no_special",
    /// "decoded" (decode without skipping), "decoded_skip" (skipping special tokens).
    func checkCases(_ tok: Tokenizer, _ cases: [JSONValue], _ name: String,
                    noPostProcessor: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertFalse(cases.isEmpty, "\(name): no cases", file: file, line: line)
        for c in cases {
            guard let text = c["text"]?.stringValue, let ids = c["ids"]?.arrayValue?.compactMap({ $0.intValue }) else {
                XCTFail("\(name): malformed case \(c)", file: file, line: line)
                continue
            }
            let label = "\(name) \(text.debugDescription)"
            XCTAssertEqual(try tok.encode(text), ids, label, file: file, line: line)
            if let plain = c["ids_no_special"]?.arrayValue?.compactMap({ $0.intValue }) {
                XCTAssertEqual(try tok.encode(text, addSpecialTokens: false), plain, label, file: file, line: line)
            } else if noPostProcessor {
                XCTAssertEqual(try tok.encode(text, addSpecialTokens: false), ids, label, file: file, line: line)
            }
            if let decoded = c["decoded"]?.stringValue {
                assertSameText(try tok.decode(ids), decoded, label, file: file, line: line)
            }
            if let decoded = c["decoded_skip"]?.stringValue {
                assertSameText(try tok.decode(ids, skipSpecialTokens: true), decoded, label, file: file, line: line)
            }
        }
    }

    // MARK: - Exactness

    func testExpectedByteLevel() throws {
        let expected = try JSONValue.load(path: tokFixture("expected.json"))
        let tok = try Tokenizer(path: tokFixture("bytelevel.json"))
        try checkCases(tok, expected["bytelevel"]?.arrayValue ?? [], "bytelevel", noPostProcessor: true)
    }

    func testExpectedSentencePiece() throws {
        let expected = try JSONValue.load(path: tokFixture("expected.json"))
        let tok = try Tokenizer(path: tokFixture("sentencepiece_bpe.json"))
        try checkCases(tok, expected["sentencepiece_bpe"]?.arrayValue ?? [], "sentencepiece_bpe", noPostProcessor: true)
    }

    func testExpectedPipelines() throws {
        let expected = try JSONValue.load(path: tokFixture("pipelines/expected.json"))
        guard let all = expected.objectValue else { return XCTFail("pipelines/expected.json is not an object") }
        XCTAssertEqual(Set(all.keys), ["llama3_style", "qwen2_style", "smollm_style", "metaspace_style", "llama2_legacy"])
        for (name, cases) in all {
            let tok = try Tokenizer(path: tokFixture("pipelines/\(name).json"))
            try checkCases(tok, cases.arrayValue ?? [], name)
        }
    }

    /// Merges written as "a b" strings (the older format) give the same tokenizer.
    func testMergesAsStrings() throws {
        for name in ["sentencepiece_bpe", "bytelevel"] {
            guard case .object(var root) = try JSONValue.load(path: tokFixture("\(name).json")),
                  case .object(var model)? = root["model"], let merges = model["merges"]?.arrayValue else {
                return XCTFail("unexpected fixture layout")
            }
            model["merges"] = .array(merges.map { m in
                .string((m.arrayValue ?? []).compactMap { $0.stringValue }.joined(separator: " "))
            })
            root["model"] = .object(model)
            let tok = try Tokenizer(json: JSONValue.object(root).serialized(), name: name)
            let expected = try JSONValue.load(path: tokFixture("expected.json"))
            try checkCases(tok, expected[name]?.arrayValue ?? [], name)
        }
    }

    // MARK: - Behaviour

    func testAddedTokensAreNeverSplit() throws {
        let bl = try Tokenizer(path: tokFixture("bytelevel.json"))
        XCTAssertEqual(try bl.encode("a<|endoftext|>b"), try bl.encode("a") + [0] + bl.encode("b"))
        XCTAssertEqual(try bl.encode("<|endoftext|><|endoftext|>"), [0, 0])
        XCTAssertEqual(try bl.encode(" <|endoftext|> "), [221, 0, 221])
        assertSameText(try bl.decode(try bl.encode("x<|endoftext|>y")), "x<|endoftext|>y")
        assertSameText(try bl.decode(try bl.encode("x<|endoftext|>y"), skipSpecialTokens: true), "xy")
        // A partial match is ordinary text.
        XCTAssertFalse(try bl.encode("<|endoftext|").contains(0))

        let sp = try Tokenizer(path: tokFixture("sentencepiece_bpe.json"))
        let ids = try sp.encode("hi<s>there</s>")
        XCTAssertEqual(ids.filter { $0 == 1 }.count, 1)
        XCTAssertEqual(ids.filter { $0 == 2 }.count, 1)
        XCTAssertEqual(ids.firstIndex(of: 1).map { $0 < ids.firstIndex(of: 2)! }, true)
        // The text after an added token is normalized on its own: Llama 2's Prepend("▁") gives
        // it a leading space (the library's "legacy" behaviour).
        assertSameText(try sp.decode(ids, skipSpecialTokens: true), "hi there")
        // Byte tokens are added tokens too: typed literally they are matched whole.
        XCTAssertEqual(try sp.encode("<0x41>", addSpecialTokens: false), [3 + 0x41])

        let l3 = try Tokenizer(path: tokFixture("pipelines/llama3_style.json"))
        let bot = try XCTUnwrap(l3.tokenToId("<|begin_of_text|>"))
        let eot = try XCTUnwrap(l3.tokenToId("<|eot_id|>"))
        let chat = try l3.encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
        XCTAssertEqual(chat.first, bot)
        XCTAssertEqual(chat.last, eot)
        XCTAssertEqual(try l3.encode("Hi", addSpecialTokens: false), Array(try l3.encode("Hi").dropFirst()))
    }

    func testByteFallback() throws {
        let sp = try Tokenizer(path: tokFixture("sentencepiece_bpe.json"))
        for s in ["龘", "ζ", "🦀", "\u{1}", "Ω≈ç√", "e\u{301}"] {
            let ids = try sp.encode(s, addSpecialTokens: false)
            let tokens = ids.compactMap { sp.idToToken($0) }
            let byteTokens = tokens.filter { $0.hasPrefix("<0x") }
            let bytes = byteTokens.compactMap { UInt8($0.dropFirst(3).prefix(2), radix: 16) }
            // Every byte of each character the vocab lacks comes as a <0xNN> token, in order.
            XCTAssertFalse(bytes.isEmpty, s)
            XCTAssertTrue(String(decoding: bytes, as: UTF8.self).unicodeScalars.allSatisfy { s.unicodeScalars.contains($0) }, s)
            assertSameText(try sp.decode(ids), s)
        }
        // Bytes that do not form UTF-8 decode to one U+FFFD each.
        assertSameText(try sp.decode([3 + 0xC3]), "\u{FFFD}")
        assertSameText(try sp.decode([3 + 0xE2, 3 + 0x82]), "\u{FFFD}\u{FFFD}")
    }

    func testEmptyWhitespaceAndNewlines() throws {
        // (Metaspace with prepend_scheme "first" is not lossless for leading spaces: not here.)
        for file in ["bytelevel.json", "sentencepiece_bpe.json", "pipelines/llama3_style.json",
                     "pipelines/qwen2_style.json", "pipelines/llama2_legacy.json"] {
            let tok = try Tokenizer(path: tokFixture(file))
            XCTAssertEqual(try tok.encode("", addSpecialTokens: false), [], file)
            assertSameText(try tok.decode([]), "")
            for s in [" ", "   ", "\t", "\t\t \t", "\n", "\n\n\n", "a \n\n b", "\r\n", "x\r\n\r\ny", "  \n  ", "end  "] {
                let ids = try tok.encode(s, addSpecialTokens: false)
                XCTAssertFalse(ids.isEmpty, "\(file) \(s.debugDescription)")
                assertSameText(try tok.decode(ids), s, file)
            }
        }
    }

    func testRoundTrip() throws {
        let strings = [
            "Hello world", "The quick brown fox jumps over the lazy dog.", "it's I'M we'LL they'Re",
            "über naïve café 日本語 🙂", "emoji 🙂🙂 end 👍🏽", "中文字符和한국어", "x=y+1; 4.5*123",
            "numbers 1234567890 and 3.14159", "tabs\tand\nnewlines\r\n", "   leading", "trailing   ",
            "<<>>||{{}}", "\u{0}\u{7F}\u{FFFD}", "Ελληνικά Русский", "a" + String(repeating: "b", count: 300),
            "mixed 123abc456 ☃ snow", "\u{00A0}nbsp\u{3000}ideographic\u{2028}ls",
        ]
        for file in ["bytelevel.json", "sentencepiece_bpe.json", "pipelines/llama3_style.json",
                     "pipelines/qwen2_style.json", "pipelines/smollm_style.json",
                     "pipelines/metaspace_style.json", "pipelines/llama2_legacy.json"] {
            let tok = try Tokenizer(path: tokFixture(file))
            for s in strings {
                // Metaspace with prepend_scheme "first" is not lossless for a leading space.
                if file.contains("metaspace") && s.first == " " { continue }
                // Byte-fallback tokens are special in these files: do not skip them.
                let ids = try tok.encode(s, addSpecialTokens: false)
                assertSameText(try tok.decode(ids), s, file)
                // Skipping special tokens drops the added bos.
                assertSameText(try tok.decode(try tok.encode(s), skipSpecialTokens: true),
                               try tok.decode(ids, skipSpecialTokens: true), file)
            }
        }
    }

    /// Random text never breaks encoding, and byte-level decoding gives it back exactly.
    func testRandomTextRoundTrip() throws {
        var rng = SplitMix64(seed: 42)
        let pools: [ClosedRange<UInt32>] = [0x20...0x7E, 0x09...0x0D, 0xA0...0x2FF, 0x370...0x3FF, 0x3040...0x30FF,
                                            0x4E00...0x4FFF, 0xAC00...0xAC80, 0x1F300...0x1F6FF, 0x300...0x36F]
        let byteLevel = try Tokenizer(path: tokFixture("bytelevel.json"))
        let sp = try Tokenizer(path: tokFixture("sentencepiece_bpe.json"))
        for _ in 0..<300 {
            var s = ""
            for _ in 0..<rng.below(40) {
                let pool = pools[rng.below(pools.count)]
                if let u = Unicode.Scalar(pool.lowerBound + UInt32(rng.below(Int(pool.upperBound - pool.lowerBound) + 1))) {
                    s.unicodeScalars.append(u)
                }
            }
            assertSameText(try byteLevel.decode(try byteLevel.encode(s)), s)
            assertSameText(try sp.decode(try sp.encode(s)), s)
        }
    }

    func testLongInputWithoutPreTokenizer() throws {
        // Llama 2 legacy files have no pre-tokenizer: the whole text is one BPE word.
        let sp = try Tokenizer(path: tokFixture("sentencepiece_bpe.json"))
        let text = String(repeating: "the cat sat on the mat. ", count: 2000)
        let ids = try sp.encode(text)
        let one = try sp.encode("the cat sat on the mat.")
        XCTAssertGreaterThan(ids.count, 2000 * (one.count - 1))
        assertSameText(try sp.decode(ids), text)
    }

    // MARK: - Vocabulary and special ids

    func testVocabularyAccessors() throws {
        let bl = try Tokenizer(path: tokFixture("bytelevel.json"))
        XCTAssertEqual(bl.vocabSize, 350)
        XCTAssertEqual(bl.idToToken(0), "<|endoftext|>")
        XCTAssertEqual(bl.idToToken(221), "Ġ")
        XCTAssertEqual(bl.tokenToId("Ġ"), 221)
        XCTAssertNil(bl.idToToken(350))
        XCTAssertNil(bl.idToToken(-1))
        XCTAssertNil(bl.tokenToId("no such token"))
        XCTAssertNil(bl.bosId)
        XCTAssertEqual(bl.eosId, 0)
        XCTAssertEqual(bl.eosIds, [0])
        XCTAssertNil(bl.padId)
        XCTAssertTrue(bl.isSpecial(0))
        XCTAssertFalse(bl.isSpecial(221))

        let sp = try Tokenizer(path: tokFixture("sentencepiece_bpe.json"))
        XCTAssertEqual(sp.vocabSize, 500)
        XCTAssertEqual(sp.bosId, 1)
        XCTAssertEqual(sp.eosId, 2)
        XCTAssertEqual(sp.tokenToId("<0x0A>"), 13)
        XCTAssertEqual(sp.idToToken(297), "▁")

        let l3 = try Tokenizer(path: tokFixture("pipelines/llama3_style.json"))
        XCTAssertEqual(l3.bosId, l3.tokenToId("<|begin_of_text|>"))  // from the template
        XCTAssertEqual(l3.eosId, l3.tokenToId("<|end_of_text|>"))
        let qw = try Tokenizer(path: tokFixture("pipelines/qwen2_style.json"))
        XCTAssertNil(qw.bosId)
        XCTAssertEqual(qw.eosId, qw.tokenToId("<|endoftext|>"))
    }

    func testDecodeUnknownIdIsAnError() throws {
        let bl = try Tokenizer(path: tokFixture("bytelevel.json"))
        for id in [350, 99999, -1] {
            assertIOError(path: tokFixture("bytelevel.json"), ["id \(id)", "vocab size 350"]) {
                _ = try bl.decode([280, id])
            }
        }
    }

    func testModelDirectory() throws {
        let dir = TempDir()
        defer { dir.remove() }
        writeRaw(readRaw(tokFixture("bytelevel.json")), to: dir.file("tokenizer.json"))
        writeRaw(Array(#"{"bos_token": {"__type": "AddedToken", "content": "<|endoftext|>"}, "eos_token": "<|endoftext|>", "pad_token": null, "add_bos_token": true}"#.utf8),
                 to: dir.file("tokenizer_config.json"))
        writeRaw(Array(#"{"eos_token_id": [0, 5], "bos_token_id": 0}"#.utf8), to: dir.file("generation_config.json"))
        writeRaw(Array(#"{"eos_token_id": 7, "bos_token_id": 3, "pad_token_id": 9}"#.utf8), to: dir.file("config.json"))
        let tok = try Tokenizer(path: dir.path)
        XCTAssertEqual(tok.path, dir.file("tokenizer.json"))
        XCTAssertEqual(tok.bosId, 0)
        XCTAssertEqual(tok.eosIds, [0, 5, 7])
        XCTAssertNil(tok.padId)  // tokenizer_config.json says null
        // add_bos_token with no template in the file: bos is added.
        XCTAssertEqual(try tok.encode("Hello world"), [0, 280, 338])
        XCTAssertEqual(try tok.encode("Hello world", addSpecialTokens: false), [280, 338])

        // Only config.json: its ids.
        let dir2 = TempDir()
        defer { dir2.remove() }
        writeRaw(readRaw(tokFixture("sentencepiece_bpe.json")), to: dir2.file("tokenizer.json"))
        writeRaw(Array(#"{"eos_token_id": [2, 4], "bos_token_id": 1, "pad_token_id": 0}"#.utf8), to: dir2.file("config.json"))
        let tok2 = try Tokenizer(path: dir2.path + "/")
        XCTAssertEqual(tok2.bosId, 1)
        XCTAssertEqual(tok2.eosIds, [2, 4])
        XCTAssertEqual(tok2.padId, 0)
        XCTAssertEqual(try tok2.encode("Hello world"), [409, 431])
        // -1 is "none" in some configs.
        writeRaw(Array(#"{"pad_token_id": -1, "eos_token_id": [-1, 2]}"#.utf8), to: dir2.file("config.json"))
        let tok3 = try Tokenizer(path: dir2.path)
        XCTAssertNil(tok3.padId)
        XCTAssertEqual(tok3.eosIds, [2])
        XCTAssertEqual(tok3.bosId, 1)  // from the file's own names
    }
}
