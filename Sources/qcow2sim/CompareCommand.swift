import Foundation
import Qcow2Sim
import Reporting
import TraceKit

/// `qcow2sim compare TRACE… --baseline SPEC --candidate SPEC…`: proposals side by side against a
/// baseline, with Belady's bound, per cache configuration (issue 11, item 3).
enum CompareCommand {
    static let help = """
        usage: qcow2sim compare TRACE... [run options] --baseline SPEC --candidate SPEC [--candidate SPEC...]
                                [--vary KEY=VALUES...] [--jobs N] [--format text|csv|json|html] [--output FILE]
                                [--progress|--quiet] [trace mapping options]

        Runs the baseline and every candidate on every TRACE (and at every point of the --vary
        grid), and prints their misses, write-backs, metadata bytes read and peak memory side by
        side, with each candidate's change in misses against the baseline and the optimal bound
        (Belady's MIN, `--policy opt`) at the candidate's own configuration. Rows for each image
        and for the chain as a whole (image `chain`).

        SPEC is one of
          policy=NAME           an eviction policy (qcow2sim simulate --help lists them)
          what-if.KEY=VALUE     a proposal QEMU does not implement (simulate --what-if KEY=VALUE)
          OPTIONS               --drive options added to the run's (l2-cache-size=2M,...)
        The baseline is usually policy=qemu. Points sharing a trace, image options and L2 entry
        size are computed from one recording of the operation stream, exactly.

        --format html writes one self-contained page (inline SVG and CSS, no scripts): the
        candidates' misses side by side with the optimal bound, their miss classes, per-image bars
        for a chain, miss-ratio curves when a size is varied, and every row in a table.

        CSV columns: trace, candidate (the SPEC as given; the baseline's row is marked by it),
        one column per varied KEY, image (N or chain), cache (l2 or refcount), misses,
        writebacks, bytes_read, memory_peak_bytes, delta_misses_pct (against the baseline at the
        same point; empty when the baseline has no misses), opt_misses, then lookups, hit_rate;
        with --cost FILE (a cost model, qcow2sim calibrate) predicted_iops, predicted_latency_us
        of the row's run; and what_if (the row's what-ifs, KEY=VALUE; JSON: an object) when a spec
        or --vary is a what-if. --vary takes sweep's keys, what-if.KEY too
        (--vary what-if.l2-cache-size=25%,50%,100%).

        \(SweepCommand.valuesHelp)

        """

    /// One SPEC, parsed.
    struct Spec {
        var text: String
        var apply: (inout SimulationConfig) throws -> Void
    }

    static func parseSpec(_ text: String, argument: String) throws -> Spec {
        if text.hasPrefix("policy=") {
            let name = String(text.dropFirst("policy=".count))
            guard PolicyRegistry.policy(named: name) != nil else {
                throw UsageError(
                    "\(argument) \(text): unknown policy '\(name)' (expected one of: \(PolicyRegistry.names.joined(separator: ", ")))")
            }
            return Spec(text: text) { $0.policy = name }
        }
        if text.hasPrefix(WhatIf.prefix) {
            // Parsed as `sweep --vary what-if.KEY=VALUES` parses it (one value here), so a bad
            // proposal is a usage error before anything runs, with sweep's message.
            let axis = try SweepAxis.parse(text, argument: argument)
            guard axis.values.count == 1 else {
                throw UsageError("\(argument) \(text): one value per candidate (vary it with --vary \(axis.key)=VALUES)")
            }
            return Spec(text: text) { c in
                if let e = SweepGrid.apply(axis.values[0], for: axis.key, to: &c) { throw e }
            }
        }
        if let why = text.isEmpty ? "empty" : Self.driveError(text) {
            throw UsageError("\(argument) \(text): expected policy=NAME, what-if.KEY=VALUE or --drive options (\(why))")
        }
        return Spec(text: text) { c in
            let joined = [c.driveOptions.rendered, text].filter { !$0.isEmpty }.joined(separator: ",")
            c.driveOptions = try DriveOptions(parsing: joined, version: c.qemuVersion)
        }
    }

