// Learning-rate schedules: constant, linear decay and cosine decay, each after a linear warmup
// from 0, never below min_lr after warmup. Steps count from 1, as optimizer steps do.

import Foundation

public enum LRScheduleKind: String, CaseIterable {
    case constant, linear, cosine
}

public struct LRSchedule: Equatable {
    public var kind: LRScheduleKind
    public var peak: Double
    public var warmup: Int
    public var total: Int
    public var minLR: Double

    public init(kind: LRScheduleKind, peak: Double, warmup: Int = 0, total: Int, minLR: Double = 0) throws {
        if !(peak >= 0 && peak.isFinite) { throw TrainError("lr must be a finite number >= 0, got \(peak)") }
        if warmup < 0 { throw TrainError("warmup must be >= 0, got \(warmup)") }
        if total < 1 { throw TrainError("the schedule needs at least 1 step, got \(total)") }
        if !(minLR >= 0 && minLR <= peak) { throw TrainError("min_lr must be in [0, lr], got \(minLR)") }
        self.kind = kind
        self.peak = peak
        self.warmup = warmup
        self.total = total
        self.minLR = minLR
    }

    /// The learning rate of optimizer step `step` (1-based).
    public func lr(at step: Int) -> Double {
        if warmup > 0 && step <= warmup { return peak * Double(step) / Double(warmup) }
        let span = max(total - warmup, 1)
        let progress = min(max(Double(step - warmup) / Double(span), 0), 1)
        switch kind {
        case .constant: return peak
        case .linear: return minLR + (peak - minLR) * (1 - progress)
        case .cosine: return minLR + (peak - minLR) * 0.5 * (1 + cos(Double.pi * progress))
        }
    }
}

public struct TrainError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
