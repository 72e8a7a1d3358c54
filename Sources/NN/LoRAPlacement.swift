// Where LoRA adapters go and how big they are: PEFT's target rules (a list of name suffixes, a
// full-match regular expression, "all-linear", or a predicate), layers_to_transform, and the
// rank/alpha patterns, resolved against a model's linear layers; then the adapters' initial
// values (kaiming, gaussian, PiSSA, LoftQ) and DoRA magnitudes.

import Foundation
import Tensor

public enum LoRATargets {
    /// Entries match a module whose name equals one or ends with "." + it.
    case names([String])
    /// A regular expression that must match the whole name.
    case regex(String)
    /// Every linear layer except the output head.
    case allLinear
    /// A predicate over the module.
    case predicate((LinearModule) throws -> Bool)
}

public struct LoRAConfig {
    public var name = "default"
    public var r = 8
    public var alpha = 8.0
    public var dropout = 0.0
    public var targets: LoRATargets = .names(["q_proj", "v_proj"])
    public var layers: [Int]? = nil
    public var rankPattern: [String: Int] = [:]
    public var alphaPattern: [String: Double] = [:]
    public var rslora = false
    public var initMethod = "kaiming"
    public var seed: UInt64 = 0
    /// DoRA: each adapter also gets a magnitude vector (PEFT's use_dora).
    public var dora = false
    /// LoftQ's alternating rounds (PEFT's loftq_iter).
    public var loftqIter = 1

    public static let initMethods = ["kaiming", "gaussian", "pissa", "loftq"]

    public init() {}

    /// The PEFT-style target_modules value for adapter_config.json.
    public var targetModulesDescription: [String]? {
        if case .names(let n) = targets { return n }
        return nil
    }
}

public enum LoRAPlacement {
    /// True when `pattern` (a key of rank_pattern/alpha_pattern) matches `name` as PEFT does:
    /// the name is the key, or ends with "." + key (keys may be regular expressions).
    public static func patternMatches(_ key: String, _ name: String) -> Bool {
        if name == key || name.hasSuffix("." + key) { return true }
        return fullMatch("(.*\\.)?(\(key))", name)
    }

    static func fullMatch(_ pattern: String, _ s: String) -> Bool {
        guard let re = try? NSRegularExpression(pattern: "^(?:\(pattern))$") else { return false }
        return re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
    }

