import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An output that could not be written: printed as `qcow2sim <command>: error: <file>: <message>`.
/// Exit 73 (EX_CANTCREAT) when the target cannot be created or is refused (read-only, a
/// directory, a block device), 74 (EX_IOERR) when writing fails (ENOSPC, EIO, …).
public struct OutputError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The output as the user named it (`standard output` for `-`).
    public var file: String
    /// What went wrong: the system's message (`No space left on device`) or our reason.
    public var message: String
    /// The sysexits status: 73 or 74.
    public var exitCode: Int32

    /// Creates an error.
    public init(file: String, message: String, exitCode: Int32) {
        self.file = file
        self.message = message
        self.exitCode = exitCode
    }

    /// `<file>: <message>`.
    public var description: String { "\(file): \(message)" }
}

/// An output file (issue 14, item 5). What happens depends on what is at the target:
///
/// - a regular file, or nothing: the bytes go to a temporary file in the same directory, which
///   `commit()` renames over the target, so a failure leaves the target as it was; an existing
///   file keeps its mode (and, as root, its owner); a read-only file is refused (exit 73);
/// - a symbolic link: followed to its final target, which is replaced as above (the link stays);
/// - a character device or a FIFO (`/dev/null`, a pipe to another program): written in place,
///   never replaced (opening a FIFO waits for its reader);
/// - `-`: standard output, written in place;
/// - a directory, a block device or anything else: refused (exit 73).
///
/// Every write error, ENOSPC included, is an ``OutputError`` with exit 74 naming the file, and
/// the temporary file is removed. Temporary files are registered with ``Termination`` so a
/// signal removes them too.
public final class OutputFile {
    /// The path as the user gave it (`-` for standard output).
    public let path: String
    /// The name used in messages.
    public var displayName: String { path == "-" ? "standard output" : path }
    private let fd: Int32
    private let ownsFD: Bool
    /// (temporary file, final target) when the output is replaced atomically.
    private let replace: (temp: String, target: String)?
    private var done = false

