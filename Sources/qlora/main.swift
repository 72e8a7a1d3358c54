// The `qlora` command line: run a Lua experiment script, print the version, or benchmark.

import Foundation
import LuaBridge
import Tensor

let usage = """
usage: qlora <command> [args]

commands:
  run FILE.lua [args...]   run an experiment script (the global `arg` holds the args)
  bench [tensor|quant|train] [--json]
                           measure against references timed in the same run
  version                  print the version and the ISA level in use
  help                     this text (also --help, -h)

environment:
  QLORA_ISA=scalar|avx2|avx512|avx512bf16   force an instruction-set level
  QLORA_THREADS=N                           threads for kernels and OpenBLAS
"""

func fail(_ message: String, code: Int32 = 2) -> Never {
    FileHandle.standardError.write((message + "\n").data(using: .utf8) ?? Data())
    exit(code)
}

// OpenBLAS's idle threads spin for a while after each call and steal the cores from our own
// kernels; OPENBLAS_THREAD_TIMEOUT (read when the library loads, before main) makes them sleep
// at once. Without it in the environment, set it and start again (once).
if getenv("OPENBLAS_THREAD_TIMEOUT") == nil {
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1)
    var cargs = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", &cargs)  // returns only on failure: then carry on as we are
}

var argv = Array(CommandLine.arguments.dropFirst())
guard let command = argv.first else { print(usage); exit(0) }
argv.removeFirst()

do { try Runtime.start() } catch { fail("qlora: \(error)") }

switch command {
case "help", "--help", "-h":
    print(usage)
case "version", "--version":
    print("qlora \(LuaHost.version)")
    print("isa: \(Runtime.isaName) (best on this CPU: \(Runtime.bestIsaName); supported: \(Runtime.supportedIsas.joined(separator: ", ")))")
    print("threads: \(Runtime.threads)")
case "run":
    guard let script = argv.first else { fail("qlora run: expected a script file\n\n" + usage) }
    if script == "--help" || script == "-h" {
        print("usage: qlora run FILE.lua [args...]\nRuns a Lua script with the qlora module loaded; exit status 0 on success, 1 on a script error.")
        exit(0)
    }
    let host: LuaHost
    do { host = try LuaHost() } catch { fail("\(error)", code: 1) }
    if let err = host.runFile(script, args: Array(argv.dropFirst())) {
        fail(err, code: 1)
    }
case "bench":
    exit(Bench.run(argv))
default:
    fail("qlora: unknown command '\(command)'\n\n" + usage)
}
