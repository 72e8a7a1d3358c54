// Raw, 64-byte aligned memory behind tensors: owned allocations, or borrowed bytes kept alive by
// an owner (a memory-mapped file). Counts live bytes so the Lua host can pace its collector.
// Large buffers come from and go back to StoragePool.

import Foundation

public final class Storage {
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int
    /// Bytes actually reserved (a pool size class at or above byteCount); 0 for borrowed bytes.
    private let capacity: Int
    private let owner: AnyObject?

    /// Bytes currently held by owned storages in this process.
    nonisolated(unsafe) public private(set) static var liveBytes: Int = 0
    /// Bytes allocated since the counter was last reset (the Lua host uses it to pace its GC).
    nonisolated(unsafe) public static var allocatedSinceReset: Int = 0

    /// Storage of `byteCount` bytes, zero-filled unless the caller overwrites every byte.
    public init(byteCount: Int, zeroed: Bool = true) throws {
        var n = StoragePool.classSize(max(byteCount, 1))
        let allocated: UnsafeMutableRawPointer
        if let (reused, size) = StoragePool.take(n) {
            allocated = reused
            n = size
        } else {
            StoragePool.makeRoom(n, live: Storage.liveBytes)
            var p: UnsafeMutableRawPointer? = nil
            if posix_memalign(&p, 64, n) != 0 {
                StoragePool.trim()
                p = nil
                if posix_memalign(&p, 64, n) != 0 { p = nil }
            }
            guard let fresh = p else {
                throw TensorError("out of memory allocating \(byteCount) bytes")
            }
            allocated = fresh
        }
        if zeroed { memset(allocated, 0, max(byteCount, 1)) }
        base = allocated
        self.byteCount = byteCount
        capacity = n
        owner = nil
        Storage.liveBytes += n
        Storage.allocatedSinceReset += n
        StoragePool.liveHighWater = max(StoragePool.liveHighWater, Storage.liveBytes)
    }

    /// Borrowed bytes, valid while `owner` lives (no copy).
    public init(borrowing pointer: UnsafeRawPointer, byteCount: Int, owner: AnyObject) {
        base = UnsafeMutableRawPointer(mutating: pointer)
        self.byteCount = byteCount
        capacity = 0
        self.owner = owner
    }

    deinit {
        if owner == nil {
            Storage.liveBytes -= capacity
            StoragePool.give(base, capacity, live: Storage.liveBytes)
        }
    }
}
