// The `qlora` command line: dispatches to the subcommands (run, sweep, info, quantize, generate,
// bench, version, help) and turns their failures into exit codes: 0 success, 1 runtime failure,
// 2 usage error.

import Foundation
import LuaBridge
import Tensor

let usage = """
usage: qlora <command> [args]

commands:
  run FILE.lua [args...]      run an experiment script (the global `arg` holds the args)
  sweep FILE.lua [--parallel N] [--shard I/N | --slurm ...] [args...]
                              run a sweep script (or one shard of it), or print a Slurm
                              job-array script for it
  info MODEL_DIR [--json]     architecture, parameter counts and memory needs, from config.json
                              and the safetensors headers (no weights read)
  quantize MODEL_DIR OUT_DIR [--type nf4|fp4 --block N --double-quant|--no-double-quant]
                              write a bitsandbytes 4-bit copy of a model
  generate MODEL_DIR --prompt TEXT | --chat TEXT [--system TEXT --adapter DIR --max-tokens N ...]
                              stream generated text to stdout
  bench [tensor|quant|train] [--json]
                              measure against references timed in the same run
  version                     print the version and the ISA level in use
  help [COMMAND]              this text, or a command's (also: qlora COMMAND --help)

environment:
  QLORA_ISA=scalar|avx2|avx512|avx512bf16   force an instruction-set level
  QLORA_THREADS=N                           threads for kernels and OpenBLAS

""" + ExitStatus.helpText

let versionHelp = """
usage: qlora version

Prints the version, the instruction-set level in use (and the best this CPU supports) and the
thread count.

""" + ExitStatus.helpText

let helps: [String: String] = [
    "run": RunCommand.runHelp, "sweep": RunCommand.sweepHelp, "info": InfoCommand.help,
    "quantize": QuantizeCommand.help, "generate": GenerateCommand.help, "bench": Bench.help,
    "version": versionHelp,
]

// OpenBLAS's idle threads spin for a while after each call and steal the cores from our own
// kernels; OPENBLAS_THREAD_TIMEOUT (read when the library loads, before main) makes them sleep
// at once. Without it in the environment, set it and start again (once).
if getenv("OPENBLAS_THREAD_TIMEOUT") == nil {
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1)
    var cargs = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", &cargs)  // returns only on failure: then carry on as we are
}

var argv = Array(CommandLine.arguments.dropFirst())
guard let command = argv.first else { print(usage); exit(ExitStatus.success) }
argv.removeFirst()

do { for w in try Runtime.start() { printError("qlora: warning: \(w)") } } catch {
    printError("qlora: \(error)")
    exit(ExitStatus.usage)
}

func dispatch(_ command: String, _ args: [String]) throws -> Int32 {
    switch command {
    case "help", "--help", "-h":
        guard let topic = args.first else { print(usage); return ExitStatus.success }
        guard let text = helps[topic] else { throw UsageError("no command '\(topic)' (commands: \(helps.keys.sorted().joined(separator: ", ")))") }
        print(text)
        return ExitStatus.success
    case "version", "--version":
        let a = try CommandLineArgs(command: "version", args, CommandSpec())
        if a.wantsHelp { print(versionHelp); return ExitStatus.success }
        print("qlora \(LuaHost.version)")
        print("isa: \(Runtime.isaName) (best on this CPU: \(Runtime.bestIsaName); supported: \(Runtime.supportedIsas.joined(separator: ", ")))")
        print("threads: \(Runtime.threads)")
        return ExitStatus.success
    case "run": return try RunCommand.run(args)
    case "sweep": return try RunCommand.sweep(args)
    case "info": return try InfoCommand.run(args)
    case "quantize": return try QuantizeCommand.run(args)
    case "generate": return try GenerateCommand.run(args)
    case "bench": return Bench.run(args)
    default:
        printError("qlora: unknown command '\(command)' (expected one of: \(helps.keys.sorted().joined(separator: ", ")), help)\n\n" + usage)
        return ExitStatus.usage
    }
}

do {
    exit(try dispatch(command, argv))
} catch let e as UsageError {
    let name = command == "help" || command == "--help" || command == "-h" ? "help" : command
    printError("qlora \(name): \(e.message)\nrun 'qlora \(name) --help' for usage")
    exit(ExitStatus.usage)
} catch let e as CommandFailure {
    printError(command == "run" || command == "sweep" ? e.message : "qlora \(command): \(e.message)")
    exit(ExitStatus.failure)
} catch {
    printError("qlora \(command): \(error)")
    exit(ExitStatus.failure)
}
