// The Lua host: the module loads both ways, script errors come back as text with the script
// position and a traceback, and bad calls from Lua never take the process down.

import LuaBridge
import Tensor
import XCTest

final class LuaHostTests: XCTestCase {
    override func setUp() { try? Runtime.start() }

    func testModuleIsPreloadedAndGlobal() throws {
        let host = try LuaHost()
        XCTAssertNil(host.runString("""
            local q = require "qlora"
            assert(q == qlora, "require and the global are the same table")
            assert(type(q.version) == "string")
            """))
    }

    func testSwiftErrorsBecomeLuaErrorsWithPosition() throws {
        let host = try LuaHost()
        let err = host.runString("local q = require 'qlora'\nq.matmul(q.ones({2,3}), q.ones({4,5}))", name: "=train.lua")
        let text = try XCTUnwrap(err)
        XCTAssertTrue(text.contains("qlora.matmul: shapes [2,3] and [4,5] do not match"), text)
        XCTAssertTrue(text.contains("(train.lua:2)"), text)
        XCTAssertTrue(text.contains("stack traceback"), text)
    }

    func testPcallCatchesErrorsAndStateStaysUsable() throws {
        let host = try LuaHost()
        XCTAssertNil(host.runString("""
            local q = require 'qlora'
            for i = 1, 200 do
              local ok, err = pcall(q.matmul, nil, 5)
              assert(not ok and err:find("expected a tensor as argument 1, got nil"), err)
            end
            assert(q.ones(3):sum():item() == 3)
            """))
    }

    func testScriptFileGetsArgs() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-host-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = dir.appendingPathComponent("s.lua").path
        try "assert(arg[0]:find('s.lua')); assert(arg[1] == 'x' and select(2, ...) == 'y')".write(toFile: script, atomically: true, encoding: .utf8)
        let host = try LuaHost()
        XCTAssertNil(host.runFile(script, args: ["x", "y"]))
        let missing = host.runFile(dir.appendingPathComponent("none.lua").path, args: [])
        XCTAssertNotNil(missing)
    }

    func testGarbageCollectionReleasesTensors() throws {
        let host = try LuaHost()
        let before = Storage.liveBytes
        XCTAssertNil(host.runString("""
            local q = require 'qlora'
            for i = 1, 50 do local t = q.zeros({1024, 1024}) end
            collectgarbage(); collectgarbage()
            """))
        XCTAssertLessThan(Storage.liveBytes - before, 8 << 20, "tensors were not released by __gc")
    }
}
