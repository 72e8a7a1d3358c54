// The optimizer interface shared by AdamW and SGD: named f32 leaf parameters, step() over the
// parameters that have gradients, zeroGrad(), a settable learning rate, and a state (per-param
// tensors plus the step count) that can be saved and loaded back to continue bit for bit.

import Tensor

/// An optimizer's resumable state: tensors keyed "<param name>.<slot>" and the step count.
public struct OptimizerState {
    public var tensors: [String: Tensor]
    public var step: Int
    public init(tensors: [String: Tensor], step: Int) {
        self.tensors = tensors
        self.step = step
    }
}

public protocol Optimizer: AnyObject {
    /// The parameters, by name, in the order given.
    var params: [(name: String, tensor: Tensor)] { get }
    /// The learning rate of the next step (>= 0).
    var lr: Double { get set }
    /// Steps taken so far.
    var stepCount: Int { get }
    /// One update of every parameter that has a gradient (parameters without one are skipped).
    func step() throws
    /// A copy of the state (tensors are copies, not views of the optimizer's buffers).
    func state() throws -> OptimizerState
    /// Replaces the state; names and shapes must match this optimizer's parameters.
    func loadState(_ state: OptimizerState) throws
}

extension Optimizer {
    /// Drops every parameter's gradient (grad = nil).
    public func zeroGrad() {
        for p in params { p.tensor.grad = nil }
    }

    public func setLR(_ value: Double) throws {
        try OptimizerChecks.lr(value)
        lr = value
    }
}

/// Shared validation of parameters, hyperparameters and loaded state.
enum OptimizerChecks {
    static func params(_ params: [(String, Tensor)], _ who: String) throws -> [(name: String, tensor: Tensor)] {
        var seen = Set<String>()
        for (name, t) in params {
            if !seen.insert(name).inserted { throw TrainError("\(who): parameter name \"\(name)\" appears twice") }
            if t.dtype != .f32 { throw TrainError("\(who): parameter \"\(name)\" must be an f32 tensor, got \(t.dtype.name)") }
            if !t.isLeaf { throw TrainError("\(who): parameter \"\(name)\" is not a leaf tensor (it was computed by the graph; detach() it)") }
            if !t.requiresGrad { throw TrainError("\(who): parameter \"\(name)\" does not require gradients (set requires_grad = true)") }
        }
        return params.map { (name: $0.0, tensor: $0.1) }
    }

    static func lr(_ v: Double) throws {
        if !(v >= 0 && v.isFinite) { throw TrainError("lr must be a finite number >= 0, got \(v)") }
    }

    /// The parameter's gradient when it has one usable for an update, nil when absent.
    static func grad(_ name: String, _ t: Tensor, _ who: String) throws -> Tensor? {
        guard let g = t.grad else { return nil }
        if g.dtype != .f32 || g.shape != t.shape {
            throw TrainError("\(who): the gradient of \"\(name)\" is \(g.dtype.name) \(Shape.describe(g.shape)), expected f32 \(Shape.describe(t.shape))")
        }
        return g
    }

    /// Checks a loaded state against the parameters: every key must be "<param>.<slot>" for a
    /// known parameter and slot, shapes must match, and a parameter has all slots or none.
    /// Returns f32 copies by parameter name and slot.
    static func state(_ s: OptimizerState, params: [(name: String, tensor: Tensor)], slots: [String],
                      _ who: String) throws -> [String: [String: Tensor]] {
        if s.step < 0 { throw TrainError("\(who): state step must be >= 0, got \(s.step)") }
        let byName = Dictionary(params.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        var out: [String: [String: Tensor]] = [:]
        for (key, t) in s.tensors.sorted(by: { $0.key < $1.key }) {
            guard let slot = slots.first(where: { key.hasSuffix("." + $0) }) else {
                throw TrainError("\(who): unexpected state entry \"\(key)\" (expected \"<param>.\(slots.joined(separator: "\" or \"<param>."))\")")
            }
            let name = String(key.dropLast(slot.count + 1))
            guard let p = byName[name] else {
                throw TrainError("\(who): state entry \"\(key)\" names no parameter of this optimizer (\"\(name)\")")
            }
            if t.shape != p.shape {
                throw TrainError("\(who): state entry \"\(key)\" has shape \(Shape.describe(t.shape)), the parameter \(Shape.describe(p.shape))")
            }
            if !t.dtype.isFloat { throw TrainError("\(who): state entry \"\(key)\" must be a float tensor, got \(t.dtype.name)") }
            let c = t.dtype == .f32 ? try t.copy() : try t.asF32()
            out[name, default: [:]][slot] = c
        }
        for (name, entries) in out where entries.count != slots.count {
            let missing = slots.filter { entries[$0] == nil }.map { "\(name).\($0)" }
            throw TrainError("\(who): state is missing \"\(missing.joined(separator: "\", \""))\"")
        }
        return out
    }
}
