import Foundation
import TraceKit

/// One row of a sweep's output: one cache of one image, for one (trace, point).
public struct SweepRow: Sendable {
    /// The trace as given on the command line.
    public var trace: String
    /// The point's values, one per axis.
    public var values: [SweepValue]
    /// The eviction policy.
    public var policy: String
    /// Chain position (0 = base).
    public var image: Int
    /// `l2` or `refcount`.
    public var cache: String
    /// Bytes per cache entry.
    public var entrySize: UInt64
    /// Number of cache entries.
    public var entries: Int
    /// The counters, as `simulate` reports them.
    public var stats: CacheStats
    /// Time-weighted mean resident memory (`memory_mean_bytes`).
    public var memoryMean: Double
    /// Trace records replayed.
    public var requests: Int
    /// The what-ifs of the point (`KEY=VALUE`; empty: QEMU's behaviour), the `what_if` column.
    public var whatIf: [String] = []
    /// The point's predicted IOPS and latency (the whole run's, on each of its rows), with a
    /// cost model.
    public var prediction: Prediction? = nil
    /// How the point was computed (`mrc`: `stack` or `replay`; nil for `sweep`).
    public var method: String? = nil
    /// The volume, in a `--per-volume` run (the `volume` column; nil otherwise).
    public var volume: String? = nil
    /// The volume's virtual size, in a `--per-volume` run (the `virtual_size` column).
    public var virtualSize: UInt64? = nil
}

/// A sweep's rows and how they print (CSV, JSON, text). Rows come in (trace, point, image,
/// cache) order, the caches as `simulate --format csv` lists them (l2, then refcount).
public struct SweepTable: Sendable {
    /// `sweep` or `mrc` (the JSON's `command`).
    public var command: String
    /// The traces, as given.
    public var traces: [String]
    /// The grid the rows come from.
    public var grid: SweepGrid
    /// The rows.
    public var rows: [SweepRow]
    /// The rows say how each point was computed (a `method` column after the fixed ones).
    public var hasMethod = false

    /// The JSON's `schema_version`.
    public static let schemaVersion = 1

    /// The columns after the varied keys, in order: the ones issue 10 fixes, then ours
    /// (`miss_rate` … `misses_discarded`).
    public static let fixedColumns = [
        "policy", "image", "cache", "entry_size", "entries", "lookups", "hits", "misses", "hit_rate", "evictions", "writebacks",
        "flushes", "bytes_read", "bytes_written", "memory_peak_bytes", "memory_mean_bytes", "miss_rate", "dirty_evictions",
        "empty_gets", "cleaned", "requests", "misses_cold", "misses_evicted", "misses_cleaned", "misses_discarded",
    ]

    /// With a cost model: `predicted_iops` and `predicted_latency_us` after ``fixedColumns``.
    public static let costColumns = ["predicted_iops", "predicted_latency_us"]

    /// Whether the rows are a `--per-volume` run's: `volume` and `virtual_size` columns after
    /// `trace` (each volume has its own disk size, so the size is a column, not a fixed option).
    public var hasVolume: Bool { rows.first?.volume != nil }

    /// The columns a `--per-volume` run adds after `trace`.
    public static let volumeColumns = ["volume", "virtual_size"]

    /// Whether the rows carry predictions (`--cost`).
    public var hasCost: Bool { rows.first?.prediction != nil }

    /// Builds the rows from `reports[trace][point index]` (``SweepExecutor/run``); `cost` adds
    /// each point's prediction; `methods` (`[trace][point index]`, from ``MissRatioCurveRunner``) adds
    /// the `method` column.
    public init(
        command: String, traces: [String], grid: SweepGrid, points: [SweepPoint], reports: [[SimulationReport]],
        cost: CostModel? = nil, methods: [[CurveMethod]]? = nil
    ) {
        self.command = command
        hasMethod = methods != nil
        self.traces = traces
        self.grid = grid
        var rows: [SweepRow] = []
        for (t, trace) in traces.enumerated() {
            for p in points {
                rows += Self.rows(trace: trace, point: p, report: reports[t][p.index], cost: cost, method: methods?[t][p.index])
            }
        }
        self.rows = rows
    }

