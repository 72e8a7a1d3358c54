// Adapters defined by a script (model:add_adapter): where one runs in the model (its placement and
// site), its parameter tensors, and the call that computes its output (a closure the Lua bridge
// supplies; NN never sees Lua). The model's forward asks each site for its running adapters, in
// the order they were added, and checks the shape of what each returns.
//   linear        y' = f(x, y)    after the layer (and its built-in LoRA adapters); same shape as y
//   linear_input  x' = f(x)       before the layer; what the layer and the adapters after it read
//   mlp_act       a' = f(a)       the MLP's intermediate activation (silu(gate) * up, down's input)
//   mlp_out       m' = f(m)       the MLP's output, before the residual addition
//   block_out     h' = f(h)       the residual stream after a decoder layer
//   embed         h' = f(h)       the token embeddings, before the first layer
//   prefix        h' = f(h)       [B, T, hidden] -> [B, P + T, hidden]: P virtual tokens in front
//                                 (first forward of a sequence only; the KV cache keeps them)

import Tensor

public enum AdapterPlacement: String, CaseIterable, Sendable {
    case linear
    case linearInput = "linear_input"
    case mlpAct = "mlp_act"
    case mlpOut = "mlp_out"
    case blockOut = "block_out"
    case embed
    case prefix
}

public final class ScriptAdapter {
    /// The adapter's name (as set_adapter uses it).
    public let name: String
    /// The adapter's kind, as the manifest names it ("ia3", "vera", ...).
    public let kind: String
    public let placement: AdapterPlacement
    /// Where it runs, spelled as transformers names modules ("model.layers.3.self_attn.k_proj",
    /// "model.layers.3.mlp.act_fn", "model.layers.3.mlp", "model.layers.3", "model.embed_tokens",
    /// "model.prefix").
    public let site: String
    public let layer: Int?
    /// The parameter tensors by key (sorted), trainable or not, as init returned them.
    public let params: [(key: String, tensor: Tensor)]
    /// The bridge's handle for the adapter's definition and options (opaque here).
    public let handle: Int
    /// Computes the adapter's output from its inputs ([x, y] for linear, [h] otherwise).
    let call: ([Tensor]) throws -> Tensor
    /// Run when the adapter goes away (the bridge releases what it keeps for the adapter).
    public var onRelease: (() -> Void)? = nil

    deinit { onRelease?() }

    public init(name: String, kind: String, placement: AdapterPlacement, site: String, layer: Int?,
                params: [(key: String, tensor: Tensor)], handle: Int = 0, call: @escaping ([Tensor]) throws -> Tensor) {
        self.name = name; self.kind = kind; self.placement = placement
        self.site = site; self.layer = layer; self.params = params; self.handle = handle; self.call = call
    }

    /// Parameter names in model:parameters(): "<site>.<adapter>.<key>".
    public func parameterName(_ key: String) -> String { "\(site).\(name).\(key)" }

    func describe() -> String { "adapter \"\(name)\" at \(site) (\(placement.rawValue))" }

    /// Runs the adapter; the result must have `shape` (nil: prefix, checked by the caller).
    func run(_ inputs: [Tensor], shape: [Int]?) throws -> Tensor {
        let out = try call(inputs)
        if let s = shape, out.shape != s {
            throw ModelError("\(describe()): forward returned shape \(Shape.describe(out.shape)), expected \(Shape.describe(s))")
        }
        if !out.dtype.isFloat { throw ModelError("\(describe()): forward returned a \(out.dtype.name) tensor, expected a float one") }
        return out
    }

    /// The adapters of `list` at `placement` that run: enabled, and active (all when nil).
    static func running(_ list: [ScriptAdapter], _ placement: AdapterPlacement, active: [String]?, enabled: Bool) -> [ScriptAdapter] {
        if !enabled || list.isEmpty { return [] }
        return list.filter { $0.placement == placement && (active?.contains($0.name) ?? true) }
    }

    /// h through each running adapter at `placement`, in order; each keeps h's shape.
    static func chain(_ list: [ScriptAdapter], _ placement: AdapterPlacement, _ h: Tensor, active: [String]?, enabled: Bool) throws -> Tensor {
        var h = h
        for s in running(list, placement, active: active, enabled: enabled) { h = try s.run([h], shape: h.shape) }
        return h
    }
}

