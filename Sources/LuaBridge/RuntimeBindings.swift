// Runtime functions of the `qlora` module: the ISA level and thread count in use.

import CLua
import Foundation
import IO
import Quant
import Tensor
import Train

enum RuntimeBindings {
    static func functions() -> [(String, LuaFunction)] {
        [
            ("isa", { a in luaPushString(a.L, Runtime.isaName); return 1 }),
            // whether compute = "bf16" runs the bf16 kernels here (bf16 dot products, or
            // QLORA_BF16=emulate); otherwise it runs the f32 ones
            ("bf16_kernels", { a in lua_pushboolean(a.L, ComputeType.bf16Kernels ? 1 : 0); return 1 }),
            ("supported_isas", { a in
                let names = Runtime.supportedIsas
                lua_createtable(a.L, Int32(names.count), 0)
                for (i, n) in names.enumerated() { luaPushString(a.L, n); lua_rawseti(a.L, -2, lua_Integer(i + 1)) }
                return 1
            }),
            ("set_isa", { a in
                let name = try a.string(1)
                if !Runtime.setIsa(name) {
                    throw a.fail("ISA level \"\(name)\" is unknown or not supported by this CPU (supported: \(Runtime.supportedIsas.joined(separator: ", ")))")
                }
                return 0
            }),
            // The global random stream (seed, draws so far), for checkpoints that resume exactly.
            ("random_state", { a in
                lua_pushinteger(a.L, lua_Integer(bitPattern: RandomState.seed))
                lua_pushinteger(a.L, lua_Integer(bitPattern: RandomState.offset))
                return 2
            }),
            ("set_random_state", { a in
                RandomState.seed = UInt64(bitPattern: Int64(try a.integer(1)))
                RandomState.offset = UInt64(bitPattern: Int64(try a.integer(2)))
                return 0
            }),
            // Resident memory of this process now and at its peak, in MB.
            ("memory_mb", { a in
                let (rss, peak) = processMemoryMB()
                lua_pushnumber(a.L, rss)
                lua_pushnumber(a.L, peak)
                return 2
            }),
            // q.lr_at(kind, step, {lr, warmup, total, min_lr}): the schedule's rate at an optimizer step.
            ("lr_at", { a in
                let kindName = try a.string(1)
                guard let kind = LRScheduleKind(rawValue: kindName) else {
                    throw a.fail("unknown schedule \"\(kindName)\" (expected constant, linear or cosine)")
                }
                let step = try a.integer(2)
                if step < 0 { throw a.fail("step must be >= 0, got \(step)") }
                let t = try a.options(3, allowed: ["lr", "warmup", "total", "min_lr"])
                do {
                    let s = try LRSchedule(kind: kind, peak: try a.optionNumber(t, "lr") ?? 1e-3, warmup: try a.optionInteger(t, "warmup") ?? 0,
                                           total: try a.optionInteger(t, "total") ?? 1, minLR: try a.optionNumber(t, "min_lr") ?? 0)
                    lua_pushnumber(a.L, s.lr(at: step))
                } catch let e as TrainError { throw a.fail(e.message) }
                return 1
            }),
            // Wall-clock seconds (monotonic), for rates and ETAs.
            ("clock", { a in
                var ts = timespec()
                clock_gettime(CLOCK_MONOTONIC, &ts)
                lua_pushnumber(a.L, Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9)
                return 1
            }),
            // Small filesystem helpers for checkpoints: mkdir -p, rm -rf, list a directory.
            ("mkdir", { a in
                let path = try a.string(1)
                do { try AtomicFile.makeDirectory(path) } catch let e as IOError { throw a.fail(e.description) }
                return 0
            }),
            // q.write_file(path, text): the whole file, atomically, under the rules of every save
            // (only a regular file is replaced; a symbolic link is followed).
            ("write_file", { a in
                let path = try a.string(1)
                guard let bytes = luaBytes(a.L, 2) else { throw a.typeError(2, "a string") }
                do { try AtomicFile.write(path, bytes: bytes) } catch let e as IOError { throw a.fail(e.description) }
                return 0
            }),
            // q.path_kind(path) -> "file", "directory", "device", "fifo", "socket" or nil (missing);
            // links are followed.
            ("path_kind", { a in
                let path = try a.string(1)
                var st = stat()
                if stat(path, &st) != 0 { return 0 }
                let kinds: [mode_t: String] = [S_IFREG: "file", S_IFDIR: "directory", S_IFCHR: "device", S_IFBLK: "device",
                                               S_IFIFO: "fifo", S_IFSOCK: "socket"]
                luaPushString(a.L, kinds[st.st_mode & S_IFMT] ?? "other")
                return 1
            }),
            // q.error_text(e): an error value as text (a table through __tostring or its fields).
            ("error_text", { a in
                luaPushString(a.L, luaErrorText(a.L, 1))
                return 1
            }),
            ("rmtree", { a in
                let path = try a.string(1)
                if FileManager.default.fileExists(atPath: path) {
                    do { try FileManager.default.removeItem(atPath: path) } catch {
                        // Foundation's own text ("NSCocoaErrorDomain error 512") says nothing: the
                        // system's reason is underneath.
                        let under = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError
                        let why = under.map { String(cString: strerror(Int32($0.code))) } ?? "not permitted or in use"
                        let which = (error as NSError).userInfo[NSFilePathErrorKey] as? String
                        throw a.fail("\(path): cannot remove\(which.map { $0 == path ? "" : " \($0)" } ?? ""): \(why)")
                    }
                }
                return 0
            }),
            ("listdir", { a in
                let path = try a.string(1)
                let names = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
                lua_createtable(a.L, Int32(names.count), 0)
                for (i, n) in names.enumerated() { luaPushString(a.L, n); lua_rawseti(a.L, -2, lua_Integer(i + 1)) }
                return 1
            }),
            ("isatty", { a in lua_pushboolean(a.L, isatty(1) != 0 ? 1 : 0); return 1 }),
            ("threads", { a in lua_pushinteger(a.L, lua_Integer(Runtime.threads)); return 1 }),
            ("set_threads", { a in
                let n = try a.integer(1)
                if n < 1 || n > 256 { throw a.fail("thread count must be 1..256, got \(n)") }
                Runtime.setThreads(n)
                return 0
            }),
        ]
    }
}

/// (resident, peak resident) memory in MB from /proc/self/status (0 where unavailable).
func processMemoryMB() -> (Double, Double) {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    return ((procKilobytes(text, field: "VmRSS") ?? 0) / 1024, (procKilobytes(text, field: "VmHWM") ?? 0) / 1024)
}

/// The kB figure of a `Name:<spaces or tabs>N kB` line of a /proc file. The separator is a tab
/// padded with spaces to eight digits, so figures of eight digits or more (>= ~9.5 GB) follow the
/// tab directly: split on any whitespace, never on spaces alone.
func procKilobytes(_ text: String, field: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        let words = line.dropFirst(field.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" })
        if let first = words.first, let kb = Double(first) { return kb }
    }
    return nil
}
