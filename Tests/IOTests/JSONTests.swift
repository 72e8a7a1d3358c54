// Tests of the JSON parser and writer: valid and invalid documents, escapes and surrogates,
// numbers, duplicate keys, depth limits (including a 100000-deep bomb), accessors, JSONObject,
// writer output and randomized round trips, and the real config/tokenizer fixtures.

import Foundation
import XCTest

import IO

final class JSONParserTests: XCTestCase {
    func testScalars() throws {
        XCTAssertEqual(try JSONValue.parse("null"), .null)
        XCTAssertEqual(try JSONValue.parse("true"), .bool(true))
        XCTAssertEqual(try JSONValue.parse(" \t\r\nfalse \n"), .bool(false))
        XCTAssertEqual(try JSONValue.parse("0"), .int(0))
        XCTAssertEqual(try JSONValue.parse("-0"), .int(0))
        XCTAssertEqual(try JSONValue.parse("123"), .int(123))
        XCTAssertEqual(try JSONValue.parse("-123"), .int(-123))
        XCTAssertEqual(try JSONValue.parse("9223372036854775807"), .int(Int64.max))
        XCTAssertEqual(try JSONValue.parse("-9223372036854775808"), .int(Int64.min))
        XCTAssertEqual(try JSONValue.parse("9223372036854775808"), .double(9223372036854775808.0))
        XCTAssertEqual(try JSONValue.parse("-9223372036854775809"), .double(-9223372036854775809.0))
        XCTAssertEqual(
            try JSONValue.parse("123456789012345678901234567890"), .double(1.2345678901234568e29))
        XCTAssertEqual(try JSONValue.parse("1.5"), .double(1.5))
        XCTAssertEqual(try JSONValue.parse("-1.5e3"), .double(-1500))
        XCTAssertEqual(try JSONValue.parse("1E2"), .double(100))
        XCTAssertEqual(try JSONValue.parse("1e+2"), .double(100))
        XCTAssertEqual(try JSONValue.parse("1e-2"), .double(0.01))
        XCTAssertEqual(try JSONValue.parse("0.1"), .double(0.1))
        XCTAssertEqual(try JSONValue.parse("1.0"), .double(1.0))
        XCTAssertEqual(try JSONValue.parse("1e-400"), .double(0))
        XCTAssertEqual(try JSONValue.parse("\"\""), .string(""))
        XCTAssertEqual(try JSONValue.parse("\"abc\""), .string("abc"))
        XCTAssertEqual(try JSONValue.parse("[]"), .array([]))
        XCTAssertEqual(try JSONValue.parse("{}"), .object(JSONObject()))
        XCTAssertEqual(try JSONValue.parse(" [ 1 , \"a\" , null ] "), [1, "a", nil])
    }

    func testDoublesAreCorrectlyRounded() throws {
        let fixed = [
            "3.141592653589793", "2.2250738585072014e-308", "2.2250738585072011e-308",
            "1.7976931348623157e308", "4.9e-324", "5e-324", "2.4703282292062328e-324",
            "0.30000000000000004", "9007199254740993.0", "9007199254740993e0",
            "1.00000000000000011102230246251565404236316680908203125", "7.038531e-26",
            "123456789012345678e-30", "0.000000000000000000000000000001", "1e22", "1e23",
            "-0.0", "8.98846567431158e307",
        ]
        for text in fixed {
            let v = try JSONValue.parse(text)
            guard case .double(let d) = v else {
                XCTFail("\(text) parsed as \(v)")
                continue
            }
            XCTAssertEqual(d.bitPattern, Double(text)!.bitPattern, text)
        }
        // Random decimal strings: compare with the standard library's conversion.
        var rng = SplitMix64(seed: 42)
        for _ in 0..<3000 {
            let digits = 1 + rng.below(20)
            var mant = String(1 + rng.below(9))
            for _ in 1..<digits { mant += String(rng.below(10)) }
            let point = rng.below(digits + 1)
            var text = mant
            if point < digits && point > 0 {
                text.insert(".", at: text.index(text.startIndex, offsetBy: point))
            }
            text += "e\(rng.below(640) - 330)"
            if rng.below(2) == 0 { text = "-" + text }
            let expected = Double(text)!
            if !expected.isFinite {
                assertJSONError(text, reason: "out of range")
                continue
            }
            guard case .double(let d) = try JSONValue.parse(text) else {
                XCTFail(text)
                continue
            }
            XCTAssertEqual(d.bitPattern, expected.bitPattern, text)
        }
    }

