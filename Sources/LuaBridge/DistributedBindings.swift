// q.mpi: the MPI calls data-parallel training needs (the trainer's distributed = "mpi" uses
// them; scripts may too). libmpi is opened at run time (Sources/CMPIShim), so qlora builds and
// runs without MPI and only a script that asks for it needs OpenMPI installed.
//   q.mpi.available() -> true | false, reason     q.mpi.launched() -> size, variable | nil
//   q.mpi.init() -> rank, size                    q.mpi.rank(), q.mpi.size() (0 and 1 before init)
//   q.mpi.allreduce_grads(params) -> n            the trainable gradients summed over ranks, in place
//   q.mpi.allreduce({x...}) -> {sum...}           numbers summed over ranks (in double)
//   q.mpi.barrier()                               q.mpi.abort([code])

import CLua
import CMPIShim
import Foundation
import Tensor

public enum Distributed {
    nonisolated(unsafe) static var rank = 0
    nonisolated(unsafe) static var size = 1

    /// MPI is initialized and the job has more than one rank.
    public static var isDistributed: Bool { qlmpi_initialized() != 0 && size > 1 }

    /// The job's size as the launcher announced it (OpenMPI's mpirun sets OMPI_COMM_WORLD_SIZE),
    /// with the variable's name; nil outside such a launch.
    static func launched() -> (Int, String)? {
        for name in ["OMPI_COMM_WORLD_SIZE"] {
            if let v = ProcessInfo.processInfo.environment[name], let n = Int(v), n >= 1 { return (n, name) }
        }
        return nil
    }

    /// After a script error on one rank of several: end every rank (the others would wait in
    /// their next collective call forever).
    public static func abortIfDistributed(_ code: Int32) {
        if isDistributed {
            fflush(stdout); fflush(stderr)
            qlmpi_abort(code)
        }
    }

    /// The flat gradient buffer, kept between steps (allocating and zeroing 160 MB every step
    /// cost as much as the all-reduce itself on loopback).
    nonisolated(unsafe) static var flat: UnsafeMutablePointer<Float>? = nil
    nonisolated(unsafe) static var flatCount = 0

    static func buffer(_ a: LuaArgs, _ n: Int) throws -> UnsafeMutablePointer<Float> {
        if let f = flat, flatCount >= n { return f }
        if let f = flat { free(f) }
        flat = nil
        flatCount = 0
        guard n <= Int.max / 4, let raw = malloc(max(n, 1) * 4) else { throw a.fail("cannot allocate \(n) floats for the gradient all-reduce") }
        let f = raw.bindMemory(to: Float.self, capacity: max(n, 1))
        flat = f
        flatCount = n
        return f
    }

    static func check(_ a: LuaArgs, _ rc: Int32, _ what: String) throws {
        if rc != 0 { throw a.fail("\(what) failed (MPI error \(rc))") }
    }

    static func requireInit(_ a: LuaArgs) throws {
        if qlmpi_initialized() == 0 { throw a.fail("MPI is not initialized (call q.mpi.init() first)") }
    }

    static func functions() -> [(String, LuaFunction)] {
        [
            ("available", { a in
                if qlmpi_load() == 0 { lua_pushboolean(a.L, 1); return 1 }
                lua_pushboolean(a.L, 0)
                luaPushString(a.L, String(cString: qlmpi_error()))
                return 2
            }),
            ("launched", { a in
                guard let (n, name) = launched() else { return 0 }
                lua_pushinteger(a.L, lua_Integer(n))
                luaPushString(a.L, name)
                return 2
            }),
            ("init", { a in
                var r: Int32 = 0, s: Int32 = 1
                let rc = qlmpi_init(&r, &s)
                if rc != 0 {
                    let why = String(cString: qlmpi_error())
                    throw a.fail("MPI is not available: \(why.isEmpty ? "error \(rc)" : why). Install OpenMPI (Debian: apt-get install openmpi-bin libopenmpi-dev, or run scripts/setup) and launch with mpirun")
                }
                rank = Int(r); size = Int(s)
                lua_pushinteger(a.L, lua_Integer(r))
                lua_pushinteger(a.L, lua_Integer(s))
                return 2
            }),
            ("rank", { a in lua_pushinteger(a.L, lua_Integer(rank)); return 1 }),
            ("size", { a in lua_pushinteger(a.L, lua_Integer(size)); return 1 }),
            ("allreduce_grads", { a in
                try requireInit(a)
                let ps = try OptimBindings.params(a, 1)
                var total = 0
                for (_, p) in ps { total += p.count }
                let flat = try buffer(a, total)
                var at = 0
                for (name, p) in ps {
                    if let g = p.grad {
                        guard g.dtype == .f32, g.count == p.count else { throw a.fail("parameter \(name): its gradient is not f32 of its size") }
                        memcpy(flat + at, g.f32, g.count * 4)
                    } else {
                        memset(flat + at, 0, p.count * 4)
                    }
                    at += p.count
                }
                try check(a, qlmpi_allreduce_sum_f32(flat, Int64(total)), "MPI_Allreduce of \(total) gradient values")
                at = 0
                for (_, p) in ps {
                    if p.grad == nil {
                        // Another rank's micro-batches reached this parameter; this one's did not.
                        do { p.grad = try Tensor(shape: p.shape) } catch { throw a.fail("\(error)") }
                    }
                    if let g = p.grad { memcpy(g.f32, flat + at, g.count * 4) }
                    at += p.count
                }
                lua_pushinteger(a.L, lua_Integer(total))
                return 1
            }),
            ("allreduce", { a in
                try requireInit(a)
                let t = try a.table(1)
                let n = Int(luaRawLen(a.L, t))
                var xs = [Double](repeating: 0, count: max(n, 1))
                for k in 0..<n {
                    lua_rawgeti(a.L, t, lua_Integer(k + 1))
                    defer { luaPop(a.L, 1) }
                    guard lua_type(a.L, -1) == LUA_TNUMBER else { throw a.fail("element \(k + 1) must be a number") }
                    xs[k] = lua_tonumberx(a.L, -1, nil)
                }
                let rc = xs.withUnsafeMutableBufferPointer { qlmpi_allreduce_sum_f64($0.baseAddress!, Int64(n)) }
                try check(a, rc, "MPI_Allreduce of \(n) numbers")
                lua_createtable(a.L, Int32(n), 0)
                for k in 0..<n { lua_pushnumber(a.L, xs[k]); lua_rawseti(a.L, -2, lua_Integer(k + 1)) }
                return 1
            }),
            ("barrier", { a in
                try requireInit(a)
                try check(a, qlmpi_barrier(), "MPI_Barrier")
                return 0
            }),
            ("abort", { a in
                let code = a.isNil(1) ? 1 : try a.integer(1)
                fflush(stdout); fflush(stderr)
                if qlmpi_initialized() != 0 { qlmpi_abort(Int32(truncatingIfNeeded: code)) }
                exit(Int32(truncatingIfNeeded: code))
            }),
        ]
    }

    /// Creates q.mpi in the module table at index q.
    static func install(_ L: LuaState, moduleIndex q: Int32) {
        let q = luaAbs(L, q)
        luaNewTable(L)
        Bindings.register(L, -1, prefix: "qlora.mpi.", functions())
        luaRawSetField(L, q, "mpi")
    }
}
