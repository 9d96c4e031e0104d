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

    /// The tool `auto` picks: qemu-system when the simulation fires the cache-clean timer
    /// (`CleanTimerPlan` non-nil: timestamps spanning at least one interval, QEMU's default 600 s
    /// included), because qemu-io 7.2 never fires it; qemu-io otherwise (faster, and its close is
    /// compared too).
    public static func automatic(cleanTimer: CleanTimerPlan?) -> ReplayTool {
        cleanTimer == nil ? .qemuIO : .qemuSystem
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
    /// What the replay adds to the report's notes (how the clean timer was run).
    public var notes: [String] = []
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

    /// Replays `records` through qemu-io on `images`, writing QEMU's log into `directory`.
    public func replayQemuIO(config: SimulationConfig, images: BuiltImages, records: [TraceRecord], directory: String) throws
        -> ReplayResult
    {
        let eventsFile = directory + "/trace-events"
        let logFile = directory + "/qemu-trace.log"
        try write(Self.traceEvents, to: eventsFile)
        // QEMU gets the rendering of the options the simulation ran with (only qcow2 cache
        // options can be in them, so the AIO engine is always this replayer's choice).
        let driveOptions = config.driveOptions.rendered
        var aio: String? = nil
        var aioName = "threads"
        if preferIOUring && ioUringWorks(top: images.top, driveOptions: driveOptions) {
            aio = "io_uring"
            aioName = "io_uring"
        }
        let args = Self.qemuIOArguments(
            mode: config.cacheMode, eventsFile: eventsFile, logFile: logFile,
            imageOpts: Self.imageOpts(top: images.top, driveOptions: driveOptions, aio: aio), readOnly: config.readOnly)
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
    /// `paused` adds `-S`: the VM starts stopped, so its virtual clock stands still until `cont`.
    public static func qemuSystemArguments(
        top: String, driveOptions: String, mode: CacheMode, discards: Bool, aio: String?, eventsFile: String, logFile: String,
        readOnly: Bool = false, paused: Bool = false
    ) -> [String] {
        var drive = "if=none,id=d0,file=" + escapeOption(top) + ",format=qcow2"
        if !driveOptions.isEmpty { drive += "," + driveOptions }
        drive += ",cache=" + mode.rawValue
        drive += discards ? ",discard=unmap" : ",discard=ignore"
        if readOnly { drive += ",readonly=on" }
        if let aio { drive += ",aio=" + aio }
        return (paused ? ["-S"] : []) + [
            "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio", "-drive", drive,
            "-trace", "events=" + escapeOption(eventsFile) + ",file=" + escapeOption(logFile),
        ]
    }

    /// Replays `records` through `qemu-system-x86_64 -machine none`, one HMP `qemu-io d0 "…"`
    /// per command over QMP, each waited for. Without `cleanTimer`, requests are paced by their
    /// timestamps × `timeScale`. With it, the VM starts paused, the intervals are scaled by
    /// `secondsPerUnit / plan.unit`, and each stretch of requests between two ticks is sent as
    /// fast as QMP takes it once the virtual clock is past the stretch's first tick (see
    /// `CleanTimerPlan`); a stretch that does not finish before the next tick throws
    /// `CleanTimerOverrun`.
    public func replayQemuSystem(
        config: SimulationConfig, images: BuiltImages, records: [TraceRecord], directory: String,
        cleanTimer: (plan: CleanTimerPlan, secondsPerUnit: UInt64)? = nil
    ) throws
        -> ReplayResult
    {
        let eventsFile = directory + "/trace-events"
        let logFile = directory + "/qemu-trace.log"
        try write(Self.traceEvents, to: eventsFile)
        // A retried replay must not append to the first attempt's log.
        try? FileManager.default.removeItem(atPath: logFile)
        let driveOptions =
            cleanTimer.map { $0.plan.scaledDriveOptions(config.driveOptions, secondsPerUnit: $0.secondsPerUnit) }
            ?? config.driveOptions
        let args = Self.qemuSystemArguments(
            top: images.top, driveOptions: driveOptions.rendered, mode: config.cacheMode, discards: config.discardUnmap, aio: nil,
            eventsFile: eventsFile, logFile: logFile, readOnly: config.readOnly, paused: cleanTimer != nil)
        let request = ProcessRequest(
            executable: "qemu-system-x86_64", arguments: args, workingDirectory: directory, measureMemory: true)
        let process = try runner.start(request)
        let session = QMPSession(process: process, argv: request.argv, timeout: qmpTimeout)
        do {
            try session.expectGreeting()
            try session.execute(["execute": "qmp_capabilities"])
            if let cleanTimer {
                try session.execute(["execute": "cont"])
                try sendPaced(
                    records, session: session, plan: cleanTimer.plan, secondsPerUnit: cleanTimer.secondsPerUnit,
                    virtualSize: config.virtualSize)
            } else {
                let start = Date()
                for (i, record) in records.enumerated() {
                    if let t = record.time, t > 0 {
                        let due = start.addingTimeInterval(t * timeScale)
                        let wait = due.timeIntervalSinceNow
                        if wait > 0 { Thread.sleep(forTimeInterval: wait) }
                    }
                    try send(record, number: i, session: session, virtualSize: config.virtualSize)
                }
            }
            try session.hmpQemuIO(QemuIOScript.marker(records.count, virtualSize: config.virtualSize))
            try session.execute(["execute": "quit"])
        } catch {
            session.quitQuietly()
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
            peakResidentBytes: result.peakResidentBytes,
            notes: cleanTimer.map { [$0.plan.note(secondsPerUnit: $0.secondsPerUnit)] } ?? [])
    }

    private func send(_ record: TraceRecord, number i: Int, session: QMPSession, virtualSize: UInt64) throws {
        try session.hmpQemuIO(QemuIOScript.marker(i, virtualSize: virtualSize))
        if QemuIOScript.isReplayed(record) {
            for c in QemuIOScript.commands(for: record) { try session.hmpQemuIO(c) }
        }
    }

    /// The clean-timer pacing: the virtual clock has run since `cont` returned (it stands
    /// still while the VM is paused, `cpu_disable_ticks`), so virtual time is wall time since then.
    private func sendPaced(
        _ records: [TraceRecord], session: QMPSession, plan: CleanTimerPlan, secondsPerUnit c: UInt64, virtualSize: UInt64
    ) throws {
        let start = monotonicNow()
        var stretch = 0
        var unit = 0
        var sentInStretch = 0
        var stretchBegan = start
        // Commands sent and not yet answered, oldest first: up to `window` are in flight, so the
        // replay is not bound by one round trip per command. No tick falls inside a stretch, so
        // pipelining changes nothing QEMU sees.
        var inFlight: [String] = []
        var oldest = 0
        let window = 32
        func drain(to n: Int) throws {
            while inFlight.count - oldest > n {
                try session.awaitQemuIO(inFlight[oldest])
                oldest += 1
            }
            if oldest > 4096 {
                inFlight.removeFirst(oldest)
                oldest = 0
            }
        }
        func post(_ c: String) throws {
            try drain(to: window - 1)
            try session.sendQemuIO(c)
            inFlight.append(c)
        }
        for (i, record) in records.enumerated() {
            if record.time != nil { unit = plan.unitIndex(record.time) }
            let s = plan.stretch(ofUnit: unit)
            if s > stretch {
                try drain(to: 0)
                let now = monotonicNow()
                let lastDue = start + Double(UInt64(plan.nextTickUnit(after: stretch)) * c) - CleanTimerPlan.guardBand
                if now > lastDue {
                    throw CleanTimerOverrun(request: i - 1, requestSeconds: (now - stretchBegan) / Double(max(1, sentInStretch)))
                }
                stretch = s
                let wait = start + Double(UInt64(s) * c) + CleanTimerPlan.lead - now
                if wait > 0 { Thread.sleep(forTimeInterval: wait) }
                stretchBegan = monotonicNow()
                sentInStretch = 0
            }
            try post(QemuIOScript.marker(i, virtualSize: virtualSize))
            if QemuIOScript.isReplayed(record) {
                for command in QemuIOScript.commands(for: record) { try post(command) }
            }
            sentInStretch += 1
        }
        try drain(to: 0)
        // The last stretch, too, must be done before the next tick.
        let now = monotonicNow()
        if now > start + Double(UInt64(plan.nextTickUnit(after: stretch)) * c) - CleanTimerPlan.guardBand {
            throw CleanTimerOverrun(
                request: records.count - 1, requestSeconds: (now - stretchBegan) / Double(max(1, sentInStretch)))
        }
    }

    private func monotonicNow() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
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
        try sendQemuIO(command)
        try awaitQemuIO(command)
    }

    /// Sends one HMP qemu-io command without waiting for its answer (QMP answers in order, so a
    /// stretch of commands can be pipelined; `awaitQemuIO` then takes the answers in turn).
    func sendQemuIO(_ command: String) throws {
        // Built by hand: the commands are plain ASCII words and numbers (QemuIOScript), so only
        // the quotes around the qemu-io command need escaping, and JSONSerialization per command
        // was measured to dominate the replay.
        guard !command.contains("\"") && !command.contains("\\") else {
            throw fail("qemu-io command '\(command)' would need JSON escaping")
        }
        try process.send(
            "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"qemu-io d0 \\\"\(command)\\\"\"}}")
    }

    /// Takes the answer to the oldest command sent with `sendQemuIO`.
    func awaitQemuIO(_ command: String) throws {
        while true {
            guard let line = try process.readLine(timeout: timeout) else {
                let result = try process.finish()
                throw ValidationError.toolFailed(argv: argv, status: result.status, outputTail: result.outputTail)
            }
            // QEMU's answer to a command that printed nothing, without a JSON parse.
            if line == "{\"return\": \"\"}" { return }
            guard let data = line.data(using: .utf8), let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            else { continue }
            if obj["event"] != nil { continue }
            if let error = obj["error"] as? [String: Any] {
                throw fail("QMP error for 'qemu-io d0 \"\(command)\"': \(error["desc"] ?? error)")
            }
            guard let value = obj["return"] else { continue }
            if let text = value as? String, !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                throw fail("'qemu-io d0 \"\(command)\"' printed: \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            return
        }
    }

    /// Asks QEMU to quit without waiting for the answer (before `finish()` after a failure:
    /// QEMU does not exit when its QMP standard input closes).
    func quitQuietly() {
        try? process.send("{\"execute\": \"quit\"}")
    }
}
