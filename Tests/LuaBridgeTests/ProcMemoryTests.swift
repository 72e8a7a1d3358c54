// /proc figures: the kB value of a status or smaps_rollup line, whatever its padding. Peaks of
// eight digits (>= ~9.5 GB) follow the tab directly and once read as 0 (q.memory_mb, the
// trainer's peak_rss_mb).

@testable import LuaBridge
import XCTest

final class ProcMemoryTests: XCTestCase {
    func testKilobytesOfPaddedAndUnpaddedLines() {
        let status = "Name:\tqlora\nVmPeak:\t17900000 kB\nVmHWM:\t17474484 kB\nVmRSS:\t    1234 kB\nThreads:\t2\n"
        XCTAssertEqual(procKilobytes(status, field: "VmHWM"), 17_474_484)
        XCTAssertEqual(procKilobytes(status, field: "VmRSS"), 1234)
        XCTAssertEqual(procKilobytes("Rss:              123456 kB\n", field: "Rss"), 123_456)
        XCTAssertEqual(procKilobytes("VmHWM:\t123456789012 kB\n", field: "VmHWM"), 123_456_789_012)
        XCTAssertNil(procKilobytes(status, field: "VmSwap"))
        XCTAssertNil(procKilobytes("VmHWM:\tlots kB\n", field: "VmHWM"))
    }

    func testThisProcessReportsItsMemory() {
        let (rss, peak) = processMemoryMB()
        XCTAssertGreaterThan(rss, 0)
        XCTAssertGreaterThanOrEqual(peak, rss)
    }
}
