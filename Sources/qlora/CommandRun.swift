// `qlora run FILE.lua [args...]` and `qlora sweep FILE.lua [--parallel N] [args...]`: run an
// experiment script with the qlora module loaded. `sweep` is `run` with QLORA_SWEEP_PARALLEL set,
// which q.sweep reads to override its `parallel` option.

import Foundation
import LuaBridge

enum RunCommand {
    static let runHelp = """
    usage: qlora run FILE.lua [args...]

    Runs a Lua experiment script with the qlora module loaded (`local q = require "qlora"`;
    it is also the global `qlora`).
    Arguments after FILE.lua are passed to the script untouched, in the global table `arg`
    (arg[0] is the script, arg[1]... the arguments) and as the chunk's `...`.

    output: whatever the script prints; a script error goes to stderr with its traceback.

    """ + ExitStatus.helpText + """

      (1 when the script raises an error; 2 when FILE.lua does not exist)
    """

    static let sweepHelp = """
    usage: qlora sweep FILE.lua [--parallel N] [args...]

    Runs a sweep script like `qlora run`, with the environment variable QLORA_SWEEP_PARALLEL=N
    set so that q.sweep runs N trials at once whatever its `parallel` option says.
    --parallel may come before or right after FILE.lua; what follows goes to the script.

    options:
      --parallel N   trials at once (an integer from 1 to 1024); without it the environment is left as is

    output: whatever the script prints.

    """ + ExitStatus.helpText

    static func run(_ args: [String]) throws -> Int32 {
        let a = try CommandLineArgs(command: "run", args, CommandSpec(positionals: ["FILE.lua"], passThrough: true))
        if a.wantsHelp { print(runHelp); return ExitStatus.success }
        return try runScript(a.positionals[0], a.rest)
    }

    static func sweep(_ args: [String]) throws -> Int32 {
        let what = "an integer from 1 to 1024"
        let spec = CommandSpec(options: ["parallel": .value(what)], positionals: ["FILE.lua"], passThrough: true)
        let a = try CommandLineArgs(command: "sweep", args, spec)
        if a.wantsHelp { print(sweepHelp); return ExitStatus.success }
        if a.string("parallel") != nil {
            let n = try a.int("parallel", min: 1, default: 1, what: what)
            if n > 1024 { throw UsageError("option --parallel expects \(what), got '\(n)'") }
            setenv("QLORA_SWEEP_PARALLEL", String(n), 1)
        }
        return try runScript(a.positionals[0], a.rest)
    }

    static func runScript(_ script: String, _ args: [String]) throws -> Int32 {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: script, isDirectory: &isDir) else {
            throw UsageError("script '\(script)' does not exist (expected a Lua file)")
        }
        if isDir.boolValue { throw UsageError("script '\(script)' is a directory (expected a Lua file)") }
        let host: LuaHost
        do { host = try LuaHost() } catch { throw CommandFailure("\(error)") }
        if let err = host.runFile(script, args: args) { throw CommandFailure(err) }
        return ExitStatus.success
    }
}
