// Every GGUF tensor type qlora reads, decoded by the C reference kernels, against the golden
// values the `gguf` Python package computes for the same random blocks
// (Tests/fixtures/gguf/dequant.safetensors, made by scripts/fixtures/make_gguf_dequant.py).
// Equality is bit-exact. Also: ggml's Q8_0 quantizer, and the block geometry table.

import Foundation
import XCTest

import IO
import Tensor

final class GGUFDequantTests: XCTestCase {
    static let types: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1,
                                    .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_nl]

    private func golden() throws -> [String: Tensor] {
        let (tensors, _) = try TensorFiles.load(Fixtures.path("gguf/dequant.safetensors"))
        return Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.tensor) })
    }

    private func bytes(_ t: Tensor) -> [UInt8] { (0..<t.count).map { UInt8(truncatingIfNeeded: t.intValue(at: $0)) } }
    private func floats(_ t: Tensor) -> [Float] { (0..<t.count).map { Float(t.value(at: $0)) } }

    func testEveryTypeDequantizesBitExactly() throws {
        let g = try golden()
        for type in Self.types {
            let name = type.description
            guard let raw = g[name + ".raw"], let want = g[name + ".values"] else {
                XCTFail("fixture lacks \(name)"); continue
            }
            let got = type.dequantize(bytes(raw), count: want.count)
            XCTAssertNotNil(got, name)
            guard let got else { continue }
            let w = floats(want)
            var mismatches = 0
            for i in 0..<w.count where got[i].bitPattern != w[i].bitPattern { mismatches += 1 }
            XCTAssertEqual(mismatches, 0, "\(name): \(mismatches) of \(w.count) values differ")
            XCTAssertGreaterThan(Set(w).count, w.count / 8, "\(name): golden values too uniform to test anything")
        }
    }

    func testQ8_0QuantizerMatchesReference() throws {
        let g = try golden()
        let x = try XCTUnwrap(g["Q8_0.quant_in"]), want = try XCTUnwrap(g["Q8_0.quant_out"])
        let got = floats(x).withUnsafeBufferPointer { GGMLType.q8_0.quantize($0) }
        XCTAssertEqual(got, bytes(want))
    }

    func testQ4_0RoundTripIsWithinOneStep() throws {
        var rng = SplitMix64(seed: 11)
        let x: [Float] = (0..<256).map { _ in Float(rng.next() % 2001) / 1000 - 1 }
        let q = try XCTUnwrap(x.withUnsafeBufferPointer { GGMLType.q4_0.quantize($0) })
        XCTAssertEqual(q.count, 8 * 18)
        let y = try XCTUnwrap(GGMLType.q4_0.dequantize(q, count: 256))
        for b in 0..<8 {
            let block = x[b * 32..<(b + 1) * 32]
            let step = block.map { abs($0) }.max()! / 8
            for i in b * 32..<(b + 1) * 32 { XCTAssertLessThanOrEqual(abs(x[i] - y[i]), step * 1.0001 + 1e-4, "element \(i)") }
        }
    }

    func testBlockGeometry() {
        let expected: [(GGMLType, Int, Int)] = [(.f32, 1, 4), (.f16, 1, 2), (.bf16, 1, 2), (.q4_0, 32, 18), (.q4_1, 32, 20),
            (.q5_0, 32, 22), (.q5_1, 32, 24), (.q8_0, 32, 34), (.iq4_nl, 32, 18), (.q2_K, 256, 84),
            (.q3_K, 256, 110), (.q4_K, 256, 144), (.q5_K, 256, 176), (.q6_K, 256, 210)]
        for (t, e, b) in expected {
            XCTAssertEqual(t.block?.elements, e, t.description)
            XCTAssertEqual(t.block?.bytes, b, t.description)
        }
        XCTAssertNil(GGMLType(id: 16).block) // IQ2_XXS: not readable
        XCTAssertEqual(GGMLType(id: 16).description, "IQ2_XXS")
        XCTAssertEqual(GGMLType(id: 999).description, "type 999")
        XCTAssertNil(GGMLType.q4_K.byteCount(elements: 100))
        XCTAssertNil(GGMLType.q8_0.dequantize([0, 0, 0], count: 32))
    }
}
