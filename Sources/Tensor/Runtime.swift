// Process-wide runtime settings: the ISA level (QLORA_ISA) and the thread count (QLORA_THREADS),
// applied once at start-up. OpenBLAS keeps one thread of its own: every parallel product is cut
// into fixed tiles on our pool (ql_sgemm), so the two never oversubscribe and results do not
// depend on the thread count.

import CKernels
import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

public enum Runtime {
    nonisolated(unsafe) private static var started = false

    /// The most threads the pool runs (threads.c's MAX_THREADS).
    public static let maxThreads = 256

    /// Reads QLORA_ISA and QLORA_THREADS. Throws on a value that cannot be honoured (an unknown
    /// ISA, a thread count that is not an integer >= 1); returns warnings to show (a thread count
    /// above the most the pool runs, which is clamped).
    @discardableResult
    public static func start() throws -> [String] {
        if started { return [] }
        started = true
        var buf = [CChar](repeating: 0, count: 256)
        if ql_isa_init_from_env(&buf, buf.count) != 0 {
            throw TensorError(String(cString: buf))
        }
        var warnings: [String] = []
        if let raw = getenv("QLORA_THREADS"), raw.pointee != 0 {
            let text = String(cString: raw)
            guard let n = Int(text), n >= 1 else {
                throw TensorError("QLORA_THREADS must be an integer >= 1 (or unset for the core count), got '\(text)'")
            }
            if n > maxThreads {
                warnings.append("QLORA_THREADS=\(n) is more than the \(maxThreads) threads the pool runs; using \(maxThreads)")
            }
            ql_set_threads(Int32(min(n, maxThreads)))
        }
        ql_blas_single_thread()
        // Tensor buffers above 1 MB come straight from mmap and go back to the system when freed,
        // so resident memory follows live tensors instead of glibc's grown heap.
        ql_memory_tune()
        return warnings
    }

    public static var isaName: String { String(cString: ql_isa_name(ql_isa_current())) }
    public static var bestIsaName: String { String(cString: ql_isa_name(ql_isa_best())) }
    public static var threads: Int { Int(ql_threads()) }

    /// Runs `body` with OpenBLAS threaded as wide as our pool, then single-threaded again: for
    /// benchmarks that time OpenBLAS's own multi-threaded products as the reference.
    public static func withOpenBLASThreads<T>(_ body: () throws -> T) rethrows -> T {
        openblas_set_num_threads(ql_threads())
        defer { openblas_set_num_threads(1) }
        return try body()
    }

    public static func setThreads(_ n: Int) {
        ql_set_threads(Int32(max(1, min(n, 256))))
    }

    /// Forces an ISA level by name; false when unknown or unsupported here.
    @discardableResult
    public static func setIsa(_ name: String) -> Bool {
        let level = ql_isa_parse(name)
        return level >= 0 && ql_isa_set(level) == 0
    }

    /// Every level this CPU supports, from scalar up.
    public static var supportedIsas: [String] {
        (0...3).filter { ql_isa_supported(Int32($0)) != 0 }.map { String(cString: ql_isa_name(Int32($0))) }
    }
}
