// The BPE model of tokenizer.json, as the Hugging Face `tokenizers` library runs it: a word is
// cut into characters (each looked up in the vocab, else its UTF-8 bytes as <0xNN> tokens when
// byte_fallback is on, else unk_token), then merged pair by pair, always the pair with the lowest
// merge rank first (leftmost on ties), with a heap of candidate merges per word. Merge ranks are
// looked up by the pair of ids in an open-addressing table. Words seen before come from a cache.
// Dropout is not supported.

struct BPEModel {
    /// Token bytes -> id.
    let vocab: [TokBytes: Int32]
    /// id -> token bytes (nil for ids the model vocab does not use).
    let tokens: [[UInt8]?]
    /// (left id, right id) -> merge rank.
    let mergeRanks: TokPairTable
    /// rank -> id of the merged token.
    let rankNewId: [Int32]
    /// Single-character tokens: the Basic Multilingual Plane by table (-1: none), the rest by
    /// dictionary.
    let bmpIds: [Int32]
    let scalarIds: [UInt32: Int32]
    /// <0xNN> ids by byte (-1 when absent); used only with byte_fallback.
    let fallbackIds: [Int32]
    let byteFallback: Bool
    let ignoreMerges: Bool
    let fuseUnk: Bool
    let unkName: String?
    let unkId: Int32?
    let prefix: [UInt8]?
    let suffix: [UInt8]?

    static let cacheMaxWordBytes = 256
    static let cacheMaxEntries = 1 << 18

    init(_ model: JSONObject, _ f: TokenizerFields) throws {
        let type = try f.optString(model["type"], "model.type") ?? "BPE"
        guard type == "BPE" else {
            throw f.fail("", "unsupported model type \(quoted(type)) (qlora supports BPE)")
        }
        if let d = model["dropout"], !d.isNull {
            guard let p = d.doubleValue else { throw f.fail("model.dropout", "expected a number or null, got \(tokDescribe(d))") }
            if p != 0 { throw f.fail("model.dropout", "BPE dropout (\(p)) is not supported: use null") }
        }
        byteFallback = try f.bool(model["byte_fallback"], "model.byte_fallback", default: false)
        ignoreMerges = try f.bool(model["ignore_merges"], "model.ignore_merges", default: false)
        fuseUnk = try f.bool(model["fuse_unk"], "model.fuse_unk", default: false)
        unkName = try f.optString(model["unk_token"], "model.unk_token")
        prefix = try f.optString(model["continuing_subword_prefix"], "model.continuing_subword_prefix").map { Array($0.utf8) }
        suffix = try f.optString(model["end_of_word_suffix"], "model.end_of_word_suffix").map { Array($0.utf8) }

        // Vocab: token -> id, ids unique.
        let vocabObject = try f.object(model["vocab"], "model.vocab")
        var vocab = [TokBytes: Int32](minimumCapacity: vocabObject.count)
        var tokens: [[UInt8]?] = []
        for (token, value) in vocabObject {
            let field = "model.vocab[\(quoted(token))]"
            let id = try f.id(value, field)
            if id >= tokens.count {
                tokens.append(contentsOf: repeatElement(nil, count: id + 1 - tokens.count))
            }
            if let other = tokens[id] {
                throw f.fail(field, "duplicate id \(id) (also used by \(quoted(String(decoding: other, as: UTF8.self))))")
            }
            let bytes = Array(token.utf8)
            tokens[id] = bytes
            vocab[TokBytes(bytes)] = Int32(id)
        }
        self.vocab = vocab
        self.tokens = tokens

        var bmp = [Int32](repeating: -1, count: 0x10000)
        var scalars: [UInt32: Int32] = [:]
        for (key, id) in vocab {
            let b = key.bytes
            guard !b.isEmpty, tokUTF8Length(b[0]) == b.count else { continue }
            let u = tokScalars(b)[0]
            if u < 0x10000 { bmp[Int(u)] = id } else { scalars[u] = id }
        }
        bmpIds = bmp
        scalarIds = scalars

        var fallback = [Int32](repeating: -1, count: 256)
        let hex = Array("0123456789ABCDEF".utf8)
        for b in 0..<256 {
            let name: [UInt8] = Array("<0x".utf8) + [hex[b >> 4], hex[b & 15]] + [UInt8(ascii: ">")]
            if let id = vocab[TokBytes(name)] { fallback[b] = id }
        }
        fallbackIds = fallback

        if let unkName {
            unkId = vocab[TokBytes(unkName)]
        } else {
            unkId = nil
        }

        // Merges: "a b" strings or [a, b] pairs, ranked by position.
        let merges = try f.array(model["merges"] ?? .array([]), "model.merges")
        var ranks = TokPairTable(capacity: merges.count)
        var newIds: [Int32] = []
        newIds.reserveCapacity(merges.count)
        for (rank, m) in merges.enumerated() {
            let field = "model.merges[\(rank)]"
            let a: String, b: String
            switch m {
            case .string(let s):
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw f.fail(field, "expected two tokens separated by one space, got \(quoted(s))")
                }
                a = String(parts[0]); b = String(parts[1])
            case .array(let pair):
                guard pair.count == 2, let x = pair[0].stringValue, let y = pair[1].stringValue else {
                    throw f.fail(field, "expected a pair of token strings, got \(tokDescribe(m))")
                }
                a = x; b = y
            default:
                throw f.fail(field, "expected \"a b\" or [\"a\", \"b\"], got \(tokDescribe(m))")
            }
            let ab = Array(a.utf8), bb = Array(b.utf8)
            guard let ia = vocab[TokBytes(ab)] else { throw f.fail(field, "token \(quoted(a)) is not in the vocab") }
            guard let ib = vocab[TokBytes(bb)] else { throw f.fail(field, "token \(quoted(b)) is not in the vocab") }
            var merged = ab
            if let prefix, bb.starts(with: prefix) {
                merged.append(contentsOf: bb[prefix.count...])
            } else {
                merged.append(contentsOf: bb)
            }
            guard let inew = vocab[TokBytes(merged)] else {
                throw f.fail(field, "merged token \(quoted(String(decoding: merged, as: UTF8.self))) is not in the vocab")
            }
            ranks.set(ia, ib, UInt32(rank))  // a repeated pair keeps its last rank
            newIds.append(inew)
        }
        mergeRanks = ranks
        rankNewId = newIds
    }

    @inline(__always)
    func rank(_ a: Int32, _ b: Int32) -> UInt32? { mergeRanks.get(a, b) }
}

