// The Swift half of q.sweep and q.report: a private table of system helpers (start and poll
// worker processes, JSON in and out, atomic writes, appending result lines) handed to the Lua
// chunks in Sweep.lua.swift and Report.lua.swift, which hold the logic. Also q.process_memory.

import CLua
import Foundation
import IO

enum SweepBindings {
    /// The script `qlora run` is running and its arguments (workers re-run the same).
    nonisolated(unsafe) static var script: (path: String, args: [String])? = nil
    /// Lock files this process holds (path -> descriptor), kept open until the process ends.
    nonisolated(unsafe) static var locks: [String: Int32] = [:]

    /// Runs the sweep and report chunks with (q, sys); q is the module table's index.
    static func install(_ L: LuaState, moduleIndex q: Int32) throws {
        let q = luaAbs(L, q)
        Bindings.register(L, q, prefix: "qlora.", [("process_memory", processMemory)])
        luaNewTable(L)
        let sys = lua_gettop(L)
        for (key, body) in helpers() {
            Bindings.push(L, "qlora.sweep", body)
            luaRawSetField(L, sys, key)
        }
        for (source, name) in [(sweepSource, "=qlora.sweep"), (reportSource, "=qlora.report")] {
            let status = source.withCString { luaL_loadbufferx(L, $0, source.utf8.count, name, "t") }
            if status != 0 { throw LuaError("qlora: \(name) does not compile: \(luaString(L, -1) ?? "")") }
            lua_pushvalue(L, q)
            lua_pushvalue(L, sys)
            if luaPcall(L, 2, 0) != 0 { throw LuaError("qlora: \(name) failed: \(luaErrorText(L, -1))") }
        }
        luaPop(L, 1)
    }

