// The tensor part of the `qlora` module: creation functions (q.tensor, q.zeros, ...), tensor
// methods (t:matmul, t:sum, ...), properties (t.grad, t.requires_grad) and metamethods.
// Lua dims and slice bounds are 1-based (negative counts from the end); values inside tensors
// (indices, token ids) are 0-based.

import CLua
import Tensor

enum TensorBindings {
    // MARK: module functions

    static func moduleFunctions() -> [(String, LuaFunction)] {
        var fns: [(String, LuaFunction)] = [
            ("tensor", { a in
                let opts = try a.options(2, allowed: ["dtype", "requires_grad"])
                let t = try TensorConversions.fromLua(a, 1, dtype: try a.optionDType(opts) ?? .f32)
                if try a.optionBool(opts, "requires_grad") == true { try setRequiresGrad(a, t, true) }
                return push(a, t)
            }),
            ("zeros", { a in try filled(a, 0) }),
            ("ones", { a in try filled(a, 1) }),
            ("full", { a in
                let shape = try a.shape(1)
                let value = try a.number(2)
                let opts = try a.options(3, allowed: ["dtype"])
                return push(a, try Tensor.full(shape, value, dtype: try a.optionDType(opts) ?? .f32))
            }),
            ("arange", { a in
                var nums: [Double] = []
                var i: Int32 = 1
                while i <= min(a.count, 3) && lua_type(a.L, i) == LUA_TNUMBER { nums.append(try a.number(i)); i += 1 }
                if nums.isEmpty { throw a.typeError(1, "a number") }
                let opts = try a.options(i, allowed: ["dtype"])
                let (start, stop, step) = nums.count == 1 ? (0, nums[0], 1) : (nums[0], nums[1], nums.count > 2 ? nums[2] : 1)
                return push(a, try Tensor.arange(start, stop, step, dtype: try a.optionDType(opts)))
            }),
            ("randn", { a in
                let shape = try a.shape(1)
                let opts = try a.options(shapeEnd(a, 1), allowed: ["seed", "dtype", "mean", "std"])
                return push(a, try Tensor.randn(shape, seed: try seed(a, opts), mean: try a.optionNumber(opts, "mean") ?? 0,
                                                std: try a.optionNumber(opts, "std") ?? 1, dtype: try a.optionDType(opts) ?? .f32))
            }),
            ("rand", { a in
                let shape = try a.shape(1)
                let opts = try a.options(shapeEnd(a, 1), allowed: ["seed", "dtype", "min", "max"])
                return push(a, try Tensor.rand(shape, seed: try seed(a, opts), lo: try a.optionNumber(opts, "min") ?? 0,
                                               hi: try a.optionNumber(opts, "max") ?? 1, dtype: try a.optionDType(opts) ?? .f32))
            }),
            ("manual_seed", { a in
                let s = try a.integer(1)
                if s < 0 { throw a.fail("seed must be >= 0, got \(s)") }
                RandomState.manualSeed(UInt64(s))
                return 0
            }),
            ("is_tensor", { a in
                lua_pushboolean(a.L, TensorUserdata.tensor(a.L, 1) != nil ? 1 : 0)
                return 1
            }),
            ("where", { a in
                push(a, try Tensor.where_(try tensorOrNumber(a, 1), try tensorOrNumber(a, 2), try tensorOrNumber(a, 3)))
            }),
            ("concat", { a in
                let t = try a.table(1)
                var parts: [Tensor] = []
                for k in 1...max(luaRawLen(a.L, t), 1) where k <= luaRawLen(a.L, t) {
                    lua_rawgeti(a.L, t, lua_Integer(k))
                    defer { luaPop(a.L, 1) }
                    guard let x = TensorUserdata.tensor(a.L, -1) else { throw a.fail("entry \(k) of the list is not a tensor") }
                    parts.append(x)
                }
                if parts.isEmpty { throw a.fail("expected a non-empty list of tensors") }
                let d = try Shape.normalizeDim(try a.optInteger(2, 1), ndim: parts[0].ndim, a.name)
                return push(a, try Tensor.concat(parts, d))
            }),
            ("set_grad_enabled", { a in
                let previous = GradMode.enabled
                GradMode.enabled = try a.bool(1)
                lua_pushboolean(a.L, previous ? 1 : 0)
                return 1
            }),
            ("is_grad_enabled", { a in lua_pushboolean(a.L, GradMode.enabled ? 1 : 0); return 1 }),
            ("gradcheck", { a in try gradcheck(a) }),
        ]
        // q.matmul(a, b) and the other two-tensor ops, as module functions too.
        for (name, body) in methods() where ["matmul", "add", "sub", "mul", "div", "pow", "maximum", "minimum"].contains(name) {
            fns.append((name, body))
        }
        return fns
    }

