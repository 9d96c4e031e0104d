import Foundation
import Qcow2Sim
import Reporting
import TraceKit

/// `qcow2sim mrc TRACE --sizes all|VALUES`: the L2 (and refcount) miss-ratio curve, one point
/// per L2 cache size (issue 10, item 2), from one recording of the operation stream: one
/// stack-distance pass gives the sizes it can give exactly, the others are replayed
/// (`MissRatioCurveRunner`); the `method` column says which.
enum MrcCommand {
    static let help = """
        usage: qcow2sim mrc TRACE [run options] --sizes all|VALUES [--entry-size SIZE]
                            [--policy NAME[,NAME...]] [--jobs N] [--format csv|json|text|html]
                            [--output FILE] [--progress|--quiet] [--shard K/N] [trace mapping options]

        The miss-ratio curve of TRACE: the top image's l2-cache-size over the sizes, every point
        equal to `simulate --drive l2-cache-size=SIZE`. The rows are sweep's, with l2-cache-size
        as the varied key (the refcount cache's rows too), and a last column, method: `stack`
        (from one stack-distance pass over the recorded operation stream, policies qemu and lru)
        or `replay` (the point's own run: write-backs, discards of cached tables, clean ticks, a
        pinned table in the way, other policies, and full coverage, where QEMU switches to whole
        tables).

          --sizes all           every size in entries from QEMU's minimum (2 entries) to full
                                coverage: n × 4K for each n below it, then the covering size
          --sizes VALUES        the L2 cache sizes (VALUES below)
          --entry-size SIZE     l2-cache-entry-size for every point (default QEMU's: 4K slices
                                until the cache covers the disk, then whole tables)

        \(SweepCommand.valuesHelp)

        run options: as 'qcow2sim simulate --help' lists them; --policy, --jobs, --format,
        --output, --progress and --quiet as 'qcow2sim sweep --help' describes them.
        \(ShardCLI.help)

        \(SweepCommand.columnsHelp)

        """

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "mrc")
        }
        do {
            return try main(args, mode: nil)
        } catch {
            return reportFailure(error, command: "mrc")
        }
    }

    /// Parses `args` and runs them, as `SweepCommand.main` does.
    static func main(_ args: [String], mode: RunMode?) throws -> Int32 {
        do {
            let a = try SweepCommand.arguments(PerVolumeCLI.prepared(args), extra: ["--sizes", "--entry-size"])
            let trace = try a.positionals(1, what: "TRACE argument")
            let perVolume = try PerVolumeCLI.enabled(a, args, traces: trace)
            guard let sizes = a.value("--sizes") else {
                throw UsageError("missing --sizes all|VALUES (e.g. --sizes all, --sizes 256K..32M*2)")
            }
            var base = try SimulateCommand.runConfig(a)
            if let text = a.value("--entry-size") {
                guard case .success(let size) = QemuSize.parse(Substring(text)) else {
                    throw UsageError(
                        "invalid value '\(text)' for --entry-size (expected a size in bytes, optionally with a K, M, G or T suffix)"
                    )
                }
                if let e = SweepGrid.apply(SweepValue(text: String(size), number: size), for: .drive("l2-cache-entry-size"), to: &base) {
                    throw e
                }
            }
            let key = SweepKey.drive("l2-cache-size")
            if perVolume {
                return try executePerVolume(
                    a, args, trace: trace[0], base: base, sizes: sizes, mode: mode ?? ShardCLI.mode(a, traces: trace))
            }
            let values =
                sizes == "all" ? try MissRatioCurveRunner.allSizes(base) : try SweepValues.parse(sizes, key: key, argument: "--sizes")
            return try execute(
                a, trace: trace[0], base: base, axis: SweepAxis(key: key, values: values),
                mode: mode ?? ShardCLI.mode(a, traces: trace), args: args)
        }
    }

    /// The curve of every volume (`--per-volume`): `--sizes all` is each volume's own list.
    static func executePerVolume(
        _ a: Arguments, _ original: [String], trace: String, base: SimulationConfig, sizes: String, mode: RunMode
    ) throws -> Int32 {
        var base = base
        var policies: [SweepValue] = []
        if let text = a.value("--policy") {
            policies = try SweepValues.parse(text, key: .policy, argument: "--policy")
            if policies.count == 1 { base.policy = policies[0].text }
        }
        let format = try a.choice("--format", ["csv", "json", "text", "html"], default: "csv")
        if format == "html" {
            throw UsageError("--format html draws one curve; with --per-volume use csv, json or text (or advise --per-volume --format html for the fleet page)")
        }
        let jobs = try SweepCommand.jobs(a)
        let key = SweepKey.drive("l2-cache-size")
        let fixed = sizes == "all" ? nil : try SweepValues.parse(sizes, key: key, argument: "--sizes")
        let policyAxis = policies.count > 1 ? [SweepAxis(key: .policy, values: policies)] : []
        guard
            let table = try SweepCommand.perVolumeTable(
                a, original, command: "mrc", trace: trace, base: base, jobs: jobs, mode: mode,
            grid: { config in
                let values = try fixed ?? MissRatioCurveRunner.allSizes(config)
                let grid = try SweepGrid(base: config, axes: [SweepAxis(key: key, values: values)] + policyAxis)
                return (grid, grid.points)
            }, run: { _, _ in [] },
            methods: { unit, points in
                let r = try MissRatioCurveRunner(jobs: 1).run(points, open: { try unit.reader() })
                return ([r.reports], [r.methods])
            }, cost: { nil })
        else { return 0 }
        let out = format == "json" ? table.json() : format == "text" ? table.text() : table.csv()
        try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
        return 0
    }

    /// Runs the curve (`MissRatioCurveRunner`) and writes the table, as `SweepCommand.execute` does.
    static func execute(_ a: Arguments, trace: String, base: SimulationConfig, axis: SweepAxis, mode: RunMode, args: [String])
        throws -> Int32
    {
        var base = base
        var axes = [axis]
        if let text = a.value("--policy") {
            let policies = try SweepValues.parse(text, key: .policy, argument: "--policy")
            if policies.count == 1 {
                base.policy = policies[0].text
            } else {
                axes.append(SweepAxis(key: .policy, values: policies))
            }
        }
        let format = try a.choice("--format", ["csv", "json", "text", "html"], default: "csv")
        let jobs = try SweepCommand.jobs(a)
        let grid = try SweepGrid(base: base, axes: axes)
        let points = grid.points
        if trace == "-" && points.count > 1 {
            throw UsageError("TRACE '-' (standard input) can be read only once, but the curve reads it more than once; give a file")
        }
        let (traceFormat, mapping) = try TraceCommand.mapping(a)
        let open: () throws -> AnyTraceReader = { try TraceFile.open(path: trace, format: traceFormat, options: mapping) }
        let curve = MissRatioCurveRunner(jobs: jobs)
        // Units: the points, in grid order.
        var only: Set<Int>?
        var shard: ShardSpec?
        var stamps: [TraceStamp] = []
        switch mode {
        case .shard(let spec):
            shard = spec
            only = Set(spec.units(of: points.count))
            stamps = [TraceStamp.of(trace)]
        case .merge(let units):
            try ShardCLI.check(units, total: points.count)
        case .whole: break
        }
        let table: SweepTable
        let fullCoverage: UInt64?
        if case .merge(let units) = mode {
            var rows: [SweepRow] = []
            for u in units { for r in u.rows ?? [] { rows.append(try r.row(trace: trace, point: points[u.index])) } }
            table = SweepTable(command: "mrc", traces: [trace], grid: grid, rows: rows, hasMethod: true)
            fullCoverage = units.first?.fullCoverage
        } else {
            let progress = try Progress.start(a, command: "mrc", points: only?.count ?? points.count)
            defer { progress?.finish() }
            let result: (reports: [SimulationReport?], methods: [CurveMethod])
            do {
                if let progress {
                    result = try curve.run(
                        points, only: only, open: { CountingReader(try open(), progress) }, finished: { progress.add(points: $0) })
                } else {
                    result = try curve.run(points, only: only, open: open)
                }
            } catch let f as SweepFailure {
                throw SweepCommand.explain(f, grid: grid, points: points)
            }
            progress?.finish()
            if let spec = shard {
                var results: [ShardUnit] = []
                for i in spec.units(of: points.count) {
                    guard let r = result.reports[i] else { throw ShardError("internal: mrc point \(i) was not run", exitCode: 70) }
                    let rows = SweepTable.rows(trace: trace, point: points[i], report: r, cost: nil, method: result.methods[i])
                    results.append(
                        ShardUnit(
                            index: i, rows: rows.map { ShardRow($0) },
                            fullCoverage: (r.images.last?.geometry).map(MissRatioCurve.fullCoverage)))
                }
                try ShardCLI.write(
                    command: "mrc", args: args, a: a, stamps: stamps, spec: spec, units: points.count, results: results)
                return 0
            }
            let reports = try result.reports.map { r in
                guard let r else { throw ShardError("internal: an mrc point was not run", exitCode: 70) }
                return r
            }
            table = SweepTable(
                command: "mrc", traces: [trace], grid: grid, points: points, reports: [reports], methods: [result.methods])
            fullCoverage = (reports.first?.images.last?.geometry).map(MissRatioCurve.fullCoverage)
        }
        let out = SweepCommand.render(table, format: format, fullCoverage: fullCoverage, command: "mrc", args: args, mode: mode)
        try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
        return 0
    }
}