    static func driveError(_ text: String) -> String? {
        do {
            _ = try DriveOptions(parsing: text)
            return nil
        } catch {
            return error.message
        }
    }

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "compare")
        }
        do {
            let a = try Arguments(
                args,
                options: SimulateCommand.runOptions.union(["--jobs", "--format", "--output", "--vary", "--baseline", "--candidate", "--cost"]),
                flags: SimulateCommand.runFlags.union(Progress.flags), aliases: RunConfigArguments.aliases,
                repeatable: RunConfigArguments.repeatable.union(["--vary", "--candidate"]))
            let traces = a.positionals
            guard !traces.isEmpty else { throw UsageError("missing TRACE argument") }
            guard let baselineText = a.value("--baseline") else { throw UsageError("missing --baseline SPEC (e.g. policy=qemu)") }
            let candidateTexts = a.all("--candidate")
            guard !candidateTexts.isEmpty else { throw UsageError("missing --candidate SPEC (at least one)") }
            let specs = try [parseSpec(baselineText, argument: "--baseline")] + candidateTexts.map { try parseSpec($0, argument: "--candidate") }
            let axes = try a.all("--vary").map { try SweepAxis.parse($0) }
            if axes.contains(where: { $0.key == .policy }) {
                throw UsageError("--vary policy: give policies as --candidate policy=NAME")
            }
            let format = try a.choice("--format", ["text", "csv", "json", "html"], default: "text")
            let cost = try CostCLI.load(a)
            let jobs = try SweepCommand.jobs(a)
            let base = try SimulateCommand.runConfig(a)
            // The vary grid over the run's options, then for each spec its configuration and its
            // optimal twin: points spec-major, twins after, so one grid's indices are all apart.
            let grid = try SweepGrid(base: base, axes: axes)
            let perSpec = grid.points
            var points: [SweepPoint] = []
            for (s, spec) in specs.enumerated() {
                for twin in [false, true] {
                    for p in perSpec {
                        var config = p.config
                        var invalid = p.invalid
                        do { try spec.apply(&config) } catch let e as SimulationError { invalid = invalid ?? e }
                        if twin { config.policy = OptimalPolicy.name }
                        let index = (s * 2 + (twin ? 1 : 0)) * perSpec.count + p.index
                        points.append(SweepPoint(index: index, values: p.values, config: config, invalid: invalid))
                    }
                }
            }
            if traces.contains("-") { throw UsageError("TRACE '-' (standard input): compare reads each trace several times; give a file") }
            let (traceFormat, mapping) = try TraceCommand.mapping(a)
            let progress = try Progress.start(a, command: "compare", points: points.count * traces.count)
            defer { progress?.finish() }
            let reports = try SweepCommand.runPoints(
                points, traces: traces, format: traceFormat, mapping: mapping, jobs: jobs, progress: progress, grid: grid)
            progress?.finish()
            var table = CompareTable(
                traces: traces, specs: specs.map(\.text), axes: axes.map { $0.key.description }, points: perSpec,
                reports: reports)
            if let cost {
                // Each spec's own configuration at each point prices its report.
                table.addPredictions(cost: cost, points: points, reports: reports)
            }
            let out: String
            switch format {
            case "csv": out = table.csv()
            case "json": out = table.json()
            case "html":
                out = ComparePage.html(
                    rows: table.rows.map {
                        CompareRow(
                            trace: $0.trace, candidate: $0.candidate, values: $0.values, image: $0.image, cache: $0.cache, stats: $0.stats,
                            deltaPct: $0.deltaPct, optMisses: $0.optMisses)
                    }, traces: traces, specs: specs.map(\.text), axes: axes.map { $0.key.description },
                    fullCoverage: (reports.first?.first?.images.last?.geometry).map(MissRatioCurve.fullCoverage),
                    command: "qcow2sim compare " + args.map(shellQuoted).joined(separator: " "))
            default: out = table.text()
            }
            try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
            return 0
        } catch {
            return reportFailure(error, command: "compare")
        }
    }
}