    static func helpers() -> [(String, LuaFunction)] {
        [
            // sys.script() -> path, {args...} of the running script, or nil outside `qlora run`.
            ("script", { a in
                guard let s = script else { return 0 }
                luaPushString(a.L, s.path)
                lua_createtable(a.L, Int32(s.args.count), 0)
                for (i, x) in s.args.enumerated() { luaPushString(a.L, x); lua_rawseti(a.L, -2, lua_Integer(i + 1)) }
                return 2
            }),
            // sys.assignment() -> {out, point, result} when this process is a sweep worker.
            ("assignment", { a in
                guard let w = WorkerProcess.assignment else { return 0 }
                lua_createtable(a.L, 0, 3)
                luaPushString(a.L, w.out); luaRawSetField(a.L, -2, "out")
                luaPushString(a.L, w.point); luaRawSetField(a.L, -2, "point")
                luaPushString(a.L, w.result); luaRawSetField(a.L, -2, "result")
                return 1
            }),
            // sys.spawn(log_path, {NAME = value}) -> pid: this executable running the script again.
            ("spawn", { a in
                let log = try a.string(1)
                let t = try a.table(2)
                var env: [String: String] = [:]
                lua_pushnil(a.L)
                while lua_next(a.L, t) != 0 {
                    defer { luaPop(a.L, 1) }
                    guard let k = luaString(a.L, -2), let v = luaString(a.L, -1) else { throw a.fail("worker environment must map strings to strings") }
                    env[k] = v
                }
                guard let s = script else { throw a.fail("needs a script run by `qlora run` (workers run the script again)") }
                let pid: pid_t
                do { pid = try WorkerProcess.spawn(executable: LuaHost.executablePath, args: ["run", s.path] + s.args, env: env, logPath: log) } catch let e as LuaError { throw a.fail(e.message) }
                lua_pushinteger(a.L, lua_Integer(pid))
                return 1
            }),
            // sys.poll(pid) -> nil while running, or "exit", code / "signal", number
            ("poll", { a in
                let pid = pid_t(try a.integer(1))
                let polled: WorkerProcess.Ending?
                do { polled = try WorkerProcess.poll(pid) } catch let e as LuaError { throw a.fail(e.message) }
                guard let ending = polled else { return 0 }
                switch ending {
                case .exited(let code): luaPushString(a.L, "exit"); lua_pushinteger(a.L, lua_Integer(code))
                case .signaled(let sig): luaPushString(a.L, "signal"); lua_pushinteger(a.L, lua_Integer(sig))
                }
                return 2
            }),
            // sys.stop(pid): SIGKILL a worker and its process group, and reap it (a point past its
            // timeout, or the sweep itself failing).
            ("stop", { a in
                WorkerProcess.stop(pid_t(try a.integer(1)))
                return 0
            }),
            ("pid", { a in lua_pushinteger(a.L, lua_Integer(getpid())); return 1 }),
            ("sleep", { a in
                let s = try a.number(1)
                if s > 0 { usleep(useconds_t(min(s, 60) * 1e6)) }
                return 0
            }),
            // sys.lock(path) -> true, or false and the holder's pid: an exclusive flock on path
            // (created), held until this process ends; the kernel drops it when a process dies,
            // so a crashed run never leaves it stuck. Not inherited by child processes.
            ("lock", { a in
                let path = try a.string(1)
                if SweepBindings.locks[path] != nil { lua_pushboolean(a.L, 1); return 1 }
                let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
                if fd < 0 { throw a.fail("\(path): cannot open the lock file (\(String(cString: strerror(errno))))") }
                if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                    let e = errno
                    var buf = [UInt8](repeating: 0, count: 32)
                    let n = pread(fd, &buf, 31, 0)
                    close(fd)
                    if e != EWOULDBLOCK { throw a.fail("\(path): cannot lock (\(String(cString: strerror(e))))") }
                    lua_pushboolean(a.L, 0)
                    let text = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
                    if let pid = Int(text) { lua_pushinteger(a.L, lua_Integer(pid)) } else { lua_pushnil(a.L) }
                    return 2
                }
                let pid = Array("\(getpid())\n".utf8)
                _ = ftruncate(fd, 0)
                _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
                SweepBindings.locks[path] = fd
                lua_pushboolean(a.L, 1)
                return 1
            }),
            ("abspath", { a in
                let p = try a.string(1)
                let full = p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
                luaPushString(a.L, (full as NSString).standardizingPath)
                return 1
            }),
            // sys.encode(value [, name]) -> compact JSON text with sorted keys; errors name the field.
            ("encode", { a in
                let v = try jsonValue(a, 1, path: a.isNil(2) ? "value" : try a.string(2), depth: 0)
                luaPushString(a.L, v.serialized(sortedKeys: true))
                return 1
            }),
            // sys.decode(text) -> value, or nil and the reason.
            ("decode", { a in
                let text = try a.string(1)
                do { pushJSON(a.L, try JSONValue.parse(text)) } catch {
                    lua_pushnil(a.L); luaPushString(a.L, "\(error)")
                    return 2
                }
                return 1
            }),
            // sys.file_in_the_way(path) -> the first of path and its parents that exists and is
            // not a directory (what stops making path a directory), or nil.
            ("file_in_the_way", { a in
                let path = try a.string(1)
                var prefix = path.hasPrefix("/") ? "" : "."
                for part in path.split(separator: "/") {
                    prefix += "/" + part
                    var isDir: ObjCBool = false
                    if FileManager.default.fileExists(atPath: prefix, isDirectory: &isDir), !isDir.boolValue {
                        luaPushString(a.L, prefix.hasPrefix("./") ? String(prefix.dropFirst(2)) : prefix)
                        return 1
                    }
                }
                return 0
            }),
            // sys.write_atomic(path, text): a temp file renamed into place.
            ("write_atomic", { a in
                let path = try a.string(1)
                guard let bytes = luaBytes(a.L, 2) else { throw a.typeError(2, "a string") }
                do { try AtomicFile.write(path, bytes: bytes) } catch let e as IOError { throw a.fail(e.description) }
                return 0
            }),
            // sys.append_line(path, line): one write of line + "\n", starting a fresh line when
            // the file ends in a partial one (a writer killed mid-line).
            ("append_line", { a in
                let path = try a.string(1)
                guard let bytes = luaBytes(a.L, 2) else { throw a.typeError(2, "a string") }
                // Appending writes into what is there: a regular file, or a character device
                // (/dev/null, a terminal); a FIFO or socket could block, a directory cannot hold lines.
                var st = stat()
                if stat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG, (st.st_mode & S_IFMT) != S_IFCHR {
                    throw a.fail("\(path): cannot append: it is \((st.st_mode & S_IFMT) == S_IFDIR ? "a directory" : "not a regular file or a device")")
                }
                let fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
                if fd < 0 { throw a.fail("\(path): cannot open (\(String(cString: strerror(errno))))") }
                defer { close(fd) }
                var out: [UInt8] = []
                let size = lseek(fd, 0, SEEK_END)
                if size > 0 {
                    var last: UInt8 = 0
                    if pread(fd, &last, 1, size - 1) == 1 && last != 10 { out.append(10) }
                }
                out += bytes
                out.append(10)
                let written = out.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if written != out.count { throw a.fail("\(path): cannot append (\(String(cString: strerror(errno))))") }
                fsync(fd)
                return 0
            }),
        ]
    }

    // q.process_memory([pid]) -> {rss, pss, pss_anon, pss_file, shared_clean, private_dirty, ...}
    // in MB, from /proc/PID/smaps_rollup (this process when pid is absent).
    private static let processMemory: LuaFunction = { a in
        let pid = a.isNil(1) ? "self" : String(try a.integer(1))
        let path = "/proc/\(pid)/smaps_rollup"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw a.fail("\(path): cannot read (no such process, or no smaps_rollup on this system)")
        }
        lua_createtable(a.L, 0, 12)
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count == 3, parts[2] == "kB", parts[0].hasSuffix(":"), let kb = Double(parts[1]) else { continue }
            lua_pushnumber(a.L, kb / 1024)
            luaRawSetField(a.L, -2, parts[0].dropLast().lowercased())
        }
        return 1
    }

    /// The Lua value at i as JSON: strings, finite or not numbers (non-finite ones become null:
    /// the sweep checks them first), booleans, and tables (a list when the keys are 1...n, else
    /// an object with string keys; an empty table is an object).
    static func jsonValue(_ a: LuaArgs, _ i: Int32, path: String, depth: Int) throws -> JSONValue {
        let L = a.L
        let i = luaAbs(L, i)
        if depth > 32 { throw a.fail("\(path): tables nest too deeply") }
        // a key and a value per level of nesting
        if lua_checkstack(L, 4) == 0 { throw a.fail("\(path): tables nest too deeply") }
        switch lua_type(L, i) {
        case LUA_TSTRING:
            guard let b = luaBytes(L, i), let s = String(validating: b, as: UTF8.self) else { throw a.fail("\(path): a string is not valid UTF-8") }
            return .string(s)
        case LUA_TNUMBER:
            if lua_isinteger(L, i) != 0 { return .int(Int64(lua_tointegerx(L, i, nil))) }
            return .double(lua_tonumberx(L, i, nil))
        case LUA_TBOOLEAN: return .bool(lua_toboolean(L, i) != 0)
        case LUA_TTABLE:
            let n = luaRawLen(L, i)
            var keys = 0, isList = true
            lua_pushnil(L)
            while lua_next(L, i) != 0 {
                keys += 1
                if lua_type(L, -2) != LUA_TNUMBER || lua_isinteger(L, -2) == 0 { isList = false }
                luaPop(L, 1)
            }
            if isList && keys == n && n > 0 {
                var arr: [JSONValue] = []
                for k in 1...n {
                    lua_rawgeti(L, i, lua_Integer(k))
                    defer { luaPop(L, 1) }
                    arr.append(try jsonValue(a, -1, path: "\(path)[\(k)]", depth: depth + 1))
                }
                return .array(arr)
            }
            var pairs: [(String, JSONValue)] = []
            lua_pushnil(L)
            while lua_next(L, i) != 0 {
                defer { luaPop(L, 1) }
                guard let k = luaString(L, -2) else { throw a.fail("\(path): table keys must be strings (or 1...n for a list)") }
                pairs.append((k, try jsonValue(a, -1, path: "\(path).\(k)", depth: depth + 1)))
            }
            return .object(JSONObject(pairs))
        default:
            throw a.fail("\(path): a \(luaTypeName(L, i)) cannot be written as JSON (use numbers, strings, booleans and tables)")
        }
    }

    /// Pushes a JSON value as Lua (objects and arrays as tables, null as nil).
    static func pushJSON(_ L: LuaState, _ v: JSONValue) {
        // Each nesting level holds a table and a value on the stack: grow it as we go down (the
        // parser stops at JSONValue.maxDepth levels, far below Lua's stack limit).
        guard lua_checkstack(L, 3) != 0 else { lua_pushnil(L); return }
        switch v {
        case .null: lua_pushnil(L)
        case .bool(let b): lua_pushboolean(L, b ? 1 : 0)
        case .int(let x): lua_pushinteger(L, lua_Integer(x))
        case .double(let x): lua_pushnumber(L, x)
        case .string(let s): luaPushString(L, s)
        case .array(let xs):
            lua_createtable(L, Int32(min(xs.count, 1 << 20)), 0)
            for (k, x) in xs.enumerated() { pushJSON(L, x); lua_rawseti(L, -2, lua_Integer(k + 1)) }
        case .object(let o):
            lua_createtable(L, 0, Int32(min(o.count, 1 << 20)))
            for (k, x) in o { pushJSON(L, x); luaRawSetField(L, -2, k) }
        }
    }
}
