// Header validation of SafetensorsFile: one hand-made file per rule, each asserting that the
// IOError names the file and the problem; plus the edge cases that must load (empty data
// section, zero-byte tensors, header order different from data order).

import Foundation
import XCTest

import IO

final class SafetensorsValidationTests: XCTestCase {
    var dir: TempDir!

    override func setUp() { dir = TempDir() }
    override func tearDown() { dir.remove() }

    /// Writes `image` and asserts that opening it fails mentioning all of `fragments`.
    @discardableResult
    func expectFailure(
        _ image: [UInt8], _ fragments: [String], file: StaticString = #filePath, line: UInt = #line
    ) -> String? {
        let path = dir.file("bad-\(line).safetensors")
        writeRaw(image, to: path)
        return assertIOError(path: path, fragments, file: file, line: line) {
            _ = try SafetensorsFile(path: path)
        }
    }

    func expectFailure(
        header: String, data: [UInt8] = [], _ fragments: [String],
        file: StaticString = #filePath, line: UInt = #line
    ) {
        expectFailure(safetensorsImage(header: header, data: data), fragments, file: file, line: line)
    }

    func load(_ image: [UInt8], line: UInt = #line) throws -> SafetensorsFile {
        let path = dir.file("good-\(line).safetensors")
        writeRaw(image, to: path)
        return try SafetensorsFile(path: path)
    }

    let x16 = [UInt8](repeating: 7, count: 16)

    func testHeaderLength() throws {
        // Beyond the file.
        expectFailure(
            safetensorsImage(header: "{}", lengthField: 9), ["header length 9 exceeds the file size (16 bytes)"])
        expectFailure(safetensorsImage(header: "{}", lengthField: UInt64.max), ["exceeds the file size"])
        expectFailure(safetensorsImage(header: "{}", lengthField: 1 << 63), ["exceeds the file size"])
        // Zero.
        expectFailure(safetensorsImage(header: "", pad: false), ["header is empty"])
        expectFailure(safetensorsImage(header: "{}", lengthField: 0), ["header is empty"])
        // Absurd but inside the (sparse) file.
        let path = dir.file("huge.safetensors")
        writeRaw(safetensorsImage(header: "{}", lengthField: 100_000_001), to: path)
        XCTAssertEqual(truncate(path, 100_000_200), 0)
        assertIOError(path: path, ["header length 100000001 is larger than the 100000000-byte limit"]) {
            _ = try SafetensorsFile(path: path)
        }
    }

    func testHeaderNotJSONObject() {
        expectFailure(header: "{abc}", ["header is not valid JSON", "string key"])
        expectFailure(header: "{\"a\":", ["header is not valid JSON"])
        expectFailure(header: "[1, 2]", ["header is not a JSON object"])
        expectFailure(header: "\"x\"", ["header is not a JSON object"])
        expectFailure(header: " {}", ["header is not a JSON object", "does not start with '{'"])
        expectFailure(header: "{} x", ["header is not valid JSON", "after the JSON value"])
        // Padding with NULs instead of spaces is not JSON whitespace.
        expectFailure(
            safetensorsImage(headerBytes: Array("{}".utf8) + [0, 0, 0, 0, 0, 0], data: []), ["not valid JSON"])
        // Non-UTF-8 inside a name.
        let bad: [UInt8] = Array("{\"a".utf8) + [0xFF] + Array("\":{}}   ".utf8)
        expectFailure(safetensorsImage(headerBytes: bad, data: []), ["not valid JSON", "UTF-8"])
    }

