import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What a command must undo when it is interrupted: temporary files and directories it created
/// and the process groups of the children it started (issue 14, item 7).
///
/// `installSignalHandlers()` catches SIGINT, SIGTERM and SIGHUP. The handler only writes the
/// signal number into a pipe (the one async-signal-safe thing it needs); a dedicated thread
/// reads it, kills every registered process group with SIGKILL, waits until their leaders are
/// reaped, removes the registered files and directories and exits with 128 + the signal number
/// (130, 143, 129), as a shell reports a job stopped by that signal.
///
/// Resources are created inside `create(_:)`, which holds the registry's lock and refuses to
/// run once termination has begun, so no child is started and no temporary file is created
/// after the cleanup took its snapshot.
public final class Termination: @unchecked Sendable {
    /// The process-wide registry.
    public static let shared = Termination()

    /// Something to undo on a signal.
    public enum Resource: Hashable, Sendable {
        /// A temporary file: unlinked.
        case file(String)
        /// A temporary directory: removed with its contents.
        case directory(String)
        /// A child started as the leader of its own process group: the group is killed and the
        /// leader waited for (its runner reports it reaped with `unregister`).
        case processGroup(Int32)
    }

    private let lock = NSLock()
    private var resources: Set<Resource> = []
    private var terminating = false
    private var installed = false

    private init() {}

    /// Catches SIGINT, SIGTERM and SIGHUP for the rest of the process (idempotent).
    public func installSignalHandlers() {
        lock.lock()
        defer { lock.unlock() }
        guard !installed else { return }
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        _ = fcntl(fds[1], F_SETFL, O_NONBLOCK)
        terminationPipeWriteEnd = fds[1]
        installed = true
        let readEnd = fds[0]
        let thread = Thread { [self] in
            var byte: UInt8 = 0
            while true {
                let n = read(readEnd, &byte, 1)
                if n == 1 { terminate(signal: Int32(byte)) }
                if n == 0 || (n < 0 && errno != EINTR) { return }
            }
        }
        thread.start()
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            let previous = signal(sig) { number in
                // Only async-signal-safe work here: one write(2) of the signal number.
                var b = UInt8(truncatingIfNeeded: number)
                _ = write(terminationPipeWriteEnd, &b, 1)
            }
            // A signal ignored at startup stays ignored (`nohup`, a background job of a
            // non-interactive shell), as shells and POSIX utilities do.
            if let previous, unsafeBitCast(previous, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self) {
                _ = signal(sig, SIG_IGN)
            } else {
                sigaddset(&unblock, sig)
            }
        }
        // A parent may have started us with these blocked (test runners, some daemons); threads
        // started from here on inherit the main thread's mask.
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    /// Runs `body`, which creates a resource, under the registry's lock; once termination has
    /// begun the calling thread stops here for good (the process is about to exit).
    public func create<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        if terminating {
            lock.unlock()
            Self.park()
        }
        defer { lock.unlock() }
        return try body()
    }

    /// Registers `resource` (call inside `create(_:)` so that creation and registration are one step).
    public func registerLocked(_ resource: Resource) {
        resources.insert(resource)
    }

    /// Registers `resource` outside `create(_:)`.
    public func register(_ resource: Resource) {
        create { _ = resources.insert(resource) }
    }

    /// Forgets `resource` (it was committed, removed or reaped). During termination the calling
    /// thread stops here: its cleanup is the terminating thread's job.
    public func unregister(_ resource: Resource) {
        lock.lock()
        resources.remove(resource)
        let stop = terminating
        lock.unlock()
        if stop { Self.park() }
    }

    /// Whether a signal has started the cleanup.
    public var isTerminating: Bool {
        lock.lock()
        defer { lock.unlock() }
        return terminating
    }

    private static func park() -> Never {
        while true { sleep(3600) }
    }

    private func terminate(signal sig: Int32) {
        lock.lock()
        if terminating {
            lock.unlock()
            return
        }
        terminating = true
        let snapshot = resources
        lock.unlock()
        var groups: [Int32] = []
        for case .processGroup(let pgid) in snapshot {
            groups.append(pgid)
            kill(-pgid, SIGKILL)
            kill(pgid, SIGKILL)
        }
        // Wait (at most 10 s) until the runners have reaped the leaders, so no child outlives us.
        var waited = 0
        while waited < 1000 {
            lock.lock()
            let alive = groups.contains { resources.contains(.processGroup($0)) }
            lock.unlock()
            if !alive { break }
            usleep(10_000)
            waited += 1
        }
        lock.lock()
        let remaining = resources
        lock.unlock()
        for case .file(let path) in remaining { unlink(path) }
        for case .directory(let path) in remaining { try? FileManager.default.removeItem(atPath: path) }
        _exit(128 + sig)
    }
}

/// The write end of the signal pipe, read by the signal handler (a C function pointer cannot
/// capture context). Written once, before the handlers are installed.
nonisolated(unsafe) private var terminationPipeWriteEnd: Int32 = -1
