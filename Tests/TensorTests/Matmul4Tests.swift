// The fused 4-bit matrix products (matmul4*.c): ql_matmul4_f32 / _bf16 and their backward passes
// at every ISA level the CPU supports, against the scalar level and against a dense
// double-accumulated product of the dequantized weight, for NF4 and FP4, plain and
// double-quantized absmax, blocks 32 / 64 / 256, shapes that are not multiples of any tile
// (M = 1, 3, 17; N = 33; K = 80; blocks crossing rows; odd K), bias on and off; one and two
// threads must give the same bits. Each test restores the ISA level and thread count it found.
// The LoRA variants (ql_matmul4_lora_*): y bitwise as the plain product, h = x A^T and
// dx = dy W + dh A against the dense products and the scalar level, over M = 1..5 and 17, ranks
// that fill no tile and one that spans two tiles and two reduction chunks. The dense bf16
// products (ql_matmul_dense_bf16*) against the dense product of the bf16-rounded operands.
//
// Error norm: an output o = sum_i a_i w_i (+ bias) is checked as |got - want| <= tol * S with
// S = sum_i |a_i w_i| (+ |bias|), the magnitude sum of its terms in double. This is the scale
// of the rounding error of any summation order, so it stays meaningful under cancellation.
// f32 compute: tol 1e-5 against the exact product. bf16 compute: tol 1e-5 against the exact
// product of the bf16-rounded operands (the kernels' products are exact, only the f32 sums
// round), and tol 1e-2 against the unrounded f32 product.
import CKernels
import XCTest

final class Matmul4Tests: KernelTestCase {
    // MARK: - Weights

    private static let nf4 = Int32(QL_Q_NF4.rawValue)
    private static let fp4 = Int32(QL_Q_FP4.rawValue)

    /// Every level this CPU supports, scalar first.
    private var levels: [Int32] { (0...3).map { Int32($0) }.filter { ql_isa_supported($0) != 0 } }

    private func levelName(_ level: Int32) -> String { String(cString: ql_isa_name(level)) }

    /// A quantized weight [rows, cols] with its parts and its dequantized values.
    struct QWeight {
        let type: Int32
        let rows: Int, cols: Int, block: Int
        let packed: [UInt8]
        let absmax: [Float]?                 // plain
        let absmaxQ: [UInt8]?                // double quantized
        let nestedAbsmax: [Float]
        let nestedCode: [Float]
        let offset: Float
        var dense: [Float] = []              // W, dequantized by the test's own loop

        var name: String {
            "\(type == Matmul4Tests.nf4 ? "nf4" : "fp4")\(absmaxQ != nil ? "+dq" : "") "
                + "[\(rows)x\(cols)] block \(block)"
        }

        func withC<T>(_ body: (UnsafePointer<ql_qweight>) -> T) -> T {
            packed.withUnsafeBufferPointer { p in
                (absmax ?? []).withUnsafeBufferPointer { am in
                    (absmaxQ ?? []).withUnsafeBufferPointer { q in
                        nestedAbsmax.withUnsafeBufferPointer { na in
                            nestedCode.withUnsafeBufferPointer { nc in
                                var w = ql_qweight()
                                w.type = type
                                w.rows = Int64(rows)
                                w.cols = Int64(cols)
                                w.block = Int64(block)
                                w.packed = p.baseAddress
                                w.absmax = absmax != nil ? am.baseAddress : nil
                                w.absmax_q = absmaxQ != nil ? q.baseAddress : nil
                                w.nested_absmax = absmaxQ != nil ? na.baseAddress : nil
                                w.nested_code = absmaxQ != nil ? nc.baseAddress : nil
                                w.offset = offset
                                return withUnsafePointer(to: &w) { body($0) }
                            }
                        }
                    }
                }
            }
        }
    }

