// Model names as Hugging Face spells them ("org/name", "org/name@revision") resolved offline to a
// snapshot directory of the local Hugging Face cache, laid out as huggingface_hub lays it out:
//   ROOT/models--org--name/refs/<revision>     a file holding the snapshot's commit hash
//   ROOT/models--org--name/snapshots/<hash>/   the files (symlinks into ../../blobs)
// ROOT is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. A revision may also be
// a commit hash with a snapshot of its own. Nothing is ever downloaded: a model that is not there
// is an error that says where qlora looked.

import Foundation

public enum HubCache {
    /// The cache root, by huggingface_hub's precedence.
    public static func root(_ env: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let c = env["HF_HUB_CACHE"], !c.isEmpty { return c }
        if let h = env["HF_HOME"], !h.isEmpty { return h + "/hub" }
        let home = env["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/.cache/huggingface/hub"
    }

    /// Whether `s` reads as a repo id ("org/name", optionally "@revision") rather than a path.
    public static func isRepoId(_ s: String) -> Bool {
        let (repo, rev) = split(s)
        let parts = repo.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy(isNamePart) else { return false }
        if let rev = rev {
            let segs = rev.split(separator: "/", omittingEmptySubsequences: false)
            guard !segs.isEmpty, segs.allSatisfy(isNamePart) else { return false }
        }
        return true
    }

    /// `s` itself when it exists as a path or is not a repo id; else the snapshot directory of the
    /// cached repo. Throws when `s` is a repo id the cache does not hold.
    public static func resolve(_ s: String, _ env: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        if FileManager.default.fileExists(atPath: s) || !isRepoId(s) { return s }
        let (repo, rev) = split(s)
        let revision = rev ?? "main"
        let base = root(env)
        let folder = base + "/models--" + repo.replacingOccurrences(of: "/", with: "--")
        func missing(_ why: String) -> IOError {
            IOError(path: s, reason: "not a path, and not in the Hugging Face cache as \(repo) at revision \(revision): \(why) "
                + "(looked in \(folder); the cache is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub; "
                + "qlora downloads nothing)")
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw missing("no such model folder")
        }
        var hash = revision
        let ref = folder + "/refs/" + revision
        if FileManager.default.fileExists(atPath: ref) {
            guard let data = FileManager.default.contents(atPath: ref), data.count <= 256,
                  let text = String(data: data, encoding: .utf8) else { throw missing("refs/\(revision) is unreadable") }
            hash = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !hash.isEmpty, hash.allSatisfy({ $0.isHexDigit }) else { throw missing("refs/\(revision) does not hold a commit hash") }
        } else if !(revision.count == 40 && revision.allSatisfy { $0.isHexDigit }) {
            throw missing("no refs/\(revision)")
        }
        let snapshot = folder + "/snapshots/" + hash
        guard FileManager.default.fileExists(atPath: snapshot, isDirectory: &isDir), isDir.boolValue else {
            throw missing("no snapshots/\(hash)")
        }
        return snapshot
    }

    private static func split(_ s: String) -> (String, String?) {
        guard let at = s.firstIndex(of: "@") else { return (s, nil) }
        return (String(s[..<at]), String(s[s.index(after: at)...]))
    }

    // a name component: letters, digits, '.', '_' and '-', not starting with '.' or '-'
    private static func isNamePart(_ p: Substring) -> Bool {
        guard let first = p.first, first.isLetter || first.isNumber || first == "_", p.count <= 96 else { return false }
        return p.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "." || $0 == "_" || $0 == "-" }
    }
}
