import Foundation
import Qcow2Sim
import TraceKit

/// Which QEMU program replays the trace.
public enum ReplayTool: String, Sendable, Codable, CaseIterable {
    /// `qemu-io`, one command per request on standard input (the default).
    case qemuIO = "qemu-io"
    /// `qemu-system-x86_64 -machine none` driven over QMP, needed for `cache-clean-interval`
    /// because only a running VM clock fires the clean timer (qcow2-model.md §3.7, §15.3).
    case qemuSystem = "qemu-system"

    /// The tool `auto` picks: qemu-system when any `cache-clean-interval` in the drive options
    /// is non-zero, qemu-io otherwise.
    public static func automatic(driveOptions: String) -> ReplayTool {
        for item in driveOptions.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0] == "cache-clean-interval" || parts[0].hasSuffix(".cache-clean-interval") else {
                continue
            }
            if parts[1] != "0" { return .qemuSystem }
        }
        return .qemuIO
    }
}

/// What one QEMU replay produced.
public struct ReplayResult: Sendable {
    /// The program used.
    public var tool: ReplayTool
    /// Its argv.
    public var argv: [String]
    /// Images in the replayed chain (the simulator's chain length; for `--image FILE`, the
    /// file's backing chain).
    public var imageCount: Int
    /// The file AIO engine that was used (`io_uring` or `threads`).
    public var aio: String
    /// QEMU's cache events, cut into spans.
    public var log: QemuLog
    /// Wall time of the QEMU process in seconds (start to exit).
    public var wallTime: Double
    /// Peak resident set size of the QEMU process, when measured.
    public var peakResidentBytes: UInt64?
}

/// Replays records through QEMU on already built images.
public struct QemuReplayer: Sendable {
    /// Runs QEMU.
    public var runner: any ProcessRunner
    /// Try `file.aio=io_uring` first (several times faster than the thread pool).
    public var preferIOUring: Bool
    /// Multiplies trace timestamps when pacing qemu-system (0.5 = twice as fast).
    public var timeScale: Double
    /// Longest wait for one QMP answer, in seconds.
    public var qmpTimeout: Double = 600

    /// Creates a replayer.
    public init(runner: any ProcessRunner, preferIOUring: Bool = true, timeScale: Double = 1) {
        self.runner = runner
        self.preferIOUring = preferIOUring
        self.timeScale = timeScale
    }

    /// The events file given to QEMU's `-T events=`: the cache events, the request markers
    /// (`blk_co_preadv`) and `qcow2_add_task` (to see task pools).
    public static let traceEvents = "qcow2_cache*\nblk_co_preadv\nqcow2_add_task\n"

    /// QEMU's option syntax doubles commas inside values.
    public static func escapeOption(_ value: String) -> String { value.replacingOccurrences(of: ",", with: ",,") }

    /// The `--image-opts` string for qemu-io.
    public static func imageOpts(top: String, driveOptions: String, aio: String?) -> String {
        var s = "driver=qcow2,file.filename=" + escapeOption(top)
        if let aio { s += ",file.aio=" + aio }
        if !driveOptions.isEmpty { s += "," + driveOptions }
        return s
    }

    /// The qemu-io argv (without the program name); `readOnly` adds `-r`.
    public static func qemuIOArguments(
        mode: CacheMode, eventsFile: String, logFile: String, imageOpts: String, readOnly: Bool = false
    )
        -> [String]
    {
        (readOnly ? ["-r"] : [])
            + [
                "-t", mode.rawValue, "-T", "events=" + escapeOption(eventsFile) + ",file=" + escapeOption(logFile),
                "--image-opts", imageOpts,
            ]
    }

    /// Whether QEMU opens the image with `file.aio=io_uring` (a read-only open running one no-op).
    public func ioUringWorks(top: String, driveOptions: String) -> Bool {
        let req = ProcessRequest(
            executable: "qemu-io",
            arguments: [
                "-r", "--image-opts", Self.imageOpts(top: top, driveOptions: driveOptions, aio: "io_uring"), "-c", "read -q 1 0",
            ],
            outputLimit: 4096)
        guard let result = try? runner.run(req) else { return false }
        return result.status == 0
    }

