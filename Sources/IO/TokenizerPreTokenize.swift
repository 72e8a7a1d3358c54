// tokenizer.json pre-tokenizers: ByteLevel (GPT-2 regex + the bytes_to_unicode map), Split
// (a regex or string with one of the five delimiter behaviours; Llama 3 / Qwen2 use
// Sequence[Split(regex, Isolated), ByteLevel(use_regex false)]), Metaspace (Llama 2 converted by
// newer tokenizers, Mistral v0.3), Digits (SmolLM) and Sequence. Each cuts a piece of text into
// words; the BPE model then runs on each word on its own.

/// A run of text not yet tokenized: UTF-8 bytes, and whether it starts at the beginning of the
/// encoded string (Metaspace's prepend_scheme "first" adds "▁" only there).
struct TokPiece {
    var bytes: [UInt8]
    var atOrigin: Bool
}

enum TokSplitBehavior: String {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"

    /// The kept ranges, given segments covering the text in order (range, is a match).
    func apply(_ segments: [(Range<Int>, Bool)]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(segments.count)
        switch self {
        case .isolated:
            return segments.map { $0.0 }
        case .removed:
            return segments.compactMap { $0.1 ? nil : $0.0 }
        case .contiguous:
            var previous = false
            for (r, m) in segments {
                if m == previous, let last = out.last {
                    out[out.count - 1] = last.lowerBound..<r.upperBound
                } else {
                    out.append(r)
                }
                previous = m
            }
        case .mergedWithPrevious:
            var previous = false
            for (r, m) in segments {
                if m && !previous, let last = out.last {
                    out[out.count - 1] = last.lowerBound..<r.upperBound
                } else {
                    out.append(r)
                }
                previous = m
            }
        case .mergedWithNext:
            var previous = false
            for (r, m) in segments.reversed() {
                if m && !previous, let last = out.last {
                    out[out.count - 1] = r.lowerBound..<last.upperBound
                } else {
                    out.append(r)
                }
                previous = m
            }
            out.reverse()
        }
        return out
    }
}

/// Segments covering 0..<count from sorted, non-overlapping matches: (range, is a match).
func tokSegments(_ matches: [Range<Int>], count: Int, invert: Bool = false) -> [(Range<Int>, Bool)] {
    if count == 0 { return [(0..<0, invert)] }
    var out: [(Range<Int>, Bool)] = []
    out.reserveCapacity(matches.count * 2 + 1)
    var prev = 0
    for r in matches {
        if prev != r.lowerBound { out.append((prev..<r.lowerBound, invert)) }
        out.append((r, !invert))
        prev = r.upperBound
    }
    if prev != count { out.append((prev..<count, invert)) }
    return out
}

/// Cuts `piece` into the non-empty kept ranges; only the first keeps `atOrigin`.
@inline(__always)
func tokSplitPiece(_ piece: TokPiece, _ kept: [Range<Int>], into out: inout [TokPiece]) {
    var first = true
    for r in kept where !r.isEmpty {
        out.append(TokPiece(bytes: Array(piece.bytes[r]), atOrigin: piece.atOrigin && first && r.lowerBound == 0))
        first = false
    }
}

/// Byte ranges of the single scalars satisfying `pred`.
func tokScalarMatches(_ s: [UInt8], _ pred: (UInt32) -> Bool) -> [Range<Int>] {
    var out: [Range<Int>] = []
    s.withUnsafeBufferPointer { p in
        var i = 0
        while i < p.count {
            let (u, l) = tokUTF8Scalar(p, i)
            if pred(u) { out.append(i..<(i + l)) }
            i += l
        }
    }
    return out
}

// MARK: - bytes_to_unicode

/// GPT-2's reversible map from bytes to printable characters: printable Latin-1 bytes map to
/// themselves, the 68 others to U+0100 and up, in byte order.
enum TokByteLevelMap {
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = UInt32(b)
            } else {
                table[b] = 256 + n
                n += 1
            }
        }
        return table
    }()

    /// UTF-8 of each byte's character.
    static let byteToUTF8: [[UInt8]] = byteToScalar.map { u in
        var out: [UInt8] = []
        tokAppendUTF8(u, to: &out)
        return out
    }

    /// Character -> byte (characters U+0021...U+0143), -1 where none.
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for (b, u) in byteToScalar.enumerated() { table[Int(u)] = Int16(b) }
        return table
    }()

    static func encode(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(contentsOf: byteToUTF8[Int(b)]) }
        return out
    }
}

// MARK: - Pre-tokenizers