    // MARK: methods

    static func methods() -> [(String, LuaFunction)] {
        var m: [(String, LuaFunction)] = [
            ("shape", { a in
                let t = try a.tensor(1)
                if !a.isNil(2) {
                    let d = try Shape.normalizeDim(try a.integer(2), ndim: t.ndim, a.name)
                    lua_pushinteger(a.L, lua_Integer(t.shape[d]))
                    return 1
                }
                lua_createtable(a.L, Int32(t.ndim), 0)
                for (i, d) in t.shape.enumerated() { lua_pushinteger(a.L, lua_Integer(d)); lua_rawseti(a.L, -2, lua_Integer(i + 1)) }
                return 1
            }),
            ("dim", { a in lua_pushinteger(a.L, lua_Integer(try a.tensor(1).ndim)); return 1 }),
            ("dtype", { a in luaPushString(a.L, try a.tensor(1).dtype.name); return 1 }),
            ("numel", { a in lua_pushinteger(a.L, lua_Integer(try a.tensor(1).count)); return 1 }),
            ("item", { a in
                let t = try a.tensor(1)
                if t.count != 1 { throw a.fail("expected a tensor with one element, got shape \(Shape.describe(t.shape))") }
                TensorConversions.pushElement(a.L, t, 0)
                return 1
            }),
            ("totable", { a in
                let t = try a.tensor(1)
                if t.count > 50_000_000 { throw a.fail("tensor of \(t.count) elements is too large to convert to a table") }
                TensorConversions.pushTable(a.L, t)
                return 1
            }),
            ("to", { a in
                let t = try a.tensor(1)
                let name = try a.string(2)
                guard let d = DType.parse(name) else { throw a.fail("unknown dtype \"\(name)\" (expected one of \(DType.allCases.map { $0.name }.joined(separator: ", ")))") }
                return push(a, try t.to(d))
            }),
            ("clone", { a in push(a, try a.tensor(1).clone()) }),
            ("detach", { a in push(a, try a.tensor(1).detach()) }),
            ("contiguous", { a in push(a, try a.tensor(1)) }),
            ("backward", { a in
                let t = try a.tensor(1)
                var g: Tensor? = nil
                var retain = false
                if lua_type(a.L, 2) == LUA_TTABLE {
                    let o = try a.options(2, allowed: ["gradient", "retain_graph"])
                    retain = try a.optionBool(o, "retain_graph") ?? false
                    if let o = o, a.optField(o, "gradient") != nil {
                        defer { luaPop(a.L, 1) }
                        guard let x = TensorUserdata.tensor(a.L, -1) else { throw a.fail("option 'gradient' must be a tensor") }
                        g = x
                    }
                } else if !a.isNil(2) {
                    guard let x = TensorUserdata.tensor(a.L, 2) else { throw a.typeError(2, "a tensor or {gradient = tensor}") }
                    g = x
                }
                try t.backward(gradient: g, retainGraph: retain)
                return 0
            }),
            ("zero_grad", { a in try a.tensor(1).zeroGrad(); return 0 }),
            // In-place updates (not recorded by autograd): return the tensor itself.
            ("copy_", { a in let t = try a.tensor(1); try t.copyIn(try tensorOrNumber(a, 2)); lua_pushvalue(a.L, 1); return 1 }),
            ("add_", { a in
                let t = try a.tensor(1)
                try t.addIn(try tensorOrNumber(a, 2), alpha: try a.optNumber(3, 1))
                lua_pushvalue(a.L, 1)
                return 1
            }),
            ("mul_", { a in let t = try a.tensor(1); try t.scaleIn(try a.number(2)); lua_pushvalue(a.L, 1); return 1 }),
            ("zero_", { a in let t = try a.tensor(1); try t.scaleIn(0); lua_pushvalue(a.L, 1); return 1 }),
            ("matmul", { a in push(a, try a.tensor(1).matmul(try a.tensor(2))) }),
            // x:linear(w [, b]) = x w^T (+ b) for x [..., in], w [out, in]: no transposed copy of w
            ("linear", { a in
                var y = try a.tensor(1).linear(try a.tensor(2))
                if let b = try a.optTensor(3) { y = try y.binary(.add, b) }
                return push(a, y)
            }),
            ("t", { a in
                let t = try a.tensor(1)
                if t.ndim != 2 { throw a.fail("expected a 2-d tensor, got shape \(Shape.describe(t.shape)); use transpose(a, b)") }
                return push(a, try t.transpose(0, 1))
            }),
            ("transpose", { a in
                let t = try a.tensor(1)
                let d0 = try Shape.normalizeDim(try a.integer(2), ndim: t.ndim, a.name)
                let d1 = try Shape.normalizeDim(try a.integer(3), ndim: t.ndim, a.name)
                return push(a, try t.transpose(d0, d1))
            }),
            ("permute", { a in
                let t = try a.tensor(1)
                let dims = lua_type(a.L, 2) == LUA_TTABLE ? try a.intList(2, what: "permutation") : try a.shape(2)
                return push(a, try t.permute(try dims.map { try Shape.normalizeDim($0, ndim: t.ndim, a.name) }))
            }),
            ("reshape", { a in push(a, try a.tensor(1).reshape(try a.shape(2))) }),
            ("view", { a in push(a, try a.tensor(1).reshape(try a.shape(2))) }),
            ("expand", { a in push(a, try a.tensor(1).expanded(to: try a.shape(2))) }),
            ("slice", { a in
                let t = try a.tensor(1)
                let d = try Shape.normalizeDim(try a.integer(2), ndim: t.ndim, a.name)
                let n = t.shape[d]
                func pos(_ v: Int) -> Int { v < 0 ? n + v + 1 : v }
                let from = pos(try a.integer(3)), to = pos(try a.optInteger(4, n))
                if from < 1 || to > n || from > to + 1 {
                    throw a.fail("range \(from)..\(to) out of bounds for dim \(d + 1) of size \(n)")
                }
                return push(a, try t.slice(d, from - 1, to))
            }),
            ("index_select", { a in
                let t = try a.tensor(1)
                let d = try Shape.normalizeDim(try a.integer(2), ndim: t.ndim, a.name)
                return push(a, try t.indexSelect(d, try indexTensor(a, 3)))
            }),
            ("gather", { a in
                let t = try a.tensor(1)
                let d = try Shape.normalizeDim(try a.integer(2), ndim: t.ndim, a.name)
                return push(a, try t.gather(d, try indexTensor(a, 3)))
            }),
            ("clamp", { a in
                let t = try a.tensor(1)
                let lo = try a.isNil(2) ? -Double.infinity : a.number(2)
                let hi = try a.isNil(3) ? Double.infinity : a.number(3)
                return push(a, try t.clamp(lo, hi))
            }),
            ("softmax", { a in
                let t = try a.tensor(1)
                return push(a, try t.softmax(try Shape.normalizeDim(try a.optInteger(2, -1), ndim: t.ndim, a.name)))
            }),
            ("log_softmax", { a in
                let t = try a.tensor(1)
                return push(a, try t.logSoftmax(try Shape.normalizeDim(try a.optInteger(2, -1), ndim: t.ndim, a.name)))
            }),
            ("argmax", { a in try argReduce(a, isMax: true) }),
            ("argmin", { a in try argReduce(a, isMax: false) }),
            ("where", { a in push(a, try Tensor.where_(try a.tensor(1), try tensorOrNumber(a, 2), try tensorOrNumber(a, 3))) }),
        ]
        for op in UnaryOp.allCases {
            m.append((op.rawValue, { a in push(a, try a.tensor(1).unary(op)) }))
        }
        for op in BinaryOp.allCases {
            m.append((op.rawValue, { a in try binary(a, op) }))
        }
        m.append(("pow", { a in
            let t = try a.tensor(1)
            if lua_type(a.L, 2) == LUA_TNUMBER { return push(a, try t.pow(try a.number(2))) }
            return try binary(a, .pow)
        }))
        for op in [ReduceOp.sum, .mean, .max, .min] {
            m.append((op.rawValue, { a in try reduce(a, op) }))
        }
        return m
    }

