// Hand-written parsing of a subcommand's arguments: options (`--name value`, `--name=value`,
// flags, `--` to end them), positional arguments, typed option values, and the two kinds of
// failure a command reports with their exit codes (2: the command line is wrong; 1: the work
// failed).

import Foundation
import IO

enum ExitStatus {
    static let success: Int32 = 0
    static let failure: Int32 = 1
    static let usage: Int32 = 2

    /// The paragraph every help text ends with (after a blank line).
    static let helpText = """

    exit status:
      0  success
      1  runtime failure (unreadable or invalid model directory, script error, I/O error)
      2  usage error (unknown command or option, missing or bad value, missing file or directory)
    """
}

/// The command line is wrong (exit 2); the message says what was expected.
struct UsageError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// The command could not do its work (exit 1).
struct CommandFailure: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// What a command accepts.
struct CommandSpec {
    enum Option {
        case flag
        /// Takes a value; the text says what it should be ("an integer >= 1").
        case value(String)
    }
    /// Options by name without the dashes ("max-tokens"); "help" is always accepted.
    var options: [String: Option] = [:]
    /// Names of the required positional arguments, in order ("MODEL_DIR").
    var positionals: [String] = []
    /// Arguments after the positionals (and any options right after them) are kept unparsed for
    /// a script (`run`, `sweep`).
    var passThrough = false
}

struct CommandLineArgs {
    let command: String
    private(set) var positionals: [String] = []
    private(set) var values: [String: String] = [:]
    private(set) var flags: Set<String> = []
    /// Arguments kept for a script (passThrough commands only).
    private(set) var rest: [String] = []

    var wantsHelp: Bool { flags.contains("help") }

    init(command: String, _ args: [String], _ spec: CommandSpec) throws {
        self.command = command
        var i = 0
        var optionsEnded = false
        let known = spec.options.keys.sorted().map { "--" + $0 } + ["--help"]
        while i < args.count {
            let arg = args[i]
            let positionalsDone = positionals.count == spec.positionals.count
            if spec.passThrough && positionalsDone {
                // After the script: only this command's own options, then the script's arguments.
                guard !optionsEnded, arg.hasPrefix("--"), arg != "--help",
                      spec.options[Self.name(of: arg)] != nil else {
                    rest = Array(args[i...]); break
                }
            }
            if optionsEnded || !arg.hasPrefix("-") || arg == "-" {
                guard positionals.count < spec.positionals.count else {
                    throw UsageError("unexpected argument '\(arg)'" + (spec.positionals.isEmpty ? " (this command takes no arguments)"
                        : " (expected \(spec.positionals.joined(separator: " ")) and options)"))
                }
                positionals.append(arg)
                i += 1
                continue
            }
            if arg == "--" { optionsEnded = true; i += 1; continue }
            if arg == "-h" || arg == "--help" { flags.insert("help"); i += 1; continue }
            guard arg.hasPrefix("--") else {
                throw UsageError("unknown option '\(arg)' (expected one of: \(known.joined(separator: ", ")))")
            }
            let name = Self.name(of: arg)
            let inline: String? = arg.firstIndex(of: "=").map { String(arg[arg.index(after: $0)...]) }
            // An option given twice is an error: which one was meant cannot be guessed.
            if spec.options[name] != nil && (values[name] != nil || flags.contains(name)) {
                throw UsageError("option --\(name) is given more than once")
            }
            switch spec.options[name] {
            case nil:
                throw UsageError("unknown option '--\(name)' (expected one of: \(known.joined(separator: ", ")))")
            case .flag:
                if inline != nil { throw UsageError("option --\(name) takes no value") }
                flags.insert(name)
                i += 1
            case .value(let what):
                if let v = inline {
                    values[name] = v
                    i += 1
                } else {
                    guard i + 1 < args.count else { throw UsageError("option --\(name) needs a value (\(what))") }
                    values[name] = args[i + 1]
                    i += 2
                }
            }
        }
        if !wantsHelp && positionals.count < spec.positionals.count {
            let missing = spec.positionals[positionals.count]
            throw UsageError("missing \(missing) (usage: qlora \(command) \(spec.positionals.joined(separator: " ")) ...)")
        }
    }

    private static func name(of option: String) -> String {
        let body = option.drop(while: { $0 == "-" })
        return String(body.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    }

    func has(_ flag: String) -> Bool { flags.contains(flag) }
    func string(_ name: String) -> String? { values[name] }

    /// An integer >= `min`; `what` describes the expected value when that says more.
    func int(_ name: String, min: Int, default d: Int, what: String? = nil) throws -> Int {
        guard let text = values[name] else { return d }
        guard let v = Int(text), v >= min else {
            throw UsageError("option --\(name) expects \(what ?? "an integer >= \(min)"), got '\(text)'")
        }
        return v
    }

    /// A finite number in `range`; `what` describes the range for the message.
    func double(_ name: String, _ range: ClosedRange<Double>, what: String, default d: Double) throws -> Double {
        guard let text = values[name] else { return d }
        guard let v = Double(text), v.isFinite, range.contains(v) else {
            throw UsageError("option --\(name) expects \(what), got '\(text)'")
        }
        return v
    }

    func choice(_ name: String, _ allowed: [String]) throws -> String? {
        guard let v = values[name] else { return nil }
        guard allowed.contains(v) else {
            throw UsageError("option --\(name) expects one of \(allowed.joined(separator: ", ")), got '\(v)'")
        }
        return v
    }

    /// A model argument: a directory, or a Hugging Face repo id ("org/name[@revision]") found in
    /// the local Hugging Face cache (HubCache); anything else is a usage error.
    static func modelDirectory(_ arg: String) throws -> String {
        let path: String
        do { path = try HubCache.resolve(arg) } catch let e as IOError { throw UsageError("MODEL_DIR: \(e.description)") }
        return try existingModel(path, "MODEL_DIR")
    }

    /// A model: a Hugging Face directory, or a GGUF file.
    static func existingModel(_ path: String, _ what: String) throws -> String {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
            guard GGUFModel.isGGUF(path) else { throw UsageError("\(what) '\(path)' is not a directory (nor a GGUF file)") }
            return path
        }
        return try existingDirectory(path, what)
    }

    /// A path argument that must be an existing directory (`what` names it: "MODEL_DIR").
    static func existingDirectory(_ path: String, _ what: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw UsageError("\(what) '\(path)' does not exist (expected a directory)")
        }
        guard isDir.boolValue else { throw UsageError("\(what) '\(path)' is not a directory") }
        return path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }
}

/// Writes to standard error.
func printError(_ text: String) {
    FileHandle.standardError.write((text + "\n").data(using: .utf8) ?? Data())
}

/// "1.50 MiB": bytes in binary units.
func formatBytes(_ n: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n), u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(n) B" : String(format: "%.2f %@", v, units[u])
}

/// "1,234,567".
func formatCount(_ n: Int) -> String {
    let digits = String(n.magnitude)
    var out = ""
    for (i, ch) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(ch)
    }
    return n < 0 ? "-" + out : out
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
