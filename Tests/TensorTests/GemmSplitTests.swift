// ql_sgemm (products cut into fixed tiles handed out over the pool): against a double-precision
// product for every transpose combination, thin and square shapes, alpha and beta; bitwise equal
// across 1, 2, 3 and 5 threads, including the shapes a model's training step uses (the split is
// a function of the shape alone, so this holds on any CPU and any BLAS kernel); and unaffected by
// OpenBLAS's own thread setting.

import CKernels
import COpenBLAS
import XCTest

final class GemmSplitTests: XCTestCase {
    private func random(_ n: Int, seed: UInt64) -> [Float] {
        var x = seed &* 6364136223846793005 &+ 1442695040888963407
        return (0..<n).map { _ in
            x = x &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: x >> 11) % 2001 - 1000) / 1000
        }
    }

    private func product(_ ta: Int, _ tb: Int, _ m: Int, _ n: Int, _ k: Int, _ a: [Float], _ b: [Float],
                         _ c0: [Float], threads: Int) -> [Float] {
        let saved = ql_threads()
        defer { ql_set_threads(saved) }
        ql_set_threads(Int32(threads))
        var c = c0
        ql_sgemm(Int32(ta), Int32(tb), Int64(m), Int64(n), Int64(k), 0.5, a, Int64(ta == 1 ? m : k), b,
                 Int64(tb == 1 ? k : n), 2, &c, Int64(n))
        return c
    }

    private func inputs(_ m: Int, _ n: Int, _ k: Int) -> ([Float], [Float], [Float]) {
        (random(m * k, seed: UInt64(m + k)), random(k * n, seed: UInt64(n + 7 * k)), random(m * n, seed: 3))
    }

    func testSplitProductsMatchReferenceAndOneThread() {
        for (m, n, k) in [(1024, 16, 512), (16, 700, 1024), (300, 700, 33), (5, 3, 2), (97, 1000, 40)] {
            for ta in 0...1 { for tb in 0...1 {
                let (a, b, c0) = inputs(m, n, k)
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
                let results = [1, 2, 3].map { product(ta, tb, m, n, k, a, b, c0, threads: $0) }
                let worst = zip(results[1], want).map { abs(Double($0) - $1) }.max() ?? 0
                XCTAssertLessThan(worst, 1e-4 * Double(k), "m \(m) n \(n) k \(k) ta \(ta) tb \(tb)")
                XCTAssertTrue(results[0] == results[1], "1 vs 2 threads, m \(m) n \(n) k \(k) ta \(ta) tb \(tb)")
                XCTAssertTrue(results[0] == results[2], "1 vs 3 threads, m \(m) n \(n) k \(k) ta \(ta) tb \(tb)")
            }}
        }
    }

    /// The products of a training step: T tokens (batch 4 x 256) through hidden 576, intermediate
    /// 1536, LoRA rank 16, and the transposes of their backward passes (dX = dY W, dW = dY^T X).
    func testModelShapesAreThreadCountInvariant() {
        let t = 1024, h = 576, f = 1536, r = 16
        let shapes: [(Int, Int, Int, Int, Int)] = [
            (0, 1, t, h, h), (0, 1, t, f, h), (0, 1, t, h, f),   // forward x W^T
            (0, 0, t, h, f), (0, 0, t, h, h),                    // input gradients dY W
            (1, 0, f, h, t), (1, 0, h, h, t),                    // weight gradients dY^T X
            (0, 1, t, r, h), (0, 0, t, h, r), (1, 0, r, h, t),   // LoRA: x A^T, dh A, dh^T x
            (0, 1, 256, 3000, h),                                // a wide head slice
        ]
        for (ta, tb, m, n, k) in shapes {
            let (a, b, c0) = inputs(m, n, k)
            let one = product(ta, tb, m, n, k, a, b, c0, threads: 1)
            for threads in [2, 3, 5] {
                let other = product(ta, tb, m, n, k, a, b, c0, threads: threads)
                XCTAssertTrue(one == other, "1 vs \(threads) threads, ta \(ta) tb \(tb) m \(m) n \(n) k \(k)")
            }
        }
    }

    /// OpenBLAS's own thread count (set behind our back, e.g. by another library) changes nothing:
    /// ql_sgemm puts it back to one thread before every product.
    func testOpenBLASThreadSettingDoesNotChangeBits() {
        let (m, n, k) = (512, 300, 200)
        let (a, b, c0) = inputs(m, n, k)
        let before = product(0, 1, m, n, k, a, b, c0, threads: 2)
        openblas_set_num_threads(4)
        let after = product(0, 1, m, n, k, a, b, c0, threads: 1)
        XCTAssertTrue(before == after)
    }

    /// The tile length is a function of the shape alone, a multiple of 16 rows/columns, and cuts a
    /// product into at most 64 tiles.
    func testTileDependsOnShapeOnly() {
        for (m, n, k) in [(1024, 576, 576), (16, 49152, 576), (1, 5, 7), (100_000, 64, 64)] {
            let saved = ql_threads()
            ql_set_threads(1)
            let t1 = ql_sgemm_tile(Int64(m), Int64(n), Int64(k))
            ql_set_threads(7)
            let t7 = ql_sgemm_tile(Int64(m), Int64(n), Int64(k))
            ql_set_threads(saved)
            XCTAssertEqual(t1, t7)
            XCTAssertEqual(t1 % 16, 0)
            XCTAssertLessThanOrEqual((Int64(max(m, n)) + t1 - 1) / t1, 64)
        }
    }
}
