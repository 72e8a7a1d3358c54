// Batches over a dataset: a deterministic per-epoch order (the shuffle of epoch e depends only
// on (seed, e), through our own SplitMix64), right padding to the longest example of the batch
// (pad id for inputs, -100 for labels, 0 in the attention mask), and a resumable position
// (epoch, batches taken) so a checkpoint can continue exactly.

import Tensor

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny deterministic generator, the same everywhere.
public struct SplitMix64 {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E4B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform integer in 0 ..< n (n > 0), by the multiply-high method.
    public mutating func below(_ n: Int) -> Int {
        Int(next().multipliedFullWidth(by: UInt64(n)).high)
    }

    /// A permutation of 0 ..< n determined by (seed, stream) only (Fisher-Yates).
    public static func permutation(_ n: Int, seed: UInt64, stream: UInt64) -> [Int] {
        var mix = SplitMix64(seed: stream)
        var g = SplitMix64(seed: seed ^ mix.next())
        _ = g.next()
        var p = Array(0..<n)
        if n < 2 { return p }
        for i in stride(from: n - 1, to: 0, by: -1) {
            let j = g.below(i + 1)
            p.swapAt(i, j)
        }
        return p
    }
}

/// One batch as tensors ([B, T]); segment and position ids only for packed datasets.
public struct Batch {
    public let inputIds: Tensor       // i64
    public let labels: Tensor         // i64, -100 on pads and masked tokens
    public let attentionMask: Tensor  // i32, 1 real, 0 pad
    public let segmentIds: Tensor?    // i32, 1-based per sequence, 0 on pads
    public let positionIds: Tensor?   // i64, restarting at 0 per segment, 0 on pads
    /// Labels the shifted loss scores: positions 1 ..< T that are not -100.
    public let tokens: Int
    /// Dataset indices (0-based) of the rows in this batch.
    public let indices: [Int]
}

public final class BatchIterator {
    public let dataset: Dataset
    public let size: Int
    public let shuffle: Bool
    public let seed: UInt64
    public let dropLast: Bool
    public private(set) var epoch: Int = 0
    /// Batches already taken in the current epoch.
    public private(set) var position: Int = 0
    private var order: [Int] = []
    private var orderEpoch = -1

    public init(_ dataset: Dataset, size: Int, shuffle: Bool = true, seed: UInt64 = 0, dropLast: Bool = false) throws {
        guard size >= 1 else { throw TrainError("batch size must be >= 1, got \(size)") }
        if dropLast && dataset.count < size {
            throw TrainError("drop_last with batch size \(size) leaves no batch from \(dataset.count) examples")
        }
        self.dataset = dataset; self.size = size; self.shuffle = shuffle; self.seed = seed; self.dropLast = dropLast
    }

    /// Batches per epoch.
    public var batchesPerEpoch: Int {
        dropLast ? dataset.count / size : (dataset.count + size - 1) / size
    }

    /// The example order of epoch e.
    public func order(epoch e: Int) -> [Int] {
        shuffle ? SplitMix64.permutation(dataset.count, seed: seed, stream: 0xE90C_0000 &+ UInt64(truncatingIfNeeded: e))
                : Array(0..<dataset.count)
    }

    /// Back to batch 0 of epoch `epoch`.
    public func reset(epoch e: Int = 0) throws { try setPosition(0, epoch: e) }

    public func setPosition(_ n: Int, epoch e: Int? = nil) throws {
        let e = e ?? epoch
        guard e >= 0 else { throw TrainError("epoch must be >= 0, got \(e)") }
        guard n >= 0 && n <= batchesPerEpoch else {
            throw TrainError("position must be in 0...\(batchesPerEpoch) (batches per epoch), got \(n)")
        }
        epoch = e; position = n
    }

    /// The next batch, or nil at the end of the epoch (the following call starts the next epoch).
    public func next() throws -> Batch? {
        if position >= batchesPerEpoch {
            epoch += 1; position = 0
            return nil
        }
        if orderEpoch != epoch { order = order(epoch: epoch); orderEpoch = epoch }
        let lo = position * size
        let hi = min(lo + size, dataset.count)
        position += 1
        return try makeBatch(Array(order[lo..<hi]))
    }

    /// Pads the given examples into one batch.
    public func makeBatch(_ idx: [Int]) throws -> Batch {
        let b = idx.count
        let t = idx.map { dataset.length($0) }.max() ?? 0
        let packed = dataset.packed
        let ids = try Tensor(shape: [b, t], dtype: .i64, zeroed: false)
        let labels = try Tensor(shape: [b, t], dtype: .i64, zeroed: false)
        let mask = try Tensor(shape: [b, t], dtype: .i32)
        let segs = packed ? try Tensor(shape: [b, t], dtype: .i32) : nil
        let pos = packed ? try Tensor(shape: [b, t], dtype: .i64) : nil
        let pad = Int64(dataset.storage.padId)
        var tokens = 0
        for (r, i) in idx.enumerated() {
            let ex = dataset.example(i)
            let n = ex.inputIds.count
            let base = r * t
            for (k, v) in ex.inputIds.enumerated() { ids.storeInteger(Int64(v), at: base + k) }
            for (k, v) in ex.labels.enumerated() {
                labels.storeInteger(Int64(v), at: base + k)
                if k > 0 && v != -100 { tokens += 1 }
            }
            for k in 0..<n { mask.storeInteger(1, at: base + k) }
            for k in n..<t { ids.storeInteger(pad, at: base + k); labels.storeInteger(-100, at: base + k) }
            if let segs, let s = ex.segmentIds { for (k, v) in s.enumerated() { segs.storeInteger(Int64(v), at: base + k) } }
            if let pos, let p = ex.positionIds { for (k, v) in p.enumerated() { pos.storeInteger(Int64(v), at: base + k) } }
        }
        return Batch(inputIds: ids, labels: labels, attentionMask: mask, segmentIds: segs, positionIds: pos,
                     tokens: tokens, indices: idx)
    }
}
