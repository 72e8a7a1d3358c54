// The split regexes: the hand-written scanners for GPT-2's, Llama 3's and Qwen2's patterns agree
// with NSRegularExpression (ICU) running the same pattern text, on random mixes of letters,
// digits, contractions, punctuation and all kinds of white space; the one known difference
// (ICU folds "ſ" to "s" in (?i:'s), Oniguruma, which the tokenizers library uses, does not)
// follows the library. Also the five Split behaviours.

import Foundation
import XCTest

@testable import IO

final class TokenizerRegexTests: XCTestCase {
    func texts(_ ranges: [Range<Int>], _ s: String) -> [String] {
        let b = Array(s.utf8)
        return ranges.map { String(decoding: b[$0], as: UTF8.self) }
    }

    func testKnownPatternsAgreeWithICU() throws {
        var rng = SplitMix64(seed: 3)
        let alphabet: [String] = [
            "a", "B", "z", "Hello", " ", "  ", "\t", "\n", "\r", "\r\n", "'", "'s", "'S", "'ll", "'LL", "'re", "'Ve", "1", "23",
            "4567", ".", ",", "!", "é", "日", "本", "🙂", "\u{0B}", "\u{0C}", "\u{85}", "\u{A0}", "\u{2028}", "\u{3000}",
            "\u{1680}", "\u{200B}", "\u{FEFF}", "٣", "½", "Ⅻ", "\u{301}", "_", "-", "/", "K", "ß",
        ]
        for pattern in [TokenRegex.gpt2Pattern, TokenRegex.llama3Pattern, TokenRegex.qwen2Pattern] {
            let fast = try TokenRegex(pattern: pattern)
            let icu = try TokenRegex(pattern: pattern, forceICU: true)
            if case .icu = fast.kind { XCTFail("pattern not recognised: \(pattern)") }
            var differing = 0
            for _ in 0..<3000 {
                var s = ""
                for _ in 0..<rng.below(12) { s += alphabet[rng.below(alphabet.count)] }
                let b = Array(s.utf8)
                if try fast.matches(b) != icu.matches(b) {
                    differing += 1
                    if differing < 4 { XCTFail("\(pattern.prefix(12)) \(s.debugDescription): \(texts(try fast.matches(b), s)) vs ICU \(texts(try icu.matches(b), s))") }
                }
            }
        }
    }

    func testScannerExamples() throws {
        let gpt2 = TokenRegex.gpt2
        XCTAssertEqual(texts(try gpt2.matches(Array("Hello  world's 123\n\nok!?".utf8)), "Hello  world's 123\n\nok!?"),
                       ["Hello", " ", " world", "'s", " 123", "\n", "\n", "ok", "!?"])
        let l3 = try TokenRegex(pattern: TokenRegex.llama3Pattern)
        let s = "I'M here\t12345 !!\n\n  x.y 'ſ"
        XCTAssertEqual(texts(try l3.matches(Array(s.utf8)), s),
                       ["I", "'M", " here", "\t", "123", "45", " !!\n\n", " ", " x", ".y", " '", "ſ"])
        let qw = try TokenRegex(pattern: TokenRegex.qwen2Pattern)
        XCTAssertEqual(texts(try qw.matches(Array("a 123".utf8)), "a 123"), ["a", " ", "1", "2", "3"])
    }

    func testSplitBehaviours() throws {
        // "a-b--c" split on "-"
        let s = Array("a-b--c".utf8)
        let segs = tokSegments(try TokPattern.literal([0x2D]).matches(s), count: s.count)
        func run(_ b: TokSplitBehavior) -> [String] { b.apply(segs).map { String(decoding: s[$0], as: UTF8.self) } }
        XCTAssertEqual(run(.removed), ["a", "b", "c"])
        XCTAssertEqual(run(.isolated), ["a", "-", "b", "-", "-", "c"])
        XCTAssertEqual(run(.mergedWithPrevious), ["a-", "b-", "-", "c"])
        XCTAssertEqual(run(.mergedWithNext), ["a", "-b", "-", "-c"])
        XCTAssertEqual(run(.contiguous), ["a", "-", "b", "--", "c"])
    }

    /// A catastrophically backtracking pattern stops at the step limit with an error naming the
    /// pattern, quickly; a linear one runs over a long input without reaching it.
    func testStepLimit() throws {
        let evil = try TokenRegex(pattern: "(((((a*)*)*)*)*)*b")
        XCTAssertEqual(try evil.matches(Array("aab".utf8)), [0..<3])
        let t0 = Date()
        XCTAssertThrowsError(try evil.matches(Array(String(repeating: "a", count: 40).utf8))) { e in
            XCTAssertTrue("\(e)".contains("catastrophic backtracking"), "\(e)")
            XCTAssertTrue("\(e)".contains("(((((a*)*)*)*)*)*b"), "\(e)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10)
        let fine = try TokenRegex(pattern: "[a-j]+|\\s+")
        XCTAssertEqual(try fine.matches(Array(String(repeating: "abc ", count: 200_000).utf8)).count, 400_000)
    }
}