    func testStringEscapes() throws {
        XCTAssertEqual(
            try JSONValue.parse(#""\" \\ \/ \b \f \n \r \t""#), .string("\" \\ / \u{08} \u{0C} \n \r \t"))
        XCTAssertEqual(try JSONValue.parse(#""\u00e9\u00C9\u4e2d""#), .string("éÉ中"))
        XCTAssertEqual(try JSONValue.parse(#""\u0000x""#), .string("\u{0}x"))
        XCTAssertEqual(try JSONValue.parse(#""\ud83d\ude00""#), .string("😀"))
        XCTAssertEqual(try JSONValue.parse(#""a\uD83D\uDE00b""#), .string("a😀b"))
        XCTAssertEqual(try JSONValue.parse(#""\udbff\udfff""#), .string("\u{10FFFF}"))
        XCTAssertEqual(try JSONValue.parse("\"é中😀\""), .string("é中😀"))
        XCTAssertEqual(try JSONValue.parse("\"é\\n中\""), .string("é\n中"))
        XCTAssertEqual(try JSONValue.parse("\"\u{7F}\""), .string("\u{7F}"))
    }

    func testInvalidDocuments() {
        let cases: [(String, String?)] = [
            ("", "empty"), (" ", "end of input"), ("01", "leading zero"), ("-01", "leading zero"),
            ("00", "leading zero"), ("-", "digit"), ("1.", "digit"), (".5", "expected a value"),
            ("+1", "expected a value"), ("1e", "exponent"), ("1e+", "exponent"), ("--1", "digit"),
            ("1.e5", "digit"), ("[1,]", "expected a value"), ("{\"a\":1,}", "string key"),
            ("[1 2]", "expected ','"), ("{\"a\" 1}", "':'"), ("{a:1}", "string key"),
            ("'x'", "expected a value"), ("tru", "literal"), ("nul", "literal"), ("True", "expected a value"),
            ("[", "end of input"), ("{", "string key"), ("{\"a\":", "end of input"), ("[1,2", "end of input"),
            ("\"abc", "unterminated"), ("\"\\x\"", "escape"), ("\"\\u12\"", "escape"),
            ("\"\\u12G4\"", "hex"), ("\"\\ud800\"", "unpaired high surrogate"),
            ("\"\\udc00\"", "unpaired low surrogate"), ("\"\\ud800\\u0041\"", "low surrogate"),
            ("\"\\ud800x\"", "unpaired"), ("\"a\u{01}b\"", "control character"),
            ("\"a\tb\"", "control character"), ("\"a\nb\"", "control character"),
            ("1 2", "after the JSON value"), ("{}x", "after the JSON value"), ("[]]", "after the JSON value"),
            ("1e400", "out of range"), ("-1e400", "out of range"), ("NaN", "expected a value"),
            ("Infinity", "expected a value"), ("-Infinity", "digit"), ("[1,,2]", "expected a value"),
            ("{\"a\":1 \"b\":2}", "expected ','"), ("\"\\", "unterminated"), ("\"\\u", "truncated"),
            ("0x10", "after the JSON value"), ("1_000", "after the JSON value"), ("[1}", "expected ','"),
            ("{\"a\":1]", "expected ','"),
        ]
        for (text, reason) in cases { assertJSONError(text, reason: reason) }
        // Byte-level problems.
        let bytes: [([UInt8], String)] = [
            ([0x22, 0xC3, 0x22], "UTF-8"),  // truncated 2-byte sequence
            ([0x22, 0xC0, 0x80, 0x22], "UTF-8"),  // overlong NUL
            ([0x22, 0xE0, 0x80, 0xAF, 0x22], "UTF-8"),  // overlong '/'
            ([0x22, 0xED, 0xA0, 0x80, 0x22], "UTF-8"),  // encoded surrogate
            ([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], "UTF-8"),  // above U+10FFFF
            ([0x22, 0xF8, 0x88, 0x80, 0x80, 0x80, 0x22], "UTF-8"),
            ([0x22, 0xFF, 0x22], "UTF-8"), ([0x22, 0x80, 0x22], "UTF-8"),
            ([0x22, 0x5C, 0x6E, 0xC3, 0x28, 0x22], "UTF-8"),  // after an escape (slow path)
            ([0xEF, 0xBB, 0xBF, 0x7B, 0x7D], "expected a value"),  // byte-order mark
            ([0x5B, 0x00, 0x5D], "expected a value"), ([0x31, 0x00], "after the JSON value"),
        ]
        for (b, reason) in bytes { assertJSONError(b, reason: reason) }
    }

    func testErrorOffsets() {
        assertJSONError("[1, 01]", offset: 4, reason: "leading zero")
        assertJSONError("{\"a\":1,\"a\":2}", offset: 7, reason: "duplicate key \"a\"")
        assertJSONError("[1, 2, x]", offset: 7)
        assertJSONError("\"abc", offset: 0, reason: "unterminated")
        assertJSONError("  [1] 2", offset: 6)
        assertJSONError("[\"a\u{01}\"]", offset: 3, reason: "control")
        do {
            _ = try JSONValue.parse("[1,]")
        } catch let e as JSONParseError {
            XCTAssertEqual(e.description, "invalid JSON at byte 3: unexpected ']', expected a value")
        } catch { XCTFail("\(error)") }
    }

    func testDuplicateKeys() throws {
        assertJSONError("{\"a\":1,\"b\":2,\"a\":3}", offset: 13, reason: "duplicate key")
        assertJSONError("{\"x\":{\"a\":1,\"a\":1}}", reason: "duplicate key")
        let v = try JSONValue.parse("{\"a\":1,\"b\":2,\"a\":3}", duplicateKeys: .lastWins)
        XCTAssertEqual(v.objectValue?.keys, ["a", "b"])
        XCTAssertEqual(v["a"], .int(3))
        XCTAssertEqual(v["b"], .int(2))
        // Large objects (hash index) behave the same.
        var members = (0..<50).map { "\"k\($0)\":\($0)" }
        members.append("\"k7\":700")
        let text = "{" + members.joined(separator: ",") + "}"
        assertJSONError(text, reason: "duplicate key \"k7\"")
        let big = try JSONValue.parse(text, duplicateKeys: .lastWins)
        XCTAssertEqual(big.objectValue?.count, 50)
        XCTAssertEqual(big["k7"], .int(700))
        XCTAssertEqual(big.objectValue?.keys[7], "k7")
        XCTAssertEqual(big["k49"], .int(49))
        XCTAssertNil(big["k50"])
        // Keys are compared by bytes: canonically equivalent spellings are different keys.
        let nfc = try JSONValue.parse("{\"\u{E9}\":1,\"e\\u0301\":2}")
        XCTAssertEqual(nfc.objectValue?.count, 2)
        XCTAssertEqual(nfc["\u{E9}"], .int(1))
        XCTAssertEqual(nfc["e\u{301}"], .int(2))
    }

    func testDepthLimit() throws {
        let ok = String(repeating: "[", count: 512) + String(repeating: "]", count: 512)
        XCTAssertNoThrow(try JSONValue.parse(ok))
        let tooDeep = String(repeating: "[", count: 513) + String(repeating: "]", count: 513)
        assertJSONError(tooDeep, offset: 512, reason: "nesting deeper than 512")
        let objOK = String(repeating: "{\"a\":", count: 512) + "1" + String(repeating: "}", count: 512)
        XCTAssertNoThrow(try JSONValue.parse(objOK))
        let objDeep = String(repeating: "{\"a\":", count: 513) + "1" + String(repeating: "}", count: 513)
        assertJSONError(objDeep, reason: "nesting")
        // Bombs: must be an error, not a stack overflow.
        assertJSONError(String(repeating: "[", count: 100_000), reason: "nesting")
        assertJSONError(String(repeating: "{\"a\":[", count: 50_000), reason: "nesting")
        // Deep but legal values can be written and destroyed without recursion trouble.
        var v: JSONValue = 1
        for _ in 0..<511 { v = .array([v]) }
        XCTAssertEqual(try JSONValue.parse(v.serialized()), v)
    }

    func testAccessors() throws {
        let v = try JSONValue.parse(
            #"{"s":"x","i":7,"d":2.5,"di":3.0,"big":1e300,"b":true,"n":null,"a":[1,2],"o":{"k":"v"}}"#)
        XCTAssertEqual(v["s"]?.stringValue, "x")
        XCTAssertNil(v["s"]?.intValue)
        XCTAssertEqual(v["i"]?.intValue, 7)
        XCTAssertEqual(v["i"]?.int64Value, 7)
        XCTAssertEqual(v["i"]?.doubleValue, 7.0)
        XCTAssertEqual(v["d"]?.doubleValue, 2.5)
        XCTAssertNil(v["d"]?.intValue)
        XCTAssertEqual(v["di"]?.intValue, 3)
        XCTAssertNil(v["big"]?.intValue)
        XCTAssertEqual(v["b"]?.boolValue, true)
        XCTAssertNil(v["b"]?.intValue)
        XCTAssertEqual(v["n"]?.isNull, true)
        XCTAssertEqual(v["a"]?.arrayValue, [1, 2])
        XCTAssertEqual(v["a"]?[1], 2)
        XCTAssertNil(v["a"]?[2])
        XCTAssertNil(v["a"]?[-1])
        XCTAssertEqual(v["o"]?.objectValue?["k"], "v")
        XCTAssertNil(v["missing"])
        XCTAssertNil(v["a"]?["k"])
        XCTAssertEqual(v.objectValue?.keys, ["s", "i", "d", "di", "big", "b", "n", "a", "o"])
        XCTAssertEqual(v.objectValue?.count, 9)
    }

    func testJSONObjectAPI() {
        var o = JSONObject([("b", 1), ("a", 2), ("b", 3)])
        XCTAssertEqual(o.keys, ["b", "a"])
        XCTAssertEqual(o["b"], 3)
        o["c"] = "x"
        o["a"] = nil
        XCTAssertEqual(o.keys, ["b", "c"])
        XCTAssertEqual(o.values, [3, "x"])
        for i in 0..<20 { o["k\(i)"] = .int(Int64(i)) }
        XCTAssertEqual(o.count, 22)
        XCTAssertEqual(o["k13"], 13)
        o["k0"] = nil
        XCTAssertEqual(o["k13"], 13)
        XCTAssertEqual(o.position(of: "k13"), 14)
        XCTAssertEqual(Array(o).first?.key, "b")
        // Equality ignores member order.
        let x: JSONValue = ["a": 1, "b": [true, nil]]
        let y: JSONValue = ["b": [true, nil], "a": 1]
        XCTAssertEqual(x, y)
        XCTAssertNotEqual(x, ["a": 1, "b": [true]])
        XCTAssertNotEqual(JSONValue.int(1), JSONValue.double(1))
    }

    func testLoadNamesThePath() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let missing = dir.file("nope.json")
        assertIOError(path: missing, ["cannot open", "No such file"]) { _ = try JSONValue.load(path: missing) }
        assertIOError(path: dir.path, ["directory"]) { _ = try JSONValue.load(path: dir.path) }
        let broken = dir.file("broken.json")
        writeRaw(Array("{\"a\": [1, 2,]}".utf8), to: broken)
        assertIOError(path: broken, ["invalid JSON at byte 12"]) { _ = try JSONValue.load(path: broken) }
        let good = dir.file("good.json")
        writeRaw(Array("{\"a\": [1, 2]}\n".utf8), to: good)
        XCTAssertEqual(try JSONValue.load(path: good), ["a": [1, 2]])
    }

    func testFixtures() throws {
        let config = try JSONValue.load(path: Fixtures.path("tiny-llama/config.json"))
        XCTAssertEqual(config["hidden_size"]?.intValue, 64)
        XCTAssertEqual(config["rms_norm_eps"]?.doubleValue, 1e-6)
        XCTAssertEqual(config["pad_token_id"], .null)
        XCTAssertEqual(config["rope_parameters"]?["rope_theta"], .double(10000))
        XCTAssertEqual(config["architectures"]?[0]?.stringValue, "LlamaForCausalLM")
        XCTAssertEqual(config["tie_word_embeddings"]?.boolValue, false)

        let tok = try JSONValue.load(path: Fixtures.path("tokenizers/bytelevel.json"))
        XCTAssertEqual(tok["model"]?["type"]?.stringValue, "BPE")
        let vocab = try XCTUnwrap(tok["model"]?["vocab"]?.objectValue)
        XCTAssertGreaterThan(vocab.count, 100)
        for (i, (k, v)) in vocab.enumerated() where i < 300 {
            XCTAssertEqual(vocab[k], v)
        }
        // Writer round trip of a real document, both layouts.
        XCTAssertEqual(try JSONValue.parse(tok.serialized()), tok)
        XCTAssertEqual(try JSONValue.parse(tok.serialized(sortedKeys: true, pretty: true)), tok)
    }

    /// Random byte edits of a real document: every variant parses or throws JSONParseError.
    func testMutatedDocumentsNeverCrash() throws {
        let original = readRaw(Fixtures.path("tiny-llama/config.json"))
        XCTAssertFalse(original.isEmpty)
        var rng = SplitMix64(seed: 7)
        let interesting: [UInt8] = Array("{}[]\",:\\u0e-+.\u{7F} \n".utf8) + [0x00, 0x80, 0xC3, 0xED, 0xF4, 0xFF]
        var parsed = 0
        for _ in 0..<1500 {
            var b = original
            for _ in 0..<(1 + rng.below(3)) {
                switch rng.below(4) {
                case 0: b[rng.below(b.count)] = interesting[rng.below(interesting.count)]
                case 1: b[rng.below(b.count)] = UInt8(truncatingIfNeeded: rng.next())
                case 2: b.removeSubrange(rng.below(b.count)...)
                default: b.insert(interesting[rng.below(interesting.count)], at: rng.below(b.count + 1))
                }
                if b.isEmpty { b = [0x7B] }
            }
            do {
                _ = try JSONValue.parse(b)
                parsed += 1
            } catch is JSONParseError {
            } catch {
                XCTFail("unexpected error \(error)")
            }
        }
        XCTAssertGreaterThan(parsed, 0)
    }
}

final class JSONWriterTests: XCTestCase {
    func testCompactOutput() {
        let v: JSONValue = [
            "s": "a\"b\\c\n\t\r\u{08}\u{0C}\u{01}\u{1F}/é😀", "i": -5, "d": 1.0, "e": 1e-7, "big": 1e300,
            "nz": -0.0, "n": nil, "t": true, "a": [], "o": [:], "arr": [1, 2.5, "x"],
        ]
        XCTAssertEqual(
            v.serialized(),
            #"{"s":"a\"b\\c\n\t\r\b\f\u0001\u001f/é😀","i":-5,"d":1.0,"e":1e-07,"big":1e+300,"nz":-0.0,"n":null,"t":true,"a":[],"o":{},"arr":[1,2.5,"x"]}"#
        )
        XCTAssertEqual(JSONValue.int(Int64.min).serialized(), "-9223372036854775808")
        XCTAssertEqual(JSONValue.double(123456.0).serialized(), "123456.0")
        XCTAssertEqual(JSONValue.double(1e16).serialized(), "1e+16")
    }

    func testNonFiniteDoublesBecomeNull() throws {
        let v: JSONValue = [.double(.nan), .double(.infinity), .double(-.infinity), 1.5]
        XCTAssertEqual(v.serialized(), "[null,null,null,1.5]")
        XCTAssertEqual(try JSONValue.parse(v.serialized()), [nil, nil, nil, 1.5])
    }

    func testSortedAndPretty() {
        let v: JSONValue = ["b": [1, ["z": 1, "y": []]], "a": [:], "é": 1, "Z": "x"]
        XCTAssertEqual(v.serialized(sortedKeys: true), #"{"Z":"x","a":{},"b":[1,{"y":[],"z":1}],"é":1}"#)
        XCTAssertEqual(
            v.serialized(pretty: true),
            """
            {
              "b": [
                1,
                {
                  "z": 1,
                  "y": []
                }
              ],
              "a": {},
              "é": 1,
              "Z": "x"
            }
            """)
        XCTAssertEqual(JSONValue.array([]).serialized(pretty: true), "[]")
        XCTAssertEqual(JSONValue.string("x").serialized(pretty: true), "\"x\"")
    }

    func testRandomRoundTrips() throws {
        var rng = SplitMix64(seed: 1234)
        let alphabet: [String] = ["a", "Z", " ", "\"", "\\", "/", "\n", "\u{0}", "\u{1F}", "\u{7F}", "é", "中", "😀", "e\u{301}", "\u{2028}", "\u{FFFF}"]
        func randomString() -> String {
            var s = ""
            for _ in 0..<rng.below(8) { s += alphabet[rng.below(alphabet.count)] }
            return s
        }
        func randomValue(_ depth: Int) -> JSONValue {
            switch rng.below(depth > 4 ? 5 : 7) {
            case 0: return .null
            case 1: return .bool(rng.below(2) == 0)
            case 2: return .int(Int64(bitPattern: rng.next()) >> Int64(rng.below(64)))
            case 3:
                var d: Double
                repeat { d = Double(bitPattern: rng.next()) } while !d.isFinite
                return .double(rng.below(2) == 0 ? d : Double(rng.below(1000)) / 8)
            case 4: return .string(randomString())
            case 5: return .array((0..<rng.below(5)).map { _ in randomValue(depth + 1) })
            default:
                var o = JSONObject()
                for _ in 0..<rng.below(12) { o[randomString()] = randomValue(depth + 1) }
                return .object(o)
            }
        }
        for _ in 0..<400 {
            let v = randomValue(0)
            for (sorted, pretty) in [(false, false), (true, false), (false, true)] {
                let text = v.serialized(sortedKeys: sorted, pretty: pretty)
                let back = try JSONValue.parse(text)
                XCTAssertEqual(back, v, text)
                if !sorted {
                    // Key order is preserved exactly.
                    XCTAssertEqual(back.serialized(), v.serialized())
                }
            }
        }
    }
}
