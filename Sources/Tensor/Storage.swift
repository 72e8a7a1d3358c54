// Raw, 64-byte aligned memory behind tensors: owned allocations, or borrowed bytes kept alive by
// an owner (a memory-mapped file). Counts live bytes so the Lua host can pace its collector.

import Foundation

public final class Storage {
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int
    private let owner: AnyObject?

    /// Bytes currently held by owned storages in this process.
    nonisolated(unsafe) public private(set) static var liveBytes: Int = 0
    /// Bytes allocated since the counter was last reset (the Lua host uses it to pace its GC).
    nonisolated(unsafe) public static var allocatedSinceReset: Int = 0

    /// Storage of `byteCount` bytes, zero-filled unless the caller overwrites every byte.
    public init(byteCount: Int, zeroed: Bool = true) throws {
        let n = max(byteCount, 1)
        var p: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&p, 64, n) == 0, let allocated = p else {
            throw TensorError("out of memory allocating \(byteCount) bytes")
        }
        if zeroed { memset(allocated, 0, n) }
        base = allocated
        self.byteCount = byteCount
        owner = nil
        Storage.liveBytes += n
        Storage.allocatedSinceReset += n
    }

    /// Borrowed bytes, valid while `owner` lives (no copy).
    public init(borrowing pointer: UnsafeRawPointer, byteCount: Int, owner: AnyObject) {
        base = UnsafeMutableRawPointer(mutating: pointer)
        self.byteCount = byteCount
        self.owner = owner
    }

    deinit {
        if owner == nil {
            free(base)
            Storage.liveBytes -= max(byteCount, 1)
        }
    }
}
