import Foundation
import Qcow2Sim
import Reporting
import TraceKit

/// `qcow2sim sweep TRACE… --vary KEY=VALUES…`: every configuration of a grid over every trace
/// in one command (issue 10, item 1), one output row per (trace, point, image, cache).
enum SweepCommand {
    static let help = """
        usage: qcow2sim sweep TRACE... [run options] --vary KEY=VALUES [--vary KEY=VALUES...]
                              [--policy NAME[,NAME...]] [--what-if KEY=VALUE...] [--jobs N]
                              [--format csv|json|text|html] [--output FILE] [--progress|--quiet]
                              [--shard K/N]
                              [trace mapping options]

        Runs every configuration of the grid (the cross product of the --vary axes, the first
        varying slowest) over every TRACE, as `simulate` would run each one, and prints one row
        per trace, configuration, image and cache.

        --vary KEY=VALUES, KEY being one of
          l2-cache-size, l2-cache-entry-size, refcount-cache-size, cache-size,
          cache-clean-interval
                                a --drive option; also with backing. prefixes
                                (backing.l2-cache-size: the backing file's); replaces that
                                option of --drive
          cluster_size, extended_l2, refcount_bits
                                a -o option (not with --image; a --layer N:-o= setting of
                                the same option still wins for image N)
          cache-mode, policy
          what-if.KEY           a what-if (a proposal QEMU does not implement; simulate --what-if):
                                what-if.l2-cache-size=25%,50%,100%, what-if.cache-scope=image,chain,
                                what-if.chain-l2-cache-size=SIZES; every row then has a what_if column

        \(valuesHelp)

        run options: as 'qcow2sim simulate --help' lists them (--size, -o, --chain, --populate,
        --layer, --image, --drive, --cache-mode, --qemu-version, --read-only, --discard, …)
          --policy NAME[,NAME...]  eviction policies (default qemu); several are the last axis
          --what-if KEY=VALUE   a what-if for every point, as simulate takes it (repeatable; a
                                --vary what-if.KEY of the same KEY replaces it)

        output:
          --format FMT          csv (default), json, text, or html: one self-contained page (inline
                                SVG and CSS, no scripts) with the miss-ratio curve over the first
                                swept size (misses and metadata bytes, log axes, full coverage and
                                QEMU's 32M default marked), miss classes, per-image bars for a
                                chain, and every row in a table
          --output FILE         write the table to FILE instead of standard output
          --cost FILE           a cost model (qcow2sim calibrate): each point's predicted_iops
                                and predicted_latency_us as two more columns
          --jobs N              points run on N threads (default: all cores); the output is the
                                same whatever N is
        \(Progress.help)
        \(ShardCLI.help)

        \(columnsHelp)

        """

    /// The VALUES syntax, for `sweep` and `mrc`.
    static let valuesHelp = """
        VALUES
          A,B,C                 a list (sizes take K, M, G, T suffixes; extended_l2 on or off)
          START..END*F          geometric: START, START×F, START×F², … up to END (END included if
                                reached): 256K..32M*2 is 8 sizes; a fractional F's values are
                                rounded to the nearest whole byte
          START..END+STEP       arithmetic: START, START+STEP, … up to END
          START..END:N          N sizes, geometric from START to END with both ends included; the
                                k-th is START×(END/START)^(k/(N−1)) rounded to the nearest whole
                                byte (halves up)
          Values must not repeat. Sizes are printed in bytes (in K/M/G in the text table).
        """

    /// The columns, for `sweep` and `mrc`.
    static let columnsHelp =
        wrap(
            "columns (csv, and the objects under \"rows\" in json): trace, one per varied KEY (named as the key), "
                + SweepTable.fixedColumns.joined(separator: ", ")
                + ", then what_if (the point's what-ifs, KEY=VALUE; in json an object) when a what-if runs."
                + " The counters are simulate's (image 0 is the base of the chain).")

