// The autograd tape: each op that reads a tensor needing gradients records a GradNode (its
// inputs and a closure that maps the output gradient to input gradients). backward() walks the
// nodes in reverse topological order and accumulates f32 gradients into leaves' `grad`.

import CKernels

public enum GradMode {
    /// False inside no_grad: ops record nothing.
    nonisolated(unsafe) public static var enabled = true

    /// Runs body with recording off, restoring the previous mode even if body throws.
    public static func withoutGrad<T>(_ body: () throws -> T) rethrows -> T {
        let saved = enabled
        enabled = false
        defer { enabled = saved }
        return try body()
    }
}

final class GradNode {
    let op: String
    private(set) var inputs: [Tensor]
    /// Maps the output gradient (f32, output shape) to one gradient per input (nil: none).
    private(set) var backward: ((Tensor) throws -> [Tensor?])?

    init(op: String, inputs: [Tensor], backward: @escaping (Tensor) throws -> [Tensor?]) {
        self.op = op
        self.inputs = inputs
        self.backward = backward
    }

    func run(_ g: Tensor) throws -> [Tensor?] {
        guard let body = backward else {
            throw TensorError("qlora.backward: this part of the graph was already used by a backward pass and freed (pass {retain_graph = true} to the first backward to use it again)")
        }
        return try body(g)
    }

    /// Lets go of the saved tensors once backward has used them (the node stays, empty).
    func free() {
        GraphReaper.hold(inputs)
        if let b = backward { GraphReaper.hold(b) }
        inputs.removeAll()
        backward = nil
        GraphReaper.drain()
    }

    /// Freeing a long chain of nodes would recurse once per node (tensor -> node -> input
    /// tensor -> ...) and overflow the stack; instead each node hands what it holds to a
    /// worklist (and lets go of it) and the outermost release drains the worklist in a loop.
    deinit {
        GraphReaper.hold(inputs)
        if let b = backward { GraphReaper.hold(b) }
        inputs.removeAll()
        backward = nil
        GraphReaper.drain()
    }
}

enum GraphReaper {
    nonisolated(unsafe) private static var pending: [Any] = []
    nonisolated(unsafe) private static var draining = false

    static func hold(_ tensors: [Tensor]) { for t in tensors { pending.append(t) } }
    static func hold(_ closure: Any) { pending.append(closure) }

    /// Releases everything held, unless an outer call is already doing so.
    static func drain() {
        if draining { return }
        draining = true
        while true {
            // Take the item out first and drop it afterwards: dropping it can free more nodes,
            // which append to `pending`, so no access to `pending` may be open at that point.
            var item: Any? = pending.popLast()
            if item == nil { break }
            item = nil
        }
        draining = false
    }
}

extension Tensor {
    /// True when gradients flow through this tensor.
    public var tracksGrad: Bool { requiresGrad || gradFn != nil }

    /// The name of the op that produced this tensor, if it is part of a graph.
    public var gradOp: String? { gradFn?.op }

    /// Attaches a node to `self` when recording is on and any input tracks gradients.
    @discardableResult
    public func recorded(_ op: String, _ inputs: [Tensor], _ backward: @escaping (Tensor) throws -> [Tensor?]) -> Tensor {
        if GradMode.enabled && inputs.contains(where: { $0.tracksGrad }) {
            gradFn = GradNode(op: op, inputs: inputs, backward: backward)
        }
        return self
    }

    /// A tensor sharing storage with this one, cut from the graph.
    public func detach() throws -> Tensor {
        try Tensor(storage: storage, dtype: dtype, shape: shape)
    }

    /// Clears the accumulated gradient.
    public func zeroGrad() { grad = nil }

    /// Backpropagates from this tensor. Without `gradient` the tensor must hold one element.
    /// Backpropagates from this tensor and then frees the graph's saved tensors, unless
    /// retainGraph is set (then backward may run through the same graph again).
    public func backward(gradient: Tensor? = nil, retainGraph: Bool = false) throws {
        if !tracksGrad {
            throw TensorError("qlora.backward: this tensor does not require gradients (no input had requires_grad = true, or it was computed inside no_grad)")
        }
        let seed: Tensor
        if let g = gradient {
            if g.shape != shape {
                throw TensorError("qlora.backward: gradient shape \(Shape.describe(g.shape)) does not match tensor shape \(Shape.describe(shape))")
            }
            seed = try g.asF32() === g ? g.copy() : g.asF32()
        } else {
            if count != 1 {
                throw TensorError("qlora.backward: the tensor has \(count) elements; backward() without a gradient needs a scalar (pass {gradient = t} for others)")
            }
            seed = try Tensor([1], shape: shape)
        }
        try GradMode.withoutGrad { try runBackward(seed, retainGraph: retainGraph) }
    }