    func testEntryShape() {
        expectFailure(header: #"{"x":5}"#, [#"tensor "x": entry is not a JSON object (found 5)"#])
        expectFailure(header: #"{"x":[1]}"#, [#"tensor "x": entry is not a JSON object"#])
        expectFailure(
            header: #"{"x":{"shape":[4],"data_offsets":[0,16]}}"#, data: x16, [#"tensor "x": missing "dtype""#])
        expectFailure(
            header: #"{"x":{"dtype":"F32","data_offsets":[0,16]}}"#, data: x16, [#"tensor "x": missing "shape""#])
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":[4]}}"#, data: x16, [#"tensor "x": missing "data_offsets""#])
        expectFailure(
            header: #"{"x":{"dtype":4,"shape":[4],"data_offsets":[0,16]}}"#, data: x16,
            [#""dtype" is not a string (found 4)"#])
        expectFailure(
            header: #"{"x":{"dtype":"F4","shape":[4],"data_offsets":[0,16]}}"#, data: x16,
            [#"tensor "x": unknown dtype "F4""#])
        expectFailure(
            header: #"{"x":{"dtype":"f32","shape":[4],"data_offsets":[0,16]}}"#, data: x16, ["unknown dtype \"f32\""])
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":"4","data_offsets":[0,16]}}"#, data: x16,
            [#""shape" is not an array"#])
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#, data: x16,
            ["shape dimension -4 is not a non-negative integer"])
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":[2.5],"data_offsets":[0,16]}}"#, data: x16,
            ["shape dimension 2.5 is not a non-negative integer"])
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}}"#, data: x16,
            ["shape dimension 4.0 is not a non-negative integer"])
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":[null],"data_offsets":[0,16]}}"#, data: x16,
            ["shape dimension null"])
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,16]}}"#, data: x16,
            ["shape dimension 1e+20 is not a non-negative integer"])
        for offsets in ["[0]", "[0,16,16]", "[0,\"16\"]", "\"0-16\"", "[-1,15]", "[0,16.0]", "{}", "[]"] {
            expectFailure(
                header: #"{"x":{"dtype":"F32","shape":[4],"data_offsets":"# + offsets + "}}", data: x16,
                [#"tensor "x": "data_offsets" must be [begin, end] with non-negative integers"#])
        }
    }

    func testSizes() {
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#, data: x16,
            ["tensor \"x\": shape [4294967296, 4294967296] has too many elements"])
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,16]}}"#, data: x16,
            ["byte size of dtype F32 and shape [2305843009213693952] overflows"])
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}}"#, data: x16,
            ["tensor \"x\": data_offsets [16, 0] end before they begin"])
        let msg = expectFailure(
            safetensorsImage(header: #"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#, data: x16),
            [])
        XCTAssertTrue(
            msg?.hasSuffix(#"safetensors: tensor "x" data_offsets [0, 12] do not match dtype F32 and shape [2, 2] (16 bytes)"#)
                ?? false, msg ?? "")
        expectFailure(
            header: #"{"x":{"dtype":"BF16","shape":[],"data_offsets":[0,4]}}"#, data: [1, 2, 3, 4],
            ["do not match dtype BF16 and shape [] (2 bytes)"])
        expectFailure(
            header: #"{"x":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#, data: x16,
            ["tensor \"x\": data_offsets [0, 32] extend beyond the data section (16 bytes)"])
        expectFailure(
            header: #"{"x":{"dtype":"U8","shape":[1],"data_offsets":[9223372036854775806,9223372036854775807]}}"#,
            data: x16, ["extend beyond the data section"])
    }

    func testTiling() {
        expectFailure(
            header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
            data: x16 + x16,
            [#"tensor "b" data_offsets [8, 24] overlap tensor "a" [0, 16]"#])
        expectFailure(
            header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            data: x16, ["overlap"])
        // A zero-size tensor inside another one.
        expectFailure(
            header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"z":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}"#,
            data: x16, [#"tensor "z" data_offsets [8, 8] overlap tensor "a" [0, 16]"#])
        expectFailure(
            header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#,
            data: x16 + x16.prefix(8),
            [#"hole in the data section: no tensor covers bytes [8, 16) (before tensor "b")"#])
        expectFailure(
            header: #"{"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, data: x16,
            ["hole in the data section: no tensor covers bytes [0, 8)"])
        expectFailure(
            header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: x16 + [1, 2, 3, 4],
            ["data section is 20 bytes but the tensors cover only 16: 4 trailing bytes"])
        expectFailure(header: "{}", data: [0], ["data section is 1 bytes but the tensors cover only 0"])
    }

    func testDuplicatesAndMetadata() {
        expectFailure(
            header: #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
            data: [1, 2], [#"duplicate key "a""#])
        expectFailure(
            header: #"{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: [1],
            [#"duplicate key "dtype""#])
        expectFailure(header: #"{"__metadata__":[]}"#, [#""__metadata__" is not a JSON object of strings"#])
        expectFailure(header: #"{"__metadata__":"pt"}"#, [#""__metadata__" is not a JSON object"#])
        expectFailure(
            header: #"{"__metadata__":{"format":"pt","n":1}}"#,
            [#""__metadata__" value for "n" is not a string (found 1)"#])
        expectFailure(
            header: #"{"__metadata__":{"format":{"a":"b"}}}"#, [#""__metadata__" value for "format" is not a string"#])
        expectFailure(
            header: #"{"__metadata__":{"a":"b"},"__metadata__":{"a":"b"}}"#, ["duplicate key \"__metadata__\""])
    }

    func testEdgeCasesThatLoad() throws {
        // Empty data section: no tensors at all.
        let empty = try load(safetensorsImage(header: "{}"))
        XCTAssertEqual(empty.entries, [])
        XCTAssertEqual(empty.dataSize, 0)
        XCTAssertEqual(empty.metadata, [:])
        let unpadded = try load(safetensorsImage(header: "{}", pad: false))
        XCTAssertEqual(unpadded.headerLength, 2)
        // Metadata only, trailing whitespace of every JSON kind in the header.
        let meta = try load(safetensorsImage(header: "{\"__metadata__\":{\"format\":\"pt\",\"é\":\"\\u00e9\"}}\n\t\r "))
        XCTAssertEqual(meta.metadata, ["format": "pt", "é": "é"])
        // Zero-byte tensors (alone, and at the end of the data) and 0-d scalars.
        let zero = try load(safetensorsImage(header: #"{"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}"#))
        XCTAssertEqual(zero.entries.first?.elementCount, 0)
        XCTAssertEqual(zero.bytes(of: zero.entries[0]).count, 0)
        let mixed = try load(
            safetensorsImage(
                header:
                    #"{"s":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"z":{"dtype":"U8","shape":[0],"data_offsets":[16,16]},"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"z0":{"dtype":"BOOL","shape":[0],"data_offsets":[0,0]}}"#,
                data: [UInt8](0..<16)))
        // Header order is kept even though data order differs.
        XCTAssertEqual(mixed.names, ["s", "z", "a", "z0"])
        let s = try XCTUnwrap(mixed.entry(named: "s"))
        XCTAssertEqual(s.shape, [])
        XCTAssertEqual(s.elementCount, 1)
        XCTAssertEqual(Array(mixed.bytes(of: s)), [UInt8](8..<16))
        XCTAssertEqual(mixed.bytes(named: "z")?.count, 0)
        // Unknown extra fields in an entry are ignored (as the reference implementation does).
        let extra = try load(
            safetensorsImage(header: #"{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"note":[1]}}"#, data: [5, 6]))
        XCTAssertEqual(extra.entries.first?.shape, [2])
        // Every dtype name is accepted.
        for dtype in SafetensorsDType.allCases {
            let f = try load(
                safetensorsImage(
                    header: "{\"t\":{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[3],\"data_offsets\":[0,\(3 * dtype.byteSize)]}}",
                    data: [UInt8](repeating: 1, count: 3 * dtype.byteSize)))
            XCTAssertEqual(f.entries.first?.dtype, dtype)
        }
    }
}
