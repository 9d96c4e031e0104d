import Foundation
import Qcow2Sim
import TraceKit

/// How `Validator` runs QEMU.
public struct ValidatorOptions: Sendable {
    /// Keep the images, the qemu-io script and QEMU's log in this directory (created if needed)
    /// instead of a temporary directory that is removed afterwards (`--keep DIR`).
    public var keepDirectory: String?
    /// Which QEMU program replays the trace; nil picks automatically (`ReplayTool.automatic`).
    public var tool: ReplayTool?
    /// Multiplies trace timestamps when pacing qemu-system (`--time-scale`).
    public var timeScale: Double
    /// Try `file.aio=io_uring` before the thread pool.
    public var preferIOUring: Bool
    /// Where temporary working directories are created (nil: the system's temporary directory).
    public var temporaryParent: String?

    /// Creates options; the defaults are a temporary directory, automatic tool choice, real time
    /// and io_uring when it works.
    public init(
        keepDirectory: String? = nil, tool: ReplayTool? = nil, timeScale: Double = 1, preferIOUring: Bool = true,
        temporaryParent: String? = nil
    ) {
        self.temporaryParent = temporaryParent
        self.keepDirectory = keepDirectory
        self.tool = tool
        self.timeScale = timeScale
        self.preferIOUring = preferIOUring
    }
}

/// The trace to validate: records in order, where each came from, and the file's name.
public struct ValidationInput: Sendable {
    /// The records, in trace order.
    public var records: [TraceRecord]
    /// The location of each record (for reports).
    public var locations: [TraceLocation]
    /// The trace file name (for messages).
    public var fileName: String

    /// Creates an input; `locations` defaults to 1-based line numbers.
    public init(records: [TraceRecord], locations: [TraceLocation]? = nil, fileName: String = "<memory>") {
        self.records = records
        self.locations = locations ?? records.indices.map { .line($0 + 1) }
        self.fileName = fileName
    }

    /// Reads every record of `reader` into memory.
    public init<R: TraceReader>(reading reader: inout R) throws {
        var records: [TraceRecord] = []
        var locations: [TraceLocation] = []
        while let r = try reader.next() {
            records.append(r)
            locations.append(reader.location)
        }
        self.init(records: records, locations: locations, fileName: reader.fileName)
    }
}

/// The entry point of `qcow2sim validate`: builds the real image(s) for a configuration,
/// replays the trace through QEMU, and compares QEMU's cache events with the simulator's.
///
/// ```swift
/// let validator = Validator(runner: SystemProcessRunner())
/// let report = try validator.validate(config: config, input: input, expected: simulatedLog, sizes: report.sizes)
/// print(report.text())
/// ```
public struct Validator: Sendable {
    /// Runs qemu-img, qemu-io and qemu-system.
    public var runner: any ProcessRunner
    /// How to run QEMU.
    public var options: ValidatorOptions

    /// Creates a validator.
    public init(runner: any ProcessRunner = SystemProcessRunner(), options: ValidatorOptions = ValidatorOptions()) {
        self.runner = runner
        self.options = options
    }

    /// The tool used for `config` and `input`: the one asked for, or `ReplayTool.automatic`.
    public func tool(for config: SimulationConfig, input: ValidationInput? = nil) -> ReplayTool {
        options.tool ?? ReplayTool.automatic(cleanTimer: input.flatMap { cleanTimerPlan(config: config, input: $0) })
    }

    /// How the cache-clean timer fires over `input` in the simulation, or nil when it never does
    /// (every image's interval, QEMU's 600 s default included, against the last timestamp).
    public func cleanTimerPlan(config: SimulationConfig, input: ValidationInput) -> CleanTimerPlan? {
        var count = config.chainLength
        if let file = config.imageFile { count = (try? ImageBuilder.backingChain(of: file).count) ?? 1 }
        guard let intervals = CleanTimerPlan.intervals(config: config, imageCount: count) else { return nil }
        return CleanTimerPlan(intervals: intervals, records: input.records)
    }

