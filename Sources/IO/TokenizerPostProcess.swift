// tokenizer.json post-processors, for single sequences: TemplateProcessing (Llama 2's "<s> $A",
// Llama 3's "<|begin_of_text|> $A"), RobertaProcessing / BertProcessing (cls $A sep), ByteLevel
// (offsets only: no change to ids) and Sequence. Applied only when special tokens are asked for.

indirect enum TokenPostProcessor {
    /// Ids before and after the sequence.
    case template(before: [Int32], after: [Int32])
    case sequence([TokenPostProcessor])
    case none

    static let supported = "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence"

    static func parse(_ v: JSONValue?, _ f: TokenizerFields, _ field: String,
                      validId: (Int) -> Bool) throws -> TokenPostProcessor {
        guard let v, !v.isNull else { return .none }
        let o = try f.object(v, field)
        let type = try f.type(o, field)
        switch type {
        case "Sequence":
            let list = try f.array(o["processors"], field + ".processors")
            return .sequence(try list.enumerated().map { i, p in
                try parse(p, f, "\(field).processors[\(i)]", validId: validId)
            })
        case "ByteLevel":
            return .none
        case "TemplateProcessing":
            // special_tokens: {name: {"id": name, "ids": [..], "tokens": [..]}}
            var specials: [String: [Int32]] = [:]
            if let st = o["special_tokens"], !st.isNull {
                for (name, entry) in try f.object(st, field + ".special_tokens") {
                    let ef = "\(field).special_tokens[\(quoted(name))]"
                    let e = try f.object(entry, ef)
                    let ids = try f.array(e["ids"], ef + ".ids").enumerated().map { i, x -> Int32 in
                        let id = try f.id(x, "\(ef).ids[\(i)]")
                        guard validId(id) else { throw f.fail("\(ef).ids[\(i)]", "id \(id) is not in the vocab") }
                        return Int32(id)
                    }
                    specials[name] = ids
                }
            }
            let single = try f.array(o["single"], field + ".single")
            var before: [Int32] = [], after: [Int32] = []
            var seenA = false
            for (i, item) in single.enumerated() {
                let itf = "\(field).single[\(i)]"
                let io = try f.object(item, itf)
                if let s = io["SpecialToken"] {
                    let name = try f.string(try f.object(s, itf + ".SpecialToken")["id"], itf + ".SpecialToken.id")
                    guard let ids = specials[name] else {
                        throw f.fail(itf, "special token \(quoted(name)) is missing from special_tokens")
                    }
                    if seenA { after += ids } else { before += ids }
                } else if let s = io["Sequence"] {
                    let which = try f.string(try f.object(s, itf + ".Sequence")["id"], itf + ".Sequence.id")
                    guard which == "A" else { throw f.fail(itf, "a single-sequence template can only use $A, got $\(which)") }
                    guard !seenA else { throw f.fail(itf, "$A appears twice") }
                    seenA = true
                } else {
                    throw f.fail(itf, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}")
                }
            }
            guard seenA else { throw f.fail(field + ".single", "template has no $A") }
            return .template(before: before, after: after)
        case "RobertaProcessing", "BertProcessing":
            // "cls": ["<s>", 0], "sep": ["</s>", 2]
            func pair(_ key: String) throws -> Int32 {
                let a = try f.array(o[key], "\(field).\(key)")
                guard a.count == 2 else { throw f.fail("\(field).\(key)", "expected [token, id]") }
                let id = try f.id(a[1], "\(field).\(key)[1]")
                guard validId(id) else { throw f.fail("\(field).\(key)", "id \(id) is not in the vocab") }
                return Int32(id)
            }
            return .template(before: [try pair("cls")], after: [try pair("sep")])
        default:
            throw f.fail(field, "unsupported post_processor type \(quoted(type)) (qlora supports \(supported))")
        }
    }

    func apply(_ ids: [Int32]) -> [Int32] {
        switch self {
        case .none: return ids
        case .template(let before, let after): return before + ids + after
        case .sequence(let list):
            var t = ids
            for p in list { t = p.apply(t) }
            return t
        }
    }

    /// Ids added before the sequence.
    var prefixIds: [Int32] {
        switch self {
        case .none: return []
        case .template(let before, _): return before
        case .sequence(let list): return list.reversed().flatMap { $0.prefixIds }  // later ones wrap earlier ones
        }
    }

    /// Ids added after the sequence.
    var suffixIds: [Int32] {
        switch self {
        case .none: return []
        case .template(_, let after): return after
        case .sequence(let list): return list.flatMap { $0.suffixIds }
        }
    }
}