    /// A table of rows made already (`qcow2sim merge`: the shards' rows, in unit order).
    public init(command: String, traces: [String], grid: SweepGrid, rows: [SweepRow], hasMethod: Bool) {
        self.command = command
        self.traces = traces
        self.grid = grid
        self.rows = rows
        self.hasMethod = hasMethod
    }

    /// The rows of one (trace, point): each image's L2 then refcount cache, as the table lists them.
    public static func rows(trace: String, point p: SweepPoint, report r: SimulationReport, cost: CostModel?, method: CurveMethod?)
        -> [SweepRow]
    {
        var rows: [SweepRow] = []
        for im in r.images {
            for (name, st, size, n) in [
                ("l2", im.l2, im.sizing.l2EntrySize, im.sizing.l2Entries),
                ("refcount", im.refcount, im.sizing.refcountEntrySize, im.sizing.refcountEntries),
            ] {
                rows.append(
                    SweepRow(
                        trace: trace, values: p.values, policy: p.config.policy, image: im.index, cache: name, entrySize: size,
                        entries: n, stats: st, memoryMean: SimulationReport.meanMemory(st, span: r.memorySpan),
                        requests: r.requests, whatIf: r.whatIf, prediction: cost?.predict(r, config: p.config),
                        method: method?.rawValue))
            }
        }
        return rows
    }

    /// Axes with a column of their own (the policy has its fixed column).
    private var columnAxes: [Int] { grid.axes.indices.filter { grid.axes[$0].key != .policy } }

    /// Whether any point runs a what-if: then every row carries a `what_if` column (last), so
    /// that no row is taken for QEMU's behaviour.
    public var hasWhatIf: Bool { rows.contains { !$0.whatIf.isEmpty } }

    /// Every column name, in order: `trace`, the varied keys, then ``fixedColumns``, the cost
    /// columns with a cost model, `method` for `mrc`, and `what_if` when ``hasWhatIf``.
    public var columns: [String] {
        ["trace"] + (hasVolume ? Self.volumeColumns : []) + columnAxes.map { grid.axes[$0].key.description } + Self.fixedColumns
            + (hasCost ? Self.costColumns : [])
            + (hasMethod ? ["method"] : []) + (hasWhatIf ? ["what_if"] : [])
    }

    /// The what-ifs every point shares (the run's `--what-if` less the varied keys).
    private var fixedWhatIf: [String] {
        let varied = Set(grid.axes.compactMap { if case .whatIf(let k) = $0.key { k } else { nil } })
        return grid.base.whatIf.settings.filter { !varied.contains(String($0.prefix(while: { $0 != "=" }))) }
    }

    /// `KEY=VALUE` settings as a JSON object (`{"l2-cache-size": "50%"}`), as `simulate`'s JSON has them.
    private static func whatIfJSON(_ settings: [String]) -> String {
        let pairs = settings.map { s -> String in
            let key = String(s.prefix(while: { $0 != "=" }))
            return "\(jsonString(key)): \(jsonString(String(s.dropFirst(key.count + 1))))"
        }
        return "{" + pairs.joined(separator: ", ") + "}"
    }

    /// The fields of `row` after the varied keys, as CSV and JSON print them.
    private func fixedFields(_ row: SweepRow) -> [String] {
        let s = row.stats
        return [
            row.policy, "\(row.image)", row.cache, "\(row.entrySize)", "\(row.entries)", "\(s.lookups)", "\(s.hits)",
            "\(s.misses)",
            ReportFormat.number(s.hitRate), "\(s.evictions)", "\(s.writebacks)", "\(s.flushes)", "\(s.bytesRead)",
            "\(s.bytesWritten)", "\(s.memoryPeakBytes)", ReportFormat.number(row.memoryMean), ReportFormat.number(s.missRate),
            "\(s.dirtyEvictions)", "\(s.emptyGets)", "\(s.cleaned)", "\(row.requests)", "\(s.missesCold)",
            "\(s.missesEvicted)", "\(s.missesCleaned)", "\(s.missesDiscarded)",
        ] + (row.prediction.map { [ReportFormat.number($0.iops), ReportFormat.number($0.latencyUs)] } ?? [])
            + (hasMethod ? [row.method ?? ""] : [])
    }

