// Tokenized datasets: rows (JSONL lines or in-memory JSON values) are tokenized once at load
// time into flat Int32 arrays (ids, labels with -100 for masked tokens). Options: truncation to
// max_len, prompt masking, eos, packing into max_len sequences with per-token segment ids and
// positions, and skipping bad rows. A Dataset is a view (a list of rows) over shared storage, so
// split() copies nothing.
//
// Labels are not shifted (the model's loss shifts them), and the first token of every example
// (of every segment when packed) has label -100: nothing before it predicts it, and in a packed
// sequence the previous token belongs to another example.

import IO

public struct DatasetOptions {
    public var format: DatasetFormat? = nil        // nil: detected from the first row
    public var fields = DatasetFields()
    public var tokenizer: Tokenizer? = nil
    public var maxLen: Int? = nil
    public var maskPrompt: Bool = true
    public var addEOS: Bool? = nil                 // nil: true for text, completions and role-format chat
    public var pack: Bool = false
    public var skipBadRows: Bool = false
    public var padId: Int? = nil                   // nil: the tokenizer's pad id, else 0
    public var template: ChatTemplate? = nil
    /// The model's chat template (used for chat rows unless `template` is set; see ChatTemplates.model).
    public var chatRenderer: ChatRenderer? = nil
    /// Called once when chat rows are rendered in the "role" format because the tokenizer has no
    /// chat template and none was chosen.
    public var warnNoTemplate: ((String) -> Void)? = nil
    public init() {}
}

/// The tokenized examples (or packed sequences) all views of one dataset share.
public final class DatasetStorage {
    public internal(set) var ids: [Int32] = []
    public internal(set) var labels: [Int32] = []
    /// Segment number (1-based within its sequence) per token; empty unless packed.
    public internal(set) var segments: [Int32] = []
    /// Position within its segment per token; empty unless packed.
    public internal(set) var positions: [Int32] = []
    /// Row i spans offsets[i] ..< offsets[i + 1].
    public internal(set) var offsets: [Int] = [0]
    public let packed: Bool
    public let padId: Int32
    public let format: DatasetFormat
    public let badRows: Int
    /// Examples left out because, cut to max_len, no token of theirs is trained (every label
    /// -100: with mask_prompt, a prompt that fills max_len); they would only give a loss of 0/0.
    public internal(set) var untrainedRows = 0
    public let sourceName: String

    init(packed: Bool, padId: Int32, format: DatasetFormat, badRows: Int, sourceName: String) {
        self.packed = packed; self.padId = padId; self.format = format
        self.badRows = badRows; self.sourceName = sourceName
    }

    var rowCount: Int { offsets.count - 1 }
    func range(_ r: Int) -> Range<Int> { offsets[r]..<offsets[r + 1] }
}

/// One example as the batcher and scripts see it.
public struct DatasetExample {
    public let inputIds: ArraySlice<Int32>
    public let labels: ArraySlice<Int32>
    public let segmentIds: ArraySlice<Int32>?
    public let positionIds: ArraySlice<Int32>?
}

public final class Dataset {
    public let storage: DatasetStorage
    /// Storage rows in this view, in order.
    public let rows: [Int]

    init(storage: DatasetStorage, rows: [Int]) { self.storage = storage; self.rows = rows }

    public var count: Int { rows.count }
    public var packed: Bool { storage.packed }
    public var badRows: Int { storage.badRows }
    public var untrainedRows: Int { storage.untrainedRows }

    /// Example i (0-based).
    public func example(_ i: Int) -> DatasetExample {
        let r = storage.range(rows[i])
        return DatasetExample(inputIds: storage.ids[r], labels: storage.labels[r],
                              segmentIds: storage.packed ? storage.segments[r] : nil,
                              positionIds: storage.packed ? storage.positions[r] : nil)
    }

    public func length(_ i: Int) -> Int { storage.range(rows[i]).count }

    /// Total tokens over the examples of this view.
    public var tokenCount: Int { rows.reduce(0) { $0 + storage.range($1).count } }

    /// Two views: a deterministic shuffle (by seed) of the examples, the first `fraction` of them
    /// (rounded, at least 1) and the rest, each kept in the original order.
    public func split(_ fraction: Double, seed: UInt64) throws -> (Dataset, Dataset) {
        guard fraction > 0 && fraction < 1 else { throw TrainError("split fraction must be in (0, 1), got \(fraction)") }
        let k = Int((fraction * Double(count)).rounded())
        guard k >= 1 && k < count else {
            throw TrainError("splitting \(count) examples at \(fraction) leaves an empty part")
        }
        let perm = SplitMix64.permutation(count, seed: seed, stream: 0x5EED_5B11)
        let a = perm[0..<k].sorted().map { rows[$0] }
        let b = perm[k...].sorted().map { rows[$0] }
        return (Dataset(storage: storage, rows: a), Dataset(storage: storage, rows: b))
    }

