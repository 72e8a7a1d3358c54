// GGUFFile: a file written by GGUFWriter reads back (metadata of every value type, arrays,
// tensors of several types at aligned offsets, v2 and v3); hand-broken files give errors that
// name the field; and 1,200 seeded corruptions of a small valid file (truncations, byte flips,
// absurd counts and lengths written over header fields) each either throw IOError or load with
// every tensor decodable. Never a crash.

import Foundation
import XCTest

import IO

final class GGUFReadTests: XCTestCase {
    static func sampleWriter() -> GGUFWriter {
        var rng = SplitMix64(seed: 7)
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("general.name", .string("tiny"))
        w.set("llama.block_count", .u32(2))
        w.set("llama.rope.freq_base", .f32(10000))
        w.set("x.i8", .i8(-3)); w.set("x.u16", .u16(65535)); w.set("x.i16", .i16(-2)); w.set("x.i32", .i32(-7))
        w.set("x.u64", .u64(1 << 40)); w.set("x.i64", .i64(-(1 << 40))); w.set("x.f64", .f64(0.25)); w.set("x.bool", .bool(true))
        w.set("x.u8", .u8(200))
        w.set("tokenizer.ggml.tokens", .array(.string, ["<s>", "a", "bc", "é"].map { .string($0) }))
        w.set("tokenizer.ggml.scores", .array(.f32, [0, -1, -2.5, -3].map { .f32($0) }))
        w.set("x.nested", .array(.array, [.array(.i32, [.i32(1), .i32(2)]), .array(.i32, [])]))
        let f32: [Float] = (0..<6).map { Float($0) - 2.5 }
        w.add("a.weight", type: .f32, shape: [2, 3], data: f32.withUnsafeBytes { Array($0) })
        var q8 = [UInt8]((0..<68).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        q8[0] = 0x00; q8[1] = 0x3C; q8[34] = 0x00; q8[35] = 0x38 // scales 1.0, 0.5
        w.add("b.weight", type: .q8_0, shape: [2, 32], data: q8)
        var q4k = [UInt8]((0..<144).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        q4k[0] = 0x00; q4k[1] = 0x2C; q4k[2] = 0x00; q4k[3] = 0x28
        w.add("c.weight", type: .q4_K, shape: [256], data: q4k)
        return w
    }

    func testRoundTrip() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let path = dir.file("t.gguf")
        let w = Self.sampleWriter()
        try w.write(to: path)
        let f = try GGUFFile(path: path)
        XCTAssertEqual(f.version, 3)
        XCTAssertEqual(f.keys, w.metadata.map { $0.key })
        for (k, v) in w.metadata { XCTAssertEqual(f.metadata[k], v, k) }
        XCTAssertEqual(f.tensors.map { $0.name }, ["a.weight", "b.weight", "c.weight"])
        XCTAssertEqual(f.info("a.weight")?.shape, [2, 3])
        XCTAssertEqual(f.info("a.weight")?.dims, [3, 2])
        XCTAssertEqual(f.dataOffset % 32, 0)
        for t in f.tensors { XCTAssertEqual(t.offset % 32, 0) }
        let a = try f.tensor("a.weight")
        XCTAssertEqual((0..<6).map { a.value(at: $0) }, [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
        let b = try f.tensor("b.weight")
        XCTAssertEqual(b.shape, [2, 32])
        let raw = w.tensors[1].data
        XCTAssertEqual(b.value(at: 3), Double(Int8(bitPattern: raw[2 + 3])))
        XCTAssertEqual(b.value(at: 32 + 1), Double(Int8(bitPattern: raw[34 + 2 + 1])) * 0.5)
        XCTAssertEqual(try f.int("llama.block_count"), 2)
        XCTAssertEqual(try f.string("general.architecture"), "llama")
        XCTAssertThrowsError(try f.int("general.name")) { e in
            XCTAssertTrue("\(e)".contains("general.name must be an integer"), "\(e)")
        }
        XCTAssertThrowsError(try f.tensor("nope"))

        // version 2 has the same layout
        var v2 = w.encode()
        v2[4] = 2
        writeRaw(v2, to: dir.file("v2.gguf"))
        XCTAssertEqual(try GGUFFile(path: dir.file("v2.gguf")).version, 2)
    }

    private func expectError(_ bytes: [UInt8], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        let dir = TempDir()
        defer { dir.remove() }
        writeRaw(bytes, to: dir.file("x.gguf"))
        XCTAssertThrowsError(try GGUFFile(path: dir.file("x.gguf")), file: file, line: line) { e in
            XCTAssertTrue(e is IOError, "\(e)", file: file, line: line)
            XCTAssertTrue("\(e)".contains(fragment), "\"\(e)\" lacks \"\(fragment)\"", file: file, line: line)
        }
    }

    private func put64(_ b: inout [UInt8], _ at: Int, _ v: UInt64) {
        for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    func testBrokenFilesNameTheField() {
        let good = Self.sampleWriter().encode()
        expectError([], "empty")
        expectError(Array("GGUF".utf8), "truncated file reading version")
        expectError(Array("GGML".utf8) + good.dropFirst(4), "not a GGUF file")
        var b = good; b[4] = 1; expectError(b, "version 1")
        b = good; b[4] = 0; b[7] = 3; expectError(b, "unsupported GGUF version")
        b = good; put64(&b, 8, 1 << 50); expectError(b, "tensor_count is")
        b = good; put64(&b, 16, 1 << 50); expectError(b, "metadata_kv_count is")
        b = good; put64(&b, 24, 1 << 40); expectError(b, "metadata key #0")
        expectError(Array(good.prefix(200)), "more than the 200 byte file can hold")
        let infosEnd = good.count - 288 // data: 24, 68 and 144 bytes, each padded to 32
        expectError(Array(good.prefix(infosEnd - 40)), "truncated file reading")
        // unknown tensor type: patch c.weight's type field
        var w = Self.sampleWriter()
        w.tensors[2].type = GGMLType(id: 16)
        expectError(w.encode(), "tensor \"c.weight\" has type IQ2_XXS")
        w = Self.sampleWriter(); w.tensors[2].type = GGMLType(id: 77)
        expectError(w.encode(), "type 77")
        // a row length that is not a whole number of blocks
        w = Self.sampleWriter(); w.tensors[1].dims = [16, 2]
        expectError(w.encode(), "not a multiple of the Q8_0 block")
        // data cut short
        expectError(Array(good.dropLast(100)), "lies past the end of the file")
        w = Self.sampleWriter(); w.set("general.alignment", .u32(3))
        expectError(w.encode(), "general.alignment")
        w = Self.sampleWriter(); w.set("general.alignment", .string("x"))
        expectError(w.encode(), "general.alignment")
    }

    func testFuzzedFilesNeverCrash() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let base = Self.sampleWriter().encode()
        let path = dir.file("f.gguf")
        // header end: where the data section starts
        writeRaw(base, to: path)
        let headerEnd = try GGUFFile(path: path).dataOffset
        var rng = SplitMix64(seed: 2026)
        var loaded = 0, rejected = 0
        let cases = 1200
        for i in 0..<cases {
            var b = base
            switch i % 6 {
            case 0: b = Array(b.prefix(Int(rng.next() % UInt64(b.count))))
            case 1:
                for _ in 0..<(1 + rng.next() % 4) { b[Int(rng.next() % UInt64(headerEnd))] ^= UInt8(1 << (rng.next() % 8)) }
            case 2:
                let at = Int(rng.next() % UInt64(headerEnd - 8))
                let values: [UInt64] = [0, 1, 0xFFFF_FFFF, 1 << 32, 1 << 62, UInt64.max, UInt64(b.count), rng.next()]
                put64(&b, at, values[Int(rng.next() % 8)])
            case 3:
                let at = Int(rng.next() % UInt64(headerEnd - 4))
                let v = [UInt32(0), 1, 9, 12, 13, 31, 0xFFFF_FFFF, UInt32(truncatingIfNeeded: rng.next())][Int(rng.next() % 8)]
                for k in 0..<4 { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(k))) }
            case 4:
                for _ in 0..<8 { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            default:
                let at = Int(rng.next() % UInt64(b.count))
                b.removeSubrange(at..<min(b.count, at + 1 + Int(rng.next() % 16)))
            }
            writeRaw(b, to: path)
            do {
                let f = try GGUFFile(path: path)
                for t in f.tensors {
                    let x = try f.tensor(t)
                    XCTAssertEqual(x.count, t.elementCount)
                    XCTAssertLessThanOrEqual(f.dataOffset + t.offset + t.byteCount, b.count)
                }
                loaded += 1
            } catch is IOError {
                rejected += 1
            } catch {
                XCTFail("case \(i): unexpected error type \(error)")
            }
        }
        XCTAssertEqual(loaded + rejected, cases)
        XCTAssertGreaterThan(rejected, cases / 3)
        XCTAssertGreaterThan(loaded, 10)
    }
}
