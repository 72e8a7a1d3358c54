// `qlora sweep` on a cluster: which shard of the points this run takes (--shard I/N, or a Slurm
// job array's SLURM_ARRAY_TASK_* variables), handed to q.sweep as QLORA_SWEEP_SHARD=I/N; and
// `--slurm`, which prints an sbatch script running one shard per array task (the point count
// comes from running the script with QLORA_SWEEP_PLAN set: its first q.sweep writes it and exits).

import Foundation
import LuaBridge

enum SweepCluster {
    /// The largest array a default Slurm installation accepts (MaxArraySize = 1001).
    static let maxArrayTasks = 1000

    struct Shard {
        let index: Int
        let count: Int
        /// Where it came from, when not from --shard (said in the output).
        let source: String?
    }

    /// "I/N" with 0 <= I < N.
    static func parseShard(_ text: String) throws -> Shard {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, n <= 100_000, i >= 0, i < n else {
            throw UsageError("option --shard expects I/N with 0 <= I < N <= 100000 (shard I of N, counted from 0), got '\(text)'")
        }
        return Shard(index: i, count: n, source: nil)
    }

    /// The shard of a Slurm array task: (TASK_ID - TASK_MIN) / TASK_STEP of TASK_COUNT; nil
    /// outside an array job.
    static func slurmShard(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> Shard? {
        guard let idText = env["SLURM_ARRAY_TASK_ID"], !idText.isEmpty else { return nil }
        guard let countText = env["SLURM_ARRAY_TASK_COUNT"], let count = Int(countText), count >= 1 else {
            throw UsageError("SLURM_ARRAY_TASK_ID is set (\(idText)) but SLURM_ARRAY_TASK_COUNT is not a count (\(env["SLURM_ARRAY_TASK_COUNT"] ?? "unset")); give --shard I/N")
        }
        guard let id = Int(idText) else { throw UsageError("SLURM_ARRAY_TASK_ID must be an integer, got '\(idText)'") }
        let minimum = Int(env["SLURM_ARRAY_TASK_MIN"] ?? "") ?? 0
        let step = max(1, Int(env["SLURM_ARRAY_TASK_STEP"] ?? "") ?? 1)
        let index = (id - minimum) / step
        guard index >= 0, index < count, (id - minimum) % step == 0 else {
            throw UsageError("SLURM_ARRAY_TASK_ID=\(id) is not task 0...\(count - 1) of an array from \(minimum) in steps of \(step); give --shard I/N")
        }
        var from = "SLURM_ARRAY_TASK_ID=\(id), SLURM_ARRAY_TASK_COUNT=\(count)"
        if minimum != 0 { from += ", SLURM_ARRAY_TASK_MIN=\(minimum)" }
        if step != 1 { from += ", SLURM_ARRAY_TASK_STEP=\(step)" }
        return Shard(index: index, count: count, source: from)
    }

    /// Runs the script until its first q.sweep, which writes its out dir and point count.
    static func plan(script: String, args: [String]) throws -> (out: String, points: Int) {
        let planPath = NSTemporaryDirectory() + "/qlora-sweep-plan-\(getpid()).json"
        defer { unlink(planPath) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: LuaHost.executablePath)
        p.arguments = ["run", script] + args
        var env = ProcessInfo.processInfo.environment
        env["QLORA_SWEEP_PLAN"] = planPath
        env["QLORA_SWEEP_SHARD"] = nil
        for k in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"] { env[k] = nil }
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { throw CommandFailure("qlora sweep: cannot run \(script) to count its points: \(error)") }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let tail = output.split(separator: "\n").suffix(12).joined(separator: "\n")
        guard let data = FileManager.default.contents(atPath: planPath) else {
            let why = p.terminationStatus == 0 ? "the script ended without calling q.sweep" : "the script failed (status \(p.terminationStatus))"
            throw CommandFailure("qlora sweep --slurm: \(why), so its points cannot be counted\(tail.isEmpty ? "" : ":\n" + tail)")
        }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let out = obj["out"] as? String, let points = (obj["points"] as? NSNumber)?.intValue, points >= 1 else {
            throw CommandFailure("qlora sweep --slurm: unreadable sweep plan from the script")
        }
        return (out, points)
    }

    /// Quotes a word for bash (single quotes; a quote inside becomes '\'').
    static func shellQuote(_ s: String) -> String {
        "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    struct SlurmOptions {
        var partition: String?
        var time: String?
        var cpus: Int?
        var parallel: Int?
        var shards: Int?
    }

    /// The sbatch script: an array of `tasks` tasks, task i running shard i of `tasks`.
    static func slurmScript(script: String, args: [String], out: String?, points: Int?, tasks: Int, _ o: SlurmOptions) -> String {
        let cwd = FileManager.default.currentDirectoryPath
        let absScript = script.hasPrefix("/") ? script : (cwd + "/" + script)
        var lines = ["#!/bin/bash"]
        var about = "# qlora sweep \(absScript)"
        if let n = points { about += ": \(n) points" }
        about += " in \(tasks) array task\(tasks == 1 ? "" : "s"), task I running shard I/\(tasks)"
        lines.append(about)
        if let out { lines.append("# Every task writes into \(out) (on a file system all nodes share), each to files of its own.") }
        lines.append("# Submit with `sbatch FILE`. When all tasks are done, the last line without --shard, run once,")
        lines.append("# finds every point done and writes summary.md over all of them (or use q.report on the out dir).")
        lines.append("#SBATCH --job-name=qlora-sweep")
        lines.append("#SBATCH --array=0-\(tasks - 1)")
        lines.append("#SBATCH --ntasks=1")
        if let c = o.cpus { lines.append("#SBATCH --cpus-per-task=\(c)") }
        if let t = o.time { lines.append("#SBATCH --time=\(t)") }
        if let p = o.partition { lines.append("#SBATCH --partition=\(p)") }
        lines.append("#SBATCH --output=qlora-sweep-%A_%a.log")
        lines.append("set -euo pipefail")
        lines.append("cd \(shellQuote(cwd))")
        lines.append("export QLORA_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"")
        var cmd = "exec \(shellQuote(LuaHost.executablePath)) sweep --shard \"${SLURM_ARRAY_TASK_ID}/\(tasks)\""
        if let p = o.parallel { cmd += " --parallel \(p)" }
        cmd += " " + shellQuote(absScript)
        for a in args { cmd += " " + shellQuote(a) }
        lines.append(cmd)
        return lines.joined(separator: "\n") + "\n"
    }

    /// Text for an #SBATCH value: one line, no characters sbatch or bash would read differently.
    static func checkSbatchValue(_ name: String, _ v: String) throws -> String {
        let ok = !v.isEmpty && v.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "-_:.,+".unicodeScalars.contains($0) }
        if !ok { throw UsageError("option --\(name) expects a Slurm value (letters, digits, - _ : . , +), got '\(v)'") }
        return v
    }
}
