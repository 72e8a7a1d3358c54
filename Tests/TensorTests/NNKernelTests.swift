// The fused NN kernels (qlora_nn.h: RMSNorm, cross-entropy, SwiGLU, RoPE, causal GQA attention):
// every ISA level against the scalar reference, and each backward against central finite
// differences of a double-precision forward written here.
import CKernels
import XCTest

final class NNKernelTests: KernelTestCase {
    private var levels: [Int32] { (0...3).map { Int32($0) }.filter { ql_isa_supported($0) != 0 } }

    private func random(_ n: Int, _ lo: Float, _ hi: Float, seed: UInt64) -> [Float] {
        var x = [Float](repeating: 0, count: n)
        ql_rand_uniform_f32(seed, 0, &x, Int64(n))
        return x.map { lo + (hi - lo) * $0 }
    }

    private func assertClose(_ got: [Float], _ want: [Double], tol: Double, _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.count, want.count, what, file: file, line: line)
        let scale = want.map { abs($0) }.max() ?? 0
        for i in 0..<min(got.count, want.count) where !(abs(Double(got[i]) - want[i]) <= tol * max(scale, 1e-3)) {
            XCTFail("\(what)[\(i)]: got \(got[i]), expected \(want[i])", file: file, line: line)
            return
        }
    }

    private func assertClose(_ got: [Float], _ want: [Float], tol: Double, _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        assertClose(got, want.map { Double($0) }, tol: tol, what, file: file, line: line)
    }

    /// Central differences of f at x (double).
    private func numericGrad(_ x: [Double], _ f: ([Double]) -> Double) -> [Double] {
        var x = x, g = [Double](repeating: 0, count: x.count)
        for i in 0..<x.count {
            let h = 1e-6 * max(1, abs(x[i])), v = x[i]
            x[i] = v + h; let a = f(x)
            x[i] = v - h; let b = f(x)
            x[i] = v
            g[i] = (a - b) / (2 * h)
        }
        return g
    }

    private func d(_ x: [Float]) -> [Double] { x.map { Double($0) } }

    // MARK: RMSNorm

    private func rmsnormD(_ x: [Double], _ w: [Double], _ rows: Int, _ n: Int, eps: Double) -> [Double] {
        var y = [Double](repeating: 0, count: rows * n)
        for r in 0..<rows {
            var ss = 0.0
            for i in 0..<n { ss += x[r * n + i] * x[r * n + i] }
            let rs = 1 / (ss / Double(n) + eps).squareRoot()
            for i in 0..<n { y[r * n + i] = x[r * n + i] * rs * w[i] }
        }
        return y
    }

    func testRMSNormLevelsAndGradients() {
        for (rows, n) in [(3, 37), (5, 1000), (70, 64)] {
            let x = random(rows * n, -2, 2, seed: 1), w = random(n, 0.5, 1.5, seed: 2), dy = random(rows * n, -1, 1, seed: 3)
            var yr = [Float](repeating: 0, count: rows * n), rr = [Float](repeating: 0, count: rows)
            var dxr = yr, dwr = [Float](repeating: 0, count: n)
            ql_rmsnorm_f32_ref(x, w, 1e-5, &yr, &rr, Int64(rows), Int64(n))
            ql_rmsnorm_backward_f32_ref(x, w, rr, dy, &dxr, &dwr, Int64(rows), Int64(n))
            assertClose(yr, rmsnormD(d(x), d(w), rows, n, eps: 1e-5), tol: 1e-6, "rmsnorm ref y")
            for level in levels {
                XCTAssertEqual(ql_isa_set(level), 0)
                var y = yr, r = rr, dx = dxr, dw = dwr
                ql_rmsnorm_f32(x, w, 1e-5, &y, &r, Int64(rows), Int64(n))
                ql_rmsnorm_backward_f32(x, w, r, dy, &dx, &dw, Int64(rows), Int64(n))
                assertClose(y, yr, tol: 1e-6, "rmsnorm y level \(level) \(rows)x\(n)")
                assertClose(dx, dxr, tol: 1e-5, "rmsnorm dx level \(level)")
                assertClose(dw, dwr, tol: 1e-5, "rmsnorm dw level \(level)")
            }
        }
        let rows = 3, n = 11
        let x = random(rows * n, -2, 2, seed: 4), w = random(n, 0.5, 1.5, seed: 5), c = random(rows * n, -1, 1, seed: 6)
        var y = [Float](repeating: 0, count: rows * n), r = [Float](repeating: 0, count: rows)
        var dx = y, dw = [Float](repeating: 0, count: n)
        ql_rmsnorm_f32_ref(x, w, 1e-5, &y, &r, Int64(rows), Int64(n))
        ql_rmsnorm_backward_f32_ref(x, w, r, c, &dx, &dw, Int64(rows), Int64(n))
        let loss = { (x: [Double], w: [Double]) in zip(self.rmsnormD(x, w, rows, n, eps: 1e-5), c).reduce(0) { $0 + $1.0 * Double($1.1) } }
        assertClose(dx, numericGrad(d(x)) { loss($0, self.d(w)) }, tol: 1e-5, "rmsnorm dx vs finite differences")
        assertClose(dw, numericGrad(d(w)) { loss(self.d(x), $0) }, tol: 1e-5, "rmsnorm dw vs finite differences")
    }

    // MARK: cross-entropy

    func testCrossEntropyLevelsAndGradients() {
        for (batch, per, v) in [(2, 3, 29), (2, 5, 8195)] {
            let bstride = (per + 1) * v, rows = batch * per
            let x = random(batch * bstride, -4, 4, seed: 7)
            var target = (0..<rows).map { Int64(($0 * 7919) % v) }
            target[1] = -1
            var lse = [Float](repeating: 0, count: rows), loss = lse
            ql_xent_f32_ref(x, Int64(batch), Int64(per), Int64(bstride), Int64(v), target, &lse, &loss)
            var dxr = [Float](repeating: 9, count: batch * bstride)
            ql_xent_backward_f32_ref(x, Int64(batch), Int64(per), Int64(bstride), Int64(v), target, lse, 0.7, &dxr)
            // double reference of the forward
            func lossD(_ x: [Double]) -> Double {
                var total = 0.0
                for r in 0..<rows where target[r] >= 0 {
                    let o = (r / per) * bstride + (r % per) * v
                    let m = x[o..<o + v].max()!
                    let s = x[o..<o + v].reduce(0) { $0 + exp($1 - m) }
                    total += m + log(s) - x[o + Int(target[r])]
                }
                return 0.7 * total
            }
            XCTAssertEqual(0.7 * loss.reduce(0) { $0 + Double($1) }, lossD(d(x)), accuracy: 1e-5 * Double(rows))
            XCTAssertEqual(loss[1], 0)
            for level in levels {
                XCTAssertEqual(ql_isa_set(level), 0)
                var l2 = lse, lo2 = loss, dx = dxr
                ql_xent_f32(x, Int64(batch), Int64(per), Int64(bstride), Int64(v), target, &l2, &lo2)
                ql_xent_backward_f32(x, Int64(batch), Int64(per), Int64(bstride), Int64(v), target, l2, 0.7, &dx)
                assertClose(l2, lse, tol: 1e-6, "xent lse level \(level)")
                assertClose(lo2, loss, tol: 1e-5, "xent loss level \(level)")
                assertClose(dx, dxr, tol: 1e-5, "xent dx level \(level)")
                XCTAssertEqual(dx[per * v], 9, "rows outside the view are not written")
            }
            if v < 100 {
                var num = numericGrad(d(x), lossD)
                for i in 0..<batch { for j in 0..<v { num[i * bstride + per * v + j] = 9 } }
                assertClose(dxr, num, tol: 1e-5, "xent dx vs finite differences")
            }
        }
    }

    // MARK: SwiGLU

    func testSwiGLULevelsAndGradients() {
        for n in [1, 45, 100_003] {
            let g = random(n, -8, 8, seed: 8), u = random(n, -2, 2, seed: 9), dy = random(n, -1, 1, seed: 10)
            var yr = [Float](repeating: 0, count: n), dgr = yr, dur = yr
            ql_swiglu_f32_ref(g, u, &yr, Int64(n))
            ql_swiglu_backward_f32_ref(g, u, dy, &dgr, &dur, Int64(n))
            for level in levels {
                XCTAssertEqual(ql_isa_set(level), 0)
                var y = yr, dg = dgr, du = dur
                ql_swiglu_f32(g, u, &y, Int64(n))
                ql_swiglu_backward_f32(g, u, dy, &dg, &du, Int64(n))
                assertClose(y, yr, tol: 1e-6, "swiglu y level \(level)")
                assertClose(dg, dgr, tol: 1e-6, "swiglu dg level \(level)")
                assertClose(du, dur, tol: 1e-6, "swiglu du level \(level)")
            }
            if n == 45 {
                func silu(_ x: Double) -> Double { x / (1 + exp(-x)) }
                func f(_ g: [Double], _ u: [Double]) -> Double {
                    var total = 0.0
                    for i in 0..<n { total += Double(dy[i]) * silu(g[i]) * u[i] }
                    return total
                }
                var want = [Double](repeating: 0, count: n)
                for i in 0..<n { want[i] = silu(Double(g[i])) * Double(u[i]) }
                assertClose(yr, want, tol: 1e-6, "swiglu y")
                assertClose(dgr, numericGrad(d(g)) { f($0, self.d(u)) }, tol: 1e-5, "swiglu dg vs finite differences")
                assertClose(dur, numericGrad(d(u)) { f(self.d(g), $0) }, tol: 1e-5, "swiglu du vs finite differences")
            }
        }
    }

    // MARK: RoPE

    func testRoPEForwardAndInverse() {
        let outer = 3, t = 4, dim = 8, n = outer * t * dim, h = dim / 2
        let x = random(n, -2, 2, seed: 11), c = random(t * dim, -1, 1, seed: 12), s = random(t * dim, -1, 1, seed: 13)
        func fwd(_ x: [Double]) -> [Double] {
            var y = x
            for r in 0..<outer * t { for i in 0..<dim {
                let ti = r % t, rot = i < h ? -x[r * dim + i + h] : x[r * dim + i - h]
                y[r * dim + i] = x[r * dim + i] * Double(c[ti * dim + i]) + rot * Double(s[ti * dim + i])
            } }
            return y
        }
        var yr = [Float](repeating: 0, count: n), dxr = yr
        ql_rope_f32_ref(x, c, s, &yr, Int64(outer), Int64(t), Int64(dim), 0)
        assertClose(yr, fwd(d(x)), tol: 1e-6, "rope y")
        let dy = random(n, -1, 1, seed: 14)
        ql_rope_f32_ref(dy, c, s, &dxr, Int64(outer), Int64(t), Int64(dim), 1)
        let num = numericGrad(d(x)) { zip(fwd($0), dy).reduce(0) { $0 + $1.0 * Double($1.1) } }
        assertClose(dxr, num, tol: 1e-5, "rope backward vs finite differences")
        for level in levels {
            XCTAssertEqual(ql_isa_set(level), 0)
            var y = yr, dx = dxr
            ql_rope_f32(x, c, s, &y, Int64(outer), Int64(t), Int64(dim), 0)
            ql_rope_f32(dy, c, s, &dx, Int64(outer), Int64(t), Int64(dim), 1)
            assertClose(y, yr, tol: 0, "rope y level \(level)")
            assertClose(dx, dxr, tol: 0, "rope dx level \(level)")
        }
    }

    // MARK: attention

    private func attentionD(_ q: [Double], _ k: [Double], _ v: [Double], _ b: Int, _ h: Int, _ kv: Int,
                            _ t: Int, _ s: Int, _ dim: Int) -> [Double] {
        var out = [Double](repeating: 0, count: b * h * t * dim)
        let rep = h / kv, scale = 1 / Double(dim).squareRoot()
        for bi in 0..<b { for hi in 0..<h {
            let qo = (bi * h + hi) * t * dim, ko = (bi * kv + hi / rep) * s * dim
            for i in 0..<t {
                let len = s - t + i + 1
                var sc = [Double](repeating: 0, count: len)
                for j in 0..<len { for c in 0..<dim { sc[j] += q[qo + i * dim + c] * k[ko + j * dim + c] }; sc[j] *= scale }
                let m = sc.max()!
                let p = sc.map { exp($0 - m) }, z = p.reduce(0, +)
                for j in 0..<len { for c in 0..<dim { out[qo + i * dim + c] += p[j] / z * v[ko + j * dim + c] } }
            }
        } }
        return out
    }

    func testAttentionLevelsAndGradients() {
        // the kernels take query rows 64 at a time (each block sees only the keys it may attend
        // to): t = 70 and t = 150 span two and three blocks, with grouped kv heads
        for (b, h, kv, t, s, dim) in [(2, 4, 2, 3, 5, 8), (1, 2, 1, 33, 40, 16), (1, 3, 3, 1, 7, 4),
                                      (1, 2, 1, 70, 70, 2), (1, 4, 2, 150, 160, 8)] {
            let nq = b * h * t * dim, nk = b * kv * s * dim
            let q = random(nq, -1, 1, seed: 15), k = random(nk, -1, 1, seed: 16), v = random(nk, -1, 1, seed: 17)
            let dout = random(nq, -1, 1, seed: 18)
            let scale = Float(1 / Double(dim).squareRoot())
            var outr = [Float](repeating: 0, count: nq), lser = [Float](repeating: 0, count: b * h * t)
            var dqr = outr, dkr = [Float](repeating: 0, count: nk), dvr = dkr
            XCTAssertEqual(ql_attention_f32_ref(q, k, v, &outr, &lser, Int64(b), Int64(h), Int64(kv), Int64(t), Int64(s),
                                                Int64(dim), scale), 0)
            XCTAssertEqual(ql_attention_backward_f32_ref(q, k, v, outr, lser, dout, &dqr, &dkr, &dvr, Int64(b), Int64(h),
                                                         Int64(kv), Int64(t), Int64(s), Int64(dim), scale), 0)
            assertClose(outr, attentionD(d(q), d(k), d(v), b, h, kv, t, s, dim), tol: 1e-5, "attention out")
            for level in levels {
                XCTAssertEqual(ql_isa_set(level), 0)
                var out = outr, lse = lser, dq = dqr, dk = dkr, dv = dvr
                XCTAssertEqual(ql_attention_f32(q, k, v, &out, &lse, Int64(b), Int64(h), Int64(kv), Int64(t), Int64(s),
                                                Int64(dim), scale), 0)
                XCTAssertEqual(ql_attention_backward_f32(q, k, v, out, lse, dout, &dq, &dk, &dv, Int64(b), Int64(h),
                                                         Int64(kv), Int64(t), Int64(s), Int64(dim), scale), 0)
                assertClose(out, outr, tol: 1e-5, "attention out level \(level)")
                assertClose(lse, lser, tol: 1e-5, "attention lse level \(level)")
                assertClose(dq, dqr, tol: 1e-5, "attention dq level \(level)")
                assertClose(dk, dkr, tol: 1e-5, "attention dk level \(level)")
                assertClose(dv, dvr, tol: 1e-5, "attention dv level \(level)")
            }
            if t * s < 100 || (t == 70 && dim == 2) {
                let f = { (q: [Double], k: [Double], v: [Double]) -> Double in
                    zip(self.attentionD(q, k, v, b, h, kv, t, s, dim), dout).reduce(0) { $0 + $1.0 * Double($1.1) }
                }
                assertClose(dqr, numericGrad(d(q)) { f($0, self.d(k), self.d(v)) }, tol: 1e-4, "attention dq vs finite differences")
                assertClose(dkr, numericGrad(d(k)) { f(self.d(q), $0, self.d(v)) }, tol: 1e-4, "attention dk vs finite differences")
                assertClose(dvr, numericGrad(d(v)) { f(self.d(q), self.d(k), $0) }, tol: 1e-4, "attention dv vs finite differences")
            }
        }
    }

    /// A score scratch that cannot be allocated is a status the caller can throw, not an abort:
    /// t * s floats per thread overflow the address space here, so nothing is read or written.
    func testAttentionScratchFailureReturnsStatus() {
        let x = [Float](repeating: 0, count: 4)
        var out = x, lse = x, dq = x, dk = x, dv = x
        let s = Int64(1) << 62
        XCTAssertEqual(ql_attention_f32(x, x, x, &out, &lse, 1, 1, 1, 1, s, 1, 1), -1)
        XCTAssertEqual(ql_attention_f32_ref(x, x, x, &out, &lse, 1, 1, 1, 1, s, 1, 1), -1)
        XCTAssertEqual(ql_attention_backward_f32(x, x, x, x, x, x, &dq, &dk, &dv, 1, 1, 1, 1, s, 1, 1), -1)
        XCTAssertEqual(ql_attention_backward_f32_ref(x, x, x, x, x, x, &dq, &dk, &dv, 1, 1, 1, 1, s, 1, 1), -1)
        XCTAssertEqual(out, x)
    }
}
