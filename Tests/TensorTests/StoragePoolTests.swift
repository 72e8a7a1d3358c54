// The buffer pool behind Storage: freed large buffers are reused by later storages of a similar
// size, come back zero-filled when asked, keep Storage.liveBytes exact, and never push live plus
// pooled bytes past the live peak plus its slack.

@testable import Tensor
import XCTest

final class StoragePoolTests: XCTestCase {
    override func setUp() { try? Runtime.start() }

    func testFreedBufferIsReusedAndZeroed() throws {
        try XCTSkipUnless(StoragePool.enabled, "QLORA_POOL=0")
        let bytes = 3 << 20
        var first: Storage? = try Storage(byteCount: bytes, zeroed: false)
        let address = first!.base
        memset(address, 0xAB, bytes)
        let liveWith = Storage.liveBytes
        first = nil
        XCTAssertLessThan(Storage.liveBytes, liveWith, "a freed storage still counted as live")
        let pooled = StoragePool.pooledBytes
        XCTAssertGreaterThanOrEqual(pooled, bytes, "the freed buffer was not kept")
        // a slightly smaller request falls in the same size class and gets the same buffer
        let second = try Storage(byteCount: bytes - 4096, zeroed: true)
        XCTAssertEqual(second.base, address)
        XCTAssertEqual(Storage.liveBytes, liveWith, "live bytes must count the reused buffer once")
        XCTAssertLessThan(StoragePool.pooledBytes, pooled)
        let p = second.base.assumingMemoryBound(to: UInt8.self)
        XCTAssertEqual((0..<(bytes - 4096)).first { p[$0] != 0 }, nil, "a reused buffer was not zero-filled")
    }

    func testSmallBuffersAreNotPooled() throws {
        let pooled = StoragePool.pooledBytes
        do { _ = try Storage(byteCount: 1000) }
        XCTAssertEqual(StoragePool.pooledBytes, pooled)
    }

    func testPoolStaysWithinTheLivePeak() throws {
        try XCTSkipUnless(StoragePool.enabled, "QLORA_POOL=0")
        StoragePool.trim()
        XCTAssertEqual(StoragePool.pooledBytes, 0)
        StoragePool.liveHighWater = Storage.liveBytes
        // free many buffers of one size, then ask for a different size many times: the pool
        // must give old buffers back to the system rather than hold both sets
        var a: [Storage]? = try (0..<8).map { _ in try Storage(byteCount: 64 << 20, zeroed: false) }
        XCTAssertEqual(a?.count, 8)
        a = nil
        XCTAssertGreaterThan(StoragePool.pooledBytes, 0)
        var b: [Storage] = []
        for _ in 0..<8 {
            b.append(try Storage(byteCount: 40 << 20, zeroed: false))
            XCTAssertLessThanOrEqual(Storage.liveBytes + StoragePool.pooledBytes, StoragePool.budget)
        }
        XCTAssertLessThan(StoragePool.pooledBytes, 8 * (64 << 20))
        b.removeAll()
        StoragePool.trim()
        XCTAssertEqual(StoragePool.pooledBytes, 0)
    }
}