    private func normal(_ n: Int, seed: UInt64, scale: Float) -> [Float] {
        var x = [Float](repeating: 0, count: n)
        ql_rand_normal_f32(seed, 0, &x, Int64(n))
        return x.map { $0 * scale }
    }

    /// Quantizes a random weight with the library's quantizer and dequantizes it with a plain
    /// loop of the layout (flat row-major blocks, high nibble first).
    private func makeWeight(type: Int32, rows: Int, cols: Int, block: Int, double: Bool,
                            seed: UInt64) -> QWeight {
        let n = rows * cols, nb = (n + block - 1) / block
        var x = normal(n, seed: seed, scale: 0.05)
        for i in stride(from: 0, to: n, by: 7) { x[i] *= 4 } // uneven block scales
        var packed = [UInt8](repeating: 0, count: (n + 1) / 2)
        var absmax = [Float](repeating: 0, count: nb)
        ql_quantize_4bit(type, x, Int64(n), Int64(block), &packed, &absmax)
        var w: QWeight
        if double {
            let nn = (nb + Int(QL_Q_NESTED_BLOCK) - 1) / Int(QL_Q_NESTED_BLOCK)
            var q = [UInt8](repeating: 0, count: nb)
            var nested = [Float](repeating: 0, count: nn)
            var offset: Float = 0
            var map = [Float](repeating: 0, count: 256)
            ql_dynamic_map(&map)
            ql_double_quantize(absmax, Int64(nb), &q, &nested, &offset)
            w = QWeight(type: type, rows: rows, cols: cols, block: block, packed: packed,
                        absmax: nil, absmaxQ: q, nestedAbsmax: nested, nestedCode: map,
                        offset: offset)
        } else {
            w = QWeight(type: type, rows: rows, cols: cols, block: block, packed: packed,
                        absmax: absmax, absmaxQ: nil, nestedAbsmax: [], nestedCode: [], offset: 0)
        }
        let code = Array(UnsafeBufferPointer(start: ql_quant_code(type), count: 16))
        var dense = [Float](repeating: 0, count: n)
        for i in 0..<n {
            let b = i / block
            let am: Float
            if let q = w.absmaxQ {
                let scaled = w.nestedCode[Int(q[b])] * w.nestedAbsmax[b / Int(QL_Q_NESTED_BLOCK)]
                am = scaled + w.offset
            } else {
                am = w.absmax![b]
            }
            let byte = packed[i / 2]
            let nib = i & 1 == 0 ? byte >> 4 : byte & 15
            dense[i] = code[Int(nib)] * am
        }
        w.dense = dense
        return w
    }

    private func roundBF16(_ x: [Float]) -> [Float] {
        var h = [UInt16](repeating: 0, count: x.count)
        var out = [Float](repeating: 0, count: x.count)
        ql_f32_to_bf16(x, &h, Int64(x.count))
        ql_bf16_to_f32(h, &out, Int64(x.count))
        return out
    }

    // MARK: - Dense references (double accumulation) with the magnitude sums

    /// y = x W^T (+ bias) and S = |x||W|^T (+ |bias|).
    private func denseForward(_ w: [Float], rows n: Int, cols k: Int, _ x: [Float], m: Int,
                              bias: [Float]?) -> (value: [Double], norm: [Double]) {
        var y = [Double](repeating: 0, count: m * n), s = [Double](repeating: 0, count: m * n)
        w.withUnsafeBufferPointer { wp in
            x.withUnsafeBufferPointer { xp in
                for i in 0..<m {
                    for j in 0..<n {
                        var acc = 0.0, mag = 0.0
                        for t in 0..<k {
                            let p = Double(xp[i * k + t]) * Double(wp[j * k + t])
                            acc += p
                            mag += abs(p)
                        }
                        if let b = bias {
                            acc += Double(b[j])
                            mag += abs(Double(b[j]))
                        }
                        y[i * n + j] = acc
                        s[i * n + j] = mag
                    }
                }
            }
        }
        return (y, s)
    }

