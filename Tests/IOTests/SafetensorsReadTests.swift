// Tests of SafetensorsFile on the real fixtures (names, dtypes, shapes, values, metadata) and
// of opening things that are not safetensors files (missing path, directory, too short).

import Foundation
import XCTest

import IO

final class SafetensorsReadTests: XCTestCase {
    func testQuantFixture() throws {
        let path = Fixtures.path("quant/nf4_dq0_b64_48x80.safetensors")
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.names, ["absmax", "code", "dequantized", "input", "packed"])
        XCTAssertEqual(f.metadata, [:])
        XCTAssertEqual(f.fileSize, 33288)
        XCTAssertEqual(f.headerLength, 336)
        XCTAssertEqual(f.dataOffset, 344)
        let expected: [(String, SafetensorsDType, [Int])] = [
            ("absmax", .f32, [60]), ("code", .f32, [16]), ("dequantized", .f32, [48, 80]),
            ("input", .f32, [48, 80]), ("packed", .u8, [1920]),
        ]
        for (name, dtype, shape) in expected {
            let e = try XCTUnwrap(f.entry(named: name))
            XCTAssertEqual(e.dtype, dtype, name)
            XCTAssertEqual(e.shape, shape, name)
            XCTAssertEqual(e.byteCount, shape.reduce(1, *) * dtype.byteSize, name)
            XCTAssertEqual(f.bytes(of: e).count, e.byteCount)
        }
        XCTAssertNil(f.entry(named: "nope"))
        XCTAssertNil(f.bytes(named: "nope"))
        let code = try XCTUnwrap(f.bytes(named: "code")).loadFloats()
        XCTAssertEqual(code.first, -1.0)
        XCTAssertEqual(code[7], 0.0)
        XCTAssertEqual(code[8], 0.07958029955625534)
        XCTAssertEqual(code.last, 1.0)
        XCTAssertEqual(Array(try XCTUnwrap(f.bytes(named: "packed")).prefix(4)), [119, 119, 119, 119])
        let absmax = try XCTUnwrap(f.bytes(named: "absmax")).loadFloats()
        XCTAssertEqual(absmax[0], 2.39144229888916)
        XCTAssertEqual(absmax[1], 2.658555269241333)
        XCTAssertEqual(f.dataSection.count, 33288 - 344)
        XCTAssertEqual(f.mappedBytes.count, 33288)
    }

    func testTinyLlamaFixture() throws {
        let f = try SafetensorsFile(path: Fixtures.path("tiny-llama/model.safetensors"))
        XCTAssertEqual(f.metadata, ["format": "pt"])
        XCTAssertEqual(f.entries.count, 21)
        XCTAssertEqual(f.entries.first?.name, "lm_head.weight")
        XCTAssertEqual(f.entries.last?.name, "model.norm.weight")
        for layer in 0..<2 {
            let p = "model.layers.\(layer)."
            XCTAssertEqual(f.entry(named: p + "self_attn.q_proj.weight")?.shape, [64, 64])
            XCTAssertEqual(f.entry(named: p + "self_attn.k_proj.weight")?.shape, [32, 64])
            XCTAssertEqual(f.entry(named: p + "self_attn.v_proj.weight")?.shape, [32, 64])
            XCTAssertEqual(f.entry(named: p + "self_attn.o_proj.weight")?.shape, [64, 64])
            XCTAssertEqual(f.entry(named: p + "mlp.gate_proj.weight")?.shape, [192, 64])
            XCTAssertEqual(f.entry(named: p + "mlp.up_proj.weight")?.shape, [192, 64])
            XCTAssertEqual(f.entry(named: p + "mlp.down_proj.weight")?.shape, [64, 192])
            XCTAssertEqual(f.entry(named: p + "input_layernorm.weight")?.shape, [64])
            XCTAssertEqual(f.entry(named: p + "post_attention_layernorm.weight")?.shape, [64])
        }
        XCTAssertEqual(f.entry(named: "model.embed_tokens.weight")?.shape, [256, 64])
        XCTAssertTrue(f.entries.allSatisfy { $0.dtype == .f32 })
        let norm = try XCTUnwrap(f.bytes(named: "model.norm.weight")).loadFloats()
        XCTAssertEqual(Array(norm.prefix(4)), [1.0623071193695068, 0.9557397961616516, 0.9798067212104797, 1.0366955995559692])
        let head = try XCTUnwrap(f.bytes(named: "lm_head.weight")).loadFloats()
        XCTAssertEqual(Array(head.prefix(2)), [0.01647142693400383, 0.017625320702791214])
        // The tensors tile the data section.
        let total = f.entries.reduce(0) { $0 + $1.byteCount }
        XCTAssertEqual(total, f.dataSize)
    }

    func testBytesOutliveNothingButTheFile() throws {
        // Many opens and closes: mappings are released (no leak of address space / fds).
        let path = Fixtures.path("quant/nf4_dq0_b64_48x80.safetensors")
        for _ in 0..<300 {
            let f = try SafetensorsFile(path: path)
            XCTAssertEqual(f.entries.count, 5)
        }
    }

    func testNotAFile() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let missing = dir.file("missing.safetensors")
        assertIOError(path: missing, ["cannot open", "No such file or directory"]) {
            _ = try SafetensorsFile(path: missing)
        }
        assertIOError(path: dir.path, ["is a directory"]) { _ = try SafetensorsFile(path: dir.path) }
        let inMissingDir = dir.file("nodir/x.safetensors")
        assertIOError(path: inMissingDir, ["cannot open"]) { _ = try SafetensorsFile(path: inMissingDir) }
        #if os(Linux)
            assertIOError(path: "/dev/null", ["not a regular file"]) { _ = try SafetensorsFile(path: "/dev/null") }
        #endif
        if geteuid() != 0 {
            let locked = dir.file("locked.safetensors")
            writeRaw(safetensorsImage(header: "{}"), to: locked)
            chmod(locked, 0)
            assertIOError(path: locked, ["cannot open", "Permission denied"]) {
                _ = try SafetensorsFile(path: locked)
            }
        }
        for size in [0, 1, 7] {
            let short = dir.file("short\(size).safetensors")
            writeRaw([UInt8](repeating: 0, count: size), to: short)
            assertIOError(path: short, ["file is \(size) bytes", "too short"]) {
                _ = try SafetensorsFile(path: short)
            }
        }
    }
}