indirect enum TokenPreTokenizer {
    enum PrependScheme: String { case first, always, never }

    case sequence([TokenPreTokenizer])
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(TokPattern, TokSplitBehavior, invert: Bool)
    case metaspace(replacement: UInt32, scheme: PrependScheme, split: Bool)
    case digits(individual: Bool)

    static let supported = "Sequence, ByteLevel, Split, Metaspace, Digits"

    static func parse(_ v: JSONValue?, _ f: TokenizerFields, _ field: String) throws -> TokenPreTokenizer? {
        guard let v, !v.isNull else { return nil }
        let o = try f.object(v, field)
        let type = try f.type(o, field)
        switch type {
        case "Sequence":
            let list = try f.array(o["pretokenizers"], field + ".pretokenizers")
            return .sequence(try list.enumerated().compactMap { i, p in
                try parse(p, f, "\(field).pretokenizers[\(i)]")
            })
        case "ByteLevel":
            return .byteLevel(addPrefixSpace: try f.bool(o["add_prefix_space"], field + ".add_prefix_space", default: true),
                              useRegex: try f.bool(o["use_regex"], field + ".use_regex", default: true))
        case "Split":
            let pattern = try f.pattern(o["pattern"], field + ".pattern")
            let name = try f.string(o["behavior"], field + ".behavior")
            guard let behavior = TokSplitBehavior(rawValue: name) else {
                throw f.fail(field + ".behavior", "unknown behavior \(quoted(name)) (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)")
            }
            return .split(pattern, behavior, invert: try f.bool(o["invert"], field + ".invert", default: false))
        case "Metaspace":
            let replacement = try f.character(o["replacement"], field + ".replacement")
            return .metaspace(replacement: replacement.value,
                              scheme: try metaspaceScheme(o, f, field),
                              split: try f.bool(o["split"], field + ".split", default: true))
        case "Digits":
            return .digits(individual: try f.bool(o["individual_digits"], field + ".individual_digits", default: false))
        default:
            throw f.fail(field, "unsupported pre_tokenizer type \(quoted(type)) (qlora supports \(supported))")
        }
    }

    /// prepend_scheme ("first" / "always" / "never"), or the older add_prefix_space flag.
    static func metaspaceScheme(_ o: JSONObject, _ f: TokenizerFields, _ field: String) throws -> PrependScheme {
        var scheme = PrependScheme.always
        if let s = try f.optString(o["prepend_scheme"], field + ".prepend_scheme") {
            guard let p = PrependScheme(rawValue: s) else {
                throw f.fail(field + ".prepend_scheme", "unknown scheme \(quoted(s)) (expected first, always or never)")
            }
            scheme = p
        }
        if let v = o["add_prefix_space"], !v.isNull,
           try !f.bool(v, field + ".add_prefix_space", default: true) {
            scheme = .never
        }
        return scheme
    }

    func apply(_ pieces: [TokPiece]) throws -> [TokPiece] {
        switch self {
        case .sequence(let list):
            var p = pieces
            for t in list { p = try t.apply(p) }
            return p
        case .byteLevel(let addPrefixSpace, let useRegex):
            var out: [TokPiece] = []
            out.reserveCapacity(pieces.count * 2)
            for var piece in pieces {
                if addPrefixSpace && piece.bytes.first != 0x20 { piece.bytes.insert(0x20, at: 0) }
                let start = out.count
                if useRegex {
                    tokSplitPiece(piece, try TokenRegex.gpt2.matches(piece.bytes), into: &out)
                } else if !piece.bytes.isEmpty {
                    out.append(piece)
                }
                for i in start..<out.count { out[i].bytes = TokByteLevelMap.encode(out[i].bytes) }
            }
            return out
        case .split(let pattern, let behavior, let invert):
            var out: [TokPiece] = []
            for piece in pieces {
                let segs = tokSegments(try pattern.matches(piece.bytes), count: piece.bytes.count, invert: invert)
                tokSplitPiece(piece, behavior.apply(segs), into: &out)
            }
            return out
        case .metaspace(let replacement, let scheme, let split):
            var rep: [UInt8] = []
            tokAppendUTF8(replacement, to: &rep)
            var out: [TokPiece] = []
            for var piece in pieces {
                piece.bytes = try TokPattern.literal([0x20]).replace(piece.bytes, with: rep)
                let starts = piece.bytes.starts(with: rep)
                if !starts && (scheme == .always || (scheme == .first && piece.atOrigin)) {
                    piece.bytes = rep + piece.bytes
                }
                if split {
                    let segs = tokSegments(tokScalarMatches(piece.bytes) { $0 == replacement }, count: piece.bytes.count)
                    tokSplitPiece(piece, TokSplitBehavior.mergedWithNext.apply(segs), into: &out)
                } else if !piece.bytes.isEmpty {
                    out.append(piece)
                }
            }
            return out
        case .digits(let individual):
            var out: [TokPiece] = []
            for piece in pieces {
                let segs = tokSegments(tokScalarMatches(piece.bytes) { tokCharClass($0) == .number }, count: piece.bytes.count)
                tokSplitPiece(piece, (individual ? TokSplitBehavior.isolated : .contiguous).apply(segs), into: &out)
            }
            return out
        }
    }
}