    /// dx = dy W and S = |dy||W|.
    private func denseBackward(_ w: [Float], rows n: Int, cols k: Int, _ dy: [Float], m: Int)
        -> (value: [Double], norm: [Double]) {
        var dx = [Double](repeating: 0, count: m * k), s = [Double](repeating: 0, count: m * k)
        w.withUnsafeBufferPointer { wp in
            dy.withUnsafeBufferPointer { dp in
                dx.withUnsafeMutableBufferPointer { out in
                    s.withUnsafeMutableBufferPointer { mag in
                        for i in 0..<m {
                            for j in 0..<n {
                                let d = Double(dp[i * n + j])
                                for t in 0..<k {
                                    let p = d * Double(wp[j * k + t])
                                    out[i * k + t] += p
                                    mag[i * k + t] += abs(p)
                                }
                            }
                        }
                    }
                }
            }
        }
        return (dx, s)
    }

    /// |got - want| <= tol * norm for every output (NaN never passes).
    private func assertWithin(_ got: [Float], _ want: [Double], _ norm: [Double], tol: Double,
                              _ what: @autoclosure () -> String, file: StaticString = #filePath,
                              line: UInt = #line) {
        XCTAssertEqual(got.count, want.count, what(), file: file, line: line)
        var bad = 0, worst = 0.0, at = -1
        for i in 0..<min(got.count, want.count) {
            let err = abs(Double(got[i]) - want[i])
            let allowed = tol * max(norm[i], 1e-30)
            if !(err <= allowed) {
                bad += 1
                if at < 0 || !(err / allowed <= worst) {
                    worst = err / allowed
                    at = i
                }
            }
        }
        if bad > 0 {
            XCTFail("\(what()): \(bad) outputs off; worst at \(at): got \(got[at]) "
                    + "want \(want[at]) "
                    + "(norm \(norm[at]), \(worst)x the tolerance)", file: file, line: line)
        }
    }

    private func assertSameBits(_ a: [Float], _ b: [Float], _ what: @autoclosure () -> String,
                                file: StaticString = #filePath, line: UInt = #line) {
        let diff = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
        XCTAssertTrue(a.count == b.count && diff == 0, "\(what()): \(diff) outputs differ in bits",
                      file: file, line: line)
    }

    // MARK: - Runs

    private func forward(_ w: QWeight, _ x: [Float], m: Int, bias: [Float]?,
                         bf16: Bool) -> [Float] {
        var y = [Float](repeating: .nan, count: m * w.rows)
        w.withC { wp in
            y.withUnsafeMutableBufferPointer { yp in
                if let b = bias {
                    b.withUnsafeBufferPointer { bp in
                        if bf16 { ql_matmul4_bf16(wp, x, Int64(m), bp.baseAddress, yp.baseAddress) }
                        else { ql_matmul4_f32(wp, x, Int64(m), bp.baseAddress, yp.baseAddress) }
                    }
                } else if bf16 {
                    ql_matmul4_bf16(wp, x, Int64(m), nil, yp.baseAddress)
                } else {
                    ql_matmul4_f32(wp, x, Int64(m), nil, yp.baseAddress)
                }
            }
        }
        return y
    }

    private func backward(_ w: QWeight, _ dy: [Float], m: Int, bf16: Bool) -> [Float] {
        var dx = [Float](repeating: .nan, count: m * w.cols)
        w.withC { wp in
            if bf16 { ql_matmul4_backward_bf16(wp, dy, Int64(m), &dx) }
            else { ql_matmul4_backward_f32(wp, dy, Int64(m), &dx) }
        }
        return dx
    }