/// The rows of a comparison.
struct CompareTable {
    struct Row {
        var trace: String
        var candidate: String
        var values: [String]
        var image: String
        var cache: String
        var stats: CacheStats
        var deltaPct: Double?
        var optMisses: Int
        /// The candidate's what-ifs (`KEY=VALUE`), the `what_if` column.
        var whatIf: [String]
        /// The run's prediction (`--cost`), on each of its rows.
        var prediction: Prediction?
        /// Index of the run in the points (spec × 2 × points + point).
        var run = 0
    }

    var traces: [String]
    var specs: [String]
    var axes: [String]
    var rows: [Row] = []
    /// Whether a `what_if` column follows the others.
    var hasWhatIf = false

    /// `reports[trace][index]` with index = (spec × 2 + twin) × points + point.
    init(traces: [String], specs: [String], axes: [String], points: [SweepPoint], reports: [[SimulationReport]]) {
        self.traces = traces
        self.specs = specs
        self.axes = axes
        let n = points.count
        for (t, trace) in traces.enumerated() {
            // Every row has the column once one candidate is a what-if (not QEMU's behaviour).
            if reports[t].contains(where: { !$0.whatIf.isEmpty }) { hasWhatIf = true }
            for p in points {
                let baseline = Self.caches(reports[t][p.index])
                for (s, spec) in specs.enumerated() {
                    let mine = Self.caches(reports[t][(s * 2) * n + p.index])
                    let opt = Self.caches(reports[t][(s * 2 + 1) * n + p.index])
                    for (k, entry) in mine.enumerated() {
                        let b = baseline[k].stats.misses
                        let delta: Double? =
                            b == 0 ? (entry.stats.misses == 0 ? 0 : nil) : Double(entry.stats.misses - b) / Double(b) * 100
                        rows.append(
                            Row(
                                trace: trace, candidate: spec, values: p.values.map(\.text), image: entry.image,
                                cache: entry.cache, stats: entry.stats, deltaPct: delta, optMisses: opt[k].stats.misses,
                                whatIf: reports[t][(s * 2) * n + p.index].whatIf, run: (s * 2) * n + p.index))
                    }
                }
            }
        }
    }