/// Per-call working state of the BPE model (cache and scratch buffers); one per Tokenizer,
/// used under its lock.
struct BPEState {
    var cache: [TokBytes: [Int32]] = [:]
    var ids: [Int32] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    var alive: [Bool] = []
    var heap: [UInt64] = []
}

/// A missing unk_token, reported by the caller with the file name.
struct BPEMissingUnk: Error {
    let name: String
}

extension BPEModel {
    /// Appends the ids of `word` (one pre-tokenized word, UTF-8) to `out`.
    func tokenize(_ word: [UInt8], _ state: inout BPEState, into out: inout [Int32]) throws {
        if word.isEmpty { return }
        let key = TokBytes(word)
        if ignoreMerges, let id = vocab[key] {
            out.append(id)
            return
        }
        if let hit = state.cache[key] {
            out.append(contentsOf: hit)
            return
        }
        let start = out.count
        try mergeWord(word, &state, into: &out)
        if word.count < BPEModel.cacheMaxWordBytes {
            if state.cache.count >= BPEModel.cacheMaxEntries { state.cache.removeAll(keepingCapacity: true) }
            state.cache[key] = Array(out[start...])
        }
    }

    private func mergeWord(_ word: [UInt8], _ st: inout BPEState, into out: inout [Int32]) throws {
        st.ids.removeAll(keepingCapacity: true)
        var pendingUnk: Int32? = nil
        try word.withUnsafeBufferPointer { p in
            let n = p.count
            var i = 0
            while i < n {
                let (u, l) = tokUTF8Scalar(p, i)
                let isFirst = i == 0, isLast = i + l == n
                var composed: [UInt8]? = nil
                var found: Int32? = nil
                if (prefix != nil && !isFirst) || (suffix != nil && isLast) {
                    var c: [UInt8] = []
                    if !isFirst, let prefix { c.append(contentsOf: prefix) }
                    c.append(contentsOf: p[i..<(i + l)])
                    if isLast, let suffix { c.append(contentsOf: suffix) }
                    found = vocab[TokBytes(c)]
                    composed = c
                } else if u < 0x10000 {
                    let id = bmpIds[Int(u)]
                    if id >= 0 { found = id }
                } else {
                    found = scalarIds[u]
                }
                i += l
                if let id = found {
                    if let unk = pendingUnk {
                        st.ids.append(unk)
                        pendingUnk = nil
                    }
                    st.ids.append(id)
                    continue
                }
                if byteFallback {
                    let bytes = composed ?? Array(p[(i - l)..<i])
                    if bytes.allSatisfy({ fallbackIds[Int($0)] >= 0 }) {
                        for b in bytes { st.ids.append(fallbackIds[Int(b)]) }
                        continue
                    }
                }
                if let unkName {
                    guard let unkId else { throw BPEMissingUnk(name: unkName) }
                    if let unk = pendingUnk {
                        if !fuseUnk {
                            st.ids.append(unk)
                            pendingUnk = unkId
                        }
                    } else {
                        pendingUnk = unkId
                    }
                }
            }
        }
        if let unk = pendingUnk { st.ids.append(unk) }
        mergeAll(&st)
        let m = st.ids.count
        for k in 0..<m where st.alive[k] { out.append(st.ids[k]) }
    }