    /// Loads a JSONL file. Errors name the file and line: "path: line 3: problem".
    public static func load(jsonl path: String, _ opts: DatasetOptions) throws -> Dataset {
        let lines = try JSONLReader.read(path: path)
        let rows = lines.map { (label: "\(path): line \($0.number)", value: $0.result) }
        return try build(rows, opts, sourceName: path)
    }

    /// Builds from values (one per row), named "row N" in errors.
    public static func from(values: [Result<JSONValue, DatasetLineError>], _ opts: DatasetOptions,
                            sourceName: String = "rows") throws -> Dataset {
        let rows = values.enumerated().map { (label: "row \($0.offset + 1)", value: $0.element) }
        return try build(rows, opts, sourceName: sourceName)
    }

    static func build(_ rows: [(label: String, value: Result<JSONValue, DatasetLineError>)],
                      _ opts: DatasetOptions, sourceName: String) throws -> Dataset {
        if rows.isEmpty { throw TrainError("\(sourceName): the dataset is empty") }
        var format = opts.format
        if format == nil {
            for r in rows { if case .success(let v) = r.value { format = DatasetFormat.detect(v, opts.fields); break } }
            guard format != nil else {
                throw TrainError("\(sourceName): cannot tell the format from the first row; pass format = \"text\", \"completions\", \"chat\" or \"tokens\"")
            }
        }
        guard let format else { throw TrainError("\(sourceName): no format") }
        if format != .tokens && opts.tokenizer == nil {
            throw TrainError("format \"\(format.rawValue)\" needs a tokenizer (option 'tokenizer': a tokenizer or a model)")
        }
        if let m = opts.maxLen, m < 1 { throw TrainError("max_len must be >= 1, got \(m)") }
        if opts.pack && opts.maxLen == nil { throw TrainError("pack = true needs max_len") }
        let templated = format == .chat && opts.template == nil && opts.chatRenderer != nil
        if format == .chat && opts.template == nil && opts.chatRenderer == nil {
            opts.warnNoTemplate?("\(sourceName): the tokenizer has no chat template; chat rows are rendered in the \"<|role|>\" format (pass template = \"role\" to choose it, or a chat template)")
        }
        let addEOS = opts.addEOS ?? (format != .tokens && !templated)
        let eos = opts.tokenizer?.eosId
        if addEOS && format != .tokens && eos == nil { throw TrainError("add_eos: the tokenizer has no eos token") }
        let vocab = opts.tokenizer?.vocabSize
        let padId = opts.padId ?? opts.tokenizer?.padId ?? 0

        var ids: [Int32] = [], labels: [Int32] = [], offsets: [Int] = [0]
        var bad = 0, untrained = 0
        // Without packing an example keeps at most max_len tokens: only a prefix of its text is
        // tokenized (a huge line costs what max_len needs, not what the line holds).
        let budget = opts.pack ? nil : opts.maxLen
        for r in rows {
            do {
                let value = try r.value.get()
                let raw = try DatasetRows.extract(value, format: format, fields: opts.fields, template: opts.template,
                                                  renderer: opts.chatRenderer)
                var (exIds, exLabels) = try tokenize(raw, tokenizer: opts.tokenizer, maskPrompt: opts.maskPrompt,
                                                     eos: addEOS ? eos : nil, vocab: vocab, budget: budget)
                var cut = false
                if !opts.pack, let m = opts.maxLen, exIds.count > m { exIds.removeLast(exIds.count - m); exLabels.removeLast(exLabels.count - m); cut = true }
                if exIds.isEmpty { throw DatasetLineError("the example has no tokens") }
                // Cut to max_len with nothing trained left (a masked prompt that fills max_len):
                // left out and counted, as it would only give a loss of 0/0.
                if cut && !exLabels.contains(where: { $0 != -100 }) { untrained += 1; continue }
                ids.append(contentsOf: exIds)
                labels.append(contentsOf: exLabels)
                offsets.append(ids.count)
            } catch let e as DatasetLineError {
                if !opts.skipBadRows { throw TrainError("\(r.label): \(e.problem)") }
                bad += 1
            } catch {
                throw TrainError("\(r.label): \(error)")
            }
        }
        if offsets.count == 1 {
            if untrained > 0 {
                throw TrainError("\(sourceName): no example has a trained token (\(untrained) left out: every label is masked within max_len = \(opts.maxLen ?? 0); is the prompt longer than that?)")
            }
            throw TrainError("\(sourceName): the dataset is empty (\(bad) bad rows skipped)")
        }
        guard let p32 = Int32(exactly: padId) else { throw TrainError("pad id \(padId) is out of range") }
        let s = DatasetStorage(packed: opts.pack, padId: p32, format: format, badRows: bad, sourceName: sourceName)
        s.untrainedRows = untrained
        if opts.pack, let m = opts.maxLen {
            pack(s, ids: ids, labels: labels, offsets: offsets, maxLen: m)
        } else {
            s.ids = ids; s.labels = labels; s.offsets = offsets
        }
        return Dataset(storage: s, rows: Array(0..<s.rowCount))
    }

