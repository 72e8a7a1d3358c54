// added_tokens: tokens found in the text before the model runs and never split. Those with
// normalized == false are matched in the raw text; those with normalized == true in each
// normalized piece (their content normalized the same way). Matching is leftmost-longest and
// non-overlapping, then single_word / lstrip / rstrip apply, as in `tokenizers`' AddedVocabulary.

struct TokAddedToken {
    let content: String
    let bytes: [UInt8]
    let id: Int32
    let special: Bool
    let singleWord: Bool
    let lstrip: Bool
    let rstrip: Bool
    let normalized: Bool
}

/// A piece of text between added tokens (`id` nil), or an added token's span.
struct TokAddedSplit {
    let range: Range<Int>
    let id: Int32?
}

struct TokAddedMatcher {
    /// Patterns (bytes) and their tokens.
    private let patterns: [[UInt8]]
    private let tokens: [TokAddedToken]
    /// First byte -> pattern indices, longest first.
    private let byFirst: [[Int32]]

    var isEmpty: Bool { patterns.isEmpty }

    /// `patterns[i]` is the text matched for `tokens[i]` (the content, or its normalized form).
    init(_ list: [(pattern: [UInt8], token: TokAddedToken)]) {
        let kept = list.filter { !$0.pattern.isEmpty }
        patterns = kept.map { $0.pattern }
        tokens = kept.map { $0.token }
        var table = [[Int32]](repeating: [], count: 256)
        for (i, p) in patterns.enumerated() { table[Int(p[0])].append(Int32(i)) }
        for b in 0..<256 where table[b].count > 1 {
            // Longest first; equal lengths keep their order (the first added wins).
            table[b] = table[b].enumerated().sorted { x, y in
                let lx = kept[Int(x.element)].pattern.count, ly = kept[Int(y.element)].pattern.count
                return lx != ly ? lx > ly : x.offset < y.offset
            }.map { $0.element }
        }
        byFirst = table
    }

    /// Cuts `s` into added-token spans and the text between them (covering all of `s`; an empty
    /// `s` gives one empty piece).
    func split(_ s: [UInt8]) -> [TokAddedSplit] {
        if s.isEmpty { return [TokAddedSplit(range: 0..<0, id: nil)] }
        if patterns.isEmpty { return [TokAddedSplit(range: 0..<s.count, id: nil)] }
        var out: [TokAddedSplit] = []
        var startOffset = 0
        let n = s.count
        s.withUnsafeBufferPointer { p in
            var i = 0
            while i < n {
                var matched = -1
                for k in byFirst[Int(p[i])] {
                    let pat = patterns[Int(k)]
                    if i + pat.count <= n && pat.withUnsafeBufferPointer({ q in
                        var j = 1
                        while j < q.count && q[j] == p[i + j] { j += 1 }
                        return j == q.count
                    }) {
                        matched = Int(k)
                        break
                    }
                }
                if matched < 0 {
                    i += 1
                    continue
                }
                var start = i
                var stop = i + patterns[matched].count
                i = stop
                let token = tokens[matched]
                if token.singleWord {
                    let startSpace = start == 0 || !tokEndsWithWord(p, start)
                    let stopSpace = stop == n || !tokStartsWithWord(p, stop)
                    if !startSpace || !stopSpace { continue }
                }
                if token.lstrip {
                    start = max(tokLeftmostSpaceAtEnd(p, start), startOffset)
                }
                if token.rstrip {
                    stop = tokRightmostSpaceAtStart(p, stop)
                }
                if startOffset < start { out.append(TokAddedSplit(range: startOffset..<start, id: nil)) }
                out.append(TokAddedSplit(range: start..<stop, id: token.id))
                startOffset = stop
                i = max(i, stop)
            }
        }
        if startOffset != n { out.append(TokAddedSplit(range: startOffset..<n, id: nil)) }
        return out
    }
}

// `\w` of Rust's regex crate: Alphabetic, marks, decimal numbers, connector punctuation, joiners.
private func tokIsWordScalar(_ u: UInt32) -> Bool {
    if u < 0x80 {
        return (u >= 0x30 && u <= 0x39) || (u >= 0x41 && u <= 0x5A) || (u >= 0x61 && u <= 0x7A) || u == 0x5F
    }
    guard let s = Unicode.Scalar(u) else { return false }
    let p = s.properties
    if p.isAlphabetic || p.isJoinControl { return true }
    switch p.generalCategory {
    case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
    default: return false
    }
}

/// The scalar ending at byte `end` (exclusive) of valid UTF-8.
private func tokScalarBefore(_ p: UnsafeBufferPointer<UInt8>, _ end: Int) -> (UInt32, Int) {
    var s = end - 1
    while s > 0 && (p[s] & 0xC0) == 0x80 { s -= 1 }
    return (tokUTF8Scalar(p, s).0, s)
}

private func tokEndsWithWord(_ p: UnsafeBufferPointer<UInt8>, _ end: Int) -> Bool {
    end > 0 && tokIsWordScalar(tokScalarBefore(p, end).0)
}

private func tokStartsWithWord(_ p: UnsafeBufferPointer<UInt8>, _ start: Int) -> Bool {
    start < p.count && tokIsWordScalar(tokUTF8Scalar(p, start).0)
}

/// Start of the white space run ending at `end`.
private func tokLeftmostSpaceAtEnd(_ p: UnsafeBufferPointer<UInt8>, _ end: Int) -> Int {
    var e = end
    while e > 0 {
        let (u, s) = tokScalarBefore(p, e)
        if !tokIsWhiteSpace(u) { break }
        e = s
    }
    return e
}

/// End of the white space run starting at `start`.
private func tokRightmostSpaceAtStart(_ p: UnsafeBufferPointer<UInt8>, _ start: Int) -> Int {
    var s = start
    while s < p.count {
        let (u, l) = tokUTF8Scalar(p, s)
        if !tokIsWhiteSpace(u) { break }
        s += l
    }
    return s
}
