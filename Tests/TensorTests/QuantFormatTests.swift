// The 4-bit formats of quant_format.c against bitsandbytes 0.50.2's golden files
// (Tests/fixtures/quant, made on CPU) at every ISA level the CPU supports, every SIMD level
// against the scalar reference (any block size 32...4096, odd counts, threads 1 and 2), the pad
// nibble, all-zero blocks, NaN/Inf inputs, the per-format error bounds and the double
// quantization round trip. Each test restores the ISA level and thread count it found.
import CKernels
import IO
import XCTest

final class QuantFormatTests: KernelTestCase {
    // MARK: - Helpers

    private static let nf4 = Int32(QL_Q_NF4.rawValue)
    private static let fp4 = Int32(QL_Q_FP4.rawValue)
    private static let types: [(Int32, String)] = [(nf4, "nf4"), (fp4, "fp4")]
    private static let nested = Int(QL_Q_NESTED_BLOCK)

    /// Every level this CPU supports, scalar first.
    private var levels: [Int32] { (0...3).map { Int32($0) }.filter { ql_isa_supported($0) != 0 } }

    private func levelName(_ level: Int32) -> String { String(cString: ql_isa_name(level)) }

    private func setLevel(_ level: Int32) { XCTAssertEqual(ql_isa_set(level), 0) }

    private static func code(_ type: Int32) -> [Float] {
        Array(UnsafeBufferPointer(start: ql_quant_code(type), count: 16))
    }

    /// The code of 0.0 (the pad nibble of an odd count).
    private static func zeroCode(_ type: Int32) -> UInt8 { type == nf4 ? 7 : 0 }

    private static func dynamicMap() -> [Float] {
        var map = [Float](repeating: 0, count: 256)
        ql_dynamic_map(&map)
        return map
    }

    private static func nblocks(_ n: Int, _ block: Int) -> Int { (n + block - 1) / block }

    private func normal(_ n: Int, seed: UInt64) -> [Float] {
        var x = [Float](repeating: 0, count: n)
        ql_rand_normal_f32(seed, 0, &x, Int64(n))
        return x
    }

    private func same(_ a: [Float], _ b: [Float]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
    }

    private func differing(_ a: [UInt8], _ b: [UInt8]) -> Int { zip(a, b).filter { $0 != $1 }.count }

    /// The nibble of element i.
    private static func nibble(_ packed: [UInt8], _ i: Int) -> UInt8 {
        i & 1 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 15
    }

    struct Quantized {
        var packed: [UInt8]
        var absmax: [Float]
    }

    /// Quantizes into buffers with guard entries after the documented sizes and checks that the
    /// guards are untouched (no write past (n+1)/2 bytes or nblocks floats).
    private func quantize(_ type: Int32, _ x: [Float], block: Int, file: StaticString = #filePath,
                          line: UInt = #line) -> Quantized {
        let n = x.count, nb = Self.nblocks(n, block), guardCount = 64
        var packed = [UInt8](repeating: 0xA5, count: (n + 1) / 2 + guardCount)
        var absmax = [Float](repeating: -7, count: nb + guardCount)
        ql_quantize_4bit(type, x, Int64(n), Int64(block), &packed, &absmax)
        XCTAssertTrue(packed[((n + 1) / 2)...].allSatisfy { $0 == 0xA5 }, "packed guard written",
                      file: file, line: line)
        XCTAssertTrue(absmax[nb...].allSatisfy { $0 == -7 }, "absmax guard written", file: file,
                      line: line)
        return Quantized(packed: Array(packed[..<((n + 1) / 2)]), absmax: Array(absmax[..<nb]))
    }

    private func dequantize(_ type: Int32, _ q: Quantized, n: Int, block: Int,
                            file: StaticString = #filePath, line: UInt = #line) -> [Float] {
        var out = [Float](repeating: 1234, count: n + 64)
        ql_dequantize_4bit(type, q.packed, q.absmax, Int64(n), Int64(block), &out)
        XCTAssertTrue(out[n...].allSatisfy { $0 == 1234 }, "output guard written", file: file,
                      line: line)
        return Array(out[..<n])
    }

    struct DoubleQuantized {
        var q: [UInt8]
        var nestedAbsmax: [Float]
        var offset: Float
    }

