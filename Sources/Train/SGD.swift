// SGD (torch.optim.SGD): optional L2 weight decay added to the gradient, momentum with
// dampening, Nesterov momentum. One fused C kernel per parameter (ql_sgd_step_f32_hp) with
// PyTorch's operation order; the momentum buffer starts as the first gradient, as in PyTorch.

import CKernels
import Tensor

public final class SGD: Optimizer {
    public let params: [(name: String, tensor: Tensor)]
    public var lr: Double
    public let momentum: Double
    public let dampening: Double
    public let nesterov: Bool
    public let weightDecay: Double
    public private(set) var stepCount = 0
    /// momentum_buffer by parameter name (only with momentum > 0), created on the first update.
    private var buffers: [String: Tensor] = [:]

    public init(params: [(String, Tensor)], lr: Double = 1e-3, momentum: Double = 0, dampening: Double = 0,
                nesterov: Bool = false, weightDecay: Double = 0) throws {
        try OptimizerChecks.lr(lr)
        if !(momentum >= 0 && momentum.isFinite) { throw TrainError("momentum must be a finite number >= 0, got \(momentum)") }
        if !dampening.isFinite { throw TrainError("dampening must be a finite number, got \(dampening)") }
        if !(weightDecay >= 0 && weightDecay.isFinite) { throw TrainError("weight_decay must be a finite number >= 0, got \(weightDecay)") }
        if nesterov && (momentum <= 0 || dampening != 0) {
            throw TrainError("nesterov momentum requires momentum > 0 and dampening = 0 (got momentum \(momentum), dampening \(dampening))")
        }
        self.params = try OptimizerChecks.params(params, "sgd")
        self.lr = lr
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov
        self.weightDecay = weightDecay
    }

    public func step() throws {
        var work: [(Tensor, Tensor, Tensor?, Bool)] = []
        for (name, p) in params {
            guard let g = try OptimizerChecks.grad(name, p, "sgd") else { continue }
            var buf: Tensor? = nil
            var first = false
            if momentum != 0 {
                if let b = buffers[name] { buf = b } else {
                    let b = try Tensor(shape: p.shape)
                    buffers[name] = b
                    buf = b
                    first = true
                }
            }
            work.append((p, g, buf, first))
        }
        stepCount += 1
        for (p, g, buf, first) in work {
            ql_sgd_step_f32_hp(p.f32, g.f32, buf?.f32, Int64(p.count), lr, momentum, dampening, weightDecay,
                               nesterov ? 1 : 0, first ? 1 : 0)
        }
    }

    public func state() throws -> OptimizerState {
        var t: [String: Tensor] = [:]
        for (name, b) in buffers { t[name + ".momentum_buffer"] = try b.copy() }
        return OptimizerState(tensors: t, step: stepCount)
    }

    public func loadState(_ state: OptimizerState) throws {
        let s = try OptimizerChecks.state(state, params: params, slots: ["momentum_buffer"], "sgd.load_state")
        if momentum == 0, let k = s.keys.sorted().first {
            throw TrainError("sgd.load_state: state entry \"\(k).momentum_buffer\" given, but this optimizer has no momentum")
        }
        buffers = s.mapValues { $0["momentum_buffer"]! }
        stepCount = state.step
    }
}
