// Where LoRA adapters go and how big they are: PEFT's target rules (a list of name suffixes, a
// full-match regular expression, "all-linear", or a predicate), layers_to_transform, and the
// rank/alpha patterns, resolved against a model's linear layers.

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
    static func patternMatches(_ key: String, _ name: String) -> Bool {
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
        var r = cfg.r, alpha = cfg.alpha
        for (k, v) in cfg.rankPattern.sorted(by: { $0.key < $1.key }) where patternMatches(k, m.name) { r = v }
        for (k, v) in cfg.alphaPattern.sorted(by: { $0.key < $1.key }) where patternMatches(k, m.name) { alpha = v }
        return (r, alpha)
    }

    /// Adds a fresh adapter (A initialised, B zero) to each selected module; returns them.
    @discardableResult
    public static func add(_ model: LlamaModel, _ cfg: LoRAConfig) throws -> [LinearModule] {
        if cfg.r < 1 { throw ModelError("r must be >= 1, got \(cfg.r)") }
        if !(cfg.dropout >= 0 && cfg.dropout < 1) { throw ModelError("dropout must be in [0, 1), got \(cfg.dropout)") }
        if !["kaiming", "gaussian"].contains(cfg.initMethod) {
            throw ModelError("init \"\(cfg.initMethod)\" is not supported yet (supported: kaiming, gaussian)")
        }
        let selected = try select(model.linears, cfg)
        if let clash = selected.first(where: { $0.adapter(named: cfg.name) != nil }) {
            throw ModelError("\(clash.name) already has an adapter named \"\(cfg.name)\"")
        }
        for (i, m) in selected.enumerated() {
            let (r, alpha) = rankAndAlpha(m, cfg)
            if r < 1 { throw ModelError("rank_pattern gives \(m.name) rank \(r); ranks must be >= 1") }
            let seed = cfg.seed &* 1_000_003 &+ UInt64(i)
            let a: Tensor
            if cfg.initMethod == "gaussian" {
                a = try Tensor.randn([r, m.inFeatures], seed: seed, std: 1 / Double(r))
            } else {
                let bound = 1 / Double(m.inFeatures).squareRoot()
                a = try Tensor.rand([r, m.inFeatures], seed: seed, lo: -bound, hi: bound)
            }
            let b = try Tensor(shape: [m.outFeatures, r], dtype: .f32)
            a.requiresGrad = true
            b.requiresGrad = true
            try m.addAdapter(cfg.name, LoRAAdapter(a: a, b: b, alpha: alpha, rslora: cfg.rslora, dropout: cfg.dropout))
        }
        return selected
    }
}