    /// Opens the output (exit 73 when it cannot be created or is refused).
    public init(path: String) throws {
        self.path = path
        if path == "-" {
            fd = 1
            ownsFD = false
            replace = nil
            return
        }
        let name = path
        func refuse(_ message: String) -> OutputError { OutputError(file: name, message: message, exitCode: 73) }
        // Follow the links ourselves: the temporary file must be created next to the final
        // target so that rename(2) replaces the target, not the link.
        var target = path
        var hops = 0
        // /dev/stdout → /proc/self/fd/1 → the file the shell opened: written in place, since
        // replacing it would detach it from the descriptor the caller holds.
        var viaProc = path.hasPrefix("/proc/")
        while true {
            var st = stat()
            guard lstat(target, &st) == 0 else { break }  // nothing there: a new file
            guard st.st_mode & S_IFMT == S_IFLNK else { break }
            hops += 1
            guard hops <= 40, let link = Self.readLink(target) else { throw refuse(Self.errnoMessage(ELOOP)) }
            let linkDir = (target as NSString).deletingLastPathComponent
            target = link.hasPrefix("/") || linkDir.isEmpty ? link : linkDir + "/" + link
            if target.hasPrefix("/proc/") { viaProc = true }
        }
        var st = stat()
        // `stat` (not `lstat`) of the user's path: magic links such as /dev/stdout → /proc/self/fd/1
        // → pipe:[…] are only resolvable by the kernel.
        let exists = stat(path, &st) == 0
        let type = st.st_mode & S_IFMT
        if exists && (type == S_IFCHR || type == S_IFIFO || viaProc) {
            // A regular file reached through /proc gets a new file offset: append, as the
            // caller's descriptor would (the shell truncated it already for `>`).
            let f = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY | (type == S_IFREG ? O_APPEND : 0))
            guard f >= 0 else { throw refuse("cannot open: " + Self.errnoMessage(errno)) }
            fd = f
            ownsFD = true
            replace = nil
            return
        }
        if exists {
            switch type {
            case S_IFREG: break
            case S_IFDIR: throw refuse("is a directory")
            case S_IFBLK: throw refuse("is a block device (not written; write to a file or a character device)")
            default: throw refuse("is not a regular file, character device or FIFO")
            }
            // Root may write anything: the mode bits say whether the user meant the file to change.
            if st.st_mode & 0o222 == 0 || access(target, W_OK) != 0 { throw refuse("is read-only (not replaced)") }
        }
        let dir = (target as NSString).deletingLastPathComponent
        let base = (target as NSString).lastPathComponent
        var template = Array(((dir.isEmpty ? "." : dir) + "/.\(base).tmp.XXXXXX").utf8CString)
        var created: Int32 = -1
        var createErrno: Int32 = 0
        var tempPath = ""
        Termination.shared.create {
            created = template.withUnsafeMutableBufferPointer { p -> Int32 in
                guard let b = p.baseAddress else { return -1 }
                return mkstemp(b)
            }
            createErrno = errno
            guard created >= 0 else { return }
            tempPath = template.withUnsafeBufferPointer { p in p.baseAddress.map { String(cString: $0) } ?? "" }
            Termination.shared.registerLocked(.file(tempPath))
        }
        guard created >= 0 else {
            throw refuse("cannot create a temporary file in '\(dir.isEmpty ? "." : dir)': " + Self.errnoMessage(createErrno))
        }
        _ = fcntl(created, F_SETFD, FD_CLOEXEC)
        if exists {
            fchmod(created, st.st_mode & 0o7777)
            if geteuid() == 0 { _ = fchown(created, st.st_uid, st.st_gid) }
        } else {
            let mask = umask(0)
            umask(mask)
            fchmod(created, 0o666 & ~mask)
        }
        fd = created
        ownsFD = true
        replace = (tempPath, target)
    }

    deinit { if !done { abandon() } }

    /// Appends bytes (exit 74 on any error; the caller then calls `abandon()`).
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write(raw: $0) }
    }

    /// Appends bytes.
    public func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write(raw: $0) }
    }

    private func write(raw: UnsafeRawBufferPointer) throws {
        if let code = Self.writeAll(fd, raw) { throw ioError(code) }
    }

    /// Writes all of `raw` to `fd` with write(2), retrying after EINTR and short writes, in
    /// pieces of at most `piece` bytes, calling `progress` after each; returns nil, or the errno
    /// of the write that failed (ENOSPC for a write that took nothing). The one write loop of
    /// the package: outputs, messages on standard error and the input of QEMU children.
    public static func writeAll(
        _ fd: Int32, _ raw: UnsafeRawBufferPointer, piece: Int = .max, progress: () -> Void = {}
    ) -> Int32? {
        guard let base = raw.baseAddress else { return nil }
        var off = 0
        while off < raw.count {
            let n = Foundation.write(fd, base + off, min(piece, raw.count - off))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return n == 0 ? ENOSPC : errno }
            progress()
            off += n
        }
        return nil
    }

    /// Overwrites bytes already written at `offset` (a binary trace's record count, known only
    /// at the end). Returns `false` when the output is written in place (standard output, a
    /// pipe, a device, an appended /proc target): only our own temporary file is rewritten, since
    /// `pwrite` on an `O_APPEND` descriptor would append instead.
    public func rewrite(_ bytes: [UInt8], at offset: Int) throws -> Bool {
        guard replace != nil, !done else { return false }
        let n = bytes.withUnsafeBytes { p -> Int in
            guard let b = p.baseAddress else { return 0 }
            return pwrite(fd, b, p.count, off_t(offset))
        }
        guard n == bytes.count else { throw ioError(n < 0 ? errno : ENOSPC) }
        return true
    }

    /// Makes the output final: the temporary file is synced, closed and renamed over the target.
    public func commit() throws {
        guard !done else { return }
        done = true
        guard let replace else {
            if ownsFD && close(fd) != 0 { throw ioError(errno) }
            return
        }
        if fsync(fd) != 0 || close(fd) != 0 {
            let e = errno
            unlink(replace.temp)
            Termination.shared.unregister(.file(replace.temp))
            throw ioError(e)
        }
        if rename(replace.temp, replace.target) != 0 {
            let e = errno
            unlink(replace.temp)
            Termination.shared.unregister(.file(replace.temp))
            throw OutputError(file: displayName, message: "cannot replace: " + Self.errnoMessage(e), exitCode: 73)
        }
        Termination.shared.unregister(.file(replace.temp))
    }

    /// Gives up: the temporary file is removed and the target left as it was.
    public func abandon() {
        guard !done else { return }
        done = true
        if ownsFD { close(fd) }
        if let replace {
            unlink(replace.temp)
            Termination.shared.unregister(.file(replace.temp))
        }
    }

    /// Writes `data` to `path` in one go (see the type's documentation); `-` is standard output.
    public static func write(_ data: Data, to path: String) throws {
        let out = try OutputFile(path: path)
        do {
            try out.write(data)
            try out.commit()
        } catch {
            out.abandon()
            throw error
        }
    }

    private func ioError(_ code: Int32) -> OutputError {
        OutputError(file: displayName, message: Self.errnoMessage(code), exitCode: 74)
    }

    static func errnoMessage(_ code: Int32) -> String { String(cString: strerror(code)) }

    private static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
