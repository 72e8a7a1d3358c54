// AtomicFile, under which every whole-file write runs: only a regular file is ever replaced (a
// device, FIFO or directory at the path is an error and stays what it was), a symbolic link is
// followed to its target and stays a link, a dangling link and a parent that is a file are
// errors in words, a failing write leaves the old contents and no temporary file.

import Foundation
import XCTest

@testable import IO

final class AtomicFileTests: XCTestCase {
    var dir: TempDir!

    override func setUp() { dir = TempDir() }
    override func tearDown() { dir.remove() }

    func kind(_ path: String) -> mode_t {
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0, path)
        return st.st_mode & S_IFMT
    }

    func testReplacesRegularFilesAndCreatesNewOnes() throws {
        let p = dir.file("a.txt")
        try AtomicFile.write(p, bytes: Array("one".utf8))
        try AtomicFile.write(p, bytes: Array("two".utf8))
        XCTAssertEqual(readRaw(p), Array("two".utf8))
        XCTAssertEqual(dir.contents(), ["a.txt"])
    }

    func testRefusesNonRegularTargets() throws {
        let fifo = dir.file("fifo")
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let sub = dir.file("sub")
        try AtomicFile.makeDirectory(sub)
        for (path, what, mode) in [(fifo, "a FIFO", S_IFIFO), (sub, "a directory", S_IFDIR)] {
            XCTAssertThrowsError(try AtomicFile.write(path, bytes: [1, 2, 3])) { e in
                XCTAssertTrue("\(e)".contains("exists and is \(what); saving replaces only regular files"), "\(e)")
            }
            XCTAssertEqual(kind(path), mode)
        }
        XCTAssertEqual(dir.contents().filter { $0.contains(".tmp-") }, [])
    }

    func testFollowsSymlinks() throws {
        try AtomicFile.makeDirectory(dir.file("real"))
        let target = dir.file("real/t.bin")
        try AtomicFile.write(target, bytes: [1])
        let link = dir.file("link.bin")
        XCTAssertEqual(symlink(target, link), 0)
        try AtomicFile.write(link, bytes: [2, 2])
        XCTAssertEqual(kind(link), S_IFLNK)
        XCTAssertEqual(readRaw(target), [2, 2])
        XCTAssertEqual(symlink(dir.file("nowhere/x"), dir.file("dangling")), 0)
        XCTAssertThrowsError(try AtomicFile.write(dir.file("dangling"), bytes: [1])) { e in
            XCTAssertTrue("\(e)".contains("symbolic link to a missing file"), "\(e)")
        }
    }

    func testParentThatIsAFile() throws {
        let f = dir.file("plain")
        try AtomicFile.write(f, bytes: [0])
        XCTAssertThrowsError(try AtomicFile.write(f + "/x/y", bytes: [1])) { e in
            XCTAssertTrue("\(e)".contains("\(f) is a file, not a directory"), "\(e)")
        }
        XCTAssertThrowsError(try AtomicFile.makeDirectory(f + "/sub")) { e in
            XCTAssertTrue("\(e)".contains("\(f) is a file, not a directory"), "\(e)")
        }
        XCTAssertThrowsError(try AtomicFile.write(dir.file("missing/x"), bytes: [1])) { e in
            XCTAssertTrue("\(e)".contains("does not exist"), "\(e)")
        }
    }

    func testFailedWriteKeepsOldContentsAndNoTemporaryFile() throws {
        let p = dir.file("keep.bin")
        try AtomicFile.write(p, bytes: [7])
        struct Boom: Error {}
        XCTAssertThrowsError(try AtomicFile.write(p) { fd in
            try AtomicFile.writeAll(fd, [1, 2, 3], path: p)
            throw Boom()
        })
        XCTAssertEqual(readRaw(p), [7])
        XCTAssertEqual(dir.contents(), ["keep.bin"])
    }
}
