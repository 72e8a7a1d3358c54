// Tests of writeSafetensors: round trips for every dtype (0-d scalars, zero-size tensors),
// header layout (8-byte padding, metadata first, offsets in the given order), input validation,
// atomic replacement and error cleanup (no temporary files left behind).

import Foundation
import XCTest

import IO

final class SafetensorsWriteTests: XCTestCase {
    var dir: TempDir!

    override func setUp() { dir = TempDir() }
    override func tearDown() { dir.remove() }

    func testRoundTripEveryDType() throws {
        var rng = SplitMix64(seed: 99)
        let shapes: [[Int]] = [[], [0], [3], [2, 3], [3, 0, 2], [1, 1, 1, 5]]
        var tensors: [SafetensorsTensorData] = []
        var expected: [(String, SafetensorsDType, [Int], [UInt8])] = []
        for dtype in SafetensorsDType.allCases {
            for (i, shape) in shapes.enumerated() {
                let bytes = rng.bytes(shape.reduce(1, *) * dtype.byteSize)
                let name = "\(dtype.rawValue.lowercased()).t\(i)"
                tensors.append(SafetensorsTensorData(name: name, dtype: dtype, shape: shape, data: bytes))
                expected.append((name, dtype, shape, bytes))
            }
        }
        // Reverse the order so header order != name order.
        tensors.reverse()
        expected.reverse()
        let path = dir.file("all.safetensors")
        try writeSafetensors(path: path, tensors: tensors, metadata: ["format": "pt", "note": "é \"q\""])
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.metadata, ["format": "pt", "note": "é \"q\""])
        XCTAssertEqual(f.names, expected.map { $0.0 })
        var offset = 0
        for (e, (name, dtype, shape, bytes)) in zip(f.entries, expected) {
            XCTAssertEqual(e.name, name)
            XCTAssertEqual(e.dtype, dtype)
            XCTAssertEqual(e.shape, shape)
            XCTAssertEqual(e.begin, offset, "offsets are contiguous in the given order")
            offset = e.end
            XCTAssertEqual(Array(f.bytes(of: e)), bytes, name)
        }
        XCTAssertEqual(offset, f.dataSize)
        XCTAssertEqual(dir.contents(), ["all.safetensors"], "no temporary files left")
    }

    func testHeaderLayout() throws {
        let a: [Float] = [1, 2, 3]
        let path = dir.file("layout.safetensors")
        for (metadata, count) in [(["format": "pt"], 3), ([:], 3), (nil, 2)] as [([String: String]?, Int)] {
            try a.withUnsafeBytes { pa in
                try writeSafetensors(
                    path: path,
                    tensors: [
                        SafetensorsTensorData(name: "w", dtype: .f32, shape: [3], bytes: pa),
                        SafetensorsTensorData(name: "b", dtype: .u8, shape: [1], data: [9]),
                    ], metadata: metadata)
            }
            let raw = readRaw(path)
            var n = 0
            for i in (0..<8).reversed() { n = n << 8 | Int(raw[i]) }
            XCTAssertEqual(n % 8, 0, "header padded to a multiple of 8")
            XCTAssertEqual(raw.count, 8 + n + 13)
            let headerBytes = Array(raw[8..<(8 + n)])
            let text = String(decoding: headerBytes, as: UTF8.self)
            XCTAssertTrue(text.hasPrefix(metadata == nil ? "{\"w\":" : "{\"__metadata__\":"), text)
            // After the closing brace: fewer than 8 spaces of padding and nothing else.
            let close = try XCTUnwrap(headerBytes.lastIndex(of: UInt8(ascii: "}")))
            let padding = headerBytes[(close + 1)...]
            XCTAssertTrue(padding.allSatisfy { $0 == 0x20 })
            XCTAssertLessThan(padding.count, 8)
            let header = try JSONValue.parse(headerBytes)
            XCTAssertEqual(header.objectValue?.count, count)
            XCTAssertEqual(header["w"], ["dtype": "F32", "shape": [3], "data_offsets": [0, 12]])
            XCTAssertEqual(header["b"], ["dtype": "U8", "shape": [1], "data_offsets": [12, 13]])
            if let metadata {
                XCTAssertEqual(header["__metadata__"], .object(JSONObject(metadata.map { ($0.key, .string($0.value)) })))
            }
            let f = try SafetensorsFile(path: path)
            XCTAssertEqual(f.bytes(named: "w")?.loadFloats(), a)
            XCTAssertEqual(f.dataOffset % 8, 0)
        }
    }

    func testMatchesReferenceLayoutOfFixture() throws {
        // Re-writing the fixture's tensors in its header order reproduces the file byte for byte
        // (the reference writer also pads with spaces and lays tensors out contiguously).
        let src = Fixtures.path("quant/nf4_dq0_b64_48x80.safetensors")
        let f = try SafetensorsFile(path: src)
        let tensors = f.entries.map {
            SafetensorsTensorData(name: $0.name, dtype: $0.dtype, shape: $0.shape, bytes: f.bytes(of: $0))
        }
        let out = dir.file("copy.safetensors")
        try writeSafetensors(path: out, tensors: tensors, metadata: nil)
        XCTAssertEqual(readRaw(out), readRaw(src))
    }

    func testLargeTensorFromPointer() throws {
        let count = 1 << 18
        let values = (0..<count).map { Float($0) * 0.5 }
        let path = dir.file("big.safetensors")
        try values.withUnsafeBytes { p in
            try writeSafetensors(
                path: path, tensors: [SafetensorsTensorData(name: "v", dtype: .f32, shape: [512, 512], bytes: p)])
        }
        let f = try SafetensorsFile(path: path)
        let b = try XCTUnwrap(f.bytes(named: "v"))
        XCTAssertEqual(b.count, count * 4)
        XCTAssertTrue(memcmp(b.baseAddress!, values, count * 4) == 0)
    }

    func testInputValidation() throws {
        let path = dir.file("v.safetensors")
        func expect(_ tensors: [SafetensorsTensorData], _ fragment: String, line: UInt = #line) {
            assertIOError(path: path, [fragment], line: line) {
                try writeSafetensors(path: path, tensors: tensors, metadata: nil)
            }
            XCTAssertEqual(dir.contents(), [], "nothing written", line: line)
        }
        expect(
            [SafetensorsTensorData(name: "x", dtype: .f32, shape: [2, 2], data: [UInt8](repeating: 0, count: 12))],
            #"tensor "x": 12 bytes given but dtype F32 and shape [2, 2] need 16"#)
        expect(
            [SafetensorsTensorData(name: "x", dtype: .f16, shape: [], data: [1])],
            "1 bytes given but dtype F16 and shape [] need 2")
        expect(
            [
                SafetensorsTensorData(name: "x", dtype: .u8, shape: [1], data: [1]),
                SafetensorsTensorData(name: "x", dtype: .u8, shape: [1], data: [2]),
            ], #"duplicate tensor name "x""#)
        expect(
            [SafetensorsTensorData(name: "__metadata__", dtype: .u8, shape: [1], data: [1])],
            #"cannot write a tensor named "__metadata__""#)
        expect(
            [SafetensorsTensorData(name: "x", dtype: .u8, shape: [-1], data: [])], "negative dimension in shape [-1]")
        expect(
            [SafetensorsTensorData(name: "x", dtype: .u8, shape: [1 << 32, 1 << 32], data: [])], "too many elements")
        expect(
            [SafetensorsTensorData(name: "x", dtype: .f64, shape: [1 << 61], data: [])], "overflows")
        // Canonically equivalent but byte-different names are distinct tensors.
        XCTAssertNoThrow(
            try writeSafetensors(
                path: path,
                tensors: [
                    SafetensorsTensorData(name: "\u{E9}", dtype: .u8, shape: [1], data: [1]),
                    SafetensorsTensorData(name: "e\u{301}", dtype: .u8, shape: [1], data: [2]),
                ], metadata: nil))
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.bytes(named: "e\u{301}").map(Array.init), [2])
        XCTAssertEqual(f.copyBytes(of: f.entries[0]), [1])
    }

    func testAtomicReplaceAndErrors() throws {
        let path = dir.file("m.safetensors")
        try writeSafetensors(path: path, tensors: [SafetensorsTensorData(name: "a", dtype: .u8, shape: [1], data: [1])])
        let first = try SafetensorsFile(path: path)
        try writeSafetensors(path: path, tensors: [SafetensorsTensorData(name: "b", dtype: .u8, shape: [2], data: [2, 3])])
        // The old mapping is unaffected by the replacement; the new file has the new content.
        XCTAssertEqual(first.bytes(named: "a").map(Array.init), [1])
        XCTAssertEqual(try SafetensorsFile(path: path).names, ["b"])
        XCTAssertEqual(dir.contents(), ["m.safetensors"])

        // Missing directory.
        let noDir = dir.file("missing/x.safetensors")
        assertIOError(path: noDir, ["the directory", "does not exist", "No such file or directory"]) {
            try writeSafetensors(path: noDir, tensors: [])
        }
        // Target is a directory: refused before anything is written (only regular files are
        // replaced), nothing left behind.
        let sub = dir.file("sub")
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: false)
        assertIOError(path: sub, ["exists and is a directory; saving replaces only regular files"]) {
            try writeSafetensors(path: sub, tensors: [SafetensorsTensorData(name: "a", dtype: .u8, shape: [1], data: [1])])
        }
        XCTAssertEqual(dir.contents(), ["m.safetensors", "sub"])
        // A path that names a directory.
        assertIOError(path: dir.path + "/", ["exists and is a directory"]) { try writeSafetensors(path: dir.path + "/", tensors: []) }
        #if os(Linux)
            // Nobody, not even root, can create files in /proc.
            assertIOError(path: "/proc/qlora-iotests.safetensors", ["cannot create a temporary file in /proc/"]) {
                try writeSafetensors(path: "/proc/qlora-iotests.safetensors", tensors: [])
            }
        #endif
        if geteuid() != 0 {
            let locked = dir.file("locked")
            try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: false)
            chmod(locked, 0o500)
            defer { chmod(locked, 0o700) }
            assertIOError(path: locked + "/x.safetensors", ["Permission denied"]) {
                try writeSafetensors(path: locked + "/x.safetensors", tensors: [])
            }
        }
        // A relative path (temporary file in the current directory) works too.
        let cwd = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(dir.path))
        defer { _ = FileManager.default.changeCurrentDirectoryPath(cwd) }
        try writeSafetensors(path: "rel.safetensors", tensors: [], metadata: ["k": "v"])
        XCTAssertEqual(try SafetensorsFile(path: "rel.safetensors").metadata, ["k": "v"])
        XCTAssertEqual(try SafetensorsFile(path: "rel.safetensors").entries, [])
    }
}
