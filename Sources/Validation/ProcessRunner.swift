import Foundation
import TraceKit

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One program to run: an argv (never a shell string), optional bytes for its standard input
/// and a working directory.
public struct ProcessRequest: Equatable, Sendable {
    /// The program: a bare name looked up in `PATH`, or a path containing `/`.
    public var executable: String
    /// Arguments after the program name.
    public var arguments: [String]
    /// Bytes written to the program's standard input, concurrently with draining its output;
    /// `nil` connects standard input to `/dev/null`.
    public var standardInput: Data?
    /// The working directory, or `nil` for the caller's.
    public var workingDirectory: String?
    /// Keep at most this many trailing bytes of standard output (the rest is drained and
    /// dropped, so a chatty program can never fill a pipe).
    public var outputLimit: Int
    /// Sample the child's peak resident set size (Linux `/proc/<pid>/status` `VmHWM`).
    public var measureMemory: Bool

    /// Creates a request.
    public init(
        executable: String, arguments: [String], standardInput: Data? = nil, workingDirectory: String? = nil,
        outputLimit: Int = 1 << 20, measureMemory: Bool = false
    ) {
        self.executable = executable
        self.arguments = arguments
        self.standardInput = standardInput
        self.workingDirectory = workingDirectory
        self.outputLimit = outputLimit
        self.measureMemory = measureMemory
    }

    /// The full argv, program first (as printed in error messages).
    public var argv: [String] { [executable] + arguments }
}

/// What a finished program left behind.
public struct ProcessResult: Equatable, Sendable {
    /// Exit status (128 + signal number when killed by a signal).
    public var status: Int32
    /// The last `outputLimit` bytes of standard output.
    public var standardOutput: Data
    /// The last few KiB of standard error, as text.
    public var standardErrorTail: String
    /// Seconds from start to exit.
    public var wallTime: Double
    /// Peak resident set size in bytes, when measured and available.
    public var peakResidentBytes: UInt64?

    /// Creates a result.
    public init(
        status: Int32, standardOutput: Data = Data(), standardErrorTail: String = "", wallTime: Double = 0,
        peakResidentBytes: UInt64? = nil
    ) {
        self.status = status
        self.standardOutput = standardOutput
        self.standardErrorTail = standardErrorTail
        self.wallTime = wallTime
        self.peakResidentBytes = peakResidentBytes
    }

    /// Standard error and the end of standard output, for failure messages (qemu-io prints
    /// command failures such as `read failed: Input/output error` on standard output).
    public var outputTail: String {
        var parts: [String] = []
        let err = standardErrorTail.trimmingCharacters(in: .whitespacesAndNewlines)
        if !err.isEmpty { parts.append(err) }
        let out = String(decoding: standardOutput.suffix(2048), as: UTF8.self)
            .replacingOccurrences(of: "qemu-io> ", with: "")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        if !out.isEmpty { parts.append(out) }
        return parts.joined(separator: "\n")
    }
}

/// A running program that the caller talks to line by line (QMP over stdio).
public protocol InteractiveProcess: AnyObject {
    /// Writes `line` plus a newline to the program's standard input.
    func send(_ line: String) throws
    /// The next line of standard output, waiting at most `timeout` seconds; `nil` at end of output.
    func readLine(timeout: Double) throws -> String?
    /// Closes standard input and waits for the program to exit.
    func finish() throws -> ProcessResult
}

/// Runs programs. The production implementation is `SystemProcessRunner`; tests inject a mock
/// that records the requests and returns (or throws) scripted results.
public protocol ProcessRunner: Sendable {
    /// The absolute path of `executable`, or `nil` when it is not installed.
    func locate(_ executable: String) -> String?
    /// Runs a program to completion, feeding standard input and draining both outputs
    /// concurrently. Throws `ValidationError.toolMissing` when the program does not exist; a
    /// non-zero exit is returned, not thrown.
    func run(_ request: ProcessRequest) throws -> ProcessResult
    /// Starts a program for line-by-line interaction (its `standardInput` is ignored).
    func start(_ request: ProcessRequest) throws -> any InteractiveProcess
}

extension ProcessRunner {
    /// Runs `request` and throws `ValidationError.toolFailed` (argv, status, output tail) unless
    /// it exits with status 0.
    public func runChecked(_ request: ProcessRequest) throws -> ProcessResult {
        let result = try run(request)
        guard result.status == 0 else {
            throw ValidationError.toolFailed(argv: request.argv, status: result.status, outputTail: result.outputTail)
        }
        return result
    }
}

/// Collects bytes from another thread, keeping only a bounded tail.
private final class TailBuffer: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private let limit: Int
    init(limit: Int) { self.limit = max(limit, 0) }
    func append(_ chunk: Data) {
        lock.lock()
        defer { lock.unlock() }
        data.append(chunk)
        if data.count > limit * 2 + 65536 { data = Data(data.suffix(limit)) }
    }
    var value: Data {
        lock.lock()
        defer { lock.unlock() }
        return Data(data.suffix(limit))
    }
}

