import Foundation
import Reporting
import Qcow2Sim
import TraceKit

/// `qcow2sim simulate TRACE`: replay a trace through the simulated image chain and report.
enum SimulateCommand {
    static let help = """
        usage: qcow2sim simulate TRACE [run options] [--format text|json|csv|html] [--events FILE]
                                 [--request-markers] [--output FILE] [--policy NAME] [--read-only] [--discard unmap|ignore]
                                 [--what-if KEY=VALUE]...
                                 [trace mapping options]

        Replays TRACE through a discrete simulation of QEMU 7.2's qcow2 mapping code and metadata
        caches, and reports per image and cache: lookups, hits, misses, evictions, write-backs,
        metadata bytes, cache memory, allocations and copy-on-write bytes.

        run options:
        \(RunConfigArguments.help)
          --policy NAME         eviction policy: \(PolicyRegistry.all.map { "\($0.name) (\($0.summary))" }.joined(separator: "; "))
          --read-only           open the top image read-only (qemu-io -r)
          --discard MODE        unmap (default, like qemu-io) or ignore (a VM's default -drive)

        what-ifs (proposals QEMU 7.2 does not implement; reported as what_if), repeatable:
          --what-if l2-cache-size=P%        per image, P % of what full coverage needs
          --what-if refcount-cache-size=P%  per image, P % of the refcount blocks of the disk
          --what-if cache-scope=chain       one L2 and one refcount cache for the whole chain,
                                            sized by the sum of the per-image caches, or by
          --what-if chain-l2-cache-size=SIZE / chain-refcount-cache-size=SIZE

        output:
          --format FMT          text (default), json, csv, or html: one self-contained page (inline
                                SVG and CSS, no scripts) with memory and hit rate over trace time,
                                per-image bars and the numbers under each chart
          --output FILE         write the report to FILE instead of standard output
          --cost FILE           a cost model (qcow2sim calibrate): predicted_iops and
                                predicted_latency_us in the JSON totals and as CSV columns
          --memory-timeline FILE  CSV of resident cache memory over trace time
                                (time,image,cache,resident_bytes), one row per change
          --events FILE         write every cache event in QEMU's qcow2_cache_* format, with
                                `co 0x…` replaced by `image N` (0 = base of the chain)
          --request-markers     in the --events log, a `# request N OP OFFSET LENGTH` line before
                                each request's events (N from 1, as validate counts requests)
                                and `# close` before the close's;
                                without it the log is QEMU's format alone, to diff against QEMU
        \(Progress.help)

        \(PerVolumeCLI.help)
          --jobs N              with --per-volume: volumes run on N threads (default: all cores)

        trace mapping options: --trace-format, --device, --event, --beyond, --offset-shift,
        --time-scale, --reorder-window, --no-rebase (see 'qcow2sim trace --help')

        """

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "simulate")
        }
        var events: BufferedFileWriter?
        defer { events?.abandon() }
        do {
            let a = try Arguments(
                PerVolumeCLI.prepared(args),
                options: runOptions.union(["--format", "--events", "--output", "--policy", "--memory-timeline", "--what-if", "--cost"])
                    .union(PerVolumeCLI.options).union(["--jobs"]),
                flags: runFlags.union(Progress.flags).union(["--request-markers"]).union(PerVolumeCLI.flags),
                aliases: RunConfigArguments.aliases,
                repeatable: RunConfigArguments.repeatable.union(["--what-if"]))
            var config = try runConfig(a)
            config.policy = a.value("--policy") ?? "qemu"
            for setting in a.all("--what-if") { try config.whatIf.set(setting) }
            let format = try a.choice("--format", ["text", "json", "csv", "html"], default: "text")
            if try PerVolumeCLI.enabled(
                a, args, traces: a.positionals,
                refuse: ["--events", "--memory-timeline", "--request-markers", "--progress"])
            {
                return try perVolume(a, args, config, format)
            }
            if a.value("--jobs") != nil { throw UsageError("--jobs needs --per-volume (one simulation runs on one thread)") }
            if a.has("--request-markers") && a.value("--events") == nil {
                throw UsageError("--request-markers needs --events FILE")
            }
            let progress = try Progress.start(a, command: "simulate", points: 1)
            defer { progress?.finish() }
            // With --image (--size is refused there) the simulation itself checks every request
            // against the image's virtual size, which may be 0 (a valid qcow2 image).
            let opened = try TraceCommand.open(a)
            if let progress {
                // The records-done counter wraps the reader; without progress the reader goes in
                // as it is.
                progress.estimate(traces: [opened.fileName], pointsPerTrace: 1)
                var reader = CountingReader(opened, progress)
                return try finish(a, args, config, format, &reader, &events, progress: progress)
            }
            var reader = opened
            return try finish(a, args, config, format, &reader, &events, progress: nil)
        } catch {
            return reportFailure(error, command: "simulate")
        }
    }

    /// Options (taking a value) of a run that `sweep` and `mrc` share with `simulate`: the run
    /// configuration, the trace mapping options and `--discard`.
    static let runOptions = RunConfigArguments.options.union(TraceCommand.mappingOptions).union(["--discard"])
    /// The flags they share.
    static let runFlags: Set<String> = ["--read-only", "--no-rebase"]

    /// The configuration of the run options (the policy is the caller's).
    static func runConfig(_ a: Arguments) throws -> SimulationConfig {
        var config = try RunConfigArguments.config(a)
        config.readOnly = a.has("--read-only")
        config.discardUnmap = try a.choice("--discard", ["unmap", "ignore"], default: "unmap") == "unmap"
        return config
    }

    /// `--per-volume`: every volume's report, in volume order.
    private static func perVolume(_ a: Arguments, _ original: [String], _ config: SimulationConfig, _ format: String) throws
        -> Int32
    {
        if format == "html" {
            throw UsageError("--format html is one volume's page; with --per-volume use text, json or csv (or advise --per-volume --format html)")
        }
        let cost = try CostCLI.load(a)
        let jobs = try SweepCommand.jobs(a)
        let trace = a.positionals[0]
        let results = try PerVolumeCLI.run(a, original, trace: trace, base: config, jobs: jobs) { unit, config -> (String, String) in
            var reader = try unit.reader()
            let report = try Simulation.run(config: config, reader: &reader)
            switch format {
            case "json": return ("", try ReportFormat.json(report, config: config, cost: cost))
            case "csv":
                // simulate's CSV rows with the volume and its size first (simulate has no trace column).
                let lines = ReportFormat.csv(report, prediction: cost?.predict(report, config: config)).split(separator: "\n")
                let prefix = SweepTable.csvField(unit.name) + ",\(unit.size),"
                var body = ""
                for line in lines.dropFirst() { body += prefix + line + "\n" }
                return ("volume,virtual_size," + (lines.first.map(String.init) ?? "") + "\n", body)
            default:
                var text = "volume \(unit.name): virtual size \(unit.size) bytes (\(ReportFormat.bytes(unit.size)))\n"
                text += ReportFormat.text(report, config: config)
                if let cost { text += CostCLI.textLine(cost.predict(report, config: config), cost: cost) }
                return ("", text)
            }
        }
        var out = ""
        switch format {
        case "json":
            let items = results.map { r -> String in
                let report = r.result.1.trimmingCharacters(in: .whitespacesAndNewlines)
                return "{\"volume\": \(SweepTable.jsonString(r.name)), \"report\": \(report)}"
            }
            out = "{\"schema_version\": 1, \"command\": \"simulate\", \"trace\": \(SweepTable.jsonString(trace)), \"volumes\": [\n"
            out += items.joined(separator: ",\n") + "\n]}\n"
        case "csv":
            // One header (the first volume's: every volume has the same columns).
            out = results.first?.result.0 ?? ""
            for r in results { out += r.result.1 }
        default:
            out = results.map { $0.result.1 }.joined(separator: "\n")
        }
        try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
        return 0
    }

    private static func finish<R: TraceReader>(
        _ a: Arguments, _ args: [String], _ config: SimulationConfig, _ format: String, _ reader: inout R,
        _ events: inout BufferedFileWriter?, progress: Progress?
    ) throws -> Int32 {
        let cost = try CostCLI.load(a)
        var log: EventLog?
        if let path = a.value("--events") {
            let w = try BufferedFileWriter(path: path)
            events = w
            log = EventLog(retainEvents: false) { w.writeLine($0.description) }
        }
        let timeline = a.value("--memory-timeline") == nil && format != "html" ? nil : MemoryTimeline()
        let report: SimulationReport
        if a.has("--request-markers"), let events {
            // The simulation asks for a record only when the previous request's events are all
            // out (the clean timer prints none), so a marker written as the record is handed
            // over lands exactly before that request's events.
            var marking = RequestMarkingReader(inner: reader, writer: events)
            report = try Simulation.run(config: config, reader: &marking, log: log, memoryTimeline: timeline)
        } else {
            report = try Simulation.run(config: config, reader: &reader, log: log, memoryTimeline: timeline)
        }
        // The progress line goes before the report does (both may be on one terminal).
        progress?.finish()
        if let timeline, let path = a.value("--memory-timeline") {
            try writeOutput(Data(timeline.csv.utf8), to: path)
        }
        try events?.commit()
        events = nil
        let out: String
        switch format {
        case "json": out = try ReportFormat.json(report, config: config, cost: cost)
        case "csv": out = ReportFormat.csv(report, prediction: cost?.predict(report, config: config))
        case "html":
            out = SimulationPage.html(
                report: report, config: config, timeline: timeline ?? MemoryTimeline(), trace: a.positionals.first ?? "",
                command: "qcow2sim simulate " + args.map(shellQuoted).joined(separator: " "))
        default:
            out = ReportFormat.text(report, config: config)
                + (cost.map { CostCLI.textLine($0.predict(report, config: config), cost: $0) } ?? "")
        }
        try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
        return 0
    }
}

