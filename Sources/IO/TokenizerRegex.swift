// The split regexes of tokenizer.json. The three patterns real BPE tokenizers use (GPT-2's, which
// the ByteLevel pre-tokenizer applies; Llama 3's; Qwen2's) are recognised by their exact text
// and run by hand-written scanners that follow Oniguruma's semantics (the library the Hugging
// Face `tokenizers` crate uses: `\s` is Unicode White_Space, `\p{L}` / `\p{N}` the letter and
// number categories); any other pattern runs through NSRegularExpression (ICU). Matches are
// returned as UTF-8 byte ranges.

import Foundation

struct TokenRegexError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// A compiled split pattern.
final class TokenRegex: @unchecked Sendable {
    enum Kind {
        case gpt2
        /// Llama 3 (`digits` = 3: `\p{N}{1,3}`) and Qwen2 (`digits` = 1: `\p{N}`).
        case llama3(digits: Int)
        case icu(NSRegularExpression)
    }

    static let gpt2Pattern =
        #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Pattern =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The GPT-2 pattern (ByteLevel's use_regex).
    static let gpt2 = TokenRegex(kind: .gpt2, pattern: gpt2Pattern)

    let kind: Kind
    let pattern: String

    private init(kind: Kind, pattern: String) {
        self.kind = kind
        self.pattern = pattern
    }

    /// Compiles `pattern`; a pattern ICU rejects throws TokenRegexError.
    convenience init(pattern: String, forceICU: Bool = false) throws {
        if !forceICU && utf8Equal(pattern, TokenRegex.gpt2Pattern) {
            self.init(kind: .gpt2, pattern: pattern)
        } else if !forceICU && utf8Equal(pattern, TokenRegex.llama3Pattern) {
            self.init(kind: .llama3(digits: 3), pattern: pattern)
        } else if !forceICU && utf8Equal(pattern, TokenRegex.qwen2Pattern) {
            self.init(kind: .llama3(digits: 1), pattern: pattern)
        } else {
            do {
                let re = try NSRegularExpression(pattern: pattern, options: [])
                self.init(kind: .icu(re), pattern: pattern)
            } catch {
                throw TokenRegexError(message: "invalid regular expression \(quoted(pattern)): \(error)")
            }
        }
    }

    /// Non-empty, non-overlapping matches, left to right, as byte ranges of `bytes` (valid UTF-8).
    func matches(_ bytes: [UInt8]) throws -> [Range<Int>] {
        if bytes.isEmpty { return [] }
        switch kind {
        case .gpt2: return TokScalarScan(bytes).gpt2()
        case .llama3(let digits): return TokScalarScan(bytes).llama3(maxDigits: digits)
        case .icu(let re): return try icuMatches(re, bytes)
        }
    }

    /// The step budget of one ICU search, in progress reports: ICU reports once per start
    /// position it tries and once per 10,000 steps of its backtracking matcher. A search may take
    /// `icuBaseTicks` reports plus `icuTicksPerByte` per byte of input: every position, and about
    /// 10^7 steps plus 10^4 per byte (linear patterns need a few dozen per byte). Past that the
    /// pattern backtracks catastrophically (`(a*)*b` on a run of a's) and encoding stops with
    /// an error instead of running for hours.
    static let icuBaseTicks = 1_000
    static let icuTicksPerByte = 2

    private func icuMatches(_ re: NSRegularExpression, _ bytes: [UInt8]) throws -> [Range<Int>] {
        let s = String(decoding: bytes, as: UTF8.self)
        // UTF-16 offset -> UTF-8 offset, at every scalar boundary.
        var u16to8 = [Int](repeating: -1, count: s.utf16.count + 1)
        var o8 = 0, o16 = 0
        for u in s.unicodeScalars {
            u16to8[o16] = o8
            o8 += UTF8.width(u)
            o16 += UTF16.width(u)
        }
        u16to8[o16] = o8
        var out: [Range<Int>] = []
        let budget = TokenRegex.icuBaseTicks + bytes.count * TokenRegex.icuTicksPerByte
        var ticks = 0
        var exceeded = false
        re.enumerateMatches(in: s, options: [.reportProgress], range: NSRange(location: 0, length: o16)) { m, flags, stop in
            if flags.contains(.progress) {
                ticks += 1
                if ticks > budget { exceeded = true; stop.pointee = true }
            }
            guard let r = m?.range else { return }
            guard r.location != NSNotFound, r.length > 0, r.location + r.length < u16to8.count else { return }
            let lo = u16to8[r.location], hi = u16to8[r.location + r.length]
            guard lo >= 0, hi > lo else { return }
            out.append(lo..<hi)
        }
        if exceeded {
            throw TokenRegexError(message: "the regular expression \(quoted(pattern)) takes more than its step limit (about \(TokenRegex.icuBaseTicks * 10_000 + bytes.count * 10_000) steps) on a piece of \(bytes.count) bytes: catastrophic backtracking; fix the pattern")
        }
        return out
    }
}

// MARK: - Character classes