    private func userChoseAio(_ driveOptions: String) -> Bool {
        driveOptions.split(separator: ",").contains { $0.hasPrefix("file.aio=") || $0.hasPrefix("aio=") }
    }

    /// Replays `records` through qemu-io on `images`, writing QEMU's log into `directory`.
    public func replayQemuIO(config: SimulationConfig, images: BuiltImages, records: [TraceRecord], directory: String) throws
        -> ReplayResult
    {
        let eventsFile = directory + "/trace-events"
        let logFile = directory + "/qemu-trace.log"
        try write(Self.traceEvents, to: eventsFile)
        var aio: String? = nil
        var aioName = "threads"
        if userChoseAio(config.driveOptions) {
            aioName = "as given"
        } else if preferIOUring && ioUringWorks(top: images.top, driveOptions: config.driveOptions) {
            aio = "io_uring"
            aioName = "io_uring"
        }
        let args = Self.qemuIOArguments(
            mode: config.cacheMode, eventsFile: eventsFile, logFile: logFile,
            imageOpts: Self.imageOpts(top: images.top, driveOptions: config.driveOptions, aio: aio), readOnly: config.readOnly)
        let script = QemuIOScript.script(for: records, virtualSize: config.virtualSize, discards: config.discardUnmap)
        let request = ProcessRequest(
            executable: "qemu-io", arguments: args, standardInput: Data(script.utf8), workingDirectory: directory,
            outputLimit: 16384,
            measureMemory: true)
        let result = try runner.runChecked(request)
        let log = try readLog(logFile, records: records, config: config, images: images)
        return ReplayResult(
            tool: .qemuIO, argv: request.argv, imageCount: images.paths.count, aio: aioName, log: log, wallTime: result.wallTime,
            peakResidentBytes: result.peakResidentBytes)
    }

    private func readLog(_ logFile: String, records: [TraceRecord], config: SimulationConfig, images: BuiltImages) throws
        -> QemuLog
    {
        guard let data = FileManager.default.contents(atPath: logFile) else {
            throw ValidationError.badQemuLog("\(logFile): error: QEMU wrote no trace log")
        }
        return try QemuLog.parse(
            data, fileName: logFile, requestCount: records.count, virtualSize: config.virtualSize, image: images.paths.count - 1)
    }

