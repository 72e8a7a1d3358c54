// Helpers shared by the IO tests: fixture paths (relative to this file, so the tests do not
// need /work/shared), per-test temporary directories, raw file writing, a seeded PRNG
// (splitmix64) and assertion helpers for IOError messages.

import Foundation
import XCTest

import IO

enum Fixtures {
    /// Tests/fixtures, found from this source file's location.
    static let root: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()
        .deletingLastPathComponent()
        .appendingPathComponent("fixtures").path

    static func path(_ relative: String) -> String { root + "/" + relative }
}

/// A fresh directory under the system temporary directory; removed by `remove()`.
final class TempDir {
    let path: String

    init() {
        let base = NSTemporaryDirectory()
        let name = "qlora-iotests-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        path = (base as NSString).appendingPathComponent(name)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func contents() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: path))?.sorted() ?? []
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Writes bytes to `path` (replacing it) with plain POSIX calls.
func writeRaw(_ bytes: [UInt8], to path: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "test helper cannot create \(path)")
    bytes.withUnsafeBytes { buf in
        var done = 0
        while done < buf.count {
            let r = write(fd, buf.baseAddress! + done, buf.count - done)
            precondition(r > 0)
            done += r
        }
    }
    close(fd)
}

func readRaw(_ path: String) -> [UInt8] {
    (try? readFileBytes(path: path)) ?? []
}

/// A safetensors image from header text (padded with spaces to a multiple of 8 unless
/// `pad` is false) and data bytes; `lengthField` overrides the 8-byte header length.
func safetensorsImage(
    header: String, data: [UInt8] = [], pad: Bool = true, lengthField: UInt64? = nil
) -> [UInt8] {
    var h = Array(header.utf8)
    if pad {
        while h.count % 8 != 0 { h.append(0x20) }
    }
    return safetensorsImage(headerBytes: h, data: data, lengthField: lengthField)
}

func safetensorsImage(headerBytes h: [UInt8], data: [UInt8], lengthField: UInt64? = nil) -> [UInt8] {
    var out: [UInt8] = []
    var n = lengthField ?? UInt64(h.count)
    for _ in 0..<8 {
        out.append(UInt8(n & 0xFF))
        n >>= 8
    }
    out += h
    out += data
    return out
}

/// splitmix64: a tiny deterministic PRNG.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

/// Asserts that `body` throws an IOError whose description names `path` and contains every
/// string in `fragments`; returns the description.
@discardableResult
func assertIOError(
    path: String, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
    _ body: () throws -> Void
) -> String? {
    do {
        try body()
        XCTFail("expected an IOError mentioning \(fragments)", file: file, line: line)
        return nil
    } catch let e as IOError {
        let text = e.description
        XCTAssertEqual(e.path, path, file: file, line: line)
        XCTAssertTrue(text.hasPrefix(path + ": "), "\(text) does not start with the path", file: file, line: line)
        for f in fragments {
            XCTAssertTrue(text.contains(f), "\"\(text)\" does not mention \"\(f)\"", file: file, line: line)
        }
        return text
    } catch {
        XCTFail("expected an IOError, got \(type(of: error)): \(error)", file: file, line: line)
        return nil
    }
}

/// Asserts that parsing fails with a JSONParseError (optionally at `offset` and mentioning
/// `reason`).
func assertJSONError(
    _ text: [UInt8], offset: Int? = nil, reason: String? = nil,
    duplicateKeys: JSONDuplicateKeyPolicy = .reject,
    file: StaticString = #filePath, line: UInt = #line
) {
    do {
        let v = try JSONValue.parse(text, duplicateKeys: duplicateKeys)
        XCTFail("expected a parse error for \(String(decoding: text.prefix(60), as: UTF8.self).debugDescription), got \(v)", file: file, line: line)
    } catch let e as JSONParseError {
        if let offset { XCTAssertEqual(e.offset, offset, "\(e)", file: file, line: line) }
        if let reason {
            XCTAssertTrue(e.reason.contains(reason), "\"\(e.reason)\" does not mention \"\(reason)\"", file: file, line: line)
        }
    } catch {
        XCTFail("unexpected error type \(error)", file: file, line: line)
    }
}

func assertJSONError(
    _ text: String, offset: Int? = nil, reason: String? = nil,
    duplicateKeys: JSONDuplicateKeyPolicy = .reject,
    file: StaticString = #filePath, line: UInt = #line
) {
    assertJSONError(Array(text.utf8), offset: offset, reason: reason, duplicateKeys: duplicateKeys, file: file, line: line)
}

extension UnsafeRawBufferPointer {
    func loadFloats() -> [Float] {
        (0..<(count / 4)).map { loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
    }
}