    // MARK: metamethods and properties

    static func metamethods() -> [(String, LuaFunction)] {
        [
            ("__add", { a in try binary(a, .add) }),
            ("__sub", { a in try binary(a, .sub) }),
            ("__mul", { a in try binary(a, .mul) }),
            ("__div", { a in try binary(a, .div) }),
            ("__pow", { a in
                if let t = TensorUserdata.tensor(a.L, 1), lua_type(a.L, 2) == LUA_TNUMBER { return push(a, try t.pow(try a.number(2))) }
                return try binary(a, .pow)
            }),
            ("__unm", { a in push(a, try a.tensor(1).unary(.neg)) }),
            ("__len", { a in
                let t = try a.tensor(1)
                lua_pushinteger(a.L, lua_Integer(t.ndim == 0 ? 0 : t.shape[0]))
                return 1
            }),
            ("__tostring", { a in luaPushString(a.L, TensorConversions.describe(try a.tensor(1))); return 1 }),
            ("__gc", { a in TensorUserdata.release(a.L, 1); return 0 }),
            ("__newindex", { a in
                let t = try a.tensor(1)
                let key = try a.string(2)
                switch key {
                case "requires_grad": try setRequiresGrad(a, t, try a.bool(3))
                case "grad":
                    if a.isNil(3) { t.grad = nil } else {
                        let g = try a.tensor(3)
                        if g.shape != t.shape { throw a.fail("grad shape \(Shape.describe(g.shape)) does not match tensor shape \(Shape.describe(t.shape))") }
                        t.grad = try g.asF32().copy()
                    }
                default: throw a.fail("cannot set field '\(key)' of a tensor (settable: requires_grad, grad)")
                }
                return 0
            }),
        ]
    }