    /// The modules an adapter config selects, in model order.
    public static func select(_ modules: [LinearModule], _ cfg: LoRAConfig) throws -> [LinearModule] {
        var out: [LinearModule] = []
        if case .regex(let p) = cfg.targets, (try? NSRegularExpression(pattern: p)) == nil {
            throw ModelError("targets: \"\(p)\" is not a valid regular expression")
        }
        var matchedEntries = Set<String>()
        for m in modules {
            var hit: Bool
            switch cfg.targets {
            case .allLinear: hit = m.layer != nil
            case .regex(let p): hit = fullMatch(p, m.name)
            case .names(let names):
                hit = false
                for n in names where m.name == n || m.name.hasSuffix("." + n) { hit = true; matchedEntries.insert(n) }
            case .predicate(let f): hit = try f(m)
            }
            if hit, let layers = cfg.layers {
                hit = m.layer.map { layers.contains($0) } ?? false
            }
            if hit { out.append(m) }
        }
        if case .names(let names) = cfg.targets {
            let missing = names.filter { !matchedEntries.contains($0) }
            if !missing.isEmpty {
                let kinds = Array(Set(modules.map { $0.kind })).sorted()
                throw ModelError("targets: no module matches \(missing.map { "\"\($0)\"" }.joined(separator: ", ")) (module kinds: \(kinds.joined(separator: ", ")))")
            }
        }
        if out.isEmpty { throw ModelError("targets select no module") }
        return out
    }

    /// Rank and alpha for one module after the patterns.
    public static func rankAndAlpha(_ m: LinearModule, _ cfg: LoRAConfig) -> (Int, Double) {
        // As PEFT: the first matching key wins, keys in sorted order (the order PEFT saves them in).
        let r = cfg.rankPattern.sorted(by: { $0.key < $1.key }).first { patternMatches($0.key, m.name) }?.value ?? cfg.r
        let alpha = cfg.alphaPattern.sorted(by: { $0.key < $1.key }).first { patternMatches($0.key, m.name) }?.value ?? cfg.alpha
        return (r, alpha)
    }

    /// Adds a fresh adapter to each selected module; returns them. kaiming / gaussian: A random,
    /// B zero. pissa / loftq: A and B from an SVD, and the base weight changes (see LoRAInit);
    /// `checkpoint` may give a 4-bit module's full-precision weight (nil: use the dequantized
    /// one). With `dora`, the magnitude starts as the row norms of W + s B A.
    @discardableResult
    public static func add(_ model: LlamaModel, _ cfg: LoRAConfig,
                           checkpoint: ((LinearModule) throws -> Tensor?)? = nil) throws -> [LinearModule] {
        if cfg.r < 1 { throw ModelError("r must be >= 1, got \(cfg.r)") }
        if !(cfg.dropout >= 0 && cfg.dropout < 1) { throw ModelError("dropout must be in [0, 1), got \(cfg.dropout)") }
        if !cfg.alpha.isFinite { throw ModelError("alpha must be a finite number, got \(cfg.alpha)") }
        if let bad = cfg.alphaPattern.first(where: { !$0.value.isFinite }) {
            throw ModelError("alpha_pattern[\"\(bad.key)\"] must be a finite number, got \(bad.value)")
        }
        if !LoRAConfig.initMethods.contains(cfg.initMethod) {
            throw ModelError("init \"\(cfg.initMethod)\" is not supported yet (supported: \(LoRAConfig.initMethods.joined(separator: ", ")))")
        }
        if cfg.loftqIter < 1 { throw ModelError("loftq_iter must be >= 1, got \(cfg.loftqIter)") }
        let selected = try select(model.linears, cfg)
        if let clash = selected.first(where: { $0.adapter(named: cfg.name) != nil }) {
            throw ModelError("\(clash.name) already has an adapter named \"\(cfg.name)\"")
        }
        // Check everything before any base weight changes.
        var plan: [(LinearModule, Int, Double)] = []
        for m in selected {
            let (r, alpha) = rankAndAlpha(m, cfg)
            if r < 1 { throw ModelError("rank_pattern gives \(m.name) rank \(r); ranks must be >= 1") }
            if cfg.initMethod == "pissa" || cfg.initMethod == "loftq" {
                if cfg.initMethod == "loftq" && !m.isQuantized {
                    throw ModelError("\(m.name): loftq needs a 4-bit base (load the model with quant = {...}); this layer is dense")
                }
                if r > min(m.inFeatures, m.outFeatures) {
                    throw ModelError("\(m.name): \(cfg.initMethod) needs r <= min(in, out) = \(min(m.inFeatures, m.outFeatures)), got \(r)")
                }
                let probe = LoRAConfig.scaling(r: r, alpha: alpha, rslora: cfg.rslora)
                if !(probe > 0 && probe.isFinite) {
                    throw ModelError("\(m.name): \(cfg.initMethod) needs a positive scaling (alpha > 0), got alpha \(alpha)")
                }
            }
            plan.append((m, r, alpha))
        }
        for (i, (m, r, alpha)) in plan.enumerated() {
            let scaling = LoRAConfig.scaling(r: r, alpha: alpha, rslora: cfg.rslora)
            let seed = cfg.seed &* 1_000_003 &+ UInt64(i)
            var a: Tensor, b: Tensor
            switch cfg.initMethod {
            case "pissa":
                (a, b) = try LoRAInit.pissa(m, r: r, scaling: scaling, source: LoRAInit.sourceWeight(m, checkpoint: checkpoint))
            case "loftq":
                (a, b) = try LoRAInit.loftq(m, r: r, scaling: scaling, iterations: cfg.loftqIter,
                                            source: LoRAInit.sourceWeight(m, checkpoint: checkpoint))
            case "gaussian":
                a = try Tensor.randn([r, m.inFeatures], seed: seed, std: 1 / Double(r))
                b = try Tensor(shape: [m.outFeatures, r], dtype: .f32)
            default:
                let bound = 1 / Double(m.inFeatures).squareRoot()
                a = try Tensor.rand([r, m.inFeatures], seed: seed, lo: -bound, hi: bound)
                b = try Tensor(shape: [m.outFeatures, r], dtype: .f32)
            }
            var magnitude: Tensor? = nil
            if cfg.dora {
                let mag = try m.doraWeightNorm(a: a, b: b, scaling: scaling)
                mag.requiresGrad = true
                magnitude = mag
            }
            a.requiresGrad = true
            b.requiresGrad = true
            try m.addAdapter(cfg.name, LoRAAdapter(a: a, b: b, magnitude: magnitude, alpha: alpha, rslora: cfg.rslora, dropout: cfg.dropout))
        }
        return selected
    }
}

extension LoRAConfig {
    /// alpha / r, or alpha / sqrt(r) with rsLoRA (as LoRAAdapter.scaling).
    public static func scaling(r: Int, alpha: Double, rslora: Bool) -> Double {
        rslora ? alpha / Double(r).squareRoot() : alpha / Double(r)
    }
}
