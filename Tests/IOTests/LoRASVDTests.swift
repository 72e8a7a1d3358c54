// The truncated SVD behind PiSSA and LoftQ (LoRAInit, LAPACK's dgesdd): the factors of both
// orientations (tall and wide, the row-major / column-major mapping), and the randomized path for
// matrices whose smaller side exceeds 256, on a matrix with a known spectrum. (NN has no test
// target of its own yet; IOTests already depends on it.)

import Foundation
@testable import NN
import Tensor
import XCTest

final class LoRASVDTests: XCTestCase {
    /// A deterministic pseudo-random value in [-1, 1).
    private func values(_ n: Int, seed: UInt64) -> [Double] {
        var x = seed
        return (0..<n).map { _ in
            x = x &* 6364136223846793005 &+ 1442695040888963407
            return Double(x >> 11) / Double(1 << 52) - 1
        }
    }

    private func product(_ u: [Double], _ s: [Double], _ vt: [Double], m: Int, n: Int, k: Int) -> [Double] {
        var w = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for c in 0..<k { for j in 0..<n { w[i * n + j] += u[i * k + c] * s[c] * vt[c * n + j] } } }
        return w
    }

    func testExactFactorsOfTallAndWideMatrices() throws {
        for (m, n) in [(40, 30), (30, 40), (1, 5), (6, 6)] {
            let w = values(m * n, seed: UInt64(m * 100 + n))
            let k = min(m, n)
            let (u, s, vt) = try LoRAInit.truncatedSVD(w, rows: m, cols: n, rank: k)
            for c in 1..<max(k, 1) { XCTAssertGreaterThanOrEqual(s[c - 1], s[c], "descending [\(m), \(n)]") }
            let back = product(u, s, vt, m: m, n: n, k: k)
            for i in 0..<(m * n) { XCTAssertEqual(back[i], w[i], accuracy: 1e-12, "U S Vt = W [\(m), \(n)]") }
            for a in 0..<k { for b in 0..<k {   // orthonormal columns of U and rows of Vt
                var uu = 0.0, vv = 0.0
                for i in 0..<m { uu += u[i * k + a] * u[i * k + b] }
                for j in 0..<n { vv += vt[a * n + j] * vt[b * n + j] }
                XCTAssertEqual(uu, a == b ? 1 : 0, accuracy: 1e-12)
                XCTAssertEqual(vv, a == b ? 1 : 0, accuracy: 1e-12)
            } }
        }
    }

    func testRandomizedPathRecoversAKnownSpectrum() throws {
        // W = Q1 diag(sigma) Q2^T with orthonormal Q1 [300, 20], Q2 [280, 20]: min side 280 > 256
        let m = 300, n = 280, r = 20, rank = 6
        var q1 = values(m * r, seed: 7), q2 = values(n * r, seed: 8)
        LoRAInit.orthonormalizeColumns(&q1, m, r)
        LoRAInit.orthonormalizeColumns(&q2, n, r)
        let sigma = (0..<r).map { 100 * pow(0.6, Double($0)) }
        var w = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for c in 0..<r { for j in 0..<n { w[i * n + j] += q1[i * r + c] * sigma[c] * q2[j * r + c] } } }
        let (u, s, vt) = try LoRAInit.truncatedSVD(w, rows: m, cols: n, rank: rank)
        // the products run in f32, so the values agree to f32 precision relative to sigma_1
        for c in 0..<rank { XCTAssertEqual(s[c], sigma[c], accuracy: 1e-4 * sigma[0], "singular value \(c)") }
        let back = product(u, s, vt, m: m, n: n, k: rank)
        var err = 0.0, tail = 0.0
        for i in 0..<(m * n) { err += (back[i] - w[i]) * (back[i] - w[i]) }
        for c in rank..<r { tail += sigma[c] * sigma[c] }
        XCTAssertEqual(err.squareRoot(), tail.squareRoot(), accuracy: 1e-3 * sigma[0], "the best rank-\(rank) error")
    }

    func testBadArgumentsAreErrors() {
        XCTAssertThrowsError(try LoRAInit.truncatedSVD([1, 2, 3], rows: 2, cols: 2, rank: 1))
        XCTAssertThrowsError(try LoRAInit.truncatedSVD([1, 2, 3, 4], rows: 2, cols: 2, rank: 3))
        XCTAssertThrowsError(try LoRAInit.truncatedSVD([1, .nan, 3, 4], rows: 2, cols: 2, rank: 1))
    }
}