    /// Runs `body` with one and with two threads at every level; checks the two agree bitwise
    /// and returns the result of each level (two threads).
    private func perLevel(_ what: String, _ body: () -> [Float]) -> [(Int32, [Float])] {
        var out: [(Int32, [Float])] = []
        for level in levels {
            XCTAssertEqual(ql_isa_set(level), 0)
            ql_set_threads(2)
            let two = body()
            ql_set_threads(1)
            let one = body()
            assertSameBits(two, one, "\(what) at \(levelName(level)): 1 vs 2 threads")
            out.append((level, two))
        }
        return out
    }

    /// One weight: forward (bias off and on) and backward, f32 and bf16, every level.
    private func checkWeight(_ w: QWeight, m: Int, seed: UInt64) {
        let x = normal(m * w.cols, seed: seed, scale: 1)
        let dy = normal(m * w.rows, seed: seed + 1, scale: 1)
        let bias = normal(w.rows, seed: seed + 2, scale: 0.5)
        let denseBF = roundBF16(w.dense)
        let xBF = roundBF16(x), dyBF = roundBF16(dy)

        for useBias in [false, true] {
            let b = useBias ? bias : nil
            let exact = denseForward(w.dense, rows: w.rows, cols: w.cols, x, m: m, bias: b)
            let exactBF = denseForward(denseBF, rows: w.rows, cols: w.cols, xBF, m: m, bias: b)
            for bf16 in [false, true] {
                let what = "forward \(bf16 ? "bf16" : "f32") \(w.name) M \(m) bias \(useBias)"
                let results = perLevel(what) { forward(w, x, m: m, bias: b, bf16: bf16) }
                let scalar = results[0].1
                for (level, y) in results {
                    let at = "\(what) at \(levelName(level))"
                    if bf16 {
                        assertWithin(y, exactBF.value, exactBF.norm, tol: 1e-5,
                                     "\(at) vs bf16 operands")
                        assertWithin(y, exact.value, exact.norm, tol: 1e-2, "\(at) vs f32 product")
                    } else {
                        assertWithin(y, exact.value, exact.norm, tol: 1e-5, "\(at) vs dense")
                    }
                    assertWithin(y, scalar.map { Double($0) }, bf16 ? exactBF.norm : exact.norm,
                                 tol: 1e-5, "\(at) vs scalar level")
                }
            }
        }
        let exact = denseBackward(w.dense, rows: w.rows, cols: w.cols, dy, m: m)
        let exactBF = denseBackward(denseBF, rows: w.rows, cols: w.cols, dyBF, m: m)
        for bf16 in [false, true] {
            let what = "backward \(bf16 ? "bf16" : "f32") \(w.name) M \(m)"
            let results = perLevel(what) { backward(w, dy, m: m, bf16: bf16) }
            let scalar = results[0].1
            for (level, dx) in results {
                let at = "\(what) at \(levelName(level))"
                if bf16 {
                    assertWithin(dx, exactBF.value, exactBF.norm, tol: 1e-5,
                                 "\(at) vs bf16 operands")
                    assertWithin(dx, exact.value, exact.norm, tol: 1e-2, "\(at) vs f32 product")
                } else {
                    assertWithin(dx, exact.value, exact.norm, tol: 1e-5, "\(at) vs dense")
                }
                assertWithin(dx, scalar.map { Double($0) }, bf16 ? exactBF.norm : exact.norm,
                             tol: 1e-5, "\(at) vs scalar level")
            }
        }
    }

    /// Every format variant (NF4 / FP4, plain / double-quantized absmax) of one shape.
    private func checkShape(m: Int, n: Int, k: Int, block: Int, seed: UInt64) {
        var s = seed
        for type in [Self.nf4, Self.fp4] {
            for double in [false, true] {
                s += 10
                let w = makeWeight(type: type, rows: n, cols: k, block: block, double: double,
                                   seed: s)
                checkWeight(w, m: m, seed: s + 5)
            }
        }
    }

    // MARK: - Tests

