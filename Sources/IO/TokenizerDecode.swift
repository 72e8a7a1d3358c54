// tokenizer.json decoders: ByteLevel (characters back to bytes, lossy UTF-8), Metaspace ("▁"
// back to spaces), and Llama 2's Sequence[Replace("▁", " "), ByteFallback (<0xNN> tokens back
// to bytes), Fuse, Strip(" ", 1, 0)]. Each works on the list of token strings (UTF-8 bytes), in
// the order and with the quirks of the Hugging Face `tokenizers` library.

indirect enum TokenDecoder {
    case sequence([TokenDecoder])
    case byteLevel
    case metaspace(replacement: UInt32, prependFirst: Bool)
    case replace(TokPattern, [UInt8])
    case byteFallback
    case fuse
    case strip(content: UInt32, start: Int, stop: Int)

    static let supported = "Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip"

    static func parse(_ v: JSONValue?, _ f: TokenizerFields, _ field: String) throws -> TokenDecoder? {
        guard let v, !v.isNull else { return nil }
        let o = try f.object(v, field)
        let type = try f.type(o, field)
        switch type {
        case "Sequence":
            let list = try f.array(o["decoders"], field + ".decoders")
            return .sequence(try list.enumerated().compactMap { i, d in try parse(d, f, "\(field).decoders[\(i)]") })
        case "ByteLevel":
            return .byteLevel
        case "Metaspace":
            let replacement = try f.character(o["replacement"], field + ".replacement")
            let scheme = try TokenPreTokenizer.metaspaceScheme(o, f, field)
            return .metaspace(replacement: replacement.value, prependFirst: scheme != .never)
        case "Replace":
            return .replace(try f.pattern(o["pattern"], field + ".pattern"),
                            Array(try f.string(o["content"], field + ".content").utf8))
        case "ByteFallback":
            return .byteFallback
        case "Fuse":
            return .fuse
        case "Strip":
            return .strip(content: try f.character(o["content"], field + ".content").value,
                          start: try f.count(o["start"], field + ".start", default: 0),
                          stop: try f.count(o["stop"], field + ".stop", default: 0))
        default:
            throw f.fail(field, "unsupported decoder type \(quoted(type)) (qlora supports \(supported))")
        }
    }

    func decodeChain(_ tokens: [[UInt8]]) throws -> [[UInt8]] {
        switch self {
        case .sequence(let list):
            var t = tokens
            for d in list { t = try d.decodeChain(t) }
            return t
        case .byteLevel:
            // Each token's characters back to bytes (a token with a character outside the map
            // keeps its own UTF-8), all joined, then decoded lossily.
            var bytes: [UInt8] = []
            for t in tokens {
                let start = bytes.count
                var ok = true
                t.withUnsafeBufferPointer { p in
                    var i = 0
                    while i < p.count {
                        let (u, l) = tokUTF8Scalar(p, i)
                        guard u < 0x144, case let b = TokByteLevelMap.scalarToByte[Int(u)], b >= 0 else {
                            ok = false
                            return
                        }
                        bytes.append(UInt8(b))
                        i += l
                    }
                }
                if !ok {
                    bytes.removeSubrange(start...)
                    bytes.append(contentsOf: t)
                }
            }
            return [tokLossyUTF8(bytes)]
        case .metaspace(let replacement, let prependFirst):
            return tokens.enumerated().map { i, t in
                var out: [UInt8] = []
                out.reserveCapacity(t.count)
                for u in tokScalars(t) {
                    if u == replacement {
                        if !(i == 0 && prependFirst) { out.append(0x20) }
                    } else {
                        tokAppendUTF8(u, to: &out)
                    }
                }
                return out
            }
        case .replace(let pattern, let content):
            return try tokens.map { try pattern.replace($0, with: content) }
        case .byteFallback:
            var out: [[UInt8]] = []
            var pending: [UInt8] = []
            func flush() {
                if pending.isEmpty { return }
                if tokIsValidUTF8(pending) {
                    out.append(pending)
                } else {
                    for _ in pending { out.append([0xEF, 0xBF, 0xBD]) }  // U+FFFD per byte
                }
                pending.removeAll()
            }
            for t in tokens {
                if let b = TokenDecoder.fallbackByte(t) {
                    pending.append(b)
                } else {
                    flush()
                    out.append(t)
                }
            }
            flush()
            return out
        case .fuse:
            return [tokens.flatMap { $0 }]
        case .strip(let content, let start, let stop):
            return tokens.map { t in
                let chars = tokScalars(t)
                var lo = 0
                while lo < min(start, chars.count) && chars[lo] == content { lo += 1 }
                var hi = chars.count
                var k = 0
                while k < stop && hi > lo && chars[hi - 1] == content {
                    hi -= 1
                    k += 1
                }
                if lo == 0 && hi == chars.count { return t }
                var out: [UInt8] = []
                for u in chars[lo..<hi] { tokAppendUTF8(u, to: &out) }
                return out
            }
        }
    }

    /// The byte of a "<0xNN>" token (6 bytes; NN parsed like Rust's u8::from_str_radix(_, 16),
    /// which also takes "+N"), else nil.
    static func fallbackByte(_ t: [UInt8]) -> UInt8? {
        guard t.count == 6, t[0] == 0x3C, t[1] == 0x30, t[2] == 0x78, t[5] == 0x3E else { return nil }
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        if t[3] == 0x2B { return hex(t[4]) }
        guard let hi = hex(t[3]), let lo = hex(t[4]) else { return nil }
        return hi << 4 | lo
    }
}
