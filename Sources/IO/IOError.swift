// IOError: the one error type the IO layer throws for file problems (safetensors reading and
// writing, reading JSON files). Its description is "<path>: <problem>" so that a message shown
// to a Lua script names the file it is about. Also: small POSIX helpers (errno text, reading a
// whole file) shared by the other files of this target.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An error about a file: which file (`path`, as the caller spelled it) and what went wrong
/// (`reason`, a short lowercase phrase). `description` is `"<path>: <reason>"`.
public struct IOError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file the error is about, exactly as passed by the caller.
    public let path: String
    /// What went wrong, without the path.
    public let reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "\(path): \(reason)" }
}

/// The text for an errno value (e.g. "No such file or directory").
@usableFromInline
internal func errnoText(_ code: Int32) -> String {
    if let c = strerror(code) {
        return String(cString: c)
    }
    return "errno \(code)"
}

/// Reads a whole regular file into memory. Throws an IOError naming `path` if it is missing,
/// a directory, or unreadable.
public func readFileBytes(path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 {
        throw IOError(path: path, reason: "cannot open: \(errnoText(errno))")
    }
    defer { _ = close(fd) }
    var st = stat()
    if fstat(fd, &st) != 0 {
        throw IOError(path: path, reason: "cannot stat: \(errnoText(errno))")
    }
    if (st.st_mode & S_IFMT) == S_IFDIR {
        throw IOError(path: path, reason: "is a directory, not a file")
    }
    if (st.st_mode & S_IFMT) != S_IFREG {
        throw IOError(path: path, reason: "is not a regular file")
    }
    // Read straight into an array of the stat size, then keep reading in case the file grew.
    let expected = max(0, Int(st.st_size))
    var result = [UInt8](repeating: 0, count: expected)
    var filled = 0
    while true {
        if filled == result.count {
            result.append(contentsOf: repeatElement(0, count: max(1 << 16, result.count / 2)))
        }
        let n = result.withUnsafeMutableBytes { buf in
            read(fd, buf.baseAddress! + filled, buf.count - filled)
        }
        if n < 0 {
            if errno == EINTR { continue }
            throw IOError(path: path, reason: "read failed: \(errnoText(errno))")
        }
        if n == 0 { break }
        filled += n
    }
    result.removeSubrange(filled...)
    return result
}
