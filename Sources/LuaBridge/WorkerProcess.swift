// Sweep worker processes: starting one (this executable re-running the current script, with
// extra environment variables and its output in a log file), polling it without blocking, and,
// on the worker's side, claiming the variables that say which point to run (they are removed
// from the environment so processes the point starts do not see them) and dying with the parent.
// Each worker leads its own process group, so stopping it (a timeout, a failed sweep, the parent's
// death) also stops whatever processes its point started.

import Foundation

enum WorkerProcess {
    /// How a worker ended.
    enum Ending {
        case exited(Int32)
        case signaled(Int32)
    }

    /// Starts `executable args...` with `env` added to this process's environment, stdin from
    /// /dev/null and stdout + stderr written to `logPath` (truncated), as the leader of a new
    /// process group. Returns the process id (which is also the group's id).
    static func spawn(executable: String, args: [String], env: [String: String], logPath: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        var merged = ProcessInfo.processInfo.environment
        for (k, v) in env { merged[k] = v }
        let envStrings = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let argStrings = [executable] + args
        var argv: [UnsafeMutablePointer<CChar>?] = argStrings.map { strdup($0) } + [nil]
        var envp: [UnsafeMutablePointer<CChar>?] = envStrings.map { strdup($0) } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attr, &argv, &envp)
        if rc != 0 { throw LuaError("cannot start a worker (\(executable)): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Kills worker `pid` and every process in its group (SIGKILL), then reaps the worker.
    static func stop(_ pid: pid_t) {
        kill(-pid, SIGKILL)
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
    }

    /// Ends this worker and the processes its point started (its group, when it leads one).
    private static func dieWithParent() -> Never {
        if getpgrp() == getpid() { kill(0, SIGKILL) }
        _exit(137)
    }

    /// The ending of process `pid`, or nil while it runs (never blocks).
    static func poll(_ pid: pid_t) throws -> Ending? {
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == 0 { return nil }
        if r < 0 { throw LuaError("cannot wait for process \(pid): \(String(cString: strerror(errno)))") }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
        let low = status & 0x7f
        if low == 0 { return .exited((status >> 8) & 0xff) }
        return .signaled(low)
    }

    // MARK: - The worker's side

    /// What the parent asked this process to do, read once from the environment.
    struct Assignment {
        let out: String      // the sweep's out dir (absolute)
        let point: String    // the point id
        let result: String   // where to write the point's result (JSON)
    }

    static let outVariable = "QLORA_SWEEP_OUT"
    static let pointVariable = "QLORA_SWEEP_POINT"
    static let resultVariable = "QLORA_SWEEP_RESULT"
    static let parentVariable = "QLORA_SWEEP_PARENT"

    nonisolated(unsafe) private(set) static var assignment: Assignment? = nil
    nonisolated(unsafe) private static var claimed = false
    nonisolated(unsafe) private static var watchedParent: pid_t = 0

    /// Reads and removes the worker variables (once per process). A worker whose parent is gone
    /// exits at once; otherwise a watcher thread ends it when the parent dies (even by SIGKILL).
    static func claimAssignment() {
        if claimed { return }
        claimed = true
        let env = ProcessInfo.processInfo.environment
        let names = [outVariable, pointVariable, resultVariable, parentVariable]
        defer { for n in names { unsetenv(n) } }
        guard let out = env[outVariable], let point = env[pointVariable], let result = env[resultVariable] else { return }
        assignment = Assignment(out: out, point: point, result: result)
        guard let parentText = env[parentVariable], let parent = pid_t(parentText) else { return }
        if getppid() != parent { dieWithParent() }
        watchedParent = parent
        var thread = pthread_t()
        _ = pthread_create(&thread, nil, { _ in
            while true {
                if getppid() != WorkerProcess.watchedParent { WorkerProcess.dieWithParent() }
                usleep(100_000)
            }
        }, nil)
        pthread_detach(thread)
    }
}