    private func doubleQuantize(_ absmax: [Float]) -> DoubleQuantized {
        let nb = absmax.count, nn = Self.nblocks(nb, Self.nested)
        var q = [UInt8](repeating: 0xA5, count: nb + 16)
        var nested = [Float](repeating: -7, count: nn + 16)
        var offset: Float = -7
        ql_double_quantize(absmax, Int64(nb), &q, &nested, &offset)
        XCTAssertTrue(q[nb...].allSatisfy { $0 == 0xA5 }, "code guard written")
        XCTAssertTrue(nested[nn...].allSatisfy { $0 == -7 }, "nested absmax guard written")
        return DoubleQuantized(q: Array(q[..<nb]), nestedAbsmax: Array(nested[..<nn]), offset: offset)
    }

    private func doubleDequantize(_ d: DoubleQuantized, map: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: d.q.count)
        ql_double_dequantize(d.q, d.nestedAbsmax, map, d.offset, Int64(d.q.count), &out)
        return out
    }

    // MARK: - Golden files

    private static var fixtureDir: String {
        var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(2) // QuantFormatTests.swift, TensorTests
        return parts.joined(separator: "/") + "/fixtures/quant"
    }

    struct Fixture {
        let name: String
        let type: Int32
        let doubleQuant: Bool
        let block: Int
        let rows: Int
        let cols: Int
        let file: SafetensorsFile

        func floats(_ key: String) -> [Float] {
            guard let raw = file.bytes(named: key) else {
                XCTFail("\(name): no tensor \(key)")
                return []
            }
            var out = [Float](repeating: 0, count: raw.count / 4)
            out.withUnsafeMutableBytes { $0.copyMemory(from: raw) }
            return out
        }

        func bytes(_ key: String) -> [UInt8] {
            guard let raw = file.bytes(named: key) else {
                XCTFail("\(name): no tensor \(key)")
                return []
            }
            return Array(raw)
        }
    }

    private func fixtures() throws -> [Fixture] {
        let cases = try JSONValue.load(path: Self.fixtureDir + "/cases.json")
        guard let object = cases.objectValue else { throw QuantTestError("cases.json: not an object") }
        var out: [Fixture] = []
        for (name, c) in object {
            guard let type = c["quant_type"]?.stringValue, let dq = c["double_quant"]?.boolValue,
                  let block = c["blocksize"]?.intValue, let shape = c["shape"]?.arrayValue,
                  shape.count == 2, let rows = shape[0].intValue, let cols = shape[1].intValue
            else { throw QuantTestError("cases.json: bad entry \(name)") }
            let file = try SafetensorsFile(path: Self.fixtureDir + "/\(name).safetensors")
            out.append(Fixture(name: name, type: type == "nf4" ? Self.nf4 : Self.fp4,
                               doubleQuant: dq, block: block, rows: rows, cols: cols, file: file))
        }
        XCTAssertEqual(out.count, 16)
        return out
    }

    struct QuantTestError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    func testCodeTablesAndDynamicMapEqualGoldenBitwise() throws {
        for f in try fixtures() {
            XCTAssertTrue(same(Self.code(f.type), f.floats("code")), "\(f.name): code table")
            if f.doubleQuant {
                XCTAssertTrue(same(Self.dynamicMap(), f.floats("nested_code")),
                              "\(f.name): dynamic map")
            }
        }
        let map = Self.dynamicMap()
        XCTAssertEqual(map[127], 0)
        XCTAssertEqual(map[255], 1)
        XCTAssertEqual(map[0], -0.99296874)
        XCTAssertTrue(zip(map, map.dropFirst()).allSatisfy { $0 < $1 }, "map sorted, distinct")
        // FP4: code 8 is +0.0 like code 0 (bitsandbytes writes it as the integer -0).
        XCTAssertEqual(Self.code(Self.fp4)[8].bitPattern, 0)
    }

    /// Packed nibbles, absmax, double-quantization codes, nested absmax and offset equal the
    /// golden files exactly at every ISA level; dequantization equals bitsandbytes'.
    func testGoldenFilesExactAtEveryLevel() throws {
        let fixtures = try fixtures()
        let map = Self.dynamicMap()
        for level in levels {
            setLevel(level)
            for f in fixtures {
                let what = "\(f.name) at \(levelName(level))"
                let x = f.floats("input")
                let n = x.count, nb = Self.nblocks(n, f.block)
                XCTAssertEqual(n, f.rows * f.cols)
                let q = quantize(f.type, x, block: f.block)
                XCTAssertEqual(differing(q.packed, f.bytes("packed")), 0, "\(what): packed bytes")
                var absmax = q.absmax
                if f.doubleQuant {
                    let d = doubleQuantize(q.absmax)
                    let offset = f.floats("offset")[0]
                    XCTAssertEqual(d.offset.bitPattern, offset.bitPattern, "\(what): offset")
                    XCTAssertLessThanOrEqual(abs(d.offset - offset), 1e-6 * abs(offset))
                    XCTAssertTrue(same(d.nestedAbsmax, f.floats("nested_absmax")),
                                  "\(what): nested absmax")
                    XCTAssertEqual(differing(d.q, f.bytes("absmax_q")), 0, "\(what): absmax codes")
                    // Restore from the golden codes, as bitsandbytes does: code * nested + offset.
                    let golden = DoubleQuantized(q: f.bytes("absmax_q"),
                                                 nestedAbsmax: f.floats("nested_absmax"),
                                                 offset: offset)
                    absmax = doubleDequantize(golden, map: f.floats("nested_code"))
                    for i in 0..<nb {
                        let want = map[Int(golden.q[i])] * golden.nestedAbsmax[i / Self.nested]
                            + offset
                        XCTAssertEqual(absmax[i].bitPattern, want.bitPattern, "\(what): restore \(i)")
                    }
                } else {
                    XCTAssertTrue(same(q.absmax, f.floats("absmax")), "\(what): absmax")
                }
                checkDequantization(f, absmax: absmax, what: what)
            }
        }
    }

    /// bitsandbytes 0.50.2's CPU dequantize_4bit takes the scale of element (r, c) of the
    /// [rows, cols] weight from absmax[r * (cols / block) + c / block] (row-based), which is the
    /// block that holds the element only when cols is a multiple of block. Its golden
    /// `dequantized` is checked to be exactly that formula everywhere (so the nibbles and the
    /// absmax it used are the ones we produce), and ours (absmax[i / block], the layout
    /// quantization used) to equal it within 1e-6 of the block's absmax wherever the two
    /// indices agree: everywhere in the 64x128 / block 64 files.
    private func checkDequantization(_ f: Fixture, absmax: [Float], what: String) {
        let packed = f.bytes("packed"), golden = f.floats("dequantized"), code = Self.code(f.type)
        let n = f.rows * f.cols
        let ours = dequantize(f.type, Quantized(packed: packed, absmax: absmax), n: n,
                              block: f.block)
        var bnbFormula = 0, compared = 0, bad = 0
        for i in 0..<n {
            let c = code[Int(Self.nibble(packed, i))]
            let rowIndex = (i / f.cols) * (f.cols / f.block) + (i % f.cols) / f.block
            if (c * absmax[rowIndex]).bitPattern != golden[i].bitPattern { bnbFormula += 1 }
            XCTAssertEqual(ours[i].bitPattern, (c * absmax[i / f.block]).bitPattern)
            if rowIndex == i / f.block {
                compared += 1
                if abs(ours[i] - golden[i]) > 1e-6 * absmax[i / f.block] { bad += 1 }
            }
        }
        XCTAssertEqual(bnbFormula, 0, "\(what): golden dequantized is not bnb's row formula")
        XCTAssertEqual(bad, 0, "\(what): dequantized differs from bitsandbytes")
        if f.cols % f.block == 0 { XCTAssertEqual(compared, n, what) }
        XCTAssertGreaterThan(compared, 0, what)
    }

    // MARK: - SIMD levels against the scalar reference

    func testEveryLevelAndThreadCountMatchesScalar() {
        var block = 32
        while block <= 4096 {
            let sizes = [1, 2, 31, 33, block - 1, block, block + 1, 3 * block + 17, 100_003]
            for n in sizes {
                var x = normal(n, seed: UInt64(block * 1000 + n))
                for i in stride(from: 0, to: n, by: 13) { x[i] *= 50 } // outliers
                if n > 500 { // special values in a few blocks
                    x[n / 3] = .nan
                    x[n / 2] = .infinity
                    x[n - 200] = -.infinity
                    for i in 0..<min(block, n / 4) { x[n / 4 + i] = 0 }
                }
                for (type, tname) in Self.types {
                    setLevel(0)
                    ql_set_threads(1)
                    let ref = quantize(type, x, block: block)
                    let refOut = dequantize(type, ref, n: n, block: block)
                    for threads in [Int32(1), 2] {
                        ql_set_threads(threads)
                        for level in levels {
                            setLevel(level)
                            let what = "\(tname) n=\(n) block=\(block) \(levelName(level)) threads=\(threads)"
                            let q = quantize(type, x, block: block)
                            XCTAssertEqual(q.packed, ref.packed, "\(what): packed")
                            XCTAssertTrue(same(q.absmax, ref.absmax), "\(what): absmax")
                            XCTAssertTrue(same(dequantize(type, ref, n: n, block: block), refOut),
                                          "\(what): dequantized")
                        }
                    }
                }
            }
            block *= 2
        }
    }

    func testLargeCountThreadedMatchesSerial() {
        let n = (1 << 19) + 3 // 9 tasks of 65536 elements
        let x = normal(n, seed: 42)
        for (type, tname) in Self.types {
            for level in levels {
                setLevel(level)
                ql_set_threads(1)
                let serial = quantize(type, x, block: 64)
                let serialOut = dequantize(type, serial, n: n, block: 64)
                ql_set_threads(2)
                let threaded = quantize(type, x, block: 64)
                XCTAssertEqual(threaded.packed, serial.packed, "\(tname) \(levelName(level))")
                XCTAssertTrue(same(threaded.absmax, serial.absmax))
                XCTAssertTrue(same(dequantize(type, serial, n: n, block: 64), serialOut))
            }
        }
    }

    // MARK: - Layout and special values

    func testOddCountPadsWithTheCodeOfZero() {
        for (type, tname) in Self.types {
            for level in levels {
                setLevel(level)
                for n in [1, 3, 65, 257, 4097] {
                    let x = normal(n, seed: UInt64(n)).map { $0 + 0.5 }
                    let q = quantize(type, x, block: 64)
                    XCTAssertEqual(q.packed.count, (n + 1) / 2)
                    XCTAssertEqual(q.packed.last! & 15, Self.zeroCode(type), "\(tname) n=\(n)")
                    // The last element is quantized like the others: compare with n + 1 values.
                    let q2 = quantize(type, x + [0], block: 64)
                    XCTAssertEqual(q.packed, q2.packed, "\(tname) n=\(n): pad = a zero element")
                    let out = dequantize(type, q, n: n, block: 64)
                    let code = Self.code(type)
                    XCTAssertEqual(out[n - 1], code[Int(q.packed.last! >> 4)] * q.absmax.last!)
                }
            }
        }
    }

    func testAllZeroBlock() {
        for (type, tname) in Self.types {
            for level in levels {
                setLevel(level)
                for n in [64, 100, 256 + 64] { // a full zero block, a partial one, mixed
                    var x = [Float](repeating: 0, count: n)
                    if n > 256 { for i in 64..<n { x[i] = Float(i % 9) - 4 } }
                    let q = quantize(type, x, block: 64)
                    XCTAssertEqual(q.absmax[0], 1e-38, "\(tname) n=\(n)")
                    for i in 0..<min(n, 64) {
                        XCTAssertEqual(Self.nibble(q.packed, i), Self.zeroCode(type))
                    }
                    let out = dequantize(type, q, n: n, block: 64)
                    XCTAssertTrue(out[0..<min(n, 64)].allSatisfy { $0 == 0 }, "\(tname) n=\(n)")
                }
            }
        }
    }

    /// A NaN makes its block's absmax NaN, an Inf makes it Inf; every element of such a block
    /// gets the code of 0.0 and dequantizes to NaN; other blocks are unaffected.
    func testNaNAndInfStayInTheirBlock() {
        let block = 64, n = 64 * 6 + 10
        let clean = normal(n, seed: 7)
        var x = clean
        x[70] = .nan          // block 1
        x[130] = .infinity    // block 2
        x[200] = -.infinity   // block 3
        x[201] = .nan         // block 3: NaN wins
        x[n - 2] = .nan       // the partial last block
        let special: Set<Int> = [1, 2, 3, 6]
        for (type, tname) in Self.types {
            for level in levels {
                setLevel(level)
                let q = quantize(type, x, block: block)
                let ref = quantize(type, clean, block: block)
                XCTAssertTrue(q.absmax[1].isNaN && q.absmax[3].isNaN && q.absmax[6].isNaN, tname)
                XCTAssertEqual(q.absmax[2], .infinity, tname)
                let out = dequantize(type, q, n: n, block: block)
                for i in 0..<n where special.contains(i / block) {
                    XCTAssertEqual(Self.nibble(q.packed, i), Self.zeroCode(type), "\(tname) \(i)")
                    XCTAssertTrue(out[i].isNaN, "\(tname) \(i)")
                }
                for b in 0..<Self.nblocks(n, block) where !special.contains(b) {
                    XCTAssertEqual(q.absmax[b], ref.absmax[b])
                    XCTAssertEqual(q.packed[(b * block / 2)..<((b + 1) * block / 2)],
                                   ref.packed[(b * block / 2)..<((b + 1) * block / 2)])
                }
            }
        }
        // Double quantization of non-finite absmax: no crash, NaN restored values.
        let map = Self.dynamicMap()
        for bad in [Float.nan, .infinity] {
            var absmax = (0..<300).map { Float($0 % 17) * 0.1 + 0.5 }
            absmax[10] = bad
            let d = doubleQuantize(absmax)
            XCTAssertFalse(d.offset.isFinite)
            XCTAssertTrue(doubleDequantize(d, map: map).allSatisfy { !$0.isFinite })
        }
    }

    // MARK: - Error bounds

    /// Per block, |x - dequant(quant(x))| <= half the largest gap between adjacent codes, times
    /// absmax; and every code is the nearest one to x / absmax (up to rounding at a midpoint).
    func testRoundTripErrorBoundAndNearestCode() {
        for (type, tname) in Self.types {
            let code = Self.code(type)
            let sorted = code.sorted()
            let halfGap = zip(sorted, sorted.dropFirst()).map { ($1 - $0) / 2 }.max()!
            for level in levels {
                setLevel(level)
                for block in [32, 64, 256, 4096] {
                    let n = 5 * block + 33
                    let x = normal(n, seed: UInt64(block))
                    let q = quantize(type, x, block: block)
                    let out = dequantize(type, q, n: n, block: block)
                    for b in 0..<Self.nblocks(n, block) {
                        let am = q.absmax[b]
                        var maxErr: Float = 0
                        for i in (b * block)..<min(n, (b + 1) * block) {
                            maxErr = max(maxErr, abs(x[i] - out[i]))
                            let s = x[i] / am
                            let chosen = abs(s - code[Int(Self.nibble(q.packed, i))])
                            let best = code.map { abs(s - $0) }.min()!
                            XCTAssertLessThanOrEqual(chosen, best + 1e-6, "\(tname) i=\(i)")
                        }
                        XCTAssertLessThanOrEqual(maxErr, (halfGap + 1e-6) * am,
                                                 "\(tname) \(levelName(level)) block \(b)")
                    }
                }
            }
        }
    }

    /// The restored absmax is within half the largest gap of the dynamic map (plus the 2/65535
    /// grid bitsandbytes looks codes up on) of the nested absmax.
    func testDoubleQuantizationRoundTrip() {
        let map = Self.dynamicMap()
        let halfGap = zip(map, map.dropFirst()).map { ($1 - $0) / 2 }.max()!
        for nb in [1, 2, 255, 256, 257, 1000, 40_000] {
            let absmax = normal(nb, seed: UInt64(nb)).map { abs($0) * 0.05 + 0.01 }
            let d = doubleQuantize(absmax)
            let sum = absmax.reduce(0.0) { $0 + Double($1) }
            XCTAssertEqual(Double(d.offset), sum / Double(nb), accuracy: 1e-6 * sum / Double(nb))
            let restored = doubleDequantize(d, map: map)
            for i in 0..<nb {
                let nested = d.nestedAbsmax[i / Self.nested]
                let bound = (halfGap + 2 / 65535) * nested + 1e-6 * abs(d.offset)
                XCTAssertLessThanOrEqual(abs(restored[i] - absmax[i]), bound, "nb=\(nb) i=\(i)")
            }
        }
        // One block (or equal absmax): the nested absmax is 0, the codes 0, restored exactly.
        let d = doubleQuantize([3, 3, 3])
        XCTAssertEqual(d.nestedAbsmax, [0])
        XCTAssertEqual(d.q, [0, 0, 0])
        XCTAssertEqual(doubleDequantize(d, map: map), [3, 3, 3])
    }
}