/// Runs `body` on its own thread (not the shared dispatch pool: blocking pipe I/O there could
/// exhaust the pool and deadlock when many runs are in flight); `group` is left when it ends.
func spawnThread(_ group: DispatchGroup?, _ body: @escaping @Sendable () -> Void) {
    group?.enter()
    let thread = Thread {
        body()
        group?.leave()
    }
    thread.start()
}

/// A flag and a maximum shared between the waiting thread and the memory sampler.
private final class Sampler: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    private var peak: UInt64?
    var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
    func stop() { lock.lock(); stopped = true; lock.unlock() }
    func record(_ v: UInt64) { lock.lock(); peak = max(peak ?? 0, v); lock.unlock() }
    var value: UInt64? { lock.lock(); defer { lock.unlock() }; return peak }

    /// Samples `pid`'s high-water mark every 10 ms on a thread of its own until `stop()`.
    func start(pid: Int32) {
        spawnThread(nil) { [self] in
            while !isStopped {
                if let v = Self.highWaterMark(pid: pid) { record(v) }
                usleep(10_000)
            }
        }
    }

    /// `VmHWM` of `pid` in bytes (Linux); the kernel keeps the high-water mark, so sampling
    /// misses nothing that happened before the last sample.
    static func highWaterMark(pid: Int32) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let digits = line.dropFirst(6).filter(\.isNumber)
            return UInt64(digits).map { $0 * 1024 }
        }
        return nil
    }
}

/// Runs programs with posix_spawn (``ChildProcess``): argv only, each child the leader of its
/// own process group, standard input fed from one thread while two others drain standard output
/// and standard error, so neither side can block on a full pipe however large the trace. A
/// watchdog kills a child that makes no progress for `inactivityTimeout` seconds
/// (``ValidationError/toolTimedOut(argv:seconds:outputTail:)``, exit 70).
public struct SystemProcessRunner: ProcessRunner {
    /// Directories searched for bare program names; `nil` uses the `PATH` environment variable.
    public var searchPath: [String]?
    /// Seconds without output, CPU time or file I/O after which a child is killed (`--qemu-timeout`);
    /// nil or 0 waits forever.
    public var inactivityTimeout: Double?

    /// The default watchdog: five minutes without any sign of life (a populate of a large image
    /// keeps qemu-io busy, so only a real hang lasts that long).
    public static let defaultInactivityTimeout = 300.0

    /// Creates a runner; pass `searchPath` to override `PATH` (tests use an empty directory to
    /// simulate a machine without QEMU).
    public init(searchPath: [String]? = nil, inactivityTimeout: Double? = SystemProcessRunner.defaultInactivityTimeout) {
        self.searchPath = searchPath
        self.inactivityTimeout = inactivityTimeout
    }

    /// The absolute path of `executable`, or `nil`.
    public func locate(_ executable: String) -> String? {
        if executable.contains("/") {
            return FileManager.default.isExecutableFile(atPath: executable) ? executable : nil
        }
        let dirs =
            searchPath ?? (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        for dir in dirs where !dir.isEmpty {
            let candidate = dir + "/" + executable
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    private func spawn(_ request: ProcessRequest, pipeInput: Bool) throws -> ChildProcess {
        guard let path = locate(request.executable) else {
            throw ValidationError.toolMissing(tool: request.executable, packages: QemuPackages.all)
        }
        // A child that exits before reading all its input must give us EPIPE, not kill us.
        signal(SIGPIPE, SIG_IGN)
        return try ChildProcess.spawn(
            path: path, argv: request.argv, workingDirectory: request.workingDirectory, pipeInput: pipeInput)
    }

    /// Runs `request` to completion.
    public func run(_ request: ProcessRequest) throws -> ProcessResult {
        let start = Date()
        let child = try spawn(request, pipeInput: request.standardInput != nil)
        let out = TailBuffer(limit: request.outputLimit)
        let err = TailBuffer(limit: 4096)
        let group = DispatchGroup()
        let pid = child.pid
        let sampler = Sampler()
        spawnThread(group) { drain(child.stdoutFD, into: out, child) }
        spawnThread(group) { drain(child.stderrFD, into: err, child) }
        if let input = request.standardInput {
            spawnThread(group) {
                // EPIPE (the child stopped reading) is reported through its exit status.
                feed(input, to: child)
                close(child.stdinFD)
            }
        }
        if request.measureMemory { sampler.start(pid: pid) }
        child.startWatchdog(timeout: inactivityTimeout)
        let status = child.wait()
        sampler.stop()
        group.wait()
        close(child.stdoutFD)
        close(child.stderrFD)
        let result = ProcessResult(
            status: status, standardOutput: out.value, standardErrorTail: String(decoding: err.value, as: UTF8.self),
            wallTime: Date().timeIntervalSince(start), peakResidentBytes: sampler.value)
        if child.timedOut {
            throw ValidationError.toolTimedOut(argv: request.argv, seconds: inactivityTimeout ?? 0, outputTail: result.outputTail)
        }
        return result
    }

    /// Starts `request` for line-by-line interaction.
    public func start(_ request: ProcessRequest) throws -> any InteractiveProcess {
        let child = try spawn(request, pipeInput: true)
        return SystemInteractiveProcess(child: child, request: request, inactivityTimeout: inactivityTimeout)
    }
}

/// Reads `fd` to its end into `buffer`, telling the watchdog about every chunk.
private func drain(_ fd: Int32, into buffer: TailBuffer, _ child: ChildProcess) {
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { p in p.baseAddress.map { read(fd, $0, p.count) } ?? 0 }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return }
        child.noteActivity()
        buffer.append(Data(chunk[0..<n]))
    }
}

/// Writes `data` to the child's standard input in 64 KiB pieces (each one progress); stops at
/// the first error (EPIPE when the child exited).
private func feed(_ data: Data, to child: ChildProcess) {
    _ = data.withUnsafeBytes { OutputFile.writeAll(child.stdinFD, $0, piece: 65536, progress: child.noteActivity) }
}

/// A line-oriented conversation with a running program (QMP on stdio). The watchdog only runs
/// while we wait for it (an answer, its exit): between paced requests it is idle by design.
final class SystemInteractiveProcess: InteractiveProcess, @unchecked Sendable {
    private let child: ChildProcess
    private let request: ProcessRequest
    private let inactivityTimeout: Double?
    private let condition = NSCondition()
    private var lines: [String] = []
    private var pending = Data()
    private var outputClosed = false
    private let err = TailBuffer(limit: 4096)
    private let group = DispatchGroup()
    private let sampler = Sampler()
    private let start = Date()
    private var inputClosed = false