    /// RFC 4180 CSV with a header line.
    public func csv() -> String {
        var out = columns.joined(separator: ",") + "\n"
        let hasWhatIf = self.hasWhatIf
        for row in rows {
            let fields =
                [Self.csvField(row.trace)] + volumeFields(row, json: false) + columnAxes.map { Self.csvField(row.values[$0].text) } + fixedFields(row)
                + (hasWhatIf ? [Self.csvField(row.whatIf.joined(separator: " "))] : [])
            out += fields.joined(separator: ",") + "\n"
        }
        return out
    }

    /// `{"schema_version", "command", "traces", "fixed", "varied", "columns", "rows": [{column: value}]}`;
    /// `fixed` holds the run options common to every point (the varied keys removed).
    public func json() -> String {
        let strings: Set<String> = ["trace", "policy", "cache", "method"]
        let axisColumns = columnAxes
        let hasWhatIf = self.hasWhatIf
        let columns = self.columns
        var rowTexts: [String] = []
        for row in rows {
            let values =
                [Self.jsonString(row.trace)] + volumeFields(row, json: true)
                + axisColumns.map { a in
                    grid.axes[a].key.isNumeric ? row.values[a].text : Self.jsonString(row.values[a].text)
                }
                + zip(Self.fixedColumns + (hasCost ? Self.costColumns : []) + (hasMethod ? ["method"] : []), fixedFields(row)).map {
                    strings.contains($0.0) ? Self.jsonString($0.1) : $0.1
                }
                + (hasWhatIf ? [Self.whatIfJSON(row.whatIf)] : [])
            rowTexts.append(
                "{" + zip(columns, values).map { "\(Self.jsonString($0.0)): \($0.1)" }.joined(separator: ", ") + "}")
        }
        let varied = grid.axes.map { axis in
            let values = axis.values.map { axis.key.isNumeric ? $0.text : Self.jsonString($0.text) }
            return "{\"key\": \(Self.jsonString(axis.key.description)), \"values\": [\(values.joined(separator: ", "))]}"
        }
        return "{\"schema_version\": \(Self.schemaVersion), \"command\": \(Self.jsonString(command)), "
            + "\"traces\": [\(traces.map(Self.jsonString).joined(separator: ", "))], \"fixed\": \(fixedJSON()), "
            + "\"varied\": [\(varied.joined(separator: ", "))], "
            + "\"columns\": [\(columns.map(Self.jsonString).joined(separator: ", "))], "
            + "\"rows\": [\(rowTexts.joined(separator: ",\n  "))]}\n"
    }

    /// The `volume` and `virtual_size` fields of a `--per-volume` row (none otherwise).
    private func volumeFields(_ row: SweepRow, json: Bool) -> [String] {
        guard hasVolume else { return [] }
        let name = row.volume ?? ""
        return [json ? Self.jsonString(name) : Self.csvField(name), "\(row.virtualSize ?? 0)"]
    }

    /// The options every point shares.
    private func fixedJSON() -> String {
        let b = grid.base
        let keys = Set(grid.axes.map(\.key))
        let drive = SweepGrid.removing(
            Set(keys.compactMap { if case .drive(let k) = $0 { k } else { nil } }), from: b.driveOptions.rendered)
        let create = SweepGrid.removing(
            Set(keys.compactMap { if case .create(let k) = $0 { k } else { nil } }), from: b.createOptions.rendered)
        var fields = [
            // Per volume, the size is each row's.
            "\"virtual_size\": \(hasVolume ? "null" : "\(b.virtualSize)")",
            "\"create_options\": \(Self.jsonString(create.joined(separator: ",")))",
            "\"drive_options\": \(Self.jsonString(drive.joined(separator: ",")))",
        ]
        if !keys.contains(.cacheMode) { fields.append("\"cache_mode\": \(Self.jsonString(b.cacheMode.rawValue))") }
        if !keys.contains(.policy) { fields.append("\"policy\": \(Self.jsonString(b.policy))") }
        fields += [
            "\"chain\": \(b.chainLength)", "\"image\": \(b.imageFile.map(Self.jsonString) ?? "null")",
            "\"populate\": \(Self.jsonString(Self.describe(b.populate)))",
            "\"populate_mode\": \(Self.jsonString(b.populateMode.rawValue))",
            "\"qemu_version\": \(Self.jsonString(b.qemuVersion.rawValue))", "\"read_only\": \(b.readOnly)",
            "\"discard\": \(Self.jsonString(b.discardUnmap ? "unmap" : "ignore"))",
        ]
        if !fixedWhatIf.isEmpty { fields.append("\"what_if\": \(Self.whatIfJSON(fixedWhatIf))") }
        return "{" + fields.joined(separator: ", ") + "}"
    }