    /// Token ids and labels of one example. The first segment is encoded with the tokenizer's
    /// special tokens (bos), later ones without (a chat template's segments: none adds any);
    /// segments are tokenized separately and joined.
    static func tokenize(_ raw: RawExample, tokenizer: Tokenizer?, maskPrompt: Bool, eos: Int?,
                         vocab: Int?, budget: Int? = nil) throws -> ([Int32], [Int32]) {
        var ids: [Int32] = [], labels: [Int32] = []
        func id32(_ v: Int, _ what: String) throws -> Int32 {
            if v < 0 || (vocab.map { v >= $0 } ?? false) || v > Int(Int32.max) {
                throw DatasetLineError("\(what) \(v) is out of range\(vocab.map { " (vocabulary size \($0))" } ?? "")")
            }
            return Int32(v)
        }
        switch raw {
        case .tokens(let t, let l):
            for v in t { ids.append(try id32(v, "token id")) }
            if let l {
                for v in l { labels.append(v == -100 ? -100 : try id32(v, "label")) }
            } else {
                labels = ids
                if !labels.isEmpty { labels[0] = -100 }
            }
            return (ids, labels)
        case .segments(let segs), .rendered(let segs):
            guard let tok = tokenizer else { throw TrainError("a tokenizer is needed") }
            var special = true
            if case .rendered = raw { special = false }
            for (k, s) in segs.enumerated() {
                if let budget, ids.count >= budget { break }  // the rest would be cut off anyway
                let enc: [Int]
                do {
                    enc = try encodePrefix(tok, s.text, special: special && k == 0, budget: budget.map { $0 - ids.count })
                } catch let e as DatasetLineError { throw e } catch {
                    throw DatasetLineError("cannot tokenize: \(error)")
                }
                let train = s.trainable || !maskPrompt
                for v in enc {
                    let x = try id32(v, "token id")
                    ids.append(x); labels.append(train ? x : -100)
                }
            }
            if let eos {
                let x = try id32(eos, "eos id")
                ids.append(x); labels.append(x)
            }
            if !labels.isEmpty { labels[0] = -100 }
            return (ids, labels)
        }
    }

    /// The tokens of text, or when `budget` is given at least its first `budget` tokens: a
    /// prefix of the text is tokenized, cut after a space or newline, growing fourfold until it
    /// gives `budget` tokens plus a margin (so the cut word lies past the kept tokens) or is
    /// the whole text.
    static func encodePrefix(_ tok: Tokenizer, _ text: String, special: Bool, budget: Int?) throws -> [Int] {
        guard let budget, text.utf8.count > 4096 else { return try tok.encode(text, addSpecialTokens: special) }
        let bytes = Array(text.utf8)
        let margin = 64
        var limit = max(4096, (budget + margin) * 8)
        while limit < bytes.count {
            var cut = limit
            // Back to a space or newline within the last 256 bytes if there is one, else to the
            // start of a UTF-8 character.
            var k = cut
            while k > limit - 256 && k > 0 && bytes[k - 1] != 0x20 && bytes[k - 1] != 0x0A { k -= 1 }
            if k > limit - 256 && k > 0 { cut = k } else { while cut > 0 && bytes[cut] & 0xC0 == 0x80 { cut -= 1 } }
            let enc = try tok.encode(String(decoding: bytes[0..<cut], as: UTF8.self), addSpecialTokens: special)
            if enc.count >= budget + margin { return enc }
            limit = limit > Int.max / 4 ? bytes.count : limit * 4
        }
        return try tok.encode(text, addSpecialTokens: special)
    }

    /// Concatenates the examples (not truncated when packing) in order and cuts the stream into
    /// sequences of maxLen tokens (the last may be shorter). An example cut by a boundary continues as a new segment of the
    /// next sequence. Segments number from 1 in each sequence, positions restart at 0 per segment,
    /// and each segment's first label is -100.
    static func pack(_ s: DatasetStorage, ids: [Int32], labels: [Int32], offsets: [Int], maxLen: Int) {
        let total = ids.count
        var segs = [Int32](repeating: 0, count: total)
        var pos = [Int32](repeating: 0, count: total)
        var labs = labels
        var outOffsets = [0]
        var ex = 0               // current example
        var seg: Int32 = 0       // segment number in the current sequence
        var inSeq = 0            // tokens in the current sequence
        var segStart = true
        var p: Int32 = 0
        for t in 0..<total {
            if t == offsets[ex + 1] { ex += 1; segStart = true }
            if inSeq == maxLen { outOffsets.append(t); inSeq = 0; seg = 0; segStart = true }
            if segStart { seg += 1; p = 0; labs[t] = -100; segStart = false }
            segs[t] = seg; pos[t] = p
            p += 1; inSeq += 1
        }
        outOffsets.append(total)
        s.ids = ids; s.labels = labs; s.segments = segs; s.positions = pos; s.offsets = outOffsets
    }
}
