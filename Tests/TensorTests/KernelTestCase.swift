// The base of the kernel tests: each test may force ISA levels and thread counts, and gets back
// the ones it found when it ends.
import CKernels
import XCTest

class KernelTestCase: XCTestCase {
    private var savedISA: Int32 = 0
    private var savedThreads: Int32 = 1

    override func setUp() {
        super.setUp()
        savedISA = ql_isa_current()
        savedThreads = ql_threads()
    }

    override func tearDown() {
        _ = ql_isa_set(savedISA)
        ql_set_threads(savedThreads)
        super.tearDown()
    }
}
