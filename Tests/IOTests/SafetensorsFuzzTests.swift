// Corruption fuzzing of SafetensorsFile: 1,500 deterministic (splitmix64-seeded) variants of a
// small valid file -- truncations, byte flips in header and data, header-length edits and JSON
// edits (numbers, dtype strings, structure) -- each must either throw IOError or load with
// every tensor's bytes inside the mapping, tiling the data section. Never crash.

import Foundation
import XCTest

import IO

final class SafetensorsFuzzTests: XCTestCase {
    func testCorruptedFilesNeverCrash() throws {
        let dir = TempDir()
        defer { dir.remove() }

        // The valid base file.
        let basePath = dir.file("base.safetensors")
        var seedRng = SplitMix64(seed: 2024)
        try writeSafetensors(
            path: basePath,
            tensors: [
                SafetensorsTensorData(name: "a", dtype: .f32, shape: [2, 3], data: seedRng.bytes(24)),
                SafetensorsTensorData(name: "b", dtype: .u8, shape: [5], data: seedRng.bytes(5)),
                SafetensorsTensorData(name: "c", dtype: .i64, shape: [], data: seedRng.bytes(8)),
                SafetensorsTensorData(name: "d", dtype: .f16, shape: [0], data: []),
                SafetensorsTensorData(name: "e.weight", dtype: .bf16, shape: [3], data: seedRng.bytes(6)),
            ], metadata: ["format": "pt"])
        let base = readRaw(basePath)
        var n = 0
        for i in (0..<8).reversed() { n = n << 8 | Int(base[i]) }
        let header = Array(base[8..<(8 + n)])
        let data = Array(base[(8 + n)...])
        var json = header
        while json.last == 0x20 { json.removeLast() }
        XCTAssertNoThrow(try SafetensorsFile(path: basePath))

        var rng = SplitMix64(seed: 0x5AFE_7E45)
        let structural: [UInt8] = Array("{}[]\",:".utf8)
        let interesting: [UInt8] = Array("{}[]\",:0123456789-.e \\".utf8) + [0, 0x7F, 0x80, 0xC3, 0xFF]
        let numbers = [
            "0", "1", "-1", "7", "8", "24", "29", "37", "43", "99999999999999999999", "9223372036854775807",
            "18446744073709551616", "1e3", "2.0", "-0", "4294967296", "2305843009213693952",
        ]
        let dtypes = ["F32", "U8", "BF16", "F16", "I64", "F64", "BOOL", "F8_E4M3", "F4", "f32", "", "U8 ", "\\u0046\\u0033\\u0032"]

        func digitRuns(_ b: [UInt8]) -> [Range<Int>] {
            var runs: [Range<Int>] = []
            var i = 0
            while i < b.count {
                if b[i] >= 0x30 && b[i] <= 0x39 {
                    let s = i
                    while i < b.count && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
                    runs.append(s..<i)
                } else {
                    i += 1
                }
            }
            return runs
        }
        func dtypeValues(_ b: [UInt8]) -> [Range<Int>] {
            // The string right after each "dtype":
            let key = Array("\"dtype\":\"".utf8)
            var out: [Range<Int>] = []
            var i = 0
            while i + key.count <= b.count {
                if Array(b[i..<(i + key.count)]) == key {
                    let s = i + key.count
                    var e = s
                    while e < b.count && b[e] != 0x22 { e += 1 }
                    out.append(s..<e)
                    i = e
                } else {
                    i += 1
                }
            }
            return out
        }
        func image(json j: [UInt8], data d: [UInt8], pad: Bool = true) -> [UInt8] {
            var h = j
            if pad { while h.count % 8 != 0 { h.append(0x20) } }
            return safetensorsImage(headerBytes: h, data: d)
        }
        func offsetPairs(_ b: [UInt8]) -> [(Range<Int>, Int, Int)] {
            // Each `"data_offsets":[begin,end]` as the range of "begin,end" and its values.
            let key = Array("\"data_offsets\":[".utf8)
            var out: [(Range<Int>, Int, Int)] = []
            var i = 0
            while i + key.count <= b.count {
                guard Array(b[i..<(i + key.count)]) == key else {
                    i += 1
                    continue
                }
                let s = i + key.count
                var e = s
                while e < b.count && b[e] != 0x5D { e += 1 }
                let parts = String(decoding: b[s..<e], as: UTF8.self).split(separator: ",")
                if parts.count == 2, let x = Int(parts[0]), let y = Int(parts[1]) { out.append((s..<e, x, y)) }
                i = e
            }
            return out
        }
        func editJSON(_ j: [UInt8]) -> [UInt8] {
            var j = j
            for _ in 0..<(1 + rng.below(2)) {
                switch rng.below(8) {
                case 6, 7:  // move a tensor's byte range, keeping its size (overlaps, holes)
                    let pairs = offsetPairs(j)
                    if !pairs.isEmpty {
                        let (r, x, y) = pairs[rng.below(pairs.count)]
                        let k = rng.below(17) - 8
                        j.replaceSubrange(r, with: Array("\(x + k),\(y + k)".utf8))
                    }
                case 0, 1:  // change a number
                    let runs = digitRuns(j)
                    if let r = runs.isEmpty ? nil : runs[rng.below(runs.count)] {
                        j.replaceSubrange(r, with: Array(numbers[rng.below(numbers.count)].utf8))
                    }
                case 2:  // change a dtype
                    let vals = dtypeValues(j)
                    if let r = vals.isEmpty ? nil : vals[rng.below(vals.count)] {
                        j.replaceSubrange(r, with: Array(dtypes[rng.below(dtypes.count)].utf8))
                    }
                case 3:  // remove a structural character
                    let idx = j.indices.filter { structural.contains(j[$0]) }
                    if !idx.isEmpty { j.remove(at: idx[rng.below(idx.count)]) }
                case 4:  // delete or duplicate a span
                    let s = rng.below(j.count)
                    let e = min(j.count, s + 1 + rng.below(24))
                    if rng.below(2) == 0 {
                        j.removeSubrange(s..<e)
                    } else {
                        j.insert(contentsOf: Array(j[s..<e]), at: rng.below(j.count + 1))
                    }
                default:  // swap two numbers
                    let runs = digitRuns(j)
                    if runs.count >= 2 {
                        let a = runs[rng.below(runs.count)]
                        let b = runs[rng.below(runs.count)]
                        if a != b {
                            let (first, second) = a.lowerBound < b.lowerBound ? (a, b) : (b, a)
                            let fb = Array(j[first])
                            let sb = Array(j[second])
                            j.replaceSubrange(second, with: fb)
                            j.replaceSubrange(first, with: sb)
                        }
                    }
                }
                if j.isEmpty { j = [0x7B] }
            }
            return j
        }

        let path = dir.file("fuzz.safetensors")
        var loaded = 0
        var rejected = 0
        var kinds = [Int](repeating: 0, count: 7)
        for i in 0..<1500 {
            var img = base
            let kind = i % 7
            switch kind {
            case 0:  // truncation
                img.removeSubrange(rng.below(img.count)...)
            case 1:  // header byte flips
                for _ in 0..<(1 + rng.below(3)) {
                    let p = 8 + rng.below(n)
                    if rng.below(2) == 0 {
                        img[p] ^= UInt8(1 << rng.below(8))
                    } else {
                        img[p] = interesting[rng.below(interesting.count)]
                    }
                }
            case 2:  // data byte flips (always loadable) and length-field flips
                for _ in 0..<(1 + rng.below(4)) {
                    let p = rng.below(4) == 0 ? rng.below(8) : 8 + n + rng.below(data.count)
                    img[p] ^= UInt8(1 << rng.below(8))
                }
            case 3:  // header length field edits
                let choices: [UInt64] = [
                    UInt64(n + 1 + rng.below(16)), UInt64(max(0, n - 1 - rng.below(16))), 0, rng.next(),
                    UInt64(rng.below(base.count + 16)), UInt64(base.count - 8), UInt64(base.count - 7),
                    UInt64(2 * n), UInt64.max, 1 << 63,
                ]
                var v = choices[rng.below(choices.count)]
                for b in 0..<8 {
                    img[b] = UInt8(v & 0xFF)
                    v >>= 8
                }
            case 4, 5:  // JSON edits with a consistent length field
                img = image(json: editJSON(json), data: data, pad: rng.below(4) != 0)
            default:  // JSON edit plus data size change, or stale length field
                let edited = editJSON(json)
                switch rng.below(3) {
                case 0: img = image(json: edited, data: data + rng.bytes(1 + rng.below(8)))
                case 1: img = image(json: edited, data: Array(data.dropLast(1 + rng.below(8))))
                default:
                    img = Array(base.prefix(8)) + edited + [UInt8](repeating: 0x20, count: rng.below(8)) + data
                }
            }
            kinds[kind] += 1
            writeRaw(img, to: path)
            do {
                let f = try SafetensorsFile(path: path)
                loaded += 1
                check(f, fileSize: img.count)
            } catch let e as IOError {
                rejected += 1
                XCTAssertTrue(e.description.hasPrefix(path + ": "), e.description)
            } catch {
                XCTFail("variant \(i): unexpected error type \(type(of: error)): \(error)")
            }
        }
        XCTAssertGreaterThan(loaded, 100)
        XCTAssertGreaterThan(rejected, 500)
    }

    /// Invariants of a file that loaded: bytes inside the mapping, sizes right, exact tiling.
    func check(_ f: SafetensorsFile, fileSize: Int) {
        let map = f.mappedBytes
        XCTAssertEqual(map.count, fileSize)
        let lo = UInt(bitPattern: map.baseAddress)
        let hi = lo + UInt(map.count)
        let dataLo = lo + UInt(f.dataOffset)
        var spans: [(Int, Int)] = []
        for e in f.entries {
            let b = f.bytes(of: e)
            let start = UInt(bitPattern: b.baseAddress)
            XCTAssertTrue(start >= dataLo && start + UInt(b.count) <= hi, "\(e.name) outside the mapping")
            XCTAssertEqual(b.count, e.elementCount * e.dtype.byteSize)
            XCTAssertEqual(e.shape.reduce(1, *), e.elementCount)
            var sum = 0
            for x in b { sum &+= Int(x) }  // touch every byte
            _ = sum
            spans.append((e.begin, e.end))
        }
        spans.sort { $0 < $1 }
        var covered = 0
        for (b, e) in spans {
            XCTAssertEqual(b, covered)
            covered = e
        }
        XCTAssertEqual(covered, f.dataSize)
    }
}
