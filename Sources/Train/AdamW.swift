// AdamW (torch.optim.AdamW): decoupled weight decay, bias-corrected moments. The update is one
// fused C kernel per parameter (ql_adamw_step_f32_hp) with PyTorch's operation order, so five
// steps agree with PyTorch to f32 rounding. One step count serves every parameter (PyTorch
// counts per parameter; the two differ only for a parameter skipped on some steps).

import CKernels
import Tensor

public final class AdamW: Optimizer {
    public let params: [(name: String, tensor: Tensor)]
    public var lr: Double
    public let beta1: Double
    public let beta2: Double
    public let eps: Double
    public let weightDecay: Double
    public private(set) var stepCount = 0
    /// exp_avg and exp_avg_sq by parameter name, created on a parameter's first update.
    private var moments: [String: (m: Tensor, v: Tensor)] = [:]

    public init(params: [(String, Tensor)], lr: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999),
                eps: Double = 1e-8, weightDecay: Double = 1e-2) throws {
        try OptimizerChecks.lr(lr)
        for (i, b) in [betas.0, betas.1].enumerated() where !(b >= 0 && b < 1) {
            throw TrainError("betas[\(i + 1)] must be in [0, 1), got \(b)")
        }
        if !(eps > 0 && eps.isFinite) { throw TrainError("eps must be a finite number > 0, got \(eps)") }
        if !(weightDecay >= 0 && weightDecay.isFinite) { throw TrainError("weight_decay must be a finite number >= 0, got \(weightDecay)") }
        self.params = try OptimizerChecks.params(params, "adamw")
        self.lr = lr
        beta1 = betas.0
        beta2 = betas.1
        self.eps = eps
        self.weightDecay = weightDecay
    }

    public func step() throws {
        var work: [(Tensor, Tensor, Tensor, Tensor)] = []
        for (name, p) in params {
            guard let g = try OptimizerChecks.grad(name, p, "adamw") else { continue }
            let s = try moments[name] ?? (try Tensor(shape: p.shape), try Tensor(shape: p.shape))
            moments[name] = s
            work.append((p, g, s.m, s.v))
        }
        stepCount += 1
        for (p, g, m, v) in work {
            ql_adamw_step_f32_hp(p.f32, g.f32, m.f32, v.f32, Int64(p.count), lr, beta1, beta2, eps,
                                 weightDecay, Int64(stepCount))
        }
    }

    public func state() throws -> OptimizerState {
        var t: [String: Tensor] = [:]
        for (name, s) in moments {
            t[name + ".exp_avg"] = try s.m.copy()
            t[name + ".exp_avg_sq"] = try s.v.copy()
        }
        return OptimizerState(tensors: t, step: stepCount)
    }

    public func loadState(_ state: OptimizerState) throws {
        let s = try OptimizerChecks.state(state, params: params, slots: ["exp_avg", "exp_avg_sq"], "adamw.load_state")
        moments = s.mapValues { (m: $0["exp_avg"]!, v: $0["exp_avg_sq"]!) }
        stepCount = state.step
    }
}
