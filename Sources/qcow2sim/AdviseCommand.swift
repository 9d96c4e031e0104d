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
        \(ShardCLI.help)
                                advise's units are the curve's points (configuration, trace,
                                candidate size); merge chooses and runs the recommended
                                settings once per trace

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
            return try main(args, mode: nil, stamps: [])
        } catch {
            return reportFailure(error, command: "advise")
        }
    }

    /// Parses `args` and runs them (`mode` nil: as given, with or without `--shard`; `.merge`:
    /// the curve from shard files, whose traces' `stamps` the traces must still match).
    static func main(_ args: [String], mode: RunMode?, stamps: [TraceStamp]) throws -> Int32 {
        do {
            let a = try Arguments(
                PerVolumeCLI.prepared(args),
                options: SimulateCommand.runOptions.union([
                    "--memory-budget", "--target-hit-rate", "--target-miss-per-request", "--vary", "--cost", "--jobs", "--format",
                    "--output", ShardCLI.option,
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
                // Sharded, the units are the volumes in sorted order, each advised whole in its shard.
                let mode = try mode ?? ShardCLI.mode(a, traces: traces)
                var volumes: [(String, UInt64, AdviceDocument)] = []
                if case .merge(let units) = mode {
                    volumes = try units.map { u in
                        guard let v = u.advice, let size = u.volumeSize else {
                            throw ShardError("damaged shard: unit \(u.index) has no volume advice")
                        }
                        return (v.volume, size, try v.document())
                    }
                } else {
                    let names: [String]
                    let stamps = [TraceStamp.of(traces[0])]
                    var shard: ShardSpec?
                    if case .shard(let spec) = mode { shard = spec }
                    names = try shard.map { _ in try PerVolumeCLI.volumeNames(a, args, trace: traces[0]) } ?? []
                    let owned = shard.map { spec in Set(spec.units(of: names.count).map { names[$0] }) }
                    let results = try PerVolumeCLI.run(a, args, trace: traces[0], base: base, jobs: jobs) {
                        unit, config -> (UInt64, AdviceDocument)? in
                        if let owned, !owned.contains(unit.name) { return nil }
                        let grid = try SweepGrid(base: config, axes: axes)
                        let doc = try advise(grid: grid, target: target, cost: cost, names: traces, jobs: 1, bestEffort: true) { _ in
                            try unit.reader()
                        }
                        return (unit.size, doc)
                    }
                    if case .shard(let spec) = mode {
                        let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($0.element, $0.offset) })
                        var units: [ShardUnit] = []
                        for (name, result) in results {
                            guard let (size, doc) = result, let i = index[name] else { continue }
                            units.append(ShardUnit(index: i, volumeSize: size, advice: try VolumeAdvice(volume: name, doc)))
                        }
                        units.sort { $0.index < $1.index }
                        try ShardCLI.write(
                            command: "advise", args: args, a: a, stamps: stamps, spec: spec, units: names.count, results: units)
                        return 0
                    }
                    volumes = results.compactMap { r in r.result.map { (r.name, $0.0, $0.1) } }
                }
                let fleet = FleetSummary(trace: traces[0], volumes: volumes)
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
            let mode = try mode ?? ShardCLI.mode(a, traces: traces)
            if case .merge = mode {
                for (stamp, now) in zip(stamps, traces.map(TraceStamp.of)) where stamp != now {
                    throw ShardError(
                        "trace \(stamp.path) changed since the shards ran (they saw \(stamp.text), now \(now.text)); advise's merge runs the recommended settings on it"
                    )
                }
            }
            // Units: (configuration, trace, candidate), in that order; a configuration whose
            // plan fails has none (merge meets its error again, as the whole run does).
            var plans: [Advisor.Plan?] = []
            var offsets: [Int] = []
            var total = 0
            for p in grid.points {
                offsets.append(total)
                let plan: Advisor.Plan?
                do {
                    plan = p.invalid == nil ? try Advisor.plan(base: p.config, target: target) : nil
                } catch let e as AdviceError where grid.points.count > 1 {
                    _ = e
                    plan = nil
                }
                plans.append(plan)
                total += traces.count * (plan?.points.count ?? 0)
            }
            if case .shard(let spec) = mode {
                let stamps = traces.map(TraceStamp.of)
                var results: [ShardUnit] = []
                for (v, p) in grid.points.enumerated() {
                    if let e = p.invalid {
                        throw SweepCommand.explain(SweepFailure(point: p.index, error: e), grid: grid, points: grid.points)
                    }
                    guard let plan = plans[v] else { continue }
                    let n = plan.points.count
                    for t in traces.indices {
                        let ids = (0..<n).filter { spec.owns(offsets[v] + t * n + $0) }
                        guard !ids.isEmpty else { continue }
                        // This shard's candidates of (configuration, trace), numbered from 0.
                        let sub = ids.enumerated().map { j, i in
                            var q = plan.points[i]
                            q.index = j
                            return q
                        }
                        let reports: [[SimulationReport]]
                        do {
                            reports = try SweepExecutor.run(
                                points: sub, traces: 1, jobs: jobs, runner: RecordingPointRunner(), open: { _ in try open(t) })
                        } catch let f as SweepFailure {
                            throw f.error
                        }
                        for (j, i) in ids.enumerated() {
                            results.append(
                                ShardUnit(index: offsets[v] + t * n + i, sample: plan.sample(i, reports[0][j], cost: cost)))
                        }
                    }
                }
                try ShardCLI.write(command: "advise", args: args, a: a, stamps: stamps, spec: spec, units: total, results: results)
                return 0
            }
            var merged: [ShardUnit] = []
            if case .merge(let units) = mode {
                try ShardCLI.check(units, total: total)
                merged = units
            }
            var results: [AdviceDocument] = []
            var firstError: Error?
            for (v, p) in grid.points.enumerated() {
                if let e = p.invalid {
                    throw SweepCommand.explain(SweepFailure(point: p.index, error: e), grid: grid, points: grid.points)
                }
                do {
                    if case .merge = mode {
                        let plan = try plans[v] ?? Advisor.plan(base: p.config, target: target)
                        let n = plan.points.count
                        let samples = try traces.indices.map { t in
                            try (0..<n).map { i in
                                guard let s = merged[offsets[v] + t * n + i].sample else {
                                    throw ShardError("damaged shard: unit \(offsets[v] + t * n + i) has no advice sample")
                                }
                                return s
                            }
                        }
                        results.append(try Advisor.finish(plan, samples: samples, cost: cost, names: traces, open: open))
                    } else {
                        results.append(
                            try Advisor.advise(base: p.config, target: target, cost: cost, names: traces, jobs: jobs, open: open))
                    }
                } catch let e as AdviceError where grid.points.count > 1 {
                    // Another configuration may reach the target.
                    firstError = firstError ?? e
                } catch let f as SweepFailure {
                    // A curve point's failure: a trace or option error, located already.
                    throw f.error
                }
            }
            let best = try choose(results, cost: cost, firstError: firstError)
            let out: String
            switch format {
            case "json": out = try ReportFormat.json(best)
            case "html": out = AdvicePage.html(best, command: "qcow2sim advise " + args.map(shellQuoted).joined(separator: " "))
            default: out = Advisor.text(best)
            }
            try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
            return 0
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
        return try choose(results, cost: cost, firstError: firstError)
    }

    /// The advice needing the least memory (with a cost model the most IOPS) among one per grid
    /// point, the others as its alternatives; `firstError` when no point gave any.
    static func choose(_ results: [AdviceDocument], cost: CostModel?, firstError: Error?) throws -> AdviceDocument {
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
