// Every SIMD level of the C kernels against the scalar reference, on sizes that are not
// multiples of the vector widths, plus special values, thread/split determinism of the RNG and
// of ql_sum_all_f32, half/bfloat16 conversions and strided copies. Each test restores the ISA
// level and the thread count it found.
import XCTest
import CKernels

final class KernelLevelTests: KernelTestCase {
    // MARK: helpers

    private static let sizes = [1, 7, 17, 1000, 100_003]
    private let scalar = Int32(QL_ISA_SCALAR.rawValue)

    /// SIMD levels this CPU supports (the scalar level is the reference).
    private var simdLevels: [Int32] {
        (1...3).map { Int32($0) }.filter { ql_isa_supported($0) != 0 }
    }

    private func name(_ level: Int32) -> String { String(cString: ql_isa_name(level)) }

    private func raw<T: RawRepresentable>(_ v: T) -> Int32 where T.RawValue: BinaryInteger {
        Int32(v.rawValue)
    }

    /// Deterministic uniform values in [lo, hi) from the library's own counter-based RNG.
    private func random(_ n: Int, _ lo: Float, _ hi: Float, seed: UInt64) -> [Float] {
        var x = [Float](repeating: 0, count: n)
        ql_rand_uniform_f32(seed, 0, &x, Int64(n))
        for i in 0..<n { x[i] = lo + (hi - lo) * x[i] }
        return x
    }

    /// Runs `body` at `level` and returns what it produced.
    private func at(_ level: Int32, _ body: () -> [Float]) -> [Float] {
        XCTAssertEqual(ql_isa_set(level), 0)
        return body()
    }