    /// Properties read through __index after methods: grad, requires_grad, is_leaf, grad_fn.
    static func property(_ a: LuaArgs) throws -> Int32 {
        let t = try a.tensor(1)
        guard let key = luaString(a.L, 2) else { lua_pushnil(a.L); return 1 }
        switch key {
        case "grad": if let g = t.grad { TensorUserdata.push(a.L, g) } else { lua_pushnil(a.L) }
        case "requires_grad": lua_pushboolean(a.L, t.requiresGrad ? 1 : 0)
        case "is_leaf": lua_pushboolean(a.L, t.isLeaf ? 1 : 0)
        case "grad_fn": if let op = t.gradOp { luaPushString(a.L, op) } else { lua_pushnil(a.L) }
        default: lua_pushnil(a.L)
        }
        return 1
    }

    // MARK: helpers

    static func push(_ a: LuaArgs, _ t: Tensor) -> Int32 {
        TensorUserdata.push(a.L, t)
        return 1
    }

    static func setRequiresGrad(_ a: LuaArgs, _ t: Tensor, _ on: Bool) throws {
        if on && !t.dtype.isFloat { throw a.fail("only floating tensors can require gradients, this one is \(t.dtype.name)") }
        t.requiresGrad = on
    }

    private static func filled(_ a: LuaArgs, _ v: Double) throws -> Int32 {
        let shape = try a.shape(1)
        let opts = try a.options(shapeEnd(a, 1), allowed: ["dtype"])
        return push(a, try Tensor.full(shape, v, dtype: try a.optionDType(opts) ?? .f32))
    }

    /// The index after a shape that starts at i (a table, or a run of integers).
    private static func shapeEnd(_ a: LuaArgs, _ i: Int32) -> Int32 {
        if lua_type(a.L, i) == LUA_TTABLE { return i + 1 }
        var j = i
        while j <= a.count && lua_type(a.L, j) == LUA_TNUMBER { j += 1 }
        return j
    }

    private static func seed(_ a: LuaArgs, _ opts: Int32?) throws -> UInt64? {
        guard let s = try a.optionInteger(opts, "seed") else { return nil }
        if s < 0 { throw a.fail("seed must be >= 0, got \(s)") }
        return UInt64(s)
    }

    /// A tensor argument, or a number made into a 0-d f32 tensor.
    static func tensorOrNumber(_ a: LuaArgs, _ i: Int32) throws -> Tensor {
        if let t = TensorUserdata.tensor(a.L, i) { return t }
        if lua_type(a.L, i) == LUA_TNUMBER { return try Tensor.scalar(lua_tonumberx(a.L, i, nil)) }
        throw a.typeError(i, "a tensor or a number")
    }

    /// An integer index tensor, or a Lua table of integers.
    private static func indexTensor(_ a: LuaArgs, _ i: Int32) throws -> Tensor {
        if let t = TensorUserdata.tensor(a.L, i) { return t }
        if lua_type(a.L, i) == LUA_TTABLE { return try TensorConversions.fromLua(a, i, dtype: .i64, integersOnly: true) }
        throw a.typeError(i, "an integer tensor or a table of indices")
    }