extension LlamaModel {
    /// Every script adapter in model order: embed and prefix sites, then per layer its linears'
    /// and the layer's own (mlp_act, block_out), then the head's.
    public var scriptAdapters: [ScriptAdapter] {
        var out = modelScriptAdapters
        for layer in layers {
            for l in layer.linears { out += l.scriptAdapters }
            out += layer.scriptAdapters
        }
        if let head = lmHead { out += head.scriptAdapters }
        return out
    }

    /// Attaches a script adapter to its site (after the ones already there).
    public func attach(_ s: ScriptAdapter) throws {
        switch s.placement {
        case .linear, .linearInput:
            guard let l = linears.first(where: { $0.name == s.site }) else { throw ModelError("no linear layer named \(s.site)") }
            if l.scriptAdapters.contains(where: { $0.name == s.name }) || l.adapter(named: s.name) != nil {
                throw ModelError("\(s.site) already has an adapter named \"\(s.name)\"")
            }
            l.scriptAdapters.append(s)
        case .mlpAct, .mlpOut, .blockOut:
            guard let i = s.layer, i >= 0, i < layers.count else { throw ModelError("\(s.site): no such decoder layer") }
            if layers[i].scriptAdapters.contains(where: { $0.name == s.name && $0.placement == s.placement }) {
                throw ModelError("\(s.site) already has an adapter named \"\(s.name)\"")
            }
            layers[i].scriptAdapters.append(s)
        case .embed, .prefix:
            if modelScriptAdapters.contains(where: { $0.name == s.name && $0.placement == s.placement }) {
                throw ModelError("\(s.site) already has an adapter named \"\(s.name)\"")
            }
            modelScriptAdapters.append(s)
        }
    }

    /// Removes every script adapter named `name`; returns how many sites had one.
    @discardableResult
    public func detachScriptAdapter(_ name: String) -> Int {
        var n = 0
        func drop(_ list: inout [ScriptAdapter]) { let c = list.count; list.removeAll { $0.name == name }; n += c - list.count }
        drop(&modelScriptAdapters)
        for layer in layers {
            for l in layer.linears { drop(&l.scriptAdapters) }
            drop(&layer.scriptAdapters)
        }
        if let head = lmHead { drop(&head.scriptAdapters) }
        return n
    }

    /// Positions [B, P + T] for a prefix of p virtual tokens: 0..<p, then the given ones + p.
    static func prefixedPositions(_ pos: Tensor, prefix p: Int, batch b: Int, length t: Int) throws -> Tensor {
        if pos.dtype.isFloat || pos.shape != [b, t] {
            throw ModelError("position_ids must be an integer tensor of shape \(Shape.describe([b, t])), got \(pos.dtype.name) \(Shape.describe(pos.shape))")
        }
        var v = [Float](repeating: 0, count: b * (p + t))
        for r in 0..<b {
            for j in 0..<p { v[r * (p + t) + j] = Float(j) }
            for j in 0..<t { v[r * (p + t) + p + j] = Float(pos.intValue(at: r * t + j) + Int64(p)) }
        }
        return try Tensor(v, shape: [b, p + t]).converted(to: .i64)
    }

    /// The additive mask [B, 1, P + T, P + T] of a packed row with p virtual tokens in front:
    /// the prefix is causal among itself, and every token sees it plus what its segment allows
    /// (so each example meets the prefix as if it had been prepended to that example alone).
    static func prefixMask(_ seg: Tensor, prefix p: Int, batch b: Int, length t: Int) throws -> Tensor {
        let base = try PackedInputs.attentionMask(seg, batch: b, length: t)   // validates seg
        let tt = p + t
        let mask = try Tensor.full([b, 1, tt, tt], -Double.infinity)
        for r in 0..<b {
            for i in 0..<tt {
                let row = (r * tt + i) * tt
                if i < p {
                    for j in 0...i { mask.f32[row + j] = 0 }           // the prefix: causal among itself
                } else {
                    for j in 0..<p { mask.f32[row + j] = 0 }           // every token sees the prefix
                    let src = (r * t + (i - p)) * t
                    for j in 0..<t { mask.f32[row + p + j] = base.f32[src + j] }
                }
            }
        }
        return mask
    }
}