    /// |got - want| <= rtol*|want| + atol elementwise; NaN matches NaN, infinities must match.
    /// `bitwise` demands identical bits instead (any NaN still matches any NaN).
    private func assertClose(_ got: [Float], _ want: [Float], rtol: Double, atol: Double = 0,
                             bitwise: Bool = false, _ what: @autoclosure () -> String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.count, want.count, what(), file: file, line: line)
        var bad = 0, first = -1
        got.withUnsafeBufferPointer { g in
            want.withUnsafeBufferPointer { w in
                for i in 0..<min(g.count, w.count) {
                    let a = g[i], b = w[i]
                    let ok: Bool
                    if a.isNaN || b.isNaN {
                        ok = a.isNaN && b.isNaN
                    } else if bitwise {
                        ok = a.bitPattern == b.bitPattern
                    } else if a.isInfinite || b.isInfinite {
                        ok = a == b
                    } else {
                        ok = abs(Double(a) - Double(b)) <= rtol * abs(Double(b)) + atol
                    }
                    if !ok {
                        bad += 1
                        if first < 0 { first = i }
                    }
                }
            }
        }
        if bad > 0 {
            XCTFail("\(what()): \(bad) mismatches; first at \(first): got \(got[first]) "
                    + "want \(want[first])", file: file, line: line)
        }
    }

    private func assertSameBits(_ got: [Float], _ want: [Float], _ what: @autoclosure () -> String,
                                file: StaticString = #filePath, line: UInt = #line) {
        assertClose(got, want, rtol: 0, bitwise: true, what(), file: file, line: line)
    }

    // MARK: elementwise

    func testBinaryOpsMatchScalar() {
        for n in Self.sizes {
            var a = random(n, -3, 3, seed: 1)
            var b = random(n, -3, 3, seed: 2)
            for i in stride(from: 0, to: n, by: 13) { b[i] = a[i] } // equal pairs for comparisons
            if n > 20 {
                a[3] = .nan; b[5] = .nan; b[7] = 0; a[9] = .infinity; a[11] = 0; b[11] = -0.0
            }
            let variants: [(Int64, Int64)] = n <= 1000 ? [(1, 1), (0, 1), (1, 0), (0, 0)] : [(1, 1), (1, 0)]
            for op in 0...raw(QL_BIN_GE) {
                for (sa, sb) in variants {
                    let run = { () -> [Float] in
                        var out = [Float](repeating: 0, count: n)
                        ql_binary_f32(op, a, sa, b, sb, &out, Int64(n))
                        return out
                    }
                    let ref = at(scalar, run)
                    for level in simdLevels {
                        assertSameBits(at(level, run), ref,
                                       "binary op \(op) sa \(sa) sb \(sb) n \(n) at \(name(level))")
                    }
                }
            }
        }
        // IEEE semantics: no traps, comparisons give 1/0
        _ = ql_isa_set(ql_isa_best())
        let x: [Float] = [1, 0, -1, .nan], y: [Float] = [0, 0, 0, 1]
        var r = [Float](repeating: 7, count: 4)
        ql_binary_f32(raw(QL_BIN_DIV), x, 1, y, 1, &r, 4)
        XCTAssertEqual(r[0], .infinity)
        XCTAssertTrue(r[1].isNaN)
        XCTAssertEqual(r[2], -.infinity)
        ql_binary_f32(raw(QL_BIN_NE), x, 1, y, 1, &r, 4)
        XCTAssertEqual(r, [1, 0, 1, 1])
        ql_binary_f32(raw(QL_BIN_LE), x, 1, y, 1, &r, 4)
        XCTAssertEqual(r, [0, 1, 1, 0])
    }

    private func unaryInputs(_ op: Int32, _ n: Int, seed: UInt64) -> [Float] {
        switch op {
        case raw(QL_UN_LOG), raw(QL_UN_SQRT), raw(QL_UN_RSQRT): return random(n, 1e-3, 100, seed: seed)
        case raw(QL_UN_EXP): return random(n, -100, 88, seed: seed) // includes subnormal results
        default: return random(n, -10, 10, seed: seed)
        }
    }

    func testUnaryForwardBackwardMatchScalar() {
        for op in 0...raw(QL_UN_RSQRT) {
            for n in Self.sizes {
                let x = unaryInputs(op, n, seed: 10 + UInt64(op))
                let dy = random(n, -2, 2, seed: 3)
                let fwd = { () -> [Float] in
                    var y = [Float](repeating: 0, count: n)
                    ql_unary_f32(op, x, &y, Int64(n))
                    return y
                }
                let y0 = at(scalar, fwd)
                let bwd = { () -> [Float] in
                    var dx = [Float](repeating: 0, count: n)
                    ql_unary_backward_f32(op, x, y0, dy, &dx, Int64(n))
                    return dx
                }
                let g0 = at(scalar, bwd)
                for level in simdLevels {
                    // atol covers a few ulps of subnormal results (exp far below zero)
                    assertClose(at(level, fwd), y0, rtol: 1e-6, atol: 1e-43,
                                "unary \(op) n \(n) at \(name(level))")
                    // silu' crosses zero near x = -1.28: absolute slack scaled by |dy| <= 2
                    let atol = op == raw(QL_UN_SILU) ? 4e-6 : 0
                    assertClose(at(level, bwd), g0, rtol: 1e-6, atol: atol,
                                "unary backward \(op) n \(n) at \(name(level))")
                }
            }
        }
    }

    func testUnarySpecialValues() {
        let specials: [Float] = [
            0, -0.0, .infinity, -.infinity, .nan, 3e38, -3e38, 1e-38, -1e-38, .leastNonzeroMagnitude, -.leastNonzeroMagnitude,
            .leastNormalMagnitude, .greatestFiniteMagnitude, 88.72, 88.73, 89, -87.3, -103, -104,
            -110, 1, -1, 0.625, -0.625, 0.6249, 9, -9, 20, -20, 1e-7, -1e-7, 2e-20, 100, -100, 0.5,
        ]
        let n = specials.count
        for op in 0...raw(QL_UN_RSQRT) {
            let run = { () -> [Float] in
                var y = [Float](repeating: 0, count: n)
                ql_unary_f32(op, specials, &y, Int64(n))
                return y
            }
            let ref = at(scalar, run)
            for level in simdLevels {
                assertClose(at(level, run), ref, rtol: 1e-6, atol: 1e-43,
                            "special values, unary \(op) at \(name(level))")
            }
        }
        for level in [scalar] + simdLevels {
            _ = ql_isa_set(level)
            let x: [Float] = [0, -0.0, .infinity, -.infinity, .nan, -1, 1000, -1000]
            var y = [Float](repeating: 0, count: x.count)
            let l = name(level)
            ql_unary_f32(raw(QL_UN_EXP), x, &y, 8)
            XCTAssertEqual(Array(y[0...3]), [1, 1, .infinity, 0], "exp at \(l)")
            XCTAssertTrue(y[4].isNaN)
            XCTAssertEqual(y[6], .infinity)
            XCTAssertEqual(y[7], 0)
            ql_unary_f32(raw(QL_UN_LOG), x, &y, 8)
            XCTAssertEqual(Array(y[0...2]), [-.infinity, -.infinity, .infinity], "log at \(l)")
            XCTAssertTrue(y[3].isNaN && y[4].isNaN && y[5].isNaN, "log of negative / nan at \(l)")
            ql_unary_f32(raw(QL_UN_TANH), x, &y, 8)
            XCTAssertEqual(y[0], 0)
            XCTAssertEqual(y[1].sign, .minus, "tanh(-0) at \(l)")
            XCTAssertEqual(Array(y[2...3]), [1, -1])
            XCTAssertEqual(Array(y[6...7]), [1, -1])
            ql_unary_f32(raw(QL_UN_SIGMOID), x, &y, 8)
            XCTAssertEqual(y[0], 0.5)
            XCTAssertEqual(Array(y[2...3]), [1, 0])
            XCTAssertEqual(y[7], 0)
            let tiny: [Float] = [-90, -100]
            var s = [Float](repeating: 0, count: 2)
            ql_unary_f32(raw(QL_UN_SIGMOID), tiny, &s, 2)
            XCTAssertEqual(Double(s[0]), exp(-90.0), accuracy: exp(-90.0) * 1e-5, "sigmoid(-90) at \(l)")
            XCTAssertGreaterThan(s[1], 0, "sigmoid(-100) underflows gradually at \(l)")
            ql_unary_f32(raw(QL_UN_RELU), x, &y, 8)
            XCTAssertEqual(y[1].sign, .plus)
            XCTAssertTrue(y[4].isNaN)
        }
    }

    func testOtherElementwiseMatchScalar() {
        for n in Self.sizes {
            var x = random(n, -3, 3, seed: 4)
            let dy = random(n, -1, 1, seed: 5)
            let b = random(n, -1, 1, seed: 6)
            var c = (0..<n).map { Float($0 % 3 == 0 ? 0 : ($0 % 3 == 1 ? 1 : -0.0)) }
            if n > 10 { x[2] = .nan; c[4] = .nan; x[5] = -1; x[6] = 2 }
            let kernels: [(String, () -> [Float])] = [
                ("clamp", { var o = [Float](repeating: 0, count: n); ql_clamp_f32(x, -1, 2, &o, Int64(n)); return o }),
                ("clamp_backward", { var o = [Float](repeating: 0, count: n); ql_clamp_backward_f32(x, -1, 2, dy, &o, Int64(n)); return o }),
                ("affine", { var o = [Float](repeating: 0, count: n); ql_affine_f32(x, 1.5, -0.25, &o, Int64(n)); return o }),
                ("axpy", { var o = b; ql_axpy_f32(0.3, x, &o, Int64(n)); return o }),
                ("where", { var o = [Float](repeating: 0, count: n); ql_where_f32(c, x, b, &o, Int64(n)); return o }),
                ("pow_scalar", { var o = [Float](repeating: 0, count: n); ql_pow_scalar_f32(x, 2.5, &o, Int64(n)); return o }),
                ("pow_scalar_backward", { var o = [Float](repeating: 0, count: n); ql_pow_scalar_backward_f32(x, 3, dy, &o, Int64(n)); return o }),
            ]
            for (label, run) in kernels {
                let ref = at(scalar, run)
                for level in simdLevels {
                    assertSameBits(at(level, run), ref, "\(label) n \(n) at \(name(level))")
                }
            }
        }
    }

    // MARK: reductions

    func testReductionsMatchScalar() {
        let shapes: [(Int, Int, Int)] = [
            (1, 1, 1), (1, 7, 1), (3, 17, 1), (5, 1000, 1), (1, 100_003, 1), (2, 70_001, 1),
            (3, 17, 5), (2, 1000, 33), (4, 7, 300), (1, 100_003, 3),
        ]
        for (outer, n, inner) in shapes {
            var x = random(outer * n * inner, -1, 2, seed: 7)
            if outer * n * inner > 2000 { x[1234] = 5; x[1500] = -4 }
            let shape = "[\(outer), \(n), \(inner)]"
            for op in [raw(QL_RED_SUM), raw(QL_RED_MAX), raw(QL_RED_MIN)] {
                let run = { () -> [Float] in
                    var out = [Float](repeating: 0, count: outer * inner)
                    ql_reduce_f32(op, x, Int64(outer), Int64(n), Int64(inner), &out)
                    return out
                }
                let ref = at(scalar, run)
                for level in simdLevels {
                    let got = at(level, run)
                    if op == raw(QL_RED_SUM) {
                        assertClose(got, ref, rtol: 1e-5, "sum \(shape) at \(name(level))")
                    } else {
                        assertClose(got, ref, rtol: 0, "max/min \(op) \(shape) at \(name(level))")
                    }
                }
            }
            for isMax in [true, false] {
                let run = { () -> [Int64] in
                    var out = [Int64](repeating: -1, count: outer * inner)
                    if isMax {
                        ql_argmax_f32(x, Int64(outer), Int64(n), Int64(inner), &out)
                    } else {
                        ql_argmin_f32(x, Int64(outer), Int64(n), Int64(inner), &out)
                    }
                    return out
                }
                _ = ql_isa_set(scalar)
                let ref = run()
                // against a plain Swift reference
                for o in 0..<outer {
                    for j in 0..<inner {
                        var best = 0
                        for k in 1..<max(n, 1) {
                            let v = x[(o * n + k) * inner + j], b = x[(o * n + best) * inner + j]
                            if isMax ? v > b : v < b { best = k }
                        }
                        XCTAssertEqual(ref[o * inner + j], Int64(best), "arg \(isMax) \(shape)")
                    }
                }
                for level in simdLevels {
                    _ = ql_isa_set(level)
                    XCTAssertEqual(run(), ref, "arg reduction \(shape) at \(name(level))")
                }
            }
        }
        // sums over everything, double accumulated
        for n in Self.sizes + [3_000_001] {
            let x = random(n, -1, 1, seed: 8)
            _ = ql_isa_set(scalar)
            let s0 = ql_sum_all_f32(x, Int64(n)), q0 = ql_sumsq_all_f32(x, Int64(n))
            for level in simdLevels {
                _ = ql_isa_set(level)
                XCTAssertEqual(ql_sum_all_f32(x, Int64(n)), s0, accuracy: 1e-9 * Double(n),
                               "sum_all n \(n) at \(name(level))")
                XCTAssertEqual(ql_sumsq_all_f32(x, Int64(n)), q0, accuracy: 1e-10 * q0,
                               "sumsq_all n \(n) at \(name(level))")
            }
        }
    }

    func testSumsAndSoftmaxAreBitwiseIndependentOfThreads() {
        let n = 3_000_001
        let x = random(n, -1, 1, seed: 9)
        let rows = 9, cols = 70_001 // long rows: chunked inside each row
        for level in [scalar] + simdLevels {
            _ = ql_isa_set(level)
            var results: [[UInt64]] = []
            var rowResults: [[UInt32]] = []
            for threads in [Int32(1), 2] {
                ql_set_threads(threads)
                results.append([ql_sum_all_f32(x, Int64(n)).bitPattern, ql_sumsq_all_f32(x, Int64(n)).bitPattern])
                var sums = [Float](repeating: 0, count: rows)
                ql_reduce_f32(raw(QL_RED_SUM), x, Int64(rows), Int64(cols), 1, &sums)
                var sm = [Float](repeating: 0, count: rows * cols)
                ql_softmax_f32(x, &sm, Int64(rows), Int64(cols))
                var one = [Float](repeating: 0, count: cols) // a row alone gives the same bits
                ql_softmax_f32(Array(x[(4 * cols)..<(5 * cols)]), &one, 1, Int64(cols))
                XCTAssertEqual(Array(sm[(4 * cols)..<(5 * cols)]).map(\.bitPattern), one.map(\.bitPattern),
                               "softmax row alone at \(name(level))")
                rowResults.append(sums.map(\.bitPattern) + sm.map(\.bitPattern))
            }
            XCTAssertEqual(results[0], results[1], "sum_all / sumsq_all at \(name(level))")
            XCTAssertTrue(rowResults[0] == rowResults[1], "row sums / softmax at \(name(level))")
        }
    }

    // MARK: softmax

    func testSoftmaxMatchesScalar() {
        let shapes: [(Int, Int)] = [(1, 1), (1, 7), (3, 17), (4, 1000), (1, 100_003), (300, 513), (2, 70_001)]
        for (rows, n) in shapes {
            let count = rows * n
            let x = random(count, -8, 8, seed: 11)
            let dy = random(count, -1, 1, seed: 12)
            let shape = "[\(rows), \(n)]"
            for log in [false, true] {
                let fwd = { () -> [Float] in
                    var y = [Float](repeating: 0, count: count)
                    if log {
                        ql_log_softmax_f32(x, &y, Int64(rows), Int64(n))
                    } else {
                        ql_softmax_f32(x, &y, Int64(rows), Int64(n))
                    }
                    return y
                }
                let y0 = at(scalar, fwd)
                if !log { // rows sum to 1
                    for r in 0..<rows {
                        let s = y0[(r * n)..<((r + 1) * n)].reduce(0.0) { $0 + Double($1) }
                        XCTAssertEqual(s, 1, accuracy: 1e-5, "softmax row sum \(shape)")
                    }
                }
                let bwd = { () -> [Float] in
                    var dx = [Float](repeating: 0, count: count)
                    if log {
                        ql_log_softmax_backward_f32(y0, dy, &dx, Int64(rows), Int64(n))
                    } else {
                        ql_softmax_backward_f32(y0, dy, &dx, Int64(rows), Int64(n))
                    }
                    return dx
                }
                let g0 = at(scalar, bwd)
                for level in simdLevels {
                    let l = name(level)
                    assertClose(at(level, fwd), y0, rtol: 1e-6, atol: log ? 1e-6 : 0,
                                "\(log ? "log_" : "")softmax \(shape) at \(l)")
                    // the gradients cancel (dy - sum): absolute slack
                    assertClose(at(level, bwd), g0, rtol: 1e-5, atol: log ? 1e-6 : 1e-7,
                                "\(log ? "log_" : "")softmax backward \(shape) at \(l)")
                }
            }
        }
    }

    // MARK: broadcasting

    func testBroadcastMatchesScalarAndReference() {
        struct Case { var shape: [Int64]; var astr: [Int64]; var bstr: [Int64] }
        let cases = [
            Case(shape: [300, 513], astr: [513, 1], bstr: [0, 1]),        // bias add
            Case(shape: [300, 513], astr: [513, 1], bstr: [1, 0]),        // row scale
            Case(shape: [4, 50, 17], astr: [850, 17, 1], bstr: [0, 17, 1]),
            Case(shape: [4, 50, 17], astr: [0, 1, 50], bstr: [850, 17, 1]), // strided inner: scalar loop
            Case(shape: [1000, 3], astr: [3, 1], bstr: [0, 1]),
            Case(shape: [3, 100_003], astr: [100_003, 1], bstr: [0, 1]),
            Case(shape: [2, 1, 30, 1000], astr: [30000, 0, 1000, 1], bstr: [0, 0, 1000, 1]),
            Case(shape: [1, 7], astr: [0, 1], bstr: [0, 0]),
            Case(shape: [40000, 5], astr: [5, 1], bstr: [1, 0]),
        ]
        for (ci, c) in cases.enumerated() {
            let total = Int(c.shape.reduce(1, *))
            let aLen = Int(zip(c.shape, c.astr).map { ($0 - 1) * $1 }.reduce(0, +)) + 1
            let bLen = Int(zip(c.shape, c.bstr).map { ($0 - 1) * $1 }.reduce(0, +)) + 1
            let a = random(aLen, -2, 2, seed: 13), b = random(bLen, 0.5, 2, seed: 14)
            for op in [raw(QL_BIN_ADD), raw(QL_BIN_MUL), raw(QL_BIN_DIV), raw(QL_BIN_LT), raw(QL_BIN_MAX)] {
                let run = { () -> [Float] in
                    var out = [Float](repeating: 0, count: total)
                    ql_binary_bcast_f32(op, Int32(c.shape.count), c.shape, a, c.astr, b, c.bstr, &out)
                    return out
                }
                let ref = at(scalar, run)
                for level in simdLevels {
                    for threads in [Int32(1), 2] {
                        ql_set_threads(threads)
                        assertSameBits(at(level, run), ref,
                                       "bcast case \(ci) op \(op) at \(name(level)), \(threads) threads")
                    }
                }
                if op == raw(QL_BIN_ADD) { // plain Swift reference
                    var want = [Float](repeating: 0, count: total)
                    for i in 0..<total {
                        var r = i, oa = 0, ob = 0
                        for d in stride(from: c.shape.count - 1, through: 0, by: -1) {
                            let idx = r % Int(c.shape[d])
                            r /= Int(c.shape[d])
                            oa += idx * Int(c.astr[d])
                            ob += idx * Int(c.bstr[d])
                        }
                        want[i] = a[oa] + b[ob]
                    }
                    assertSameBits(ref, want, "bcast case \(ci) vs reference")
                }
            }
        }
    }

    // MARK: random numbers

    func testPhiloxKnownAnswers() {
        // Random123 kat_vectors for philox4x32_10
        var out = [UInt32](repeating: 0, count: 4)
        ql_philox4x32_10([0, 0, 0, 0], 0, &out)
        XCTAssertEqual(out, [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8])
        ql_philox4x32_10([0xffff_ffff, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff], UInt64.max, &out)
        XCTAssertEqual(out, [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd])
        ql_philox4x32_10([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                         0x299f_31d0_a409_3822, &out)
        XCTAssertEqual(out, [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1])
    }

    func testRandomIsIndependentOfThreadsSplitsAndLevel() {
        let n = 300_007
        typealias Draw = (UInt64, UInt64, UnsafeMutablePointer<Float>?, Int64) -> Void
        let draws: [(String, Draw)] = [("uniform", ql_rand_uniform_f32), ("normal", ql_rand_normal_f32)]
        for (label, draw) in draws {
            var whole = [Float](repeating: 0, count: n)
            ql_set_threads(1)
            draw(42, 5, &whole, Int64(n))
            var two = [Float](repeating: 0, count: n)
            ql_set_threads(2)
            draw(42, 5, &two, Int64(n))
            XCTAssertEqual(whole.map(\.bitPattern), two.map(\.bitPattern), "\(label): 1 vs 2 threads")
            // the same draw in three pieces (offset arithmetic), starting mid-block
            var split = [Float](repeating: 0, count: n)
            split.withUnsafeMutableBufferPointer { p in
                draw(42, 5, p.baseAddress, 3)
                draw(42, 8, p.baseAddress! + 3, 70_000)
                draw(42, 70_008, p.baseAddress! + 70_003, Int64(n - 70_003))
            }
            XCTAssertEqual(whole.map(\.bitPattern), split.map(\.bitPattern), "\(label): split draw")
            for level in [scalar] + simdLevels {
                _ = ql_isa_set(level)
                var again = [Float](repeating: 0, count: n)
                draw(42, 5, &again, Int64(n))
                XCTAssertEqual(whole.map(\.bitPattern), again.map(\.bitPattern), "\(label) at \(name(level))")
            }
            var other = [Float](repeating: 0, count: n)
            draw(43, 5, &other, Int64(n))
            XCTAssertNotEqual(whole, other, "\(label): the seed matters")
            let mean = whole.reduce(0.0) { $0 + Double($1) } / Double(n)
            let variance = whole.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(n)
            if label == "uniform" {
                XCTAssertTrue(whole.allSatisfy { $0 >= 0 && $0 < 1 })
                XCTAssertEqual(mean, 0.5, accuracy: 0.005)
                XCTAssertEqual(variance, 1.0 / 12.0, accuracy: 0.002)
            } else {
                XCTAssertEqual(mean, 0, accuracy: 0.01)
                XCTAssertEqual(variance, 1, accuracy: 0.02)
            }
        }
    }

    // MARK: conversions

    func testHalfConversions() {
        for level in [scalar] + simdLevels { // levels >= avx2 may use F16C
            _ = ql_isa_set(level)
            let l = name(level)
            // ties round to even: 2^-25 -> 0, 1.5 * 2^-24 -> 2 * 2^-24, 1023.5 * 2^-24 -> 2^-14
            let specials: [Float] = [0, -0.0, 1, -2, 65504, 65519.99, 65520, .infinity, -.infinity,
                                     .nan, 0x1p-24, 0x1p-25, 0x1.8p-24, 0x1p-14, 0x1.ff8p-15, 0x1.ffcp-15,
                                     1e-10, 1.0009765625, -0x1.8p-24]
            let want: [UInt16] = [0x0000, 0x8000, 0x3c00, 0xc000, 0x7bff, 0x7bff, 0x7c00, 0x7c00, 0xfc00,
                                  0x7e00, 0x0001, 0x0000, 0x0002, 0x0400, 0x03ff, 0x0400,
                                  0x0000, 0x3c01, 0x8002]
            var h = [UInt16](repeating: 0, count: specials.count)
            ql_f32_to_f16(specials, &h, Int64(specials.count))
            for i in 0..<specials.count where i != 9 {
                XCTAssertEqual(h[i], want[i], "f32->f16 of \(specials[i]) at \(l)")
            }
            XCTAssertEqual(h[9] & 0x7e00, 0x7e00, "NaN stays a quiet NaN at \(l)")
            // every half round-trips exactly through f32 (NaNs come back quiet)
            let all = (0...0xffff).map { UInt16($0) }
            var f = [Float](repeating: 0, count: all.count)
            ql_f16_to_f32(all, &f, Int64(all.count))
            XCTAssertEqual(f[0x0001], 0x1p-24)
            XCTAssertEqual(f[0x03ff], 0x1.ff8p-15)
            XCTAssertEqual(f[0x7bff], 65504)
            XCTAssertEqual(f[0xfc00], -.infinity)
            XCTAssertEqual(f[0x8000].sign, .minus)
            var back = [UInt16](repeating: 0, count: all.count)
            ql_f32_to_f16(f, &back, Int64(all.count))
            var bad = 0
            for i in 0...0xffff {
                let isNaN = (i >> 10) & 0x1f == 0x1f && i & 0x3ff != 0
                if back[i] != (isNaN ? UInt16(i | 0x200) : UInt16(i)) { bad += 1 }
                if isNaN != f[i].isNaN { bad += 1 }
            }
            XCTAssertEqual(bad, 0, "f16 round trip at \(l)")
        }
    }

    func testBFloat16Conversions() {
        let specials: [Float] = [0, -0.0, .infinity, -.infinity, Float(bitPattern: 0x7f80_0001),
                                 .greatestFiniteMagnitude, 1, Float(bitPattern: 0x3f80_8000),
                                 Float(bitPattern: 0x3f81_8000), Float(bitPattern: 0x3f80_8001), .leastNonzeroMagnitude]
        let want: [UInt16] = [0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7f80, 0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x0000]
        var h = [UInt16](repeating: 0, count: specials.count)
        ql_f32_to_bf16(specials, &h, Int64(specials.count))
        XCTAssertEqual(h, want)
        let all = (0...0xffff).map { UInt16($0) }
        var f = [Float](repeating: 0, count: all.count)
        ql_bf16_to_f32(all, &f, Int64(all.count))
        var back = [UInt16](repeating: 0, count: all.count)
        ql_f32_to_bf16(f, &back, Int64(all.count))
        var bad = 0
        for i in 0...0xffff {
            let isNaN = (i >> 7) & 0xff == 0xff && i & 0x7f != 0
            if back[i] != (isNaN ? UInt16(i | 0x40) : UInt16(i)) { bad += 1 }
            if f[i].bitPattern != UInt32(i) << 16 { bad += 1 }
        }
        XCTAssertEqual(bad, 0, "bf16 round trip")
    }

    // MARK: strided copy

    func testStridedCopyTranspose() {
        for (rows, cols) in [(513, 300), (7, 3), (1200, 1100)] {
            // src is [cols, rows] row-major; dst = its transpose, [rows, cols]
            let src = random(rows * cols, -1, 1, seed: 15)
            var want = [Float](repeating: 0, count: rows * cols)
            for r in 0..<rows { for c in 0..<cols { want[r * cols + c] = src[c * rows + r] } }
            for threads in [Int32(1), 2] {
                ql_set_threads(threads)
                var dst = [Float](repeating: .nan, count: rows * cols)
                ql_strided_copy(4, 2, [Int64(rows), Int64(cols)], src, [1, Int64(rows)], &dst)
                XCTAssertEqual(dst.map(\.bitPattern), want.map(\.bitPattern),
                               "transpose \(rows)x\(cols), \(threads) threads")
            }
            // 2- and 8-byte elements
            let s16 = src.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 7) }
            var d16 = [UInt16](repeating: 0, count: rows * cols)
            ql_strided_copy(2, 2, [Int64(rows), Int64(cols)], s16, [1, Int64(rows)], &d16)
            let s64 = src.map { UInt64($0.bitPattern) &* 0x9E37_79B9_7F4A_7C15 }
            var d64 = [UInt64](repeating: 0, count: rows * cols)
            ql_strided_copy(8, 2, [Int64(rows), Int64(cols)], s64, [1, Int64(rows)], &d64)
            var bad = 0
            for r in 0..<rows {
                for c in 0..<cols {
                    if d16[r * cols + c] != s16[c * rows + r] { bad += 1 }
                    if d64[r * cols + c] != s64[c * rows + r] { bad += 1 }
                }
            }
            XCTAssertEqual(bad, 0, "2/8-byte transpose \(rows)x\(cols)")
        }
        // a permute with a broadcast dim and a slice
        let src = (0..<(4 * 50 * 17)).map { Float($0) }
        var dst = [Float](repeating: 0, count: 3 * 4 * 17)
        ql_strided_copy(4, 3, [3, 4, 17], src, [0, 850, 1], &dst)
        for k in 0..<3 { for i in 0..<4 { for j in 0..<17 {
            XCTAssertEqual(dst[(k * 4 + i) * 17 + j], Float(i * 850 + j))
        } } }
    }

    // MARK: thread pool

    func testParallelForRunsEveryTaskOnce() {
        for threads in [Int32(1), 2, 3] {
            ql_set_threads(threads)
            for ntasks in [1, 2, 5, 64] {
                let counts = UnsafeMutablePointer<Int64>.allocate(capacity: ntasks)
                counts.initialize(repeating: 0, count: ntasks)
                defer { counts.deallocate() }
                ql_parallel_for(Int64(ntasks), { ctx, task in
                    ctx!.assumingMemoryBound(to: Int64.self)[Int(task)] += 1 // its own slot only
                }, UnsafeMutableRawPointer(counts))
                let got = Array(UnsafeBufferPointer(start: counts, count: ntasks))
                XCTAssertEqual(got, [Int64](repeating: 1, count: ntasks), "\(ntasks) tasks, \(threads) threads")
            }
        }
    }
}