/// Letter (\p{L}), number (\p{N}), white space (\s) or other.
enum TokCharClass: UInt8 {
    case other = 0, letter = 1, number = 2, space = 3
}

/// Classes of every BMP scalar, computed once.
private let tokBMPClasses: [UInt8] = {
    var t = [UInt8](repeating: 0, count: 0x10000)
    for u in 0..<0x10000 { t[u] = tokComputeClass(UInt32(u)).rawValue }
    return t
}()

private func tokComputeClass(_ u: UInt32) -> TokCharClass {
    guard let s = Unicode.Scalar(u) else { return .other }
    let p = s.properties
    if p.isWhitespace { return .space }
    switch p.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
        return .letter
    case .decimalNumber, .letterNumber, .otherNumber:
        return .number
    default:
        return .other
    }
}

@inline(__always)
func tokCharClass(_ u: UInt32) -> TokCharClass {
    if u < 0x80 {
        if (u >= 0x61 && u <= 0x7A) || (u >= 0x41 && u <= 0x5A) { return .letter }
        if u >= 0x30 && u <= 0x39 { return .number }
        if u == 0x20 || (u >= 0x09 && u <= 0x0D) { return .space }
        return .other
    }
    if u < 0x10000 { return TokCharClass(rawValue: tokBMPClasses[Int(u)]) ?? .other }
    return tokComputeClass(u)
}

// MARK: - Scanners

/// A piece decoded to scalars, their classes and byte offsets, scanned by the known patterns.
private struct TokScalarScan {
    var sc: [UInt32] = []
    var cls: [TokCharClass] = []
    var off: [Int] = []  // byte offset of scalar i; off[n] = byte count
    var n = 0

    init(_ bytes: [UInt8]) {
        sc.reserveCapacity(bytes.count)
        cls.reserveCapacity(bytes.count)
        off.reserveCapacity(bytes.count + 1)
        bytes.withUnsafeBufferPointer { p in
            var i = 0
            while i < p.count {
                let (u, l) = tokUTF8Scalar(p, i)
                sc.append(u)
                cls.append(tokCharClass(u))
                off.append(i)
                i += l
            }
            off.append(p.count)
        }
        n = sc.count
    }

    @inline(__always) func isNewline(_ i: Int) -> Bool { sc[i] == 0x0A || sc[i] == 0x0D }

    /// End of the run of class `k` starting at i.
    @inline(__always) func run(_ i: Int, _ k: TokCharClass) -> Int {
        var j = i
        while j < n && cls[j] == k { j += 1 }
        return j
    }

    /// ` ?K+` at i: end, or nil.
    @inline(__always) func optSpaceRun(_ i: Int, _ k: TokCharClass) -> Int? {
        if cls[i] == k { return run(i, k) }
        if sc[i] == 0x20 && i + 1 < n && cls[i + 1] == k { return run(i + 1, k) }
        return nil
    }

    /// `\s+(?!\S)|\s+` at a white-space scalar i.
    @inline(__always) func spaces(_ i: Int) -> Int {
        let j = run(i, .space)
        if j == n || j - i < 2 { return j }
        return j - 1
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at i (ASCII case-insensitive when `fold`): end, or nil.
    @inline(__always) func contraction(_ i: Int, fold: Bool) -> Int? {
        guard sc[i] == 0x27, i + 1 < n else { return nil }
        @inline(__always) func low(_ u: UInt32) -> UInt32 { fold && u >= 0x41 && u <= 0x5A ? u + 32 : u }
        let c1 = low(sc[i + 1])
        // s t m d
        if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { return i + 2 }
        guard i + 2 < n else { return nil }
        let c2 = low(sc[i + 2])
        if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) { return i + 3 }
        return nil
    }

    func ranges(_ ends: (Int) -> Int) -> [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(n / 4 + 1)
        var i = 0
        while i < n {
            let j = max(ends(i), i + 1)
            out.append(off[i]..<off[j])
            i = j
        }
        return out
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    func gpt2() -> [Range<Int>] {
        ranges { i in
            if let e = contraction(i, fold: false) { return e }
            if let e = optSpaceRun(i, .letter) { return e }
            if let e = optSpaceRun(i, .number) { return e }
            if let e = optSpaceRun(i, .other) { return e }
            return spaces(i)
        }
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    func llama3(maxDigits: Int) -> [Range<Int>] {
        ranges { i in
            if let e = contraction(i, fold: true) { return e }
            let c = cls[i]
            if c == .letter { return run(i, .letter) }
            if c != .number && !isNewline(i) && i + 1 < n && cls[i + 1] == .letter { return run(i + 1, .letter) }
            if c == .number { return min(run(i, .number), i + maxDigits) }
            if var e = optSpaceRun(i, .other) {
                while e < n && isNewline(e) { e += 1 }
                return e
            }
            // c is white space here.
            let j = run(i, .space)
            var p = j - 1
            while p >= i && !isNewline(p) { p -= 1 }
            if p >= i { return p + 1 }
            return spaces(i)
        }
    }
}