    /// tensor op tensor, tensor op number, or number op tensor (either order, for metamethods).
    static func binary(_ a: LuaArgs, _ op: BinaryOp) throws -> Int32 {
        let L = a.L
        if let x = TensorUserdata.tensor(L, 1) {
            if let y = TensorUserdata.tensor(L, 2) { return push(a, try x.binary(op, y)) }
            if lua_type(L, 2) == LUA_TNUMBER { return push(a, try x.binary(op, scalar: lua_tonumberx(L, 2, nil))) }
            throw a.typeError(2, "a tensor or a number")
        }
        if lua_type(L, 1) == LUA_TNUMBER, let y = TensorUserdata.tensor(L, 2) {
            return push(a, try y.binary(op, scalar: lua_tonumberx(L, 1, nil), scalarFirst: true))
        }
        throw a.typeError(1, "a tensor")
    }

    /// t:sum([dim [, keepdim]]); max/min with a dim also return the 0-based indices.
    private static func reduce(_ a: LuaArgs, _ op: ReduceOp) throws -> Int32 {
        let t = try a.tensor(1)
        if a.isNil(2) { return push(a, try t.reduceAll(op)) }
        let d = try Shape.normalizeDim(try a.integer(2), ndim: t.ndim, a.name)
        let keep = a.isNil(3) ? false : try a.bool(3)
        let r = try t.reduceDim(op, d, keepDim: keep)
        TensorUserdata.push(a.L, r)
        if op == .max || op == .min {
            TensorUserdata.push(a.L, try t.argReduce(op == .max, d, keepDim: keep))
            return 2
        }
        return 1
    }

    private static func argReduce(_ a: LuaArgs, isMax: Bool) throws -> Int32 {
        let t = try a.tensor(1)
        if t.count == 0 { throw a.fail("cannot take the \(isMax ? "argmax" : "argmin") of an empty tensor") }
        if a.isNil(2) {
            let flat = try t.reshape([t.count])
            return push(a, try flat.argReduce(isMax, 0, keepDim: false))
        }
        let d = try Shape.normalizeDim(try a.integer(2), ndim: t.ndim, a.name)
        let keep = a.isNil(3) ? false : try a.bool(3)
        return push(a, try t.argReduce(isMax, d, keepDim: keep))
    }

    /// q.gradcheck(fn, {inputs...} [, {eps, atol, rtol}]) -> ok, report table.
    private static func gradcheck(_ a: LuaArgs) throws -> Int32 {
        let L = a.L
        let fnIndex = try a.function(1)
        let list = try a.table(2)
        var inputs: [Tensor] = []
        for k in 1...max(luaRawLen(L, list), 1) where k <= luaRawLen(L, list) {
            lua_rawgeti(L, list, lua_Integer(k))
            defer { luaPop(L, 1) }
            guard let t = TensorUserdata.tensor(L, -1) else { throw a.fail("input \(k) is not a tensor") }
            inputs.append(t)
        }
        let opts = try a.options(3, allowed: ["eps", "atol", "rtol"])
        let eps = try a.optionNumber(opts, "eps") ?? 1e-3
        let atol = try a.optionNumber(opts, "atol") ?? 1e-3
        let rtol = try a.optionNumber(opts, "rtol") ?? 1e-2
        if !(eps > 0 && eps.isFinite) { throw a.fail("eps must be a finite number > 0, got \(eps)") }
        if !(atol >= 0 && atol.isFinite && rtol >= 0 && rtol.isFinite) { throw a.fail("atol and rtol must be finite numbers >= 0") }
        let result = try Tensor.gradcheck(inputs, eps: eps, atol: atol, rtol: rtol) { ts in
            lua_pushvalue(L, fnIndex)
            for t in ts { TensorUserdata.push(L, t) }
            if luaPcall(L, Int32(ts.count), 1) != 0 {
                let msg = luaErrorText(L, -1)
                luaPop(L, 1)
                throw LuaError("qlora.gradcheck: the function raised an error: \(msg)")
            }
            defer { luaPop(L, 1) }
            guard let y = TensorUserdata.tensor(L, -1) else { throw LuaError("qlora.gradcheck: the function must return a tensor, got \(luaTypeName(L, -1))") }
            return y
        }
        lua_pushboolean(L, result.ok ? 1 : 0)
        lua_createtable(L, 0, 5)
        lua_pushboolean(L, result.ok ? 1 : 0); luaRawSetField(L, -2, "ok")
        lua_pushnumber(L, result.maxAbsError); luaRawSetField(L, -2, "max_abs_error")
        lua_pushnumber(L, result.maxRelError); luaRawSetField(L, -2, "max_rel_error")
        luaPushString(L, result.worst); luaRawSetField(L, -2, "worst")
        lua_pushinteger(L, lua_Integer(result.checked)); luaRawSetField(L, -2, "checked")
        return 2
    }
}