    /// The panel path (K = 80 is not a multiple of 32): M = 1, 3, 17; blocks cross rows.
    func testPanelPathSmallShapes() {
        checkShape(m: 1, n: 33, k: 80, block: 64, seed: 100)
        checkShape(m: 3, n: 33, k: 80, block: 32, seed: 200)
        checkShape(m: 17, n: 33, k: 80, block: 256, seed: 300)
    }

    /// Blocks crossing rows (K = 48 with block 64) and an odd K (rows start inside a byte).
    func testBlocksCrossingRowsAndOddK() {
        checkShape(m: 2, n: 40, k: 48, block: 64, seed: 400)
        checkShape(m: 5, n: 9, k: 81, block: 64, seed: 500)
        checkShape(m: 1, n: 7, k: 33, block: 32, seed: 550)
    }

    /// The small-M path: 64-element steps (K, block multiples of 64), 32-element steps (block
    /// 32, and K = 96 with block 64 so blocks cross rows).
    func testSmallMPath() {
        checkShape(m: 1, n: 70, k: 128, block: 64, seed: 600)
        checkShape(m: 3, n: 37, k: 96, block: 64, seed: 700)
        checkShape(m: 4, n: 20, k: 160, block: 32, seed: 800)
        checkShape(m: 2, n: 33, k: 512, block: 256, seed: 850)
    }

    /// Several reduction chunks (f32 512, bf16 1024 at AVX-512), a partial last row tile and
    /// many column tiles (so two threads share the work).
    func testPanelPathChunksAndTiles() {
        checkShape(m: 13, n: 40, k: 1100, block: 256, seed: 900)
        checkShape(m: 17, n: 300, k: 64, block: 64, seed: 1000)
    }

    /// Degenerate sizes: M = 0 writes nothing; N = 1; an empty reduction gives the bias.
    func testDegenerateSizes() {
        let w = makeWeight(type: Self.nf4, rows: 1, cols: 40, block: 64, double: false, seed: 1)
        checkWeight(w, m: 6, seed: 2)
        var y: [Float] = [42]
        w.withC { wp in ql_matmul4_f32(wp, [0], 0, nil, &y) }
        XCTAssertEqual(y, [42])
        // K = 0: y = bias (forward); the backward gives dx = 0 for N = 0 rows
        var empty = ql_qweight()
        empty.type = Self.nf4
        empty.rows = 3
        empty.cols = 0
        empty.block = 64
        var out = [Float](repeating: .nan, count: 6)
        let bias: [Float] = [1, 2, 3]
        ql_matmul4_f32(&empty, [], 2, bias, &out)
        XCTAssertEqual(out, [1, 2, 3, 1, 2, 3])
        empty.rows = 0
        empty.cols = 4
        var dx = [Float](repeating: .nan, count: 8)
        ql_matmul4_backward_bf16(&empty, [], 2, &dx)
        XCTAssertEqual(dx, [Float](repeating: 0, count: 8))
    }

    // MARK: - LoRA extension

    private func loraForward(_ w: QWeight, _ x: [Float], m: Int, bias: [Float]?, a: [Float],
                             r: Int, bf16: Bool) -> (y: [Float], h: [Float]) {
        var y = [Float](repeating: .nan, count: m * w.rows)
        var h = [Float](repeating: .nan, count: m * r)
        w.withC { wp in
            if bf16 { ql_matmul4_lora_bf16(wp, x, Int64(m), bias, &y, a, Int64(r), &h) }
            else { ql_matmul4_lora_f32(wp, x, Int64(m), bias, &y, a, Int64(r), &h) }
        }
        return (y, h)
    }

    private func loraBackward(_ w: QWeight, _ dy: [Float], _ dh: [Float], a: [Float], r: Int,
                              m: Int, bf16: Bool) -> [Float] {
        var dx = [Float](repeating: .nan, count: m * w.cols)
        w.withC { wp in
            if bf16 { ql_matmul4_lora_backward_bf16(wp, dy, dh, a, Int64(r), Int64(m), &dx) }
            else { ql_matmul4_lora_backward_f32(wp, dy, dh, a, Int64(r), Int64(m), &dx) }
        }
        return dx
    }

