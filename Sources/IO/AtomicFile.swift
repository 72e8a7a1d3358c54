// Every whole-file write of the project goes through here: the target is checked (only a regular
// file is ever replaced; a symbolic link is followed to the file it names), the bytes go to a
// temporary file `.NAME.tmp-<pid>-<hex>` beside the target, which is synced and renamed into
// place, and is removed on any error and when SIGINT, SIGTERM or SIGHUP ends the process
// mid-write (CKernels/cleanup.c). Also mkdir -p with messages that say which part is in the way.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CKernels

public enum AtomicFile {
    /// What kind of file a stat mode describes, for messages ("a character device").
    static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: return "a file"
        case S_IFDIR: return "a directory"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFIFO: return "a FIFO"
        case S_IFSOCK: return "a socket"
        case S_IFLNK: return "a symbolic link"
        default: return "not a regular file"
        }
    }

    /// The path a write to `path` replaces: `path` itself, or for a symbolic link the file it
    /// resolves to. Throws when the path (or the link's target) exists and is not a regular
    /// file, when a link points at nothing, or when the parent directory is missing or a file.
    public static func target(_ path: String) throws -> String {
        if path.isEmpty { throw IOError(path: path, reason: "empty path") }
        var st = stat()
        if lstat(path, &st) == 0 {
            var resolved = path
            if (st.st_mode & S_IFMT) == S_IFLNK {
                guard let real = realpath(path, nil) else {
                    throw IOError(path: path, reason: "is a symbolic link to a missing file (\(errnoText(errno))); a save follows a link only to an existing regular file")
                }
                resolved = String(cString: real)
                free(real)
                if stat(resolved, &st) != 0 { throw IOError(path: path, reason: "cannot stat \(resolved): \(errnoText(errno))") }
            }
            if (st.st_mode & S_IFMT) != S_IFREG {
                let via = resolved == path ? "" : " (the link points to \(resolved))"
                throw IOError(path: path, reason: "exists and is \(kind(st.st_mode))\(via); saving replaces only regular files")
            }
            return resolved
        }
        let err = errno
        if err == ENOTDIR { throw IOError(path: path, reason: "cannot write: \(fileInTheWay(path).map { "\($0) is a file, not a directory" } ?? errnoText(err))") }
        if err != ENOENT { throw IOError(path: path, reason: "cannot write: \(errnoText(err))") }
        let dir = directory(of: path)
        var ds = stat()
        if stat(dir, &ds) != 0 {
            let e = errno
            if e == ENOTDIR, let f = fileInTheWay(dir) { throw IOError(path: path, reason: "cannot write: \(f) is a file, not a directory") }
            throw IOError(path: path, reason: "cannot write: the directory \(dir) \(e == ENOENT ? "does not exist" : "cannot be read") (\(errnoText(e)))")
        }
        if (ds.st_mode & S_IFMT) != S_IFDIR { throw IOError(path: path, reason: "cannot write: \(dir) is \(kind(ds.st_mode)), not a directory") }
        return path
    }

    /// The first of path's parents (or path) that exists and is not a directory.
    public static func fileInTheWay(_ path: String) -> String? {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            var st = stat()
            if stat(prefix, &st) == 0 {
                if (st.st_mode & S_IFMT) != S_IFDIR { return prefix.hasPrefix("./") ? String(prefix.dropFirst(2)) : prefix }
            } else { return nil }
        }
        return nil
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let d = String(path[..<slash])
        return d.isEmpty ? "/" : d
    }

    /// Writes a file atomically: `body` writes the contents to the descriptor it is given
    /// (use `writeAll`). On return the target holds the new contents; on any error (or a
    /// terminating signal) it is untouched and no temporary file is left.
    public static func write(_ path: String, _ body: (Int32) throws -> Void) throws {
        let real = try target(path)
        let dir = directory(of: real)
        let slash = real.lastIndex(of: "/")
        let base = slash.map { String(real[real.index(after: $0)...]) } ?? real
        if base.isEmpty || base == "." || base == ".." { throw IOError(path: path, reason: "not a file path") }
        let dirPrefix = slash.map { String(real[...$0]) } ?? ""
        var tmp = ""
        var fd: Int32 = -1
        for _ in 0..<16 {
            tmp = "\(dirPrefix).\(base).tmp-\(getpid())-\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
            fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd >= 0 || errno != EEXIST { break }
        }
        if fd < 0 { throw IOError(path: path, reason: "cannot create a temporary file in \(dirPrefix.isEmpty ? "." : dirPrefix): \(errnoText(errno))") }
        let slot = ql_tmp_register(tmp)
        var fdOpen = true
        do {
            try body(fd)
            if fsync(fd) != 0 && errno != EINVAL { throw IOError(path: path, reason: "fsync failed: \(errnoText(errno))") }
            fdOpen = false
            if close(fd) != 0 { throw IOError(path: path, reason: "close failed: \(errnoText(errno))") }
            if rename(tmp, real) != 0 { throw IOError(path: path, reason: "cannot rename the temporary file into place: \(errnoText(errno))") }
        } catch {
            if fdOpen { _ = close(fd) }
            _ = unlink(tmp)
            ql_tmp_forget(slot)
            throw error
        }
        ql_tmp_forget(slot)
        // Make the rename durable; failure here does not undo a completed write.
        let dfd = open(dir, O_RDONLY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); _ = close(dfd) }
    }

    public static func write(_ path: String, bytes: [UInt8]) throws {
        try write(path) { fd in try writeAll(fd, bytes, path: path) }
    }

    /// Writes every byte (retrying short writes and EINTR) or throws naming `path`.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { try writeAll(fd, $0, path: path) }
    }

    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        guard let start = bytes.baseAddress, bytes.count > 0 else { return }
        var done = 0
        while done < bytes.count {
            let r = Glibc.write(fd, start + done, min(bytes.count - done, 1 << 30))
            if r < 0 {
                if errno == EINTR { continue }
                throw IOError(path: path, reason: "write failed: \(errnoText(errno))")
            }
            if r == 0 { throw IOError(path: path, reason: "write failed: no progress") }
            done += r
        }
    }

    /// mkdir -p: creates path and its missing parents; says which part is in the way.
    public static func makeDirectory(_ path: String) throws {
        if path.isEmpty { throw IOError(path: path, reason: "empty path") }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/") {
            prefix += part
            if mkdir(prefix, 0o755) != 0 {
                let e = errno
                var st = stat()
                if e == EEXIST || e == EROFS || e == EACCES, stat(prefix, &st) == 0 {
                    if (st.st_mode & S_IFMT) != S_IFDIR {
                        throw IOError(path: path, reason: "cannot create the directory: \(prefix) is \(kind(st.st_mode)), not a directory")
                    }
                } else if e == ENOTDIR, let f = fileInTheWay(prefix) {
                    throw IOError(path: path, reason: "cannot create the directory: \(f) is a file, not a directory")
                } else {
                    throw IOError(path: path, reason: "cannot create the directory \(prefix): \(errnoText(e))")
                }
            }
            prefix += "/"
        }
    }
}

/// Writes bytes to path through a temporary file in the same directory and a rename.
public func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws {
    try AtomicFile.write(path, bytes: bytes)
}
