// Optimizers for Lua: q.optim.adamw(params, opts) and q.optim.sgd(params, opts) return an
// optimizer object (step, zero_grad, lr, set_lr, steps, state, load_state), and
// q.clip_grad_norm(params, max_norm) clips gradients by their global norm. params is the list
// model:parameters{trainable=true} returns ({name=, tensor=} entries) or a list of tensors
// (named "1", "2", ...).

import CLua
import Tensor
import Train

enum OptimBindings {
    static let typeName = "qlora.Optimizer"

    /// Creates q.optim and q.clip_grad_norm in the module table at index q.
    static func install(_ L: LuaState, moduleIndex q: Int32) {
        let q = luaAbs(L, q)
        ObjectUserdata.register(L, name: typeName, methods: methods()) { o in
            guard let opt = o as? Optimizer else { return typeName }
            let kind = opt is AdamW ? "adamw" : "sgd"
            return "qlora.Optimizer(\(kind), \(opt.params.count) params, lr \(opt.lr), \(opt.stepCount) steps)"
        }
        luaNewTable(L)
        Bindings.register(L, -1, prefix: "qlora.optim.", functions())
        luaRawSetField(L, q, "optim")
        Bindings.register(L, q, prefix: "qlora.", [("clip_grad_norm", { a in
            let ps = try params(a, 1)
            let maxNorm = try a.number(2)
            let n = try GradClip.clipGlobalNorm(ps, maxNorm: maxNorm)
            lua_pushnumber(a.L, n)
            return 1
        })])
    }

    static func functions() -> [(String, LuaFunction)] {
        [
            ("adamw", { a in
                let ps = try params(a, 1)
                let t = try a.options(2, allowed: ["lr", "betas", "eps", "weight_decay"])
                var betas = (0.9, 0.999)
                if let t = t, a.optField(t, "betas") != nil {
                    defer { luaPop(a.L, 1) }
                    let b = try numberList(a, lua_gettop(a.L), what: "betas")
                    if b.count != 2 { throw a.fail("betas must be a list of 2 numbers, got \(b.count)") }
                    betas = (b[0], b[1])
                }
                let opt = try AdamW(params: ps, lr: try a.optionNumber(t, "lr") ?? 1e-3, betas: betas,
                                    eps: try a.optionNumber(t, "eps") ?? 1e-8,
                                    weightDecay: try a.optionNumber(t, "weight_decay") ?? 1e-2)
                ObjectUserdata.push(a.L, opt, typeName)
                return 1
            }),
            ("sgd", { a in
                let ps = try params(a, 1)
                let t = try a.options(2, allowed: ["lr", "momentum", "dampening", "nesterov", "weight_decay"])
                guard let lr = try a.optionNumber(t, "lr") else { throw a.fail("option 'lr' is required") }
                let opt = try SGD(params: ps, lr: lr, momentum: try a.optionNumber(t, "momentum") ?? 0,
                                  dampening: try a.optionNumber(t, "dampening") ?? 0,
                                  nesterov: try a.optionBool(t, "nesterov") ?? false,
                                  weightDecay: try a.optionNumber(t, "weight_decay") ?? 0)
                ObjectUserdata.push(a.L, opt, typeName)
                return 1
            }),
        ]
    }

