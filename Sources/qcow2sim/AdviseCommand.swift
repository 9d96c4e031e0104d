import Foundation
import Qcow2Sim
import Reporting
import TraceKit

/// `qcow2sim advise TRACE… (--memory-budget SIZE | --target-hit-rate R | --target-miss-per-request X)`:
/// cache settings for every image of the chain, ready to paste as `-drive`, `-blockdev` and
/// libvirt XML (issue 12, item 1).
enum AdviseCommand {
    static let help = """
        usage: qcow2sim advise TRACE... [run options] (--memory-budget SIZE | --target-hit-rate R |
                               --target-miss-per-request X) [--vary KEY=VALUES...] [--cost FILE]
                               [--jobs N] [--format text|json|html] [--output FILE] [trace mapping options]

        Recommends, for every image of the chain, l2-cache-size, l2-cache-entry-size,
        refcount-cache-size and cache-clean-interval, says why (the knee of the L2 miss curve,
        the memory saved against QEMU's default of up to 32 MiB of L2 cache in 4 KiB slices and
        600 s, the misses it costs against full coverage), and prints them ready to paste: the
        -drive option string (backing. prefixes below the top), one -blockdev node per image and
        the libvirt <disk> element with <metadata_cache><max_size> for every image. libvirt maps
        max_size to QEMU's cache-size of that node, which QEMU splits by its own rule
        (read_cache_sizes): max_size is computed with that rule, so the L2 cache QEMU makes of it
        is the one recommended. The predicted counts are `simulate --drive` with the -drive string.

        target (one of):
          --memory-budget SIZE  per image, its L2 and refcount caches together (what libvirt's
                                max_size bounds); the smallest L2 size past the knee within it
          --target-hit-rate R   the smallest L2 cache with hit rate >= R (0 to 1), per image
          --target-miss-per-request X
                                the smallest L2 cache with at most X misses per request, per image

          --vary KEY=VALUES     compare create options of new images (cluster_size, extended_l2,
                                refcount_bits); the advice is for the one that needs the least
                                memory (with --cost: the most predicted IOPS)
          --cost FILE           a cost model (qcow2sim calibrate): predicted IOPS and latency
          --jobs N              curve points run on N threads (default: all cores)
          --format FMT          text (default), json, or html: one self-contained page (inline
                                SVG and CSS, no scripts) with the settings to paste and each
                                image's L2 miss curve, the recommended size marked
          --output FILE         write the advice to FILE instead of standard output

        run options: as 'qcow2sim simulate --help' lists them (--size, -o, --chain, --populate,
        --layer, --image, --drive, --cache-mode, …); a --drive l2-cache-size or cache-size is
        replaced by the advice, its other options are kept.

        \(PerVolumeCLI.help)
                                With --per-volume the output is the fleet summary: per volume the
                                memory the target needs, the distribution (p50/p90/p99/max), the
                                total against QEMU's defaults, and the volumes needing more than
                                the 32 MiB default L2 cache; --jobs N runs N volumes at once.

        """

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "advise")
        }
        do {
            let a = try Arguments(
                PerVolumeCLI.prepared(args),
                options: SimulateCommand.runOptions.union([
                    "--memory-budget", "--target-hit-rate", "--target-miss-per-request", "--vary", "--cost", "--jobs", "--format",
                    "--output",
                ]).union(PerVolumeCLI.options), flags: SimulateCommand.runFlags.union(PerVolumeCLI.flags),
                aliases: RunConfigArguments.aliases,
                repeatable: RunConfigArguments.repeatable.union(["--vary"]))
            let traces = a.positionals
            guard !traces.isEmpty else { throw UsageError("missing TRACE argument") }
            let perVolume = try PerVolumeCLI.enabled(a, args, traces: traces)
            if traces.contains("-") {
                throw UsageError("TRACE '-' (standard input): advise reads each trace several times; give a file")
            }
            let target = try Self.target(a)
            let format = try a.choice("--format", ["text", "json", "html"], default: "text")
            let cost = try a.value("--cost").map { try CostModel.load(path: $0) }
            let jobs = try SweepCommand.jobs(a)
            let base = try SimulateCommand.runConfig(a)
            let axes = try a.all("--vary").map { try SweepAxis.parse($0) }
            for axis in axes {
                guard case .create = axis.key else {
                    throw UsageError(
                        "--vary \(axis.key): advise varies create options only (cluster_size, extended_l2, refcount_bits); it chooses the cache options itself"
                    )
                }
            }
            if perVolume {
                let results = try PerVolumeCLI.run(a, args, trace: traces[0], base: base, jobs: jobs) { unit, config in
                    let grid = try SweepGrid(base: config, axes: axes)
                    let doc = try advise(grid: grid, target: target, cost: cost, names: traces, jobs: 1, bestEffort: true) { _ in
                        try unit.reader()
                    }
                    return (unit.size, doc)
                }
                let fleet = FleetSummary(trace: traces[0], volumes: results.map { ($0.name, $0.result.0, $0.result.1) })
                let out: String
                switch format {
                case "json": out = try ReportFormat.json(fleet)
                case "html": out = FleetPage.html(fleet, command: "qcow2sim advise " + args.map(shellQuoted).joined(separator: " "))
                default: out = fleet.text()
                }
                try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
                return 0
            }
            let grid = try SweepGrid(base: base, axes: axes)
            let (traceFormat, mapping) = try TraceCommand.mapping(a)
            let open: @Sendable (Int) throws -> AnyTraceReader = { t in
                try TraceFile.open(path: traces[t], format: traceFormat, options: mapping)
            }
            let best = try advise(grid: grid, target: target, cost: cost, names: traces, jobs: jobs, open: open)
            let out: String
            switch format {
            case "json": out = try ReportFormat.json(best)
            case "html": out = AdvicePage.html(best, command: "qcow2sim advise " + args.map(shellQuoted).joined(separator: " "))
            default: out = Advisor.text(best)
            }
            try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
            return 0
        } catch {
            return reportFailure(error, command: "advise")
        }
    }

    /// The advice over the grid's points (create options): the one needing the least memory (with
    /// a cost model the most IOPS), the others as its alternatives.
    static func advise<R: TraceReader & SendableMetatype>(
        grid: SweepGrid, target: AdviceTarget, cost: CostModel?, names traces: [String], jobs: Int, bestEffort: Bool = false,
        open: @escaping @Sendable (Int) throws -> R
    ) throws -> AdviceDocument {
        var results: [AdviceDocument] = []
        var firstError: Error?
        for p in grid.points {
            if let e = p.invalid {
                throw SweepCommand.explain(SweepFailure(point: p.index, error: e), grid: grid, points: grid.points)
            }
            do {
                results.append(
                    try Advisor.advise(
                        base: p.config, target: target, cost: cost, names: traces, jobs: jobs, bestEffort: bestEffort, open: open))
            } catch let e as AdviceError where grid.points.count > 1 {
                // Another configuration may reach the target.
                firstError = firstError ?? e
            } catch let f as SweepFailure {
                // A curve point's failure: a trace or option error, located already.
                throw f.error
            }
        }
        guard var best = results.first else { throw firstError ?? UsageError("no configuration to advise on") }
        if results.count > 1 {
            func memory(_ d: AdviceDocument) -> UInt64 { d.images.reduce(0) { $0 + $1.memoryBytes } }
            let better: (AdviceDocument, AdviceDocument) -> Bool = { x, y in
                if cost != nil, let i = x.totals.predictedIops, let j = y.totals.predictedIops, i != j { return i > j }
                return memory(x) < memory(y)
            }
            best = results.min(by: better) ?? best
            best.alternatives = results.filter { $0 != best }.map {
                AdviceDocument.Alternative(
                    createOptions: $0.createOptions, memoryBytes: memory($0), predictedIops: $0.totals.predictedIops,
                    misses: $0.totals.l2.misses)
            }
        }
        return best
    }

    /// Exactly one of the three targets.
    static func target(_ a: Arguments) throws -> AdviceTarget {
        let given = ["--memory-budget", "--target-hit-rate", "--target-miss-per-request"].filter { a.value($0) != nil }
        guard given.count == 1 else {
            throw UsageError(
                given.isEmpty
                    ? "missing target: give --memory-budget SIZE, --target-hit-rate R or --target-miss-per-request X"
                    : "give one target, not \(given.joined(separator: " and "))")
        }
        if let text = a.value("--memory-budget") {
            let b = try TraceArgs.bytes(text, "--memory-budget")
            return .memoryBudget(b)
        }
        if let text = a.value("--target-hit-rate") {
            guard let r = Double(text), r >= 0, r <= 1 else {
                throw UsageError("invalid value '\(text)' for --target-hit-rate (expected a number from 0 to 1)")
            }
            return .hitRate(r)
        }
        let text = a.value("--target-miss-per-request") ?? ""
        guard let x = Double(text), x.isFinite, x >= 0 else {
            throw UsageError("invalid value '\(text)' for --target-miss-per-request (expected a number of at least 0)")
        }
        return .missesPerRequest(x)
    }
}
