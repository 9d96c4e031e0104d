import Foundation
import TraceKit

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A QEMU child started with posix_spawn as the leader of its own process group (issue 14,
/// item 7): a signal to qcow2sim never reaches it directly, and `killGroup()` stops it and
/// anything it started. Registered with ``Termination`` from spawn until reaped, so an
/// interrupted `validate` kills it before it exits.
///
/// The watchdog counts progress: bytes through its pipes (`noteActivity`), CPU time
/// (`/proc/PID/stat`) and file I/O (`/proc/PID/io`). When none changes for `timeout` seconds
/// while `watching` is on, the group is killed and `timedOut` set.
final class ChildProcess: @unchecked Sendable {
    let pid: Int32
    /// Write end of its standard input (-1 when it reads /dev/null).
    let stdinFD: Int32
    let stdoutFD: Int32
    let stderrFD: Int32

    private let lock = NSLock()
    private var activity: UInt64 = 0
    private var exited = false
    private var hung = false
    private var watching = true
    private var idleSince = Date()

    private init(pid: Int32, stdinFD: Int32, stdoutFD: Int32, stderrFD: Int32) {
        self.pid = pid
        self.stdinFD = stdinFD
        self.stdoutFD = stdoutFD
        self.stderrFD = stderrFD
    }

    /// Starts `path` with `argv` (argv[0] included); `pipeInput` gives it a pipe for standard input.
    static func spawn(path: String, argv: [String], workingDirectory: String?, pipeInput: Bool) throws -> ChildProcess {
        var input: [Int32] = [-1, -1]
        var output: [Int32] = [-1, -1]
        var error: [Int32] = [-1, -1]
        func closeAll() { for fd in input + output + error where fd >= 0 { close(fd) } }
        guard (!pipeInput || pipe(&input) == 0), pipe(&output) == 0, pipe(&error) == 0 else {
            let e = errno
            closeAll()
            throw ValidationError.toolFailed(
                argv: argv, status: 127, outputTail: "cannot start: pipe: \(String(cString: strerror(e)))")
        }
        // Our ends must not leak into other children (they would hold the pipes open).
        for fd in [input[1], output[0], error[0]] where fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }

        #if canImport(Darwin)
            var actions: posix_spawn_file_actions_t? = nil
            var attr: posix_spawnattr_t? = nil
        #else
            var actions = posix_spawn_file_actions_t()
            var attr = posix_spawnattr_t()
        #endif
        posix_spawn_file_actions_init(&actions)
        posix_spawnattr_init(&attr)
        defer {
            posix_spawn_file_actions_destroy(&actions)
            posix_spawnattr_destroy(&attr)
        }
        if pipeInput {
            posix_spawn_file_actions_adddup2(&actions, input[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_adddup2(&actions, error[1], 2)
        for fd in [input[0], output[1], error[1]] where fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
        if let dir = workingDirectory {
            guard let addChdir = Self.addChdir, addChdir(&actions, dir) == 0 else {
                closeAll()
                throw ValidationError.toolFailed(
                    argv: argv, status: 127, outputTail: "cannot start: cannot run it in directory '\(dir)'")
            }
        }
        // Its own process group; default dispositions (we ignore SIGPIPE and catch SIGINT/TERM/HUP)
        // and no blocked signals.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT] { sigaddset(&defaults, sig) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let cArgs = argv.map { strdup($0) }
        defer { for p in cArgs { free(p) } }
        var argvPointers = cArgs + [nil]
        var pid: Int32 = 0
        let status = Termination.shared.create { () -> Int32 in
            let s = posix_spawn(&pid, path, &actions, &attr, &argvPointers, environ)
            if s == 0 { Termination.shared.registerLocked(.processGroup(pid)) }
            return s
        }
        for fd in [input[0], output[1], error[1]] where fd >= 0 { close(fd) }
        guard status == 0 else {
            for fd in [input[1], output[0], error[0]] where fd >= 0 { close(fd) }
            throw ValidationError.toolFailed(
                argv: argv, status: 127, outputTail: "cannot start: \(String(cString: strerror(status)))")
        }
        return ChildProcess(pid: pid, stdinFD: input[1], stdoutFD: output[0], stderrFD: error[0])
    }

    #if canImport(Darwin)
        private typealias FileActions = posix_spawn_file_actions_t?
    #else
        private typealias FileActions = posix_spawn_file_actions_t
    #endif
    private typealias AddChdir = @convention(c) (UnsafeMutablePointer<FileActions>, UnsafePointer<CChar>) -> Int32

    /// posix_spawn_file_actions_addchdir_np (glibc 2.29, macOS 10.15): Swift's Glibc module does
    /// not import it (it is a GNU extension), so it is looked up at run time.
    private static let addChdir: AddChdir? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addchdir_np") else {
            return nil
        }
        return unsafeBitCast(symbol, to: AddChdir.self)
    }()

    /// Records that bytes moved through one of its pipes.
    func noteActivity() {
        lock.lock()
        activity &+= 1
        lock.unlock()
    }

    /// Turns the watchdog's idle clock on (waiting for the child) or off (the child is
    /// legitimately idle, e.g. between paced QMP requests); turning it on restarts the clock.
    func setWatching(_ on: Bool) {
        lock.lock()
        if on && !watching { idleSince = Date() }
        watching = on
        lock.unlock()
    }

    /// Whether the watchdog killed it.
    var timedOut: Bool {
        lock.lock()
        defer { lock.unlock() }
        return hung
    }

    /// Starts the watchdog thread (no-op for a `timeout` of nil or ≤ 0).
    func startWatchdog(timeout: Double?) {
        guard let timeout, timeout > 0 else { return }
        let step = min(1.0, timeout / 4)
        spawnThread(nil) { [self] in
            var lastActivity: UInt64 = .max
            var lastProgress = ""
            while true {
                Thread.sleep(forTimeInterval: step)
                let progress = Self.progress(pid: pid)
                lock.lock()
                if exited {
                    lock.unlock()
                    return
                }
                let now = Date()
                if !watching || activity != lastActivity || progress != lastProgress {
                    lastActivity = activity
                    lastProgress = progress
                    idleSince = now
                } else if now.timeIntervalSince(idleSince) >= timeout {
                    hung = true
                    kill(-pid, SIGKILL)
                    kill(pid, SIGKILL)
                    lock.unlock()
                    return
                }
                lock.unlock()
            }
        }
    }

    /// CPU ticks and I/O characters of `pid` (Linux); empty where /proc is unavailable.
    static func progress(pid: Int32) -> String {
        var s = ""
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        {
            // Fields after "pid (comm)": state is field 3, utime and stime fields 14 and 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 12 { s += fields[11] + " " + fields[12] }
        }
        if let io = try? String(contentsOfFile: "/proc/\(pid)/io", encoding: .utf8) {
            for line in io.split(separator: "\n") where line.hasPrefix("rchar:") || line.hasPrefix("wchar:") {
                s += " " + line
            }
        }
        return s
    }

    /// Kills the whole group (SIGKILL), unless it has already been reaped.
    func killGroup() {
        lock.lock()
        defer { lock.unlock() }
        guard !exited else { return }
        kill(-pid, SIGKILL)
        kill(pid, SIGKILL)
    }

    /// Waits for it to exit and reaps it; returns its status (128 + signal when killed). Anything
    /// left in its group is killed, so no grandchild holds our pipes open.
    func wait() -> Int32 {
        // Wait without reaping first: until it is reaped the pid cannot be reused, so the watchdog
        // and killGroup() can never signal a stranger.
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        lock.lock()
        exited = true
        kill(-pid, SIGKILL)
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        lock.unlock()
        Termination.shared.unregister(.processGroup(pid))
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import.
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
    }
}