    /// An aligned table: the CSV's columns up to `memory_mean_bytes`, sizes in K/M/G.
    public func text() -> String {
        let axes = columnAxes
        let shown = Array(Self.fixedColumns.prefix(16))
        let volumeColumns = hasVolume ? Self.volumeColumns : []
        var header = ["trace"] + volumeColumns + axes.map { grid.axes[$0].key.description } + shown + (hasMethod ? ["method"] : [])
        header = header.map { $0.replacingOccurrences(of: "_bytes", with: "").replacingOccurrences(of: "_", with: " ") }
        var left = Set([0])
        if hasVolume { left.insert(1) }
        let shift = 1 + volumeColumns.count
        for (i, a) in axes.enumerated() where !grid.axes[a].key.isNumeric { left.insert(shift + i) }
        let policyColumn = shift + axes.count
        left.formUnion([policyColumn, policyColumn + 2])
        if hasMethod { left.insert(header.count - 1) }
        var table = [header]
        for row in rows {
            let s = row.stats
            let values = axes.map { a in
                grid.axes[a].key.kind.isSize ? ReportFormat.bytes(row.values[a].number ?? 0) : row.values[a].text
            }
            table.append(
                [row.trace] + (hasVolume ? [row.volume ?? "", ReportFormat.bytes(row.virtualSize ?? 0)] : []) + values + [
                    row.policy, "\(row.image)", row.cache, ReportFormat.bytes(row.entrySize), "\(row.entries)", "\(s.lookups)",
                    "\(s.hits)", "\(s.misses)", String(format: "%.4f", s.hitRate), "\(s.evictions)", "\(s.writebacks)",
                    "\(s.flushes)", ReportFormat.bytes(s.bytesRead), ReportFormat.bytes(s.bytesWritten),
                    ReportFormat.bytes(s.memoryPeakBytes), ReportFormat.bytes(UInt64(max(0, row.memoryMean).rounded())),
                ] + (hasMethod ? [row.method ?? ""] : []))
        }
        var widths = [Int](repeating: 0, count: header.count)
        for line in table { for (i, f) in line.enumerated() { widths[i] = max(widths[i], f.count) } }
        var out = ""
        for line in table {
            var fields: [String] = []
            for (i, f) in line.enumerated() {
                let pad = String(repeating: " ", count: widths[i] - f.count)
                fields.append(left.contains(i) ? f + pad : pad + f)
            }
            var text = fields.joined(separator: "  ")
            while text.hasSuffix(" ") { text.removeLast() }
            out += text + "\n"
        }
        if hasWhatIf {
            // As `simulate`'s text report says it: these rows are not QEMU's behaviour.
            let varied = columnAxes.compactMap { a -> String? in
                if case .whatIf = grid.axes[a].key { return "\(grid.axes[a].key) (column)" }
                return nil
            }
            out = "what-if (not QEMU behaviour): \((fixedWhatIf + varied).joined(separator: " "))\n" + out
        }
        return out
    }

    /// A CSV field, quoted when it holds a comma, a quote or a line break.
    public static func csvField(_ s: String) -> String {
        guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// A JSON string literal.
    public static func jsonString(_ s: String) -> String { jsonQuoted(s) }

    private static func describe(_ p: Populate) -> String {
        switch p {
        case .none: "none"
        case .full: "full"
        case .ranges(let r): r.map { "\($0.start):\($0.length)" }.joined(separator: ",")
        }
    }
}
