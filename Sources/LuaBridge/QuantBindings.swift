// The quantization part of the `qlora` module: q.quantize, q.quantized (from exported parts),
// q.quant_error, q.quant_linear, and the methods of quantized tensors and 4-bit layers.

import CLua
import Quant
import Tensor

enum QuantBindings {
    static let quantizedName = "qlora.QuantizedTensor"
    static let linearName = "qlora.QuantLinear"

    static func install(_ L: LuaState) {
        ObjectUserdata.register(L, name: quantizedName, methods: quantizedMethods()) { o in
            guard let q = o as? QuantizedTensor else { return "QuantizedTensor" }
            return "QuantizedTensor(\(q.type.rawValue), \(Shape.describe(q.shape)), block \(q.block)\(q.options.doubleQuant ? ", double quant" : ""))"
        }
        ObjectUserdata.register(L, name: linearName, methods: linearMethods()) { o in
            guard let l = o as? QuantLinear else { return "QuantLinear" }
            return "QuantLinear(in \(l.inFeatures), out \(l.outFeatures), \(l.weight.type.rawValue), compute \(l.compute.rawValue)\(l.bias != nil ? ", bias" : ""))"
        }
    }

    static func functions() -> [(String, LuaFunction)] {
        [
            ("quantize", { a in
                let t = try a.tensor(1)
                let opts = try quantOptions(a, try a.options(2, allowed: ["type", "block", "double_quant"]))
                let q = try quantErrors(a) { try QuantizedTensor.quantize(t, opts) }
                ObjectUserdata.push(a.L, q, quantizedName)
                return 1
            }),
            ("quantized", { a in
                let t = try a.table(1)
                var parts: [String: Tensor] = [:]
                for key in ["packed", "absmax", "absmax_q", "nested_absmax", "nested_code", "offset"] {
                    if a.optField(t, key) != nil {
                        defer { luaPop(a.L, 1) }
                        guard let x = TensorUserdata.tensor(a.L, -1) else { throw a.fail("'\(key)' must be a tensor, got \(luaTypeName(a.L, -1))") }
                        parts[key] = x
                    }
                }
                guard a.optField(t, "shape") != nil else { throw a.fail("missing 'shape' (the original tensor's shape)") }
                if lua_type(a.L, -1) != LUA_TTABLE { throw a.fail("'shape' must be a table of integers") }
                let shape = try a.intList(-1, what: "shape")
                luaPop(a.L, 1)
                var opts = try quantOptions(a, t, allowUnknown: true)
                opts.doubleQuant = parts["absmax_q"] != nil
                if parts["absmax_q"] != nil && parts["absmax"] != nil {
                    throw a.fail("give either 'absmax' or 'absmax_q' (double quantization), not both")
                }
                let q = try quantErrors(a) { try QuantizedTensor.fromParts(parts, shape: shape, opts) }
                ObjectUserdata.push(a.L, q, quantizedName)
                return 1
            }),
            ("quant_error", { a in
                let t = try a.tensor(1)
                let opts = try quantOptions(a, try a.options(2, allowed: ["type", "block", "double_quant"]))
                let stats = try quantErrors(a) { try QuantErrorStats.measure(t, try QuantizedTensor.quantize(t, opts)) }
                lua_createtable(a.L, 0, 3)
                lua_pushnumber(a.L, stats.rmse); luaRawSetField(a.L, -2, "rmse")
                lua_pushnumber(a.L, stats.maxAbs); luaRawSetField(a.L, -2, "max_abs")
                lua_pushnumber(a.L, stats.snrDb); luaRawSetField(a.L, -2, "snr_db")
                return 1
            }),
            ("quant_linear", { a in
                let q = try a.object(1, quantizedName, as: QuantizedTensor.self)
                var optsIndex: Int32 = 2
                var bias: Tensor? = nil
                if let b = TensorUserdata.tensor(a.L, 2) { bias = b; optsIndex = 3 } else if lua_type(a.L, 2) == LUA_TNIL { optsIndex = 3 }
                let opts = try a.options(optsIndex, allowed: ["compute"])
                let compute = try computeType(a, opts)
                let layer = try quantErrors(a) { try QuantLinear(weight: q, bias: bias, compute: compute) }
                ObjectUserdata.push(a.L, layer, linearName)
                return 1
            }),
        ]
    }