    /// Applies merges to st.ids (the symbols of one word), lowest rank first, leftmost on ties;
    /// merged-away symbols end with alive == false.
    private func mergeAll(_ st: inout BPEState) {
        let m = st.ids.count
        st.prev.removeAll(keepingCapacity: true)
        st.next.removeAll(keepingCapacity: true)
        st.alive.removeAll(keepingCapacity: true)
        st.heap.removeAll(keepingCapacity: true)
        for k in 0..<m {
            st.prev.append(Int32(k - 1))
            st.next.append(k + 1 < m ? Int32(k + 1) : -1)
            st.alive.append(true)
        }
        if m < 2 || mergeRanks.isEmpty { return }
        for k in 0..<(m - 1) {
            if let r = rank(st.ids[k], st.ids[k + 1]) { tokHeapPush(&st.heap, UInt64(r) << 32 | UInt64(k)) }
        }
        while let top = tokHeapPop(&st.heap) {
            let r = Int(top >> 32), pos = Int(top & 0xFFFF_FFFF)
            if !st.alive[pos] { continue }
            let nx = Int(st.next[pos])
            if nx < 0 { continue }
            let newId = rankNewId[r]
            guard let cur = rank(st.ids[pos], st.ids[nx]), rankNewId[Int(cur)] == newId else { continue }
            // Merge pos with nx.
            st.ids[pos] = newId
            let after = st.next[nx]
            st.next[pos] = after
            st.alive[nx] = false
            if after >= 0 && Int(after) < m { st.prev[Int(after)] = Int32(pos) }
            let pv = Int(st.prev[pos])
            if pv >= 0, let r2 = rank(st.ids[pv], newId) {
                tokHeapPush(&st.heap, UInt64(r2) << 32 | UInt64(pv))
            }
            if after >= 0 && Int(after) < m, let r2 = rank(newId, st.ids[Int(after)]) {
                tokHeapPush(&st.heap, UInt64(r2) << 32 | UInt64(pos))
            }
        }
    }
}

// MARK: - Min-heap of (rank << 32 | position)

@inline(__always)
private func tokHeapPush(_ h: inout [UInt64], _ v: UInt64) {
    h.append(v)
    var i = h.count - 1
    while i > 0 {
        let parent = (i - 1) >> 1
        if h[parent] <= v { break }
        h[i] = h[parent]
        i = parent
    }
    h[i] = v
}

@inline(__always)
private func tokHeapPop(_ h: inout [UInt64]) -> UInt64? {
    guard let last = h.popLast() else { return nil }
    if h.isEmpty { return last }
    let top = h[0]
    let n = h.count
    var i = 0
    while true {
        let l = 2 * i + 1
        if l >= n { break }
        let r = l + 1
        let c = (r < n && h[r] < h[l]) ? r : l
        if h[c] >= last { break }
        h[i] = h[c]
        i = c
    }
    h[i] = last
    return top
}

// MARK: - Pair table

/// An open-addressing hash table from a pair of ids (each below 2^31) to a merge rank: the
/// inner loop of BPE does several lookups per merge, cheaper here than in a Dictionary.
struct TokPairTable {
    private var keys: [UInt64]
    private var values: [UInt32]
    private var shift: UInt64
    private(set) var count = 0
    private static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: TokPairTable.empty, count: size)
        values = [UInt32](repeating: 0, count: size)
        shift = UInt64(64 - size.trailingZeroBitCount)
    }

    var isEmpty: Bool { count == 0 }

    @inline(__always)
    private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    @inline(__always)
    private static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    mutating func set(_ a: Int32, _ b: Int32, _ value: UInt32) {
        if (count + 1) * 2 > keys.count { grow() }
        let k = TokPairTable.key(a, b)
        let mask = keys.count - 1
        var i = slot(k)
        while true {
            if keys[i] == TokPairTable.empty {
                keys[i] = k
                values[i] = value
                count += 1
                return
            }
            if keys[i] == k {
                values[i] = value
                return
            }
            i = (i + 1) & mask
        }
    }

    @inline(__always)
    func get(_ a: Int32, _ b: Int32) -> UInt32? {
        let k = TokPairTable.key(a, b)
        let mask = keys.count - 1
        var i = slot(k)
        return keys.withUnsafeBufferPointer { ks in
            while true {
                let x = ks[i]
                if x == k { return values[i] }
                if x == TokPairTable.empty { return nil }
                i = (i + 1) & mask
            }
        }
    }

    private mutating func grow() {
        let oldKeys = keys, oldValues = values
        let size = keys.count * 2
        keys = [UInt64](repeating: TokPairTable.empty, count: size)
        values = [UInt32](repeating: 0, count: size)
        shift = UInt64(64 - size.trailingZeroBitCount)
        count = 0
        for (i, k) in oldKeys.enumerated() where k != TokPairTable.empty {
            set(Int32(bitPattern: UInt32(truncatingIfNeeded: k >> 32)), Int32(bitPattern: UInt32(truncatingIfNeeded: k)), oldValues[i])
        }
    }
}
