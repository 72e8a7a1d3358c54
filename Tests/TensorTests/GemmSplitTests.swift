// ql_sgemm (products split over the pool by rows or columns of C): against a double-precision
// product for every transpose combination, thin and square shapes, alpha and beta; and bitwise
// equal to the one-call product of a single thread (the split never changes a sum's order).

import CKernels
import XCTest

final class GemmSplitTests: XCTestCase {
    private func random(_ n: Int, seed: UInt64) -> [Float] {
        var x = seed &* 6364136223846793005 &+ 1442695040888963407
        return (0..<n).map { _ in
            x = x &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: x >> 11) % 2001 - 1000) / 1000
        }
    }

    func testSplitProductsMatchReferenceAndOneThread() {
        let saved = ql_threads()
        defer { ql_set_threads(saved) }
        for (m, n, k) in [(1024, 16, 512), (16, 700, 1024), (300, 700, 33), (5, 3, 2), (97, 1000, 40)] {
            for ta in 0...1 { for tb in 0...1 {
                let a = random(m * k, seed: UInt64(m + k)), b = random(k * n, seed: UInt64(n + 7 * k))
                let c0 = random(m * n, seed: 3)
                let lda = ta == 1 ? m : k, ldb = tb == 1 ? k : n
                var want = [Double](repeating: 0, count: m * n)
                for i in 0..<m { for j in 0..<n {
                    var s = 0.0
                    for r in 0..<k {
                        let av = ta == 1 ? a[r * lda + i] : a[i * lda + r]
                        let bv = tb == 1 ? b[j * ldb + r] : b[r * ldb + j]
                        s += Double(av) * Double(bv)
                    }
                    want[i * n + j] = 0.5 * s + 2 * Double(c0[i * n + j])
                }}
                var results: [[Float]] = []
                for threads in [1, 2, 3] {
                    ql_set_threads(Int32(threads))
                    var c = c0
                    ql_sgemm(Int32(ta), Int32(tb), Int64(m), Int64(n), Int64(k), 0.5, a, Int64(lda), b, Int64(ldb),
                             2, &c, Int64(n))
                    results.append(c)
                }
                let worst = zip(results[1], want).map { abs(Double($0) - $1) }.max() ?? 0
                XCTAssertLessThan(worst, 1e-4 * Double(k), "m \(m) n \(n) k \(k) ta \(ta) tb \(tb)")
                XCTAssertEqual(results[0], results[1], "1 vs 2 threads, m \(m) n \(n) k \(k) ta \(ta) tb \(tb)")
                XCTAssertEqual(results[0], results[2], "1 vs 3 threads, m \(m) n \(n) k \(k) ta \(ta) tb \(tb)")
            }}
        }
    }
}
