// tokenizer.json normalizers: Sequence, Prepend (Llama 2's "▁"), Replace (" " -> "▁"), the
// Unicode forms (Qwen2 uses NFC), Lowercase and Strip. They run on each piece of text between
// added tokens, on UTF-8 bytes, exactly as the Hugging Face `tokenizers` library does.

import Foundation

/// What to match: a literal string or a regex (tokenizer.json {"String": ...} / {"Regex": ...}).
enum TokPattern {
    case literal([UInt8])
    case regex(TokenRegex)

    /// Non-overlapping, non-empty matches, left to right, as byte ranges.
    func matches(_ s: [UInt8]) throws -> [Range<Int>] {
        switch self {
        case .regex(let re): return try re.matches(s)
        case .literal(let p):
            guard !p.isEmpty, p.count <= s.count else { return [] }
            var out: [Range<Int>] = []
            let first = p[0], m = p.count
            var i = 0
            while i + m <= s.count {
                if s[i] == first {
                    var k = 1
                    while k < m && s[i + k] == p[k] { k += 1 }
                    if k == m {
                        out.append(i..<(i + m))
                        i += m
                        continue
                    }
                }
                i += 1
            }
            return out
        }
    }

    /// `s` with every match replaced by `content`.
    func replace(_ s: [UInt8], with content: [UInt8]) throws -> [UInt8] {
        let ms = try matches(s)
        if ms.isEmpty { return s }
        var out: [UInt8] = []
        out.reserveCapacity(s.count + ms.count * max(0, content.count - 1))
        var prev = 0
        for r in ms {
            out.append(contentsOf: s[prev..<r.lowerBound])
            out.append(contentsOf: content)
            prev = r.upperBound
        }
        out.append(contentsOf: s[prev...])
        return out
    }
}

indirect enum TokenNormalizer {
    enum Form: String { case nfc = "NFC", nfd = "NFD", nfkc = "NFKC", nfkd = "NFKD" }

    case sequence([TokenNormalizer])
    case prepend([UInt8])
    case replace(TokPattern, [UInt8])
    case unicode(Form)
    case lowercase
    case strip(left: Bool, right: Bool)

    static let supported = "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip"

    /// The normalizer described at `field` (nil for JSON null).
    static func parse(_ v: JSONValue?, _ f: TokenizerFields, _ field: String) throws -> TokenNormalizer? {
        guard let v, !v.isNull else { return nil }
        let o = try f.object(v, field)
        let type = try f.type(o, field)
        switch type {
        case "Sequence":
            let list = try f.array(o["normalizers"], field + ".normalizers")
            return .sequence(try list.enumerated().compactMap { i, n in
                try parse(n, f, "\(field).normalizers[\(i)]")
            })
        case "Prepend":
            return .prepend(Array(try f.string(o["prepend"], field + ".prepend").utf8))
        case "Replace":
            return .replace(try f.pattern(o["pattern"], field + ".pattern"),
                            Array(try f.string(o["content"], field + ".content").utf8))
        case "NFC", "NFD", "NFKC", "NFKD":
            return .unicode(Form(rawValue: type) ?? .nfc)
        case "Lowercase":
            return .lowercase
        case "Strip":
            return .strip(left: try f.bool(o["strip_left"], field + ".strip_left", default: true),
                          right: try f.bool(o["strip_right"], field + ".strip_right", default: true))
        default:
            throw f.fail(field, "unsupported normalizer type \(quoted(type)) (qlora supports \(supported))")
        }
    }

    func apply(_ s: [UInt8]) throws -> [UInt8] {
        switch self {
        case .sequence(let list):
            var t = s
            for n in list { t = try n.apply(t) }
            return t
        case .prepend(let p):
            return s.isEmpty ? s : p + s
        case .replace(let pattern, let content):
            return try pattern.replace(s, with: content)
        case .unicode(let form):
            if !s.contains(where: { $0 >= 0x80 }) { return s }  // ASCII is invariant under all four
            let str = String(decoding: s, as: UTF8.self)
            let out: String
            switch form {
            case .nfc: out = str.precomposedStringWithCanonicalMapping
            case .nfd: out = str.decomposedStringWithCanonicalMapping
            case .nfkc: out = str.precomposedStringWithCompatibilityMapping
            case .nfkd: out = str.decomposedStringWithCompatibilityMapping
            }
            return Array(out.utf8)
        case .lowercase:
            var out: [UInt8] = []
            out.reserveCapacity(s.count)
            for u in tokScalars(s) {
                if u >= 0x41 && u <= 0x5A {
                    out.append(UInt8(u + 32))
                } else if u < 0x80 {
                    out.append(UInt8(u))
                } else if let sc = Unicode.Scalar(u) {
                    out.append(contentsOf: Array(sc.properties.lowercaseMapping.utf8))
                }
            }
            return out
        case .strip(let left, let right):
            let scalars = tokScalars(s)
            var lo = 0, hi = scalars.count
            if left { while lo < hi && tokIsWhiteSpace(scalars[lo]) { lo += 1 } }
            if right { while hi > lo && tokIsWhiteSpace(scalars[hi - 1]) { hi -= 1 } }
            if lo == 0 && hi == scalars.count { return s }
            var out: [UInt8] = []
            for u in scalars[lo..<hi] { tokAppendUTF8(u, to: &out) }
            return out
        }
    }
}