    /// What to tell the user before a replay whose results will differ from the simulation for a
    /// reason the comparison cannot show: qemu-io chosen explicitly for a trace on which the
    /// simulation fires the clean timer. Nil when there is nothing to say.
    /// For a compressed qemu-system replay that will take more than a minute, says how long.
    public func warning(config: SimulationConfig, input: ValidationInput) -> String? {
        guard let plan = cleanTimerPlan(config: config, input: input) else { return nil }
        if tool(for: config, input: input) == .qemuIO { return plan.qemuIOWarning(version: config.qemuVersion) }
        let c = plan.secondsPerUnit(input.records)
        let seconds = Double(plan.unitIndex(plan.traceEnd) + 1) * Double(c)
        guard seconds > 60 else { return nil }
        return
            "the simulation fires the clean timer \(plan.simulatedTicks) time(s) over \(CleanTimerPlan.seconds(plan.traceEnd)) s "
            + "of trace (cache-clean-interval \(plan.intervals.map(String.init).joined(separator: "/")) s), which only a VM "
            + "reproduces: replaying through qemu-system with time compressed \(c)/\(plan.unit), about "
            + "\(CleanTimerPlan.seconds(seconds)) s (longer if it has to be retried); --drive cache-clean-interval=0 turns the timer "
            + "off on both sides and lets qemu-io replay at full speed"
    }

    /// Checks that the QEMU programs this run needs are installed (exit 69 otherwise).
    public func checkTools(for config: SimulationConfig, input: ValidationInput? = nil) throws {
        var needed = ["qemu-io"]
        // qemu-img creates the images, or rebases the copies of a user's backing chain.
        if let file = config.imageFile {
            if let chain = try? ImageBuilder.backingChain(of: file), chain.count > 1 { needed.insert("qemu-img", at: 0) }
        } else {
            needed.insert("qemu-img", at: 0)
        }
        if tool(for: config, input: input) == .qemuSystem { needed.append("qemu-system-x86_64") }
        for t in needed where runner.locate(t) == nil {
            throw ValidationError.toolMissing(tool: t, packages: QemuPackages.all)
        }
    }

    /// The `major.minor` version the QEMU tool `tool` reports (`qemu-io --version`), or nil when
    /// it prints none.
    public func installedVersion(of tool: String) throws -> String? {
        let result = try runner.run(ProcessRequest(executable: tool, arguments: ["--version"], outputLimit: 4096))
        return QemuVersion.reported(in: String(decoding: result.standardOutput, as: UTF8.self))
    }

    /// Refuses a run whose `--qemu-version` is not the version of the QEMU tools it would run:
    /// the simulation would reproduce one release and be compared with another.
    public func checkVersion(for config: SimulationConfig, input: ValidationInput? = nil) throws {
        var tools = ["qemu-io"]
        if tool(for: config, input: input) == .qemuSystem { tools.append("qemu-system-x86_64") }
        for t in tools {
            // A tool that prints no version cannot be checked (every real QEMU prints one).
            guard let found = try installedVersion(of: t), found != config.qemuVersion.rawValue else { continue }
            let path = runner.locate(t) ?? t
            throw ValidationError.usage(
                "--qemu-version \(config.qemuVersion.rawValue) simulates QEMU \(config.qemuVersion.rawValue), but \(path) is "
                    + "QEMU \(found): put QEMU \(config.qemuVersion.rawValue)'s tools first on PATH (.ci/setup --more-qemu installs 10.0 and "
                    + "11.1 under .build/qemu-VERSION/bin), or pass --qemu-version \(found)")
        }
    }

    /// Builds the images and replays `input` through QEMU; the working directory is removed
    /// afterwards unless `keepDirectory` is set. When the simulation fires the clean timer and
    /// qemu-system replays, time is compressed (`CleanTimerPlan`); a replay that could not keep
    /// the pace is rebuilt and run again with a larger factor (at most 3 attempts).
    public func replay(config: SimulationConfig, input: ValidationInput) throws -> ReplayResult {
        try checkTools(for: config, input: input)
        try QemuIOScript.checkBounds(
            input.records, locations: input.locations, fileName: input.fileName, virtualSize: config.virtualSize)
        try Self.checkReadOnly(config: config, input: input)
        try checkVersion(for: config, input: input)
        let directory = try makeDirectory()
        defer {
            if options.keepDirectory == nil {
                try? FileManager.default.removeItem(atPath: directory)
                Termination.shared.unregister(.directory(directory))
            }
        }
        let replayer = QemuReplayer(runner: runner, preferIOUring: options.preferIOUring, timeScale: options.timeScale)
        let plan = cleanTimerPlan(config: config, input: input)
        switch tool(for: config, input: input) {
        case .qemuIO:
            let images = try ImageBuilder(runner: runner).build(config, in: directory)
            var result = try replayer.replayQemuIO(config: config, images: images, records: input.records, directory: directory)
            if let plan { result.notes.append(plan.qemuIOWarning(version: config.qemuVersion)) }
            return result
        case .qemuSystem:
            guard let plan else {
                let images = try ImageBuilder(runner: runner).build(config, in: directory)
                return try replayer.replayQemuSystem(config: config, images: images, records: input.records, directory: directory)
            }
            var secondsPerUnit = plan.secondsPerUnit(input.records)
            var attempt = 1
            while true {
                let images = try ImageBuilder(runner: runner).build(config, in: directory)
                do {
                    return try replayer.replayQemuSystem(
                        config: config, images: images, records: input.records, directory: directory,
                        cleanTimer: (plan, secondsPerUnit))
                } catch let overrun as CleanTimerOverrun {
                    guard attempt < 3 else {
                        throw ValidationError.toolFailed(
                            argv: ["qemu-system-x86_64"], status: -1,
                            outputTail:
                                "the clean-timer replay could not keep pace: request \(overrun.request) was still running when "
                                + "the next scaled tick was due, even at \(secondsPerUnit) s per \(plan.unit) s of trace time")
                    }
                    attempt += 1
                    secondsPerUnit = max(
                        secondsPerUnit * 2, plan.secondsPerUnit(input.records, requestSeconds: overrun.requestSeconds * 1.5))
                }
            }
        }
    }