    /// `text` in lines of at most 92 characters, broken at spaces.
    static func wrap(_ text: String) -> String {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty && line.count + 1 + word.count > 92 {
                lines.append(line)
                line = ""
            }
            line += (line.isEmpty ? "" : " ") + word
        }
        lines.append(line)
        return lines.joined(separator: "\n")
    }

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "sweep")
        }
        do {
            return try main(args, mode: nil)
        } catch {
            return reportFailure(error, command: "sweep")
        }
    }

    /// Parses `args` and runs them: `mode` nil runs the command as given (with or without
    /// `--shard`); `.merge` takes the results from shard files (`qcow2sim merge`).
    static func main(_ args: [String], mode: RunMode?) throws -> Int32 {
        let a = try arguments(PerVolumeCLI.prepared(args), extra: ["--vary", "--what-if"])
        let traces = a.positionals
        guard !traces.isEmpty else { throw UsageError("missing TRACE argument") }
        let perVolume = try PerVolumeCLI.enabled(a, args, traces: traces)
        let axes = try a.all("--vary").map { try SweepAxis.parse($0) }
        var base = try SimulateCommand.runConfig(a)
        for setting in a.all("--what-if") { try base.whatIf.set(setting) }
        return try execute(
            a, command: "sweep", traces: traces, base: base, axes: axes, mode: mode ?? ShardCLI.mode(a, traces: traces),
            args: args, perVolume: perVolume ? args : nil)
    }

    /// The arguments of `sweep` (or `mrc`, with its own `extra` options).
    static func arguments(_ args: [String], extra: Set<String>) throws -> Arguments {
        try Arguments(
            args,
            options: SimulateCommand.runOptions.union(["--policy", "--jobs", "--format", "--output", "--cost", ShardCLI.option])
                .union(extra).union(PerVolumeCLI.options),
            flags: SimulateCommand.runFlags.union(Progress.flags).union(PerVolumeCLI.flags), aliases: RunConfigArguments.aliases,
            repeatable: RunConfigArguments.repeatable.union(["--vary", "--what-if"]))
    }

    /// Runs the grid `axes` over `base` on every trace and writes the table, or this shard's units
    /// (`mode`); `args` are the command's arguments (for the shard file and the HTML page).
    /// `perVolume` (the original arguments) runs the grid on every volume of the one trace.
    static func execute(
        _ a: Arguments, command: String, traces: [String], base: SimulationConfig, axes: [SweepAxis], mode: RunMode,
        args: [String], perVolume: [String]? = nil
    ) throws -> Int32 {
        var base = base
        var axes = axes
        if let text = a.value("--policy") {
            let policies = try SweepValues.parse(text, key: .policy, argument: "--policy")
            if axes.contains(where: { $0.key == .policy }) {
                throw UsageError("--vary policy and --policy both vary the policy; give one of them")
            }
            if policies.count == 1 {
                base.policy = policies[0].text
            } else {
                axes.append(SweepAxis(key: .policy, values: policies))
            }
        }
        guard !axes.isEmpty else {
            throw UsageError("nothing to vary: give --vary KEY=VALUES (or --policy with several names)")
        }
        let format = try a.choice("--format", ["csv", "json", "text", "html"], default: "csv")
        let cost = try CostCLI.load(a)
        let jobs = try Self.jobs(a)
        if let original = perVolume {
            if format == "html" {
                throw UsageError("--format html draws one curve; with --per-volume use csv, json or text (or advise --per-volume --format html for the fleet page)")
            }
            let axes = axes
            let table = try perVolumeTable(
                a, original, command: command, trace: traces[0], base: base, jobs: jobs, mode: mode,
                grid: { config in
                    let grid = try SweepGrid(base: config, axes: axes)
                    return (grid, grid.points)
                },
                run: { unit, points in
                    try SweepExecutor.run(
                        points: points, traces: 1, jobs: 1, runner: RecordingPointRunner(), open: { _ in try unit.reader() })
                }, cost: { cost })
            guard let table else { return 0 }
            try writeOutput(Data((format == "json" ? table.json() : format == "text" ? table.text() : table.csv()).utf8), to: a.value("--output") ?? "-")
            return 0
        }
        let grid = try SweepGrid(base: base, axes: axes)
        let points = grid.points
        if traces.contains("-") && traces.count * points.count > 1 {
            throw UsageError("TRACE '-' (standard input) can be read only once, but every point reads its trace; give a file")
        }
        let (traceFormat, mapping) = try TraceCommand.mapping(a)
        // Units: (trace, point), trace-major: unit t × P + p.
        let total = traces.count * points.count
        let table: SweepTable
        let fullCoverage: UInt64?
        switch mode {
        case .shard(let spec):
            let stamps = traces.map(TraceStamp.of)
            let mine = spec.units(of: total)
            let progress = try Progress.start(a, command: command, points: mine.count)
            defer { progress?.finish() }
            var results: [ShardUnit] = []
            for (t, trace) in traces.enumerated() {
                let ps = mine.filter { $0 / points.count == t }.map { $0 % points.count }
                guard !ps.isEmpty else { continue }
                // The shard's points of this trace, numbered from 0 for the executor.
                let sub = ps.enumerated().map { j, p in
                    var q = points[p]
                    q.index = j
                    return q
                }
                progress?.estimate(traces: [trace], pointsPerTrace: sub.count)
                let reports = try Self.runPoints(
                    sub, traces: [trace], format: traceFormat, mapping: mapping, jobs: jobs, progress: progress, grid: grid)
                for (j, p) in ps.enumerated() {
                    let r = reports[0][j]
                    let rows = SweepTable.rows(trace: trace, point: points[p], report: r, cost: cost, method: nil)
                    results.append(
                        ShardUnit(
                            index: t * points.count + p, rows: rows.map { ShardRow($0) },
                            fullCoverage: (r.images.last?.geometry).map(MissRatioCurve.fullCoverage)))
                }
            }
            progress?.finish()
            try ShardCLI.write(command: command, args: args, a: a, stamps: stamps, spec: spec, units: total, results: results)
            return 0
        case .merge(let units):
            try ShardCLI.check(units, total: total)
            var rows: [SweepRow] = []
            for u in units {
                let t = u.index / points.count, p = u.index % points.count
                for r in u.rows ?? [] { rows.append(try r.row(trace: traces[t], point: points[p])) }
            }
            table = SweepTable(command: command, traces: traces, grid: grid, rows: rows, hasMethod: false)
            fullCoverage = units.first?.fullCoverage
        case .whole:
            let progress = try Progress.start(a, command: command, points: points.count * traces.count)
            defer { progress?.finish() }
            progress?.estimate(traces: traces, pointsPerTrace: points.count)
            let reports = try Self.runPoints(
                points, traces: traces, format: traceFormat, mapping: mapping, jobs: jobs, progress: progress, grid: grid)
            // The progress line goes before the table does (both may be on one terminal).
            progress?.finish()
            table = SweepTable(command: command, traces: traces, grid: grid, points: points, reports: reports, cost: cost)
            fullCoverage = (reports.first?.first?.images.last?.geometry).map(MissRatioCurve.fullCoverage)
        }
        let out = render(table, format: format, fullCoverage: fullCoverage, command: command, args: args, mode: mode)
        try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
        return 0
    }

    /// The table of `sweep` or `mrc` in `format` (csv, json, text or html, whose page shows the
    /// command line).
    static func render(
        _ table: SweepTable, format: String, fullCoverage: UInt64?, command: String, args: [String], mode: RunMode
    ) -> String {
        switch format {
        case "json": return table.json()
        case "text": return table.text()
        case "html":
            return SweepPage.html(
                table: table, fullCoverage: fullCoverage,
                command: "qcow2sim \(command) " + pageArguments(args, mode: mode).map(shellQuoted).joined(separator: " "))
        default: return table.csv()
        }
    }

    /// The command line an HTML page shows: as given; merged, the shards' (`MergeCommand`).
    static func pageArguments(_ args: [String], mode: RunMode) -> [String] {
        if case .merge = mode { return args }
        return Array(CommandLine.arguments.dropFirst(2))
    }

    /// The rows of a `--per-volume` sweep or curve: `grid(config)` makes a volume's grid from its
    /// sized configuration, `run` its reports (`[[point]]`, one trace), `methods` mrc's methods.
    /// With `--shard` (`mode`) the units are the volumes in sorted order: the shard's volumes run
    /// and its file is written (nil is returned); merged, the rows come from the shard files.
    static func perVolumeTable(
        _ a: Arguments, _ original: [String], command: String, trace: String, base: SimulationConfig, jobs: Int,
        mode: RunMode = .whole,
        grid: @escaping @Sendable (SimulationConfig) throws -> (SweepGrid, [SweepPoint]),
        run: @escaping @Sendable (VolumeWork, [SweepPoint]) throws -> [[SimulationReport]],
        methods: (@Sendable (VolumeWork, [SweepPoint]) throws -> ([[SimulationReport]], [[CurveMethod]]))? = nil,
        cost: () throws -> CostModel?
    ) throws -> SweepTable? {
        if case .merge(let units) = mode {
            // The first volume's grid names the columns, as below.
            guard let first = units.first, let size = first.volumeSize else { throw UsageError("no volumes in \(trace)") }
            var config = base
            config.virtualSize = size
            let g = try grid(config).0
            var table = SweepTable(command: command, traces: [], grid: g, points: [], reports: [], methods: methods == nil ? nil : [])
            table.traces = [trace]
            table.rows = try units.flatMap { u in try (u.rows ?? []).map { try $0.row(trace: trace, point: nil) } }
            return table
        }
        var shard: ShardSpec?
        if case .shard(let spec) = mode { shard = spec }
        let names = try shard.map { _ in try PerVolumeCLI.volumeNames(a, original, trace: trace) } ?? []
        let owned = shard.map { spec in Set(spec.units(of: names.count).map { names[$0] }) }
        let stamps = [TraceStamp.of(trace)]
        let model = try cost()
        let results = try PerVolumeCLI.run(a, original, trace: trace, base: base, jobs: jobs) {
            unit, config -> ([SweepRow], SweepGrid)? in
            if let owned, !owned.contains(unit.name) { return nil }
            let (g, points) = try grid(config)
            if let p = points.first(where: { $0.invalid != nil }), let e = p.invalid {
                throw explain(SweepFailure(point: p.index, error: e), grid: g, points: points)
            }
            let table: SweepTable
            do {
                if let methods {
                    let (reports, m) = try methods(unit, points)
                    table = SweepTable(command: command, traces: [trace], grid: g, points: points, reports: reports, methods: m)
                } else {
                    table = SweepTable(
                        command: command, traces: [trace], grid: g, points: points, reports: try run(unit, points), cost: model)
                }
            } catch let f as SweepFailure {
                throw explain(f, grid: g, points: points)
            }
            let rows = table.rows.map { row in
                var row = row
                row.volume = unit.name
                row.virtualSize = unit.size
                return row
            }
            return (rows, g)
        }
        if case .shard(let spec) = mode {
            let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($0.element, $0.offset) })
            var units: [ShardUnit] = []
            for (name, result) in results {
                guard let (rows, _) = result, let i = index[name] else { continue }
                units.append(
                    ShardUnit(index: i, rows: rows.map { ShardRow($0, keepingPoint: true) }, volumeSize: rows.first?.virtualSize))
            }
            units.sort { $0.index < $1.index }
            try ShardCLI.write(
                command: command, args: original, a: a, stamps: stamps, spec: spec, units: names.count, results: units)
            return nil
        }
        // The first volume's grid names the columns (every volume's has the same axes; with
        // mrc's `--sizes all` the values are each volume's own, in its rows).
        guard let g = results.first?.result?.1 else { throw UsageError("no volumes in \(trace)") }
        var table = SweepTable(command: command, traces: [], grid: g, points: [], reports: [], methods: methods == nil ? nil : [])
        table.traces = [trace]
        table.rows = results.flatMap { $0.result?.0 ?? [] }
        return table
    }

    /// `--jobs N` (1 to 1024; default: all cores).
    static func jobs(_ a: Arguments) throws -> Int {
        guard let text = a.value("--jobs") else { return ProcessInfo.processInfo.activeProcessorCount }
        guard let n = Int(text), n >= 1, n <= 1024 else {
            throw UsageError("invalid value '\(text)' for --jobs (expected 1 to 1024)")
        }
        return n
    }

    /// Runs `points` over `traces` on `jobs` threads, each group of points sharing a stream from
    /// one recording (`RecordingPointRunner`); a point's failure is explained against `grid`.
    static func runPoints(
        _ points: [SweepPoint], traces: [String], format: TraceFormat?, mapping: TraceOptions, jobs: Int, progress: Progress?,
        grid: SweepGrid
    ) throws -> [[SimulationReport]] {
        do {
            // Each point opens its own reader, through the path `simulate` uses.
            let open: @Sendable (Int) throws -> AnyTraceReader = { t in
                try TraceFile.open(path: traces[t], format: format, options: mapping)
            }
            if let progress {
                return try SweepExecutor.run(
                    points: points, traces: traces.count, jobs: jobs, runner: RecordingPointRunner(),
                    open: { CountingReader(try open($0), progress) }, finished: { progress.add(points: $0) })
            }
            return try SweepExecutor.run(points: points, traces: traces.count, jobs: jobs, runner: RecordingPointRunner(), open: open)
        } catch let f as SweepFailure {
            throw explain(f, grid: grid, points: points)
        }
    }

    /// A point's failure as the command reports it: a bad option value names the point
    /// (`point l2-cache-size=262144, cluster_size=3K: -o: …`); trace and image errors are
    /// located already and pass unchanged.
    static func explain(_ f: SweepFailure, grid: SweepGrid, points: [SweepPoint]) -> Error {
        guard case SimulationError.usage(let message) = f.error, f.point < points.count else { return f.error }
        let values = zip(grid.axes, points[f.point].values).map { "\($0.0.key)=\($0.1.text)" }.joined(separator: ", ")
        return SimulationError.usage("point \(values): \(message)")
    }
}