    private func runBackward(_ seed: Tensor, retainGraph: Bool) throws {
        // Iterative post-order DFS: order[i] comes after everything that consumes it reversed.
        var order: [Tensor] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(Tensor, Int)] = [(self, 0)]
        visited.insert(ObjectIdentifier(self))
        while let (t, next) = stack.last {
            let inputs = t.gradFn?.inputs ?? []
            if next < inputs.count {
                stack[stack.count - 1].1 = next + 1
                let child = inputs[next]
                if child.tracksGrad && !visited.contains(ObjectIdentifier(child)) {
                    visited.insert(ObjectIdentifier(child))
                    stack.append((child, 0))
                }
            } else {
                order.append(t)
                stack.removeLast()
            }
        }
        var grads: [ObjectIdentifier: Tensor] = [ObjectIdentifier(self): seed]
        for t in order.reversed() {
            guard let g = grads.removeValue(forKey: ObjectIdentifier(t)) else { continue }
            if t.requiresGrad {
                try t.accumulateGrad(g)
            }
            guard let node = t.gradFn else { continue }
            let inputs = node.inputs
            let inputGrads = try node.run(g)
            if !retainGraph { node.free() }
            for (input, ig) in zip(inputs, inputGrads) {
                guard let ig = ig, input.tracksGrad else { continue }
                if ig.shape != input.shape {
                    throw TensorError("qlora.backward: internal error: \(node.op) gave a gradient of shape \(Shape.describe(ig.shape)) for an input of shape \(Shape.describe(input.shape))")
                }
                let key = ObjectIdentifier(input)
                if let existing = grads[key] {
                    let owned = try existing.uniquelyOwnedGrad()
                    let add = try ig.asF32()
                    ql_axpy_f32(1, add.f32, owned.f32, Int64(owned.count))
                    grads[key] = owned
                } else {
                    grads[key] = try ig.asF32()
                }
            }
        }
    }

    /// grad += g (f32), allocating grad on first use.
    func accumulateGrad(_ g: Tensor) throws {
        let gf = try g.asF32()
        if let existing = grad {
            ql_axpy_f32(1, gf.f32, existing.f32, Int64(existing.count))
        } else {
            grad = try gf.copy()
        }
    }

    /// Gradients produced by ops may share storage with other tensors; copy before adding in place.
    private func uniquelyOwnedGrad() throws -> Tensor {
        try asF32().copy()
    }
}

extension GradMode {
    /// Runs body with recording on, restoring the previous mode.
    public static func withGrad<T>(_ body: () throws -> T) rethrows -> T {
        let saved = enabled
        enabled = true
        defer { enabled = saved }
        return try body()
    }
}

extension Tensor {
    /// Gradient checkpointing: runs body(x) without keeping its graph, and in backward runs it
    /// again (with the random stream rewound, so dropout masks repeat) to get the gradients of
    /// x and of every parameter body uses. The node is recorded even when x needs no gradient,
    /// so parameters inside body still get theirs.
    public static func checkpoint(_ x: Tensor, _ body: @escaping (Tensor) throws -> Tensor) throws -> Tensor {
        let seed = RandomState.seed, offset = RandomState.offset
        let out = try GradMode.withoutGrad { try body(x.detach()) }
        if !GradMode.enabled { return out }
        out.gradFn = GradNode(op: "checkpoint", inputs: [x]) { g in
            let savedSeed = RandomState.seed, savedOffset = RandomState.offset
            RandomState.seed = seed
            RandomState.offset = offset
            defer { RandomState.seed = savedSeed; RandomState.offset = savedOffset }
            let input = try x.detach()
            input.requiresGrad = x.tracksGrad
            let y = try GradMode.withGrad { try body(input) }
            if !y.tracksGrad { return [nil] }
            try y.backward(gradient: g)
            return [x.tracksGrad ? input.grad : nil]
        }
        return out
    }
}