    init(child: ChildProcess, request: ProcessRequest, inactivityTimeout: Double?) {
        self.child = child
        self.request = request
        self.inactivityTimeout = inactivityTimeout
        child.setWatching(false)
        let err = self.err
        spawnThread(group) { [self] in
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                var n = chunk.withUnsafeMutableBytes { p in p.baseAddress.map { read(child.stdoutFD, $0, p.count) } ?? 0 }
                if n < 0 && errno == EINTR { continue }
                if n < 0 { n = 0 }
                if n > 0 { child.noteActivity() }
                condition.lock()
                if n == 0 {
                    if !pending.isEmpty { lines.append(String(decoding: pending, as: UTF8.self)); pending = Data() }
                    outputClosed = true
                    condition.broadcast()
                    condition.unlock()
                    break
                }
                pending.append(contentsOf: chunk[0..<n])
                while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    lines.append(String(decoding: pending[pending.startIndex..<nl], as: UTF8.self))
                    pending = Data(pending[(nl + 1)...])
                }
                condition.broadcast()
                condition.unlock()
            }
        }
        spawnThread(group) { drain(child.stderrFD, into: err, child) }
        if request.measureMemory { sampler.start(pid: child.pid) }
        child.startWatchdog(timeout: inactivityTimeout)
    }

    func send(_ line: String) throws {
        let bytes = Array((line + "\n").utf8)
        if let code = bytes.withUnsafeBytes({ OutputFile.writeAll(child.stdinFD, $0) }) {
            let message = String(cString: strerror(code))
            throw ValidationError.toolFailed(
                argv: request.argv, status: -1, outputTail: "cannot write to its input: \(message)\n" + err.valueText)
        }
    }

    func readLine(timeout: Double) throws -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        child.setWatching(true)
        defer { child.setWatching(false) }
        condition.lock()
        defer { condition.unlock() }
        while lines.isEmpty && !outputClosed {
            if !condition.wait(until: deadline) {
                child.killGroup()
                throw ValidationError.toolFailed(
                    argv: request.argv, status: -1, outputTail: "no answer within \(timeout) s\n" + err.valueText)
            }
        }
        return lines.isEmpty ? nil : lines.removeFirst()
    }

    func finish() throws -> ProcessResult {
        if !inputClosed {
            inputClosed = true
            close(child.stdinFD)
        }
        child.setWatching(true)
        let status = child.wait()
        sampler.stop()
        group.wait()
        close(child.stdoutFD)
        close(child.stderrFD)
        let result = ProcessResult(
            status: status, standardOutput: Data(), standardErrorTail: err.valueText,
            wallTime: Date().timeIntervalSince(start), peakResidentBytes: sampler.value)
        if child.timedOut {
            throw ValidationError.toolTimedOut(argv: request.argv, seconds: inactivityTimeout ?? 0, outputTail: result.outputTail)
        }
        return result
    }
}

extension TailBuffer {
    fileprivate var valueText: String { String(decoding: value, as: UTF8.self) }
}
