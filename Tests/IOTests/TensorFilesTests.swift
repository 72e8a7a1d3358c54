// Tensors from safetensors files of every dtype: the six tensor dtypes borrow the mapped bytes,
// the others are converted on read (F64/F8 -> f32, I8/I16/U16 -> i32, U32/U64 -> i64,
// BOOL -> u8), and a U64 beyond the i64 range is an error.

import Foundation
import XCTest

import IO
import Tensor

final class TensorFilesTests: XCTestCase {
    private func bytes<T>(_ values: [T]) -> [UInt8] {
        values.withUnsafeBytes { Array($0) }
    }

    func testEveryFileDTypeReads() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let path = dir.file("all.safetensors")
        try writeSafetensors(path: path, tensors: [
            SafetensorsTensorData(name: "f64", dtype: .f64, shape: [3], data: bytes([1.5, -2.25, 1e300] as [Double])),
            SafetensorsTensorData(name: "i8", dtype: .i8, shape: [2], data: bytes([-128, 127] as [Int8])),
            SafetensorsTensorData(name: "i16", dtype: .i16, shape: [2], data: bytes([-32768, 300] as [Int16])),
            SafetensorsTensorData(name: "u16", dtype: .u16, shape: [1], data: bytes([65535] as [UInt16])),
            SafetensorsTensorData(name: "u32", dtype: .u32, shape: [1], data: bytes([4_000_000_000] as [UInt32])),
            SafetensorsTensorData(name: "u64", dtype: .u64, shape: [1], data: bytes([1 << 40] as [UInt64])),
            SafetensorsTensorData(name: "bool", dtype: .bool, shape: [3], data: [0, 1, 7]),
            // e4m3fn: 0x38 = 1.0, 0xC0 = -2.0, 0x7F = NaN; e5m2: 0x3C = 1.0, 0x7C = inf
            SafetensorsTensorData(name: "e4m3", dtype: .f8E4M3, shape: [3], data: [0x38, 0xC0, 0x7F]),
            SafetensorsTensorData(name: "e5m2", dtype: .f8E5M2, shape: [2], data: [0x3C, 0x7C]),
            SafetensorsTensorData(name: "f32", dtype: .f32, shape: [2], data: bytes([0.5, 7] as [Float])),
        ], metadata: ["k": "v"])
        let (list, meta) = try TensorFiles.load(path)
        XCTAssertEqual(meta["k"], "v")
        let t = Dictionary(uniqueKeysWithValues: list.map { ($0.name, $0.tensor) })
        func values(_ n: String) -> [Double] {
            guard let x = t[n] else { return [] }
            return (0..<x.count).map { x.value(at: $0) }
        }
        XCTAssertEqual(t["f64"]?.dtype, .f32)
        XCTAssertEqual(values("f64")[0], 1.5)
        XCTAssertEqual(values("f64")[2], .infinity, "1e300 does not fit an f32")
        XCTAssertEqual(t["i8"]?.dtype, .i32); XCTAssertEqual(values("i8"), [-128, 127])
        XCTAssertEqual(values("i16"), [-32768, 300])
        XCTAssertEqual(values("u16"), [65535])
        XCTAssertEqual(t["u32"]?.dtype, .i64); XCTAssertEqual(values("u32"), [4_000_000_000])
        XCTAssertEqual(values("u64"), [Double(1 << 40)])
        XCTAssertEqual(t["bool"]?.dtype, .u8); XCTAssertEqual(values("bool"), [0, 1, 1])
        let e4 = values("e4m3")
        XCTAssertEqual(e4[0], 1); XCTAssertEqual(e4[1], -2); XCTAssertTrue(e4[2].isNaN)
        XCTAssertEqual(values("e5m2"), [1, .infinity])
        XCTAssertEqual(t["f32"]?.dtype, .f32); XCTAssertEqual(values("f32"), [0.5, 7])
    }

    func testU64BeyondI64IsAnError() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let path = dir.file("u64.safetensors")
        try writeSafetensors(path: path, tensors: [
            SafetensorsTensorData(name: "big", dtype: .u64, shape: [1], data: bytes([UInt64.max] as [UInt64])),
        ])
        XCTAssertThrowsError(try TensorFiles.load(path)) { error in
            XCTAssertTrue("\(error)".contains("beyond what an i64 tensor can hold"), "\(error)")
        }
    }

    func testSaveAndLoadRoundTrip() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let path = dir.file("rt.safetensors")
        let a = try Tensor.randn([3, 4], seed: 1)
        let b = try Tensor.arange(0, 5, 1, dtype: .i64)
        try TensorFiles.save(path, [("a", a), ("b", b)], metadata: nil)
        let (list, _) = try TensorFiles.load(path)
        // laid out widest element first: the i64 tensor precedes the f32 one
        XCTAssertEqual(list.map { $0.name }, ["b", "a"])
        let byName = Dictionary(uniqueKeysWithValues: list.map { ($0.name, $0.tensor) })
        let la = try XCTUnwrap(byName["a"]), lb = try XCTUnwrap(byName["b"])
        XCTAssertEqual((0..<12).map { la.value(at: $0) }, (0..<12).map { a.value(at: $0) })
        XCTAssertEqual((0..<5).map { lb.intValue(at: $0) }, [0, 1, 2, 3, 4])
    }
}