    /// One weight and rank: forward (bias off / on) and backward, f32 and bf16, every level.
    private func checkLoRA(_ w: QWeight, m: Int, r: Int, seed: UInt64) {
        let k = w.cols, n = w.rows
        let x = normal(m * k, seed: seed, scale: 1), a = normal(r * k, seed: seed + 1, scale: 0.1)
        let dy = normal(m * n, seed: seed + 2, scale: 1), dh = normal(m * r, seed: seed + 3, scale: 1)
        let bias = normal(n, seed: seed + 4, scale: 0.5)
        let hExact = denseForward(a, rows: r, cols: k, x, m: m, bias: nil)
        let hExactBF = denseForward(roundBF16(a), rows: r, cols: k, roundBF16(x), m: m, bias: nil)
        for bf16 in [false, true] {
            for useBias in [false, true] {
                let b = useBias ? bias : nil
                let what = "lora forward \(bf16 ? "bf16" : "f32") \(w.name) M \(m) r \(r) bias \(useBias)"
                let results = perLevel(what) {
                    // y, h, then the plain product's y at the same level
                    let o = loraForward(w, x, m: m, bias: b, a: a, r: r, bf16: bf16)
                    return o.y + o.h + forward(w, x, m: m, bias: b, bf16: bf16)
                }
                let hAt = (m * n)..<(m * n + m * r)
                let scalarH = Array(results[0].1[hAt])
                for (level, out) in results {
                    let at = "\(what) at \(levelName(level))"
                    assertSameBits(Array(out[..<(m * n)]), Array(out[(m * n + m * r)...]),
                                   "\(at): y vs the plain product")
                    let h = Array(out[hAt])
                    let ref = bf16 ? hExactBF : hExact
                    assertWithin(h, ref.value, ref.norm, tol: 1e-5, "\(at): h vs dense")
                    assertWithin(h, scalarH.map { Double($0) }, ref.norm, tol: 1e-5,
                                 "\(at): h vs scalar level")
                }
            }
        }
        // backward: [dy | dh] against [W ; A] as one dense product
        let stacked: [Float] = w.dense + a
        var joined: [Float] = []
        for i in 0..<m {
            let dyRow: ArraySlice<Float> = dy[(i * n)..<((i + 1) * n)]
            let dhRow: ArraySlice<Float> = dh[(i * r)..<((i + 1) * r)]
            joined.append(contentsOf: dyRow)
            joined.append(contentsOf: dhRow)
        }
        let exact = denseBackward(stacked, rows: n + r, cols: k, joined, m: m)
        let exactBF = denseBackward(roundBF16(stacked), rows: n + r, cols: k, roundBF16(joined), m: m)
        for bf16 in [false, true] {
            let what = "lora backward \(bf16 ? "bf16" : "f32") \(w.name) M \(m) r \(r)"
            let results = perLevel(what) { loraBackward(w, dy, dh, a: a, r: r, m: m, bf16: bf16) }
            let scalar = results[0].1
            let ref = bf16 ? exactBF : exact
            for (level, dx) in results {
                let at = "\(what) at \(levelName(level))"
                assertWithin(dx, ref.value, ref.norm, tol: 1e-5, "\(at) vs dense")
                if bf16 {
                    assertWithin(dx, exact.value, exact.norm, tol: 1e-2, "\(at) vs f32 product")
                }
                assertWithin(dx, scalar.map { Double($0) }, ref.norm, tol: 1e-5,
                             "\(at) vs scalar level")
            }
        }
    }

