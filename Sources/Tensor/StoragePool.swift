// A free list of large tensor buffers by size class, so that the buffers a training step frees are
// handed to the next step's tensors of similar size instead of going back to the system and
// returning as freshly mapped pages (a page fault and a kernel zero-fill per 4 KB).
//
// Buffers from 128 KB up are rounded to one of 8 classes per power of two (at most 12.5% slack,
// never touched unless used, so not resident); a request may take a free buffer up to two classes
// larger. Freed buffers stay in the pool only while live plus pooled bytes remain under the highest
// live total seen so far plus max(32 MB, 1/32 of it): the pool never holds much more than the
// process once needed at its peak. Single-threaded like Storage. QLORA_POOL=0 turns it off.

import Foundation

public enum StoragePool {
    static let minimumPooled = 128 << 10

    /// Bytes held by free buffers waiting in the pool.
    nonisolated(unsafe) public private(set) static var pooledBytes = 0
    /// The highest Storage.liveBytes seen.
    nonisolated(unsafe) static var liveHighWater = 0
    nonisolated(unsafe) static var free: [Int: [UnsafeMutableRawPointer]] = [:]
    /// Whether freed buffers are kept for reuse (QLORA_POOL=0 turns it off, to compare).
    nonisolated(unsafe) public static var enabled: Bool = ProcessInfo.processInfo.environment["QLORA_POOL"] != "0"

    /// The size actually allocated for a request of n bytes.
    static func classSize(_ n: Int) -> Int {
        if n < minimumPooled { return n }
        let top = Int.bitWidth - 1 - n.leadingZeroBitCount   // 2^top <= n
        let step = 1 << (top - 3)
        return (n + step - 1) / step * step
    }

    /// Live plus pooled bytes stay under this: the live peak so far plus a little slack, so that a
    /// buffer freed in one size class can wait for the next step while another class is served.
    static var budget: Int { liveHighWater + max(32 << 20, liveHighWater / 32) }

    /// A pooled buffer of class `size` or of one of the next two classes up (a block at most
    /// about 28% larger than asked), with its actual size; nil when none is free.
    static func take(_ size: Int) -> (UnsafeMutableRawPointer, Int)? {
        guard size >= minimumPooled, pooledBytes > 0 else { return nil }
        var c = size
        for _ in 0..<3 {
            if var list = free[c], let p = list.popLast() {
                free[c] = list.isEmpty ? nil : list
                pooledBytes -= c
                return (p, c)
            }
            c = classSize(c + 1)
        }
        return nil
    }

    /// Keeps a freed buffer of classSize bytes for reuse, or frees it when over budget.
    static func give(_ p: UnsafeMutableRawPointer, _ size: Int, live: Int) {
        guard enabled, size >= minimumPooled, live + pooledBytes + size <= budget else {
            Foundation.free(p)
            return
        }
        free[size, default: []].append(p)
        pooledBytes += size
    }

    /// Makes room for a new allocation of `size` bytes by freeing pooled buffers of other classes
    /// while live + pooled + size would pass the budget.
    static func makeRoom(_ size: Int, live: Int) {
        if pooledBytes == 0 || live + pooledBytes + size <= budget { return }
        for key in free.keys.sorted(by: >) {
            guard var list = free[key] else { continue }
            while let p = list.popLast() {
                Foundation.free(p)
                pooledBytes -= key
                if live + pooledBytes + size <= budget { break }
            }
            free[key] = list.isEmpty ? nil : list
            if live + pooledBytes + size <= budget { return }
        }
    }

    /// After a one-off peak that will not come back (a model's f32 weights freed once they are
    /// quantized): returns every pooled buffer to the system and lowers the budget to what is
    /// live now, so the freed memory leaves the process instead of waiting in the pool.
    public static func releaseAfterPeak() {
        trim()
        liveHighWater = Storage.liveBytes
    }

    /// Returns every pooled buffer to the system.
    public static func trim() {
        for (_, list) in free { for p in list { Foundation.free(p) } }
        free = [:]
        pooledBytes = 0
    }
}