/// A buffered line writer for large event logs, over an ``OutputFile``. The event callback
/// cannot throw, so the first write error is kept (later lines are dropped) and thrown by
/// `commit()`.
final class BufferedFileWriter {
    private let output: OutputFile
    private var buffer: [UInt8] = []
    private var failure: Error?

    init(path: String) throws {
        output = try OutputFile(path: path)
        buffer.reserveCapacity(1 << 20)
    }

    func writeLine(_ s: String) {
        guard failure == nil else { return }
        buffer.append(contentsOf: s.utf8)
        buffer.append(0x0a)
        if buffer.count >= 1 << 20 { flush() }
    }

    private func flush() {
        do {
            try output.write(buffer)
        } catch {
            failure = error
        }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Writes what is buffered and makes the file final; throws the first write error.
    func commit() throws {
        flush()
        if let failure { throw failure }
        try output.commit()
    }

    /// Removes the temporary file (after a failure).
    func abandon() { output.abandon() }
}

/// A reader that writes `# request N OP OFFSET LENGTH` to the event log as it hands out
/// record N (from 1), and `# close` at the end of the trace, before the close's events.
struct RequestMarkingReader<Inner: TraceReader>: TraceReader {
    var inner: Inner
    let writer: BufferedFileWriter
    private var count = 0
    private var closed = false

    init(inner: Inner, writer: BufferedFileWriter) {
        self.inner = inner
        self.writer = writer
    }

    mutating func next() throws -> TraceRecord? {
        guard let r = try inner.next() else {
            // The images close next: their write-backs are no request's.
            if !closed { writer.writeLine("# close") }
            closed = true
            return nil
        }
        count += 1
        let op: String
        switch r.op {
        case .read: op = "read"
        case .write: op = "write"
        case .discard: op = "discard"
        case .writeZeroes: op = r.flags.contains(.unmap) ? "write_zeroes_unmap" : "write_zeroes"
        case .flush: op = "flush"
        }
        writer.writeLine("# request \(count) \(op) \(r.offset) \(r.length)")
        return r
    }

    var location: TraceLocation { inner.location }
    var fileName: String { inner.fileName }
    var timeOrigin: TraceTimeOrigin { inner.timeOrigin }
}

/// `s` as a shell word: bare when it is plainly safe, single-quoted otherwise.
func shellQuoted(_ s: String) -> String {
    let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=+,./:@%")
    if !s.isEmpty && s.allSatisfy({ safe.contains($0) }) { return s }
    return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