    private func write(_ text: String, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
            throw ValidationError.io("cannot write '\(path)'")
        }
    }

    /// The qemu-system argv (without the program name): no machine, QMP on stdio, the drive with
    /// the run's options, and the trace in its own file (the monitor on stdio loses trace lines).
    /// `discards` picks `discard=unmap` (discards reach qcow2) or `discard=ignore` (the
    /// `-drive` default, spelled out); `readOnly` adds `readonly=on`.
    public static func qemuSystemArguments(
        top: String, driveOptions: String, mode: CacheMode, discards: Bool, aio: String?, eventsFile: String, logFile: String,
        readOnly: Bool = false
    ) -> [String] {
        var drive = "if=none,id=d0,file=" + escapeOption(top) + ",format=qcow2"
        if !driveOptions.isEmpty { drive += "," + driveOptions }
        drive += ",cache=" + mode.rawValue
        drive += discards ? ",discard=unmap" : ",discard=ignore"
        if readOnly { drive += ",readonly=on" }
        if let aio { drive += ",aio=" + aio }
        return [
            "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio", "-drive", drive,
            "-trace", "events=" + escapeOption(eventsFile) + ",file=" + escapeOption(logFile),
        ]
    }

    /// Replays `records` through `qemu-system-x86_64 -machine none`, one HMP `qemu-io d0 "…"`
    /// per command over QMP, each waited for, requests paced by their timestamps × `timeScale`.
    public func replayQemuSystem(config: SimulationConfig, images: BuiltImages, records: [TraceRecord], directory: String) throws
        -> ReplayResult
    {
        let eventsFile = directory + "/trace-events"
        let logFile = directory + "/qemu-trace.log"
        try write(Self.traceEvents, to: eventsFile)
        let args = Self.qemuSystemArguments(
            top: images.top, driveOptions: config.driveOptions, mode: config.cacheMode, discards: config.discardUnmap, aio: nil,
            eventsFile: eventsFile, logFile: logFile, readOnly: config.readOnly)
        let request = ProcessRequest(
            executable: "qemu-system-x86_64", arguments: args, workingDirectory: directory, measureMemory: true)
        let process = try runner.start(request)
        let session = QMPSession(process: process, argv: request.argv, timeout: qmpTimeout)
        do {
            try session.expectGreeting()
            try session.execute(["execute": "qmp_capabilities"])
            let start = Date()
            for (i, record) in records.enumerated() {
                if let t = record.time, t > 0 {
                    let due = start.addingTimeInterval(t * timeScale)
                    let wait = due.timeIntervalSinceNow
                    if wait > 0 { Thread.sleep(forTimeInterval: wait) }
                }
                try session.hmpQemuIO(QemuIOScript.marker(i, virtualSize: config.virtualSize))
                if QemuIOScript.isReplayed(record) {
                    for c in QemuIOScript.commands(for: record) { try session.hmpQemuIO(c) }
                }
            }
            try session.hmpQemuIO(QemuIOScript.marker(records.count, virtualSize: config.virtualSize))
            try session.execute(["execute": "quit"])
        } catch {
            _ = try? process.finish()
            throw error
        }
        let result = try process.finish()
        guard result.status == 0 else {
            throw ValidationError.toolFailed(argv: request.argv, status: result.status, outputTail: result.outputTail)
        }
        let log = try readLog(logFile, records: records, config: config, images: images)
        return ReplayResult(
            tool: .qemuSystem, argv: request.argv, imageCount: images.paths.count, aio: "threads", log: log,
            wallTime: result.wallTime,
            peakResidentBytes: result.peakResidentBytes)
    }
}

/// A minimal QMP client over a process's stdio: one command at a time, asynchronous events
/// skipped, errors and non-empty HMP output turned into `ValidationError.toolFailed`.
struct QMPSession {
    let process: any InteractiveProcess
    let argv: [String]
    let timeout: Double

    func fail(_ message: String) -> ValidationError {
        .toolFailed(argv: argv, status: -1, outputTail: message)
    }

    func nextObject() throws -> [String: Any] {
        while true {
            guard let line = try process.readLine(timeout: timeout) else {
                let result = try process.finish()
                throw ValidationError.toolFailed(argv: argv, status: result.status, outputTail: result.outputTail)
            }
            guard let data = line.data(using: .utf8), let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            else {
                continue
            }
            return obj
        }
    }

    func expectGreeting() throws {
        let obj = try nextObject()
        guard obj["QMP"] != nil else { throw fail("expected the QMP greeting, got \(obj)") }
    }

    @discardableResult
    func execute(_ command: [String: Any]) throws -> Any? {
        let data = try JSONSerialization.data(withJSONObject: command)
        try process.send(String(decoding: data, as: UTF8.self))
        while true {
            let obj = try nextObject()
            if obj["event"] != nil { continue }
            if let error = obj["error"] as? [String: Any] {
                throw fail("QMP error for \(String(decoding: data, as: UTF8.self)): \(error["desc"] ?? error)")
            }
            if let value = obj["return"] { return value }
        }
    }

    /// Runs one qemu-io command on drive d0 through HMP; qemu-io prints nothing on success
    /// with `-q`, so any output is a failure.
    func hmpQemuIO(_ command: String) throws {
        let line = "qemu-io d0 \"\(command)\""
        let value = try execute(["execute": "human-monitor-command", "arguments": ["command-line": line]])
        if let text = value as? String, !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw fail("'\(line)' printed: \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
