// `qlora bench tensor [--json]`: elementwise add and softmax (one row of n, and rows of 1024)
// throughput beside memcpy of the same traffic, and OpenBLAS sgemm GFLOP/s, all measured in this
// run (median of repeats).
//
// Traffic: add reads a and b and writes out (12 bytes per f32 element); softmax reads x and
// writes y (8 bytes per element). memcpy is timed copying half that many bytes, which moves the
// same traffic (a read and a write of each byte), so the two GB/s figures compare directly.

import CKernels
import COpenBLAS
import Foundation
import Tensor

enum Bench {
    static let help = """
    usage: qlora bench [tensor|quant|train|generate]... [--json] [train / generate options]

    Measures against references timed in the same run:
      tensor  add and softmax vs memcpy of the same traffic; OpenBLAS sgemm GFLOP/s
      quant   4-bit matmul vs OpenBLAS sgemm/sgemv on the dense weight; quantize and
              dequantize GB/s
      train   QLoRA steps (NF4 + double quantization, LoRA on all seven projections, AdamW):
              load time, tokens/s, peak RSS, FLOP utilisation vs sgemm; by default of the
              PyTorch peer's default configuration
      generate  greedy generation of a model through the KV cache: prompt processing and
              generation tokens/s (needs --model)
    Without a suite: tensor and quant.

    options:
      --json              one JSON object per measurement instead of text
    train options:
      --model PATH        a model directory (or anything q.load_model reads) instead of the
                          peer's configuration
      --seq N             tokens per sequence (256)
      --batch N           sequences per step (4)
      --r N               LoRA rank, alpha 2r (16)
      --steps N           timed steps after 2 warm-up steps (5)
      --compute LIST      f32, bf16 or f32,bf16 (f32,bf16)
      --checkpointing     gradient checkpointing on
    generate options (with --model, and --compute f32 or bf16):
      --prompt-tokens N   prompt length (128)
      --tokens N          new tokens (64)
      --quant nf4|fp4|none  4-bit on load, or dense (nf4)

    """ + ExitStatus.helpText
    static func run(_ args: [String]) -> Int32 {
        var json = false
        var suites: [String] = []
        var train = TrainOptions()
        var gen = GenerateOptions()
        var genOption = false
        var seen = Set<String>()
        var i = 0
        func usage(_ msg: String) -> Int32 {
            printError("qlora bench: \(msg)\nrun 'qlora bench --help' for usage")
            return 2
        }
        while i < args.count {
            let a = args[i]
            if a.hasPrefix("--") && a != "--help" {
                if seen.contains(a) { return usage("option \(a) given twice") }
                seen.insert(a)
            }
            switch a {
            case "--json": json = true
            case "--checkpointing": train.checkpointing = true
            case "--help", "-h":
                print(help)
                return 0
            case "tensor", "quant", "train", "generate": suites.append(a)
            case "--prompt-tokens", "--tokens", "--quant":
                guard i + 1 < args.count else { return usage("option \(a) needs a value") }
                let v = args[i + 1]
                i += 1
                genOption = true
                if a == "--quant" {
                    guard ["nf4", "fp4", "none"].contains(v) else { return usage("--quant must be nf4, fp4 or none, got '\(v)'") }
                    gen.quant = v
                } else {
                    guard let n = Int(v), n >= 1, n <= 1 << 16 else { return usage("\(a) must be an integer 1..65536, got '\(v)'") }
                    if a == "--tokens" { gen.tokens = n } else { gen.promptTokens = n }
                }
            case "--model", "--seq", "--batch", "--r", "--steps", "--compute":
                guard i + 1 < args.count else { return usage("option \(a) needs a value") }
                let v = args[i + 1]
                i += 1
                switch a {
                case "--model": train.model = v
                case "--compute":
                    let parts = v.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                    if parts.isEmpty || parts.contains(where: { $0 != "f32" && $0 != "bf16" }) {
                        return usage("--compute must be f32, bf16 or f32,bf16, got '\(v)'")
                    }
                    train.compute = v
                default:
                    guard let n = Int(v), n >= 1, n <= 1 << 20 else { return usage("\(a) must be an integer 1..1048576, got '\(v)'") }
                    switch a {
                    case "--seq": train.seq = n
                    case "--batch": train.batch = n
                    case "--r": train.r = n
                    default: train.steps = n
                    }
                }
            default:
                return usage("unknown argument '\(a)' (expected: tensor, quant, train, generate, --json, or their options)")
            }
            i += 1
        }
        let trainOnly = train.seq != nil || train.batch != nil || train.r != nil || train.steps != nil || train.checkpointing
        if trainOnly && !suites.contains("train") {
            if suites.isEmpty { suites = ["train"] } else { return usage("train options need the train suite") }
        }
        if genOption && !suites.contains("generate") {
            if suites.isEmpty { suites = ["generate"] } else { return usage("generate options need the generate suite") }
        }
        if (train.model != nil || train.compute != nil) && suites.isEmpty { suites = ["train"] }
        if (train.model != nil || train.compute != nil) && !suites.contains("train") && !suites.contains("generate") {
            return usage("--model and --compute need the train or generate suite")
        }
        if suites.contains("generate") {
            if train.model == nil { return usage("the generate suite needs --model PATH") }
            if let c = train.compute, c != "f32" && c != "bf16" { return usage("generate takes one --compute: f32 or bf16") }
        }
        if suites.isEmpty { suites = ["tensor", "quant"] }
        do {
            for s in suites {
                switch s {
                case "tensor": try tensorSuite(json: json)
                case "quant": try quantSuite(json: json)
                case "generate": try generateSuite(json: json, model: train.model, compute: train.compute, gen)
                default: try trainSuite(json: json, train)
                }
            }
        } catch {
            FileHandle.standardError.write("qlora bench: \(error)\n".data(using: .utf8) ?? Data())
            return 1
        }
        return 0
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Median seconds of `reps` runs of body (after one warm-up run); `before` runs untimed
    /// ahead of each one (e.g. to evict the caches).
    static func median(_ reps: Int, before: () -> Void = {}, _ body: () -> Void) -> Double {
        body()
        var times: [Double] = []
        for _ in 0..<reps {
            before()
            let t0 = now(); body(); times.append(now() - t0)
        }
        times.sort()
        return times[times.count / 2]
    }

    static func emit(_ json: Bool, _ fields: [(String, Any)]) {
        if json {
            let body = fields.map { k, v -> String in
                if let s = v as? String { return "\"\(k)\": \"\(s)\"" }
                if let d = v as? Double { return "\"\(k)\": \(String(format: "%.4g", d))" }
                return "\"\(k)\": \(v)"
            }
            print("{" + body.joined(separator: ", ") + "}")
        } else {
            print(fields.map { k, v -> String in
                if let d = v as? Double { return "\(k)=\(String(format: "%.3g", d))" }
                return "\(k)=\(v)"
            }.joined(separator: "  "))
        }
    }

    static func tensorSuite(json: Bool) throws {
        if !json { print("# qlora bench tensor: isa \(Runtime.isaName), \(Runtime.threads) threads") }
        for n in [1_000, 10_000, 100_000, 1_000_000, 10_000_000] {
            let a = try Tensor.randn([n], seed: 1), b = try Tensor.randn([n], seed: 2)
            let out = try Tensor(shape: [n], dtype: .f32, zeroed: true)
            let reps = max(5, min(200, 20_000_000 / n))
            let tAdd = median(reps) { ql_binary_f32(Int32(QL_BIN_ADD.rawValue), a.f32, 1, b.f32, 1, out.f32, Int64(n)) }
            let tSoftmax = median(reps) { ql_softmax_f32(a.f32, out.f32, 1, Int64(n)) }
            let row = min(n, 1024)
            let tSoftmaxRows = median(reps) { ql_softmax_f32(a.f32, out.f32, Int64(n / row), Int64(row)) }
            let src = try Tensor(shape: [n * 3], dtype: .f32), dst = try Tensor(shape: [n * 3], dtype: .f32)
            let tCopyAdd = median(reps) { memcpy(dst.raw, src.raw, n * 6) }      // 12n bytes of traffic
            let tCopySoftmax = median(reps) { memcpy(dst.raw, src.raw, n * 4) }  // 8n bytes of traffic
            let gb = 1e-9
            let addGBs = Double(12 * n) * gb / tAdd, copyAddGBs = Double(12 * n) * gb / tCopyAdd
            let smGBs = Double(8 * n) * gb / tSoftmax, copySmGBs = Double(8 * n) * gb / tCopySoftmax
            emit(json, [("op", "add"), ("n", n), ("gbps", addGBs), ("memcpy_gbps", copyAddGBs), ("ratio", addGBs / copyAddGBs)])
            let rowsGBs = Double(8 * (n / row) * row) * gb / tSoftmaxRows
            emit(json, [("op", "softmax"), ("n", n), ("row", n), ("gbps", smGBs), ("memcpy_gbps", copySmGBs), ("ratio", smGBs / copySmGBs)])
            if row != n {
                emit(json, [("op", "softmax"), ("n", n), ("row", row), ("gbps", rowsGBs), ("memcpy_gbps", copySmGBs), ("ratio", rowsGBs / copySmGBs)])
            }
        }
        let m = 1024
        let x = try Tensor.randn([m, m], seed: 3), w = try Tensor.randn([m, m], seed: 4)
        let y = try Tensor(shape: [m, m], dtype: .f32)
        let t = Runtime.withOpenBLASThreads { median(5) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(m), Int32(m), 1,
                        x.f32, Int32(m), w.f32, Int32(m), 0, y.f32, Int32(m))
        } }
        emit(json, [("op", "sgemm"), ("m", m), ("n", m), ("k", m), ("ms", t * 1e3), ("gflops", 2 * Double(m * m * m) / t * 1e-9)])
    }
}
