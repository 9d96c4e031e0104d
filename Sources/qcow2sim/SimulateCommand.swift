import Foundation
import Qcow2Sim
import TraceKit

/// `qcow2sim simulate TRACE`: replay a trace through the simulated image chain and report.
enum SimulateCommand {
    static let help = """
        usage: qcow2sim simulate TRACE [run options] [--format text|json|csv] [--events FILE]
                                 [--output FILE] [--policy NAME] [--read-only] [--discard unmap|ignore]
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
          --format FMT          text (default), json or csv
          --output FILE         write the report to FILE instead of standard output
          --memory-timeline FILE  CSV of resident cache memory over trace time
                                (time,image,cache,resident_bytes), one row per change
          --events FILE         write every cache event in QEMU's qcow2_cache_* format, with
                                `co 0x…` replaced by `image N` (0 = base of the chain)

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
                args,
                options: RunConfigArguments.options.union(TraceCommand.mappingOptions).union([
                    "--format", "--events", "--output", "--policy", "--discard", "--memory-timeline", "--what-if",
                ]),
                flags: ["--read-only", "--no-rebase"], aliases: RunConfigArguments.aliases,
                repeatable: RunConfigArguments.repeatable.union(["--what-if"]))
            var config = try RunConfigArguments.config(a)
            config.policy = a.value("--policy") ?? "qemu"
            for setting in a.all("--what-if") { try config.whatIf.set(setting) }
            config.readOnly = a.has("--read-only")
            config.discardUnmap = try a.choice("--discard", ["unmap", "ignore"], default: "unmap") == "unmap"
            let format = try a.choice("--format", ["text", "json", "csv"], default: "text")
            // With --image (--size is refused there) the simulation itself checks every request
            // against the image's virtual size, which may be 0 (a valid qcow2 image).
            var reader = try TraceCommand.open(a)

            var log: EventLog?
            if let path = a.value("--events") {
                let w = try BufferedFileWriter(path: path)
                events = w
                log = EventLog(retainEvents: false) { w.writeLine($0.description) }
            }
            let timeline = a.value("--memory-timeline") == nil ? nil : MemoryTimeline()
            let report = try Simulation.run(config: config, reader: &reader, log: log, memoryTimeline: timeline)
            if let timeline, let path = a.value("--memory-timeline") {
                try writeOutput(Data(timeline.csv.utf8), to: path)
            }
            try events?.commit()
            events = nil
            let out: String
            switch format {
            case "json": out = ReportFormat.json(report, config: config)
            case "csv": out = ReportFormat.csv(report)
            default: out = ReportFormat.text(report, config: config)
            }
            try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
            return 0
        } catch {
            return reportFailure(error, command: "simulate")
        }
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