    /// Prices every row's run with `cost` (the run's configuration from `points`, by index).
    mutating func addPredictions(cost: CostModel, points: [SweepPoint], reports: [[SimulationReport]]) {
        let configs = Dictionary(points.map { ($0.index, $0.config) }, uniquingKeysWith: { a, _ in a })
        let traceIndex = Dictionary(traces.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        for i in rows.indices {
            guard let t = traceIndex[rows[i].trace], let config = configs[rows[i].run] else { continue }
            rows[i].prediction = cost.predict(reports[t][rows[i].run], config: config)
        }
        hasCost = true
    }

    var hasCost = false

    /// Per image and cache, then the chain's sums: (image, cache, stats).
    static func caches(_ r: SimulationReport) -> [(image: String, cache: String, stats: CacheStats)] {
        var out: [(String, String, CacheStats)] = []
        var l2 = CacheStats(), rc = CacheStats()
        for im in r.images {
            out.append(("\(im.index)", "l2", im.l2))
            out.append(("\(im.index)", "refcount", im.refcount))
            l2 = ReportFormat.add(l2, im.l2)
            rc = ReportFormat.add(rc, im.refcount)
        }
        if r.images.count > 1 {
            out.append(("chain", "l2", l2))
            out.append(("chain", "refcount", rc))
        }
        return out
    }

    static func pct(_ d: Double?) -> String { d.map { String(format: "%.2f", $0) } ?? "" }

    static let fixed = [
        "image", "cache", "misses", "writebacks", "bytes_read", "memory_peak_bytes", "delta_misses_pct", "opt_misses", "lookups",
        "hit_rate",
    ]

    func csvField(_ s: String) -> String {
        s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }

    func fields(_ r: Row) -> [String] {
        [r.trace, r.candidate] + r.values + [
            r.image, r.cache, "\(r.stats.misses)", "\(r.stats.writebacks)", "\(r.stats.bytesRead)", "\(r.stats.memoryPeakBytes)",
            Self.pct(r.deltaPct), "\(r.optMisses)", "\(r.stats.lookups)", String(format: "%.6g", r.stats.hitRate),
        ] + (hasCost ? [r.prediction.map { String(format: "%.6g", $0.iops) } ?? "", r.prediction.map { String(format: "%.6g", $0.latencyUs) } ?? ""] : [])
            + (hasWhatIf ? [r.whatIf.joined(separator: " ")] : [])
    }

    /// The columns after the varied keys.
    var fixedColumns: [String] {
        Self.fixed + (hasCost ? ["predicted_iops", "predicted_latency_us"] : []) + (hasWhatIf ? ["what_if"] : [])
    }

    func csv() -> String {
        var s = (["trace", "candidate"] + axes + fixedColumns).map(csvField).joined(separator: ",") + "\n"
        for r in rows { s += fields(r).map(csvField).joined(separator: ",") + "\n" }
        return s
    }

    func json() -> String {
        func q(_ s: String) -> String {
            var o = "\""
            for c in s.unicodeScalars {
                switch c {
                case "\"": o += "\\\""
                case "\\": o += "\\\\"
                case "\n": o += "\\n"
                default: o.unicodeScalars.append(c)
                }
            }
            return o + "\""
        }
        let keys = ["trace", "candidate"] + axes + fixedColumns
        let numeric: Set<String> = [
            "misses", "writebacks", "bytes_read", "memory_peak_bytes", "opt_misses", "lookups", "hit_rate", "delta_misses_pct",
            "predicted_iops", "predicted_latency_us",
        ]
        let objects = rows.map { r -> String in
            let f = fields(r)
            return "{"
                + zip(keys, f).map { k, v in
                    if k == "what_if" {
                        // An object, as `simulate`'s JSON has it: {"l2-cache-size": "50%"}.
                        let pairs = r.whatIf.map { s -> String in
                            let key = String(s.prefix(while: { $0 != "=" }))
                            return "\(q(key)): \(q(String(s.dropFirst(key.count + 1))))"
                        }
                        return "\(q(k)): {\(pairs.joined(separator: ", "))}"
                    }
                    return "\(q(k)): \(numeric.contains(k) ? (v.isEmpty ? "null" : v) : q(v))"
                }.joined(separator: ", ") + "}"
        }
        return "{\"schema_version\": 1, \"command\": \"compare\", \"baseline\": \(q(specs[0])), \"candidates\": [\(specs.dropFirst().map(q).joined(separator: ", "))], \"rows\": [\n  "
            + objects.joined(separator: ",\n  ") + "]}\n"
    }

    func text() -> String {
        let header = ["candidate"] + axes + ["image", "cache", "misses", "Δ misses", "write-backs", "read", "mem peak", "opt"]
        var table = [header]
        for r in rows {
            table.append(
                [r.candidate] + r.values + [
                    r.image, r.cache, "\(r.stats.misses)", r.deltaPct.map { String(format: "%+.1f%%", $0) } ?? "-",
                    "\(r.stats.writebacks)", ReportFormat.bytes(r.stats.bytesRead), ReportFormat.bytes(r.stats.memoryPeakBytes),
                    "\(r.optMisses)",
                ])
        }
        var widths = [Int](repeating: 0, count: header.count)
        for line in table { for (i, c) in line.enumerated() { widths[i] = max(widths[i], c.count) } }
        var s = ""
        var lastTrace = ""
        for (n, line) in table.enumerated() {
            if n > 0, rows[n - 1].trace != lastTrace {
                lastTrace = rows[n - 1].trace
                s += "\n\(lastTrace)\n" + table[0].enumerated().map { pad($1, widths[$0], $0 > axes.count + 2) }.joined(separator: "  ") + "\n"
            }
            if n == 0 { continue }
            s += line.enumerated().map { pad($1, widths[$0], $0 > axes.count + 2) }.joined(separator: "  ") + "\n"
        }
        return "baseline: \(specs[0]) (Δ against it at the same point; opt: Belady's MIN at the row's configuration)\n" + s
    }

    func pad(_ s: String, _ w: Int, _ right: Bool) -> String {
        let p = String(repeating: " ", count: max(0, w - s.count))
        return right ? p + s : s + p
    }
}