    /// With `readOnly`, throws `ValidationError.badTrace` naming the first request that would
    /// modify the image (QEMU refuses it; the simulator stops there too).
    public static func checkReadOnly(config: SimulationConfig, input: ValidationInput) throws {
        guard config.readOnly else { return }
        for (i, r) in input.records.enumerated() where r.op != .read && r.op != .flush && QemuIOScript.isReplayed(r) {
            let loc = i < input.locations.count ? input.locations[i] : .file
            throw ValidationError.badTrace(
                TraceError(file: input.fileName, location: loc, message: "request \(i) is a \(r.op) on an image opened read-only")
                    .description)
        }
    }

    /// Replays and compares with `expected`, the simulator's log of the same run. `sizes` are the
    /// simulator's effective cache sizes per image (for bytes and memory; optional).
    public func validate(config: SimulationConfig, input: ValidationInput, expected: EventLog, sizes: [ImageCacheSizes]? = nil)
        throws
        -> ValidationReport
    {
        let replay = try replay(config: config, input: input)
        return Self.report(
            config: config, input: input, expected: expected, replay: replay, sizes: sizes, keptDirectory: options.keepDirectory)
    }

    /// Compares an existing replay with `expected` and assembles the report (no QEMU involved).
    /// With `expected` nil the report shows QEMU's side only (`compared` false).
    public static func report(
        config: SimulationConfig, input: ValidationInput, expected givenExpected: EventLog?, replay: ReplayResult,
        sizes: [ImageCacheSizes]?,
        keptDirectory: String?
    ) -> ValidationReport {
        let expected = givenExpected ?? EventLog()
        let compareClose = replay.tool == .qemuIO
        let imageCount = replay.imageCount
        var comparison = Comparator.compare(
            expected: expected, actual: replay.log, writes: input.records.map { $0.op == .write || $0.op == .writeZeroes },
            locations: input.locations, compareClose: compareClose, topImage: imageCount - 1)
        var simulated = CacheCounter()
        var real = CacheCounter()
        if compareClose {
            simulated.add(contentsOf: expected.events)
            real.add(contentsOf: comparison.labeled.events)
        } else {
            simulated.add(contentsOf: expected.events[0..<(expected.closeStart ?? expected.events.count)])
            real.add(contentsOf: comparison.labeled.events[0..<comparison.labeled.closeStart])
        }
        let simCounts = simulated.result(imageCount: imageCount, sizes: sizes)
        let realCounts = real.result(imageCount: imageCount, sizes: sizes)
        let names = (0..<imageCount).map { ImageBuilder.fileName($0) }
        let images = (0..<imageCount).map { i in
            ImageComparison(
                image: i, name: names[i], simulated: simCounts[i], qemu: realCounts[i],
                cacheSizes: sizes.flatMap { i < $0.count ? $0[i] : nil })
        }
        let dropsDiscards = !config.discardUnmap && replay.tool == .qemuIO
        let replayed = input.records.filter { QemuIOScript.isReplayed($0) && !(dropsDiscards && $0.op == .discard) }.count
        let checks = givenExpected == nil ? [] : comparison.multiSegment
        var notes: [String] = replay.notes
        if !compareClose {
            notes.append("compared up to the last request: qemu-system's close differs from qemu-io's (qcow2-model.md §10)")
        }
        if checks.contains(where: { $0.simulatorMarked != $0.qemuPooled }) {
            notes.append("the simulator's and QEMU's multi-segment classifications differ for some requests (see multiSegment)")
        }
        if let first = comparison.firstDivergence {
            // A divergence in the close (no request) comes after every request.
            let limit = first.request ?? Int.max
            let before = comparison.equivalentRequests.filter { $0 < limit }
            if !before.isEmpty {
                notes.append(
                    "the first divergence follows multi-segment request(s) "
                        + before.prefix(5).map(String.init).joined(separator: ", ") + (before.count > 5 ? ", …" : "")
                        + " that QEMU ran in another valid order of their concurrent tasks (qcow2-model.md §13): "
                        + "that order changed the cache state (which entries are dirty, which are evicted) from there on")
            }
        }
        let discards = input.records.filter { $0.op == .discard && QemuIOScript.isReplayed($0) }.count
        if !config.discardUnmap && discards > 0 {
            notes.append(
                replay.tool == .qemuIO
                    ? "discard=ignore: \(discards) discard request(s) not sent to qemu-io (it always opens with unmap on); the simulator drops them too"
                    : "discard=ignore: \(discards) discard request(s) sent to a drive with discard=ignore")
        }
        if !config.preparation.isEmpty {
            notes.append(
                "\(config.preparation.count) preparation session(s) ran before the trace (qemu-io, writeback, default options; not compared)"
            )
        }
        if replayed + (dropsDiscards ? discards : 0) < input.records.count {
            notes.append(
                "\(input.records.count - replayed - (dropsDiscards ? discards : 0)) zero-length requests were not replayed (no-ops in QEMU)"
            )
        }
        let wall = replay.wallTime
        if givenExpected == nil {
            comparison.firstDivergence = nil
            comparison.divergentSpans = 0
            notes.append("QEMU only: nothing was compared (the simulated column is empty)")
        }
        var report = ValidationReport(
            compared: givenExpected != nil, identical: givenExpected != nil && comparison.identical, tool: replay.tool.rawValue,
            argv: replay.argv, aio: replay.aio, requests: input.records.count,
            replayedRequests: replayed, simulatedEvents: expected.events.count, qemuEvents: replay.log.events.count,
            closeCompared: compareClose, divergentSpans: comparison.divergentSpans, firstDivergence: comparison.firstDivergence,
            multiSegment: MultiSegmentSummary(
                requests: checks.count, passed: checks.filter(\.passed).count,
                identicalOrder: checks.filter(\.identicalOrder).count,
                flaggedWrites: checks.filter { !$0.passed && $0.write }.count,
                failedReads: checks.filter { !$0.passed && !$0.write }.count, checks: checks),
            images: images,
            qemu: QemuRunStats(
                wallSeconds: wall, opsPerSecond: wall > 0 ? Double(replayed) / wall : nil,
                peakResidentBytes: replay.peakResidentBytes),
            simulatedCacheBytes: sizes.map { $0.reduce(0) { $0 + $1.memoryBytes } }, keptDirectory: keptDirectory, notes: notes)
        if givenExpected != nil {
            report.equivalentRequests = comparison.equivalentRequests
            report.equivalentLocations = comparison.equivalentRequests.map { i in
                i < input.locations.count ? input.locations[i].description : ""
            }
        }
        return report
    }

    private func makeDirectory() throws -> String {
        if let keep = options.keepDirectory {
            do {
                try FileManager.default.createDirectory(atPath: keep, withIntermediateDirectories: true)
            } catch {
                throw ValidationError.io("cannot create directory '\(keep)': \(error.localizedDescription)")
            }
            let url = URL(fileURLWithPath: keep).standardizedFileURL
            return url.path
        }
        let parent = options.temporaryParent.map { URL(fileURLWithPath: $0) } ?? FileManager.default.temporaryDirectory
        let base = parent.appendingPathComponent("qcow2sim-validate-\(UUID().uuidString)")
        do {
            // Registered as it is created: a signal removes it (issue 14, item 7).
            try Termination.shared.create {
                try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
                Termination.shared.registerLocked(.directory(base.path))
            }
        } catch {
            throw ValidationError.io("cannot create a temporary directory: \(error.localizedDescription)")
        }
        return base.path
    }
}