    /// M = 1..5 on the small-M layout (K = 128) and the panel layout (K = 80, odd N), ranks 1,
    /// 5 and 16 (no tile multiple), double-quantized and plain absmax.
    func testLoRAExtensionSmallAndOddShapes() {
        let small = makeWeight(type: Self.nf4, rows: 37, cols: 128, block: 64, double: true, seed: 1100)
        let panel = makeWeight(type: Self.fp4, rows: 33, cols: 80, block: 32, double: false, seed: 1200)
        for m in 1...5 {
            for (i, r) in [1, 5, 16].enumerated() {
                checkLoRA(small, m: m, r: r, seed: UInt64(1300 + 10 * m + i))
                checkLoRA(panel, m: m, r: r, seed: UInt64(1400 + 10 * m + i))
            }
        }
    }

    /// Larger M with several column tiles, a rank spanning several panels and more than one
    /// reduction chunk of the extension (r = 300), K over several chunks, and row groups.
    func testLoRAExtensionTilesAndChunks() {
        let w = makeWeight(type: Self.nf4, rows: 300, cols: 96, block: 64, double: false, seed: 1500)
        checkLoRA(w, m: 17, r: 7, seed: 1600)
        checkLoRA(w, m: 13, r: 300, seed: 1700)
        let long = makeWeight(type: Self.nf4, rows: 20, cols: 1100, block: 256, double: true, seed: 1800)
        checkLoRA(long, m: 3, r: 16, seed: 1900)
        checkLoRA(long, m: 29, r: 16, seed: 2000)
        // few column tiles and M >= 2 * 256: rows split into groups, h shared out per group
        let narrow = makeWeight(type: Self.fp4, rows: 20, cols: 64, block: 64, double: false, seed: 2050)
        checkLoRA(narrow, m: 600, r: 16, seed: 2060)
    }

    // MARK: - Dense bf16 products

    private func checkDense(m: Int, n: Int, k: Int, seed: UInt64) {
        let x = normal(m * k, seed: seed, scale: 1), w = normal(n * k, seed: seed + 1, scale: 0.1)
        let dy = normal(m * n, seed: seed + 2, scale: 1)
        let fwd = denseForward(roundBF16(w), rows: n, cols: k, roundBF16(x), m: m, bias: nil)
        let bwd = denseBackward(roundBF16(w), rows: n, cols: k, roundBF16(dy), m: m)
        let fwdF32 = denseForward(w, rows: n, cols: k, x, m: m, bias: nil)
        let what = "dense bf16 [\(m)x\(k)] x [\(n)x\(k)]^T"
        let ys = perLevel("\(what) forward") {
            var y = [Float](repeating: .nan, count: m * n)
            ql_matmul_dense_bf16(x, Int64(m), w, Int64(n), Int64(k), &y)
            return y
        }
        for (level, y) in ys {
            let at = "\(what) forward at \(levelName(level))"
            assertWithin(y, fwd.value, fwd.norm, tol: 1e-5, "\(at) vs bf16 operands")
            assertWithin(y, fwdF32.value, fwdF32.norm, tol: 1e-2, "\(at) vs f32 product")
        }
        let dxs = perLevel("\(what) backward") {
            var dx = [Float](repeating: .nan, count: m * k)
            ql_matmul_dense_backward_bf16(dy, Int64(m), w, Int64(n), Int64(k), &dx)
            return dx
        }
        for (level, dx) in dxs {
            assertWithin(dx, bwd.value, bwd.norm, tol: 1e-5,
                         "\(what) backward at \(levelName(level)) vs bf16 operands")
        }
    }

    /// Odd shapes (no tile multiple), one and several column tiles and reduction chunks
    /// (N = 1100 backward runs two bf16 chunks), M = 1 and rows over several tiles.
    func testDenseBF16Products() {
        checkDense(m: 1, n: 33, k: 80, seed: 2100)
        checkDense(m: 5, n: 7, k: 5, seed: 2200)
        checkDense(m: 17, n: 300, k: 96, seed: 2300)
        checkDense(m: 29, n: 1100, k: 40, seed: 2400)
        checkDense(m: 3, n: 20, k: 1100, seed: 2500)
    }
}