    static func methods() -> [(String, LuaFunction)] {
        func this(_ a: LuaArgs) throws -> Optimizer {
            guard let o = ObjectUserdata.object(a.L, 1, typeName) as? Optimizer else { throw a.typeError(1, "an optimizer") }
            return o
        }
        return [
            ("step", { a in try this(a).step(); return 0 }),
            ("zero_grad", { a in try this(a).zeroGrad(); return 0 }),
            ("lr", { a in lua_pushnumber(a.L, try this(a).lr); return 1 }),
            ("set_lr", { a in try this(a).setLR(try a.number(2)); return 0 }),
            ("steps", { a in lua_pushinteger(a.L, lua_Integer(try this(a).stepCount)); return 1 }),
            ("state", { a in
                let s = try this(a).state()
                lua_createtable(a.L, 0, Int32(s.tensors.count + 1))
                for (k, t) in s.tensors {
                    TensorUserdata.push(a.L, t)
                    luaRawSetField(a.L, -2, k)
                }
                lua_pushinteger(a.L, lua_Integer(s.step))
                luaRawSetField(a.L, -2, "step")
                return 1
            }),
            ("load_state", { a in
                let o = try this(a)
                let t = try a.table(2)
                var tensors: [String: Tensor] = [:]
                var step: Int? = nil
                lua_pushnil(a.L)
                while lua_next(a.L, t) != 0 {
                    defer { luaPop(a.L, 1) }
                    guard lua_type(a.L, -2) == LUA_TSTRING, let k = luaString(a.L, -2) else {
                        throw a.fail("state keys must be strings")
                    }
                    if k == "step" {
                        var ok: Int32 = 0
                        let v = lua_tointegerx(a.L, -1, &ok)
                        if lua_type(a.L, -1) != LUA_TNUMBER || ok == 0 { throw a.fail("state step must be an integer, got \(luaTypeName(a.L, -1))") }
                        step = Int(v)
                    } else {
                        guard let tt = TensorUserdata.tensor(a.L, -1) else {
                            throw a.fail("state entry \"\(k)\" must be a tensor, got \(luaTypeName(a.L, -1))")
                        }
                        tensors[k] = tt
                    }
                }
                guard let st = step else { throw a.fail("state has no 'step' entry") }
                try o.loadState(OptimizerState(tensors: tensors, step: st))
                return 0
            }),
        ]
    }

    /// A list of {name=, tensor=} entries or of tensors (named by position).
    static func params(_ a: LuaArgs, _ i: Int32) throws -> [(String, Tensor)] {
        let L = a.L
        guard lua_type(L, i) == LUA_TTABLE else { throw a.typeError(i, "a list of parameters") }
        let t = luaAbs(L, i)
        let n = luaRawLen(L, t)
        var out: [(String, Tensor)] = []
        for k in 1...max(n, 1) where k <= n {
            lua_rawgeti(L, t, lua_Integer(k))
            defer { luaPop(L, 1) }
            if let x = TensorUserdata.tensor(L, -1) {
                out.append(("\(k)", x))
            } else if lua_type(L, -1) == LUA_TTABLE {
                let e = lua_gettop(L)
                _ = luaRawGetField(L, e, "name")
                let name = lua_type(L, -1) == LUA_TSTRING ? luaString(L, -1) : nil
                luaPop(L, 1)
                _ = luaRawGetField(L, e, "tensor")
                let x = TensorUserdata.tensor(L, -1)
                luaPop(L, 1)
                guard let name = name, let x = x else {
                    throw a.fail("parameter \(k) must be a tensor or a {name = string, tensor = tensor} table")
                }
                out.append((name, x))
            } else {
                throw a.fail("parameter \(k) must be a tensor or a {name = string, tensor = tensor} table, got \(luaTypeName(L, -1))")
            }
        }
        return out
    }

    static func numberList(_ a: LuaArgs, _ i: Int32, what: String) throws -> [Double] {
        guard lua_type(a.L, i) == LUA_TTABLE else { throw a.fail("\(what) must be a list of numbers, got \(luaTypeName(a.L, i))") }
        var out: [Double] = []
        let n = luaRawLen(a.L, i)
        for k in 1...max(n, 1) where k <= n {
            lua_rawgeti(a.L, i, lua_Integer(k))
            defer { luaPop(a.L, 1) }
            guard lua_type(a.L, -1) == LUA_TNUMBER else { throw a.fail("\(what) entry \(k) must be a number") }
            out.append(lua_tonumberx(a.L, -1, nil))
        }
        return out
    }
}
