// `qlora run FILE.lua [args...]` and `qlora sweep FILE.lua [--parallel N] [--shard I/N] [args...]`:
// run an experiment script with the qlora module loaded. `sweep` is `run` with QLORA_SWEEP_PARALLEL
// and QLORA_SWEEP_SHARD set, which q.sweep reads; `sweep --slurm` prints a job-array script
// (CommandSweepCluster.swift).

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
    usage: qlora sweep FILE.lua [--parallel N] [--shard I/N] [args...]
           qlora sweep FILE.lua --slurm [--partition P --time T --cpus C --shards N --parallel N] [args...]

    Runs a sweep script like `qlora run`, with the environment variable QLORA_SWEEP_PARALLEL=N
    set so that q.sweep runs N trials at once whatever its `parallel` option says.
    Options may come before or right after FILE.lua; what follows goes to the script.

    options:
      --parallel N   trials at once (an integer from 1 to 1024); without it the environment is left as is
      --shard I/N    run only shard I of N (0 <= I < N): the points whose index i (from 0) has
                     i % N == I. Shards of one sweep may run at once, on other machines too, into
                     the same out dir (each point's record is a file of its own); q.report and
                     later runs see every shard's points. Sets QLORA_SWEEP_SHARD=I/N.
                     In a Slurm job array (SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT set)
                     the shard comes from those when --shard is not given, and the output says so.
      --slurm        print an sbatch script for a job array running one shard per task, and run
                     nothing else (the script runs only until its first q.sweep, to count the points)
      --partition P, --time T, --cpus C
                     #SBATCH --partition, --time and --cpus-per-task lines of that script
      --shards N     array tasks (default: one per point, at most 1000)

    output: whatever the script prints; with --slurm, the sbatch script.

    """ + ExitStatus.helpText

    static func run(_ args: [String]) throws -> Int32 {
        let a = try CommandLineArgs(command: "run", args, CommandSpec(positionals: ["FILE.lua"], passThrough: true))
        if a.wantsHelp { print(runHelp); return ExitStatus.success }
        return try runScript(a.positionals[0], a.rest)
    }

    static func sweep(_ args: [String]) throws -> Int32 {
        let what = "an integer from 1 to 1024"
        let spec = CommandSpec(options: ["parallel": .value(what), "shard": .value("I/N"), "slurm": .flag,
                                         "partition": .value("a partition name"), "time": .value("a time limit such as 2:00:00"),
                                         "cpus": .value("an integer >= 1"), "shards": .value("an integer >= 1")],
                               positionals: ["FILE.lua"], passThrough: true)
        let a = try CommandLineArgs(command: "sweep", args, spec)
        if a.wantsHelp { print(sweepHelp); return ExitStatus.success }
        var parallel: Int? = nil
        if a.string("parallel") != nil {
            let n = try a.int("parallel", min: 1, default: 1, what: what)
            if n > 1024 { throw UsageError("option --parallel expects \(what), got '\(n)'") }
            parallel = n
        }
        if a.has("slurm") { return try slurm(a, parallel: parallel) }
        for o in ["partition", "time", "cpus", "shards"] where a.string(o) != nil {
            throw UsageError("option --\(o) belongs to --slurm")
        }
        if let n = parallel { setenv("QLORA_SWEEP_PARALLEL", String(n), 1) }
        let shard: SweepCluster.Shard?
        if let text = a.string("shard") { shard = try SweepCluster.parseShard(text) } else { shard = try SweepCluster.slurmShard() }
        if let s = shard {
            setenv("QLORA_SWEEP_SHARD", "\(s.index)/\(s.count)", 1)
            if let from = s.source {
                print("qlora sweep: running shard \(s.index)/\(s.count), from \(from)")
                fflush(stdout)
            }
        }
        return try runScript(a.positionals[0], a.rest)
    }

    static func slurm(_ a: CommandLineArgs, parallel: Int?) throws -> Int32 {
        if a.string("shard") != nil { throw UsageError("--shard and --slurm do not go together (the script gives each task its shard)") }
        let script = a.positionals[0]
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: script, isDirectory: &isDir), !isDir.boolValue else {
            throw UsageError("script '\(script)' does not exist (expected a Lua file)")
        }
        var o = SweepCluster.SlurmOptions()
        o.parallel = parallel
        if let p = a.string("partition") { o.partition = try SweepCluster.checkSbatchValue("partition", p) }
        if let t = a.string("time") { o.time = try SweepCluster.checkSbatchValue("time", t) }
        if a.string("cpus") != nil { o.cpus = try a.int("cpus", min: 1, default: 1) }
        if a.string("shards") != nil {
            let n = try a.int("shards", min: 1, default: 1, what: "an integer from 1 to \(SweepCluster.maxArrayTasks)")
            if n > SweepCluster.maxArrayTasks { throw UsageError("option --shards expects an integer from 1 to \(SweepCluster.maxArrayTasks), got '\(n)'") }
            o.shards = n
        }
        let plan = try SweepCluster.plan(script: script, args: a.rest)
        let tasks = min(o.shards ?? SweepCluster.maxArrayTasks, plan.points)
        print(SweepCluster.slurmScript(script: script, args: a.rest, out: plan.out, points: plan.points, tasks: tasks, o), terminator: "")
        return ExitStatus.success
    }

    static func runScript(_ script: String, _ args: [String]) throws -> Int32 {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: script, isDirectory: &isDir) else {
            throw UsageError("script '\(script)' does not exist (expected a Lua file)")
        }
        if isDir.boolValue { throw UsageError("script '\(script)' is a directory (expected a Lua file)") }
        let host: LuaHost
        do { host = try LuaHost() } catch { throw CommandFailure("\(error)") }
        if let err = host.runFile(script, args: args) {
            // One rank of a data-parallel job failing must end the others (they would wait forever).
            if Distributed.isDistributed { printError(err); Distributed.abortIfDistributed(ExitStatus.failure) }
            throw CommandFailure(err)
        }
        return ExitStatus.success
    }
}