    static func quantizedMethods() -> [(String, LuaFunction)] {
        func this(_ a: LuaArgs) throws -> QuantizedTensor { try a.object(1, quantizedName, as: QuantizedTensor.self) }
        return [
            ("dequantize", { a in TensorBindings.push(a, try quantErrors(a) { try this(a).dequantize() }) }),
            ("bytes", { a in lua_pushinteger(a.L, lua_Integer(try this(a).byteCount)); return 1 }),
            ("bits_per_param", { a in lua_pushnumber(a.L, try this(a).bitsPerParam); return 1 }),
            ("shape", { a in
                let q = try this(a)
                lua_createtable(a.L, Int32(q.shape.count), 0)
                for (i, d) in q.shape.enumerated() { lua_pushinteger(a.L, lua_Integer(d)); lua_rawseti(a.L, -2, lua_Integer(i + 1)) }
                return 1
            }),
            ("numel", { a in lua_pushinteger(a.L, lua_Integer(try this(a).count)); return 1 }),
            ("type", { a in luaPushString(a.L, try this(a).type.rawValue); return 1 }),
            ("block", { a in lua_pushinteger(a.L, lua_Integer(try this(a).block)); return 1 }),
            ("double_quant", { a in lua_pushboolean(a.L, try this(a).options.doubleQuant ? 1 : 0); return 1 }),
            // Tensors in bitsandbytes' layout, plus type, block and shape so q.quantized can rebuild it.
            ("export", { a in
                let q = try this(a)
                let parts = try q.export()
                lua_createtable(a.L, 0, Int32(parts.count + 3))
                for (name, t) in parts { TensorUserdata.push(a.L, t); luaRawSetField(a.L, -2, name) }
                luaPushString(a.L, q.type.rawValue); luaRawSetField(a.L, -2, "type")
                lua_pushinteger(a.L, lua_Integer(q.block)); luaRawSetField(a.L, -2, "block")
                lua_createtable(a.L, Int32(q.shape.count), 0)
                for (i, d) in q.shape.enumerated() { lua_pushinteger(a.L, lua_Integer(d)); lua_rawseti(a.L, -2, lua_Integer(i + 1)) }
                luaRawSetField(a.L, -2, "shape")
                return 1
            }),
        ]
    }

    static func linearMethods() -> [(String, LuaFunction)] {
        func this(_ a: LuaArgs) throws -> QuantLinear { try a.object(1, linearName, as: QuantLinear.self) }
        return [
            ("forward", { a in
                let l = try this(a)
                let x = try a.tensor(2)
                return TensorBindings.push(a, try quantErrors(a) { try l.forward(x) })
            }),
            ("weight", { a in ObjectUserdata.push(a.L, try this(a).weight, quantizedName); return 1 }),
            ("bias", { a in if let b = try this(a).bias { TensorUserdata.push(a.L, b) } else { lua_pushnil(a.L) }; return 1 }),
            ("compute", { a in luaPushString(a.L, try this(a).compute.rawValue); return 1 }),
            ("set_compute", { a in
                let l = try this(a)
                let s = try a.string(2)
                guard let c = ComputeType(rawValue: s) else { throw a.fail("compute must be one of \(ComputeType.names), got \"\(s)\"") }
                l.compute = c
                return 0
            }),
        ]
    }

    /// {type = "nf4"|"fp4", block = 64, double_quant = true} with defaults.
    static func quantOptions(_ a: LuaArgs, _ t: Int32?, allowUnknown: Bool = false) throws -> QuantOptions {
        let typeName = try a.optionString(t, "type") ?? "nf4"
        guard let type = QuantType(rawValue: typeName) else {
            throw a.fail("unknown quantization type \"\(typeName)\" (expected \"nf4\" or \"fp4\")")
        }
        let block = try a.optionInteger(t, "block") ?? 64
        let dq = try a.optionBool(t, "double_quant") ?? true
        return try quantErrors(a) { try QuantOptions(type: type, block: block, doubleQuant: dq) }
    }

    static func computeType(_ a: LuaArgs, _ t: Int32?) throws -> ComputeType {
        let s = try a.optionString(t, "compute") ?? "f32"
        guard let c = ComputeType(rawValue: s) else { throw a.fail("compute must be one of \(ComputeType.names), got \"\(s)\"") }
        return c
    }

    /// Runs body, turning QuantError into "qlora.fn: problem".
    static func quantErrors<T>(_ a: LuaArgs, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as QuantError { throw a.fail(e.message) }
    }
}
