import Foundation
import TraceKit

/// One observation a cost model is fitted to: what the simulation says a request did on average
/// (the features) and the time it took (1 / IOPS).
public struct CostObservation: Sendable, Equatable {
    /// What the point is, for reports.
    public var label: String
    /// Measured or published IOPS.
    public var iops: Double
    /// Guest data KiB read per request.
    public var dataKiB: Double
    /// Metadata entries loaded from the image file per request.
    public var loads: Double
    /// KiB of metadata loaded per request (Σ loads × entry KiB).
    public var loadKiB: Double

    /// An observation.
    public init(label: String, iops: Double, dataKiB: Double, loads: Double, loadKiB: Double) {
        self.label = label
        self.iops = iops
        self.dataKiB = dataKiB
        self.loads = loads
        self.loadKiB = loadKiB
    }

    /// The features of `report`: what its requests did on average.
    public init(label: String, iops: Double, report: SimulationReport) {
        let f = Self.totals(report)
        let r = Double(max(report.requests, 1))
        self.init(label: label, iops: iops, dataKiB: f.data / r, loads: f.loads / r, loadKiB: f.kib / r)
    }

    /// The steady-state features of a run: what the requests after the first `warmup.requests`
    /// did (`report` less `warmup`, a run of the same trace cut short). Published figures come
    /// from runs of millions of requests, where the first load of each table is lost; a run of
    /// a few ten thousand requests still shows them, and leaving out first loads instead would
    /// undercount the loads of a cache that keeps evicting.
    public init(label: String, iops: Double, report: SimulationReport, warmup: SimulationReport) {
        let f = Self.totals(report), w = Self.totals(warmup)
        let r = Double(max(report.requests - warmup.requests, 1))
        self.init(
            label: label, iops: iops, dataKiB: (f.data - w.data) / r, loads: (f.loads - w.loads) / r, loadKiB: (f.kib - w.kib) / r
        )
    }

    /// Data KiB, loads and load KiB over a run.
    static func totals(_ report: SimulationReport) -> (data: Double, loads: Double, kib: Double) {
        var data = 0.0, loads = 0.0, kib = 0.0
        for im in report.images {
            data += Double(im.image.guestBytesRead) / 1024
            for (st, size) in [(im.l2, im.sizing.l2EntrySize), (im.refcount, im.sizing.refcountEntrySize)] {
                let n = Double(st.misses - st.emptyGets)
                loads += n
                kib += n * Double(size) / 1024
            }
        }
        return (data, loads, kib)
    }
}

/// A cost model fitted to observations, with each point's published and predicted IOPS.
public struct CostFitResult: Sendable, Equatable {
    /// The fitted model (costs the fit does not touch are 0).
    public var model: CostModel
    /// Every point, published (or measured) against predicted.
    public var points: [FitPoint]
    /// Parameters the data could not determine (set to 0), by their cost-file key.
    public var undetermined: [String]
    /// Parameters held at a given value instead of fitted, by their cost-file key.
    public var fixed: [String]

    /// The largest |error| over the points, in percent.
    public var maxErrorPct: Double { points.map { abs($0.errorPct) }.max() ?? 0 }
}

/// Fits the cost model's time per request, t = request_us + data KiB × data_read_us_per_kib +
/// loads × metadata_load_us + load KiB × metadata_load_us_per_kib, to observations by weighted
/// least squares on t with weights 1/t² (so each point's relative error counts alike: IOPS
/// tables span 1 400 to 63 600).
public enum CostFitter {
    /// The parameters, in column order, by cost-file key.
    static let keys = [
        CostModel.CodingKeys.requestUs.rawValue, CostModel.CodingKeys.dataReadUsPerKiB.rawValue,
        CostModel.CodingKeys.metadataLoadUs.rawValue, CostModel.CodingKeys.metadataLoadUsPerKiB.rawValue,
    ]

    /// Fits `observations`; `fixC1` holds metadata_load_us_per_kib at that value, `fitData`
    /// false holds data_read_us_per_kib at 0 (tables of one request size cannot tell it from
    /// request_us).
    public static func fit(
        _ observations: [CostObservation], fixC1: Double? = nil, fitData: Bool = false, source: String? = nil
    ) -> CostFitResult {
        func features(_ o: CostObservation) -> [Double] { [1, o.dataKiB, o.loads, o.loadKiB] }
        var free = [0, 2]
        if fitData { free.insert(1, at: 1) }
        if fixC1 == nil { free.append(3) }
        let rows = observations.map { o -> (a: [Double], y: Double, w: Double) in
            let t = 1e6 / o.iops
            let f = features(o)
            return (free.map { f[$0] }, t - (fixC1 ?? 0) * o.loadKiB, 1 / (t * t))
        }
        let s = LeastSquares.solve(rows: rows, columns: free.count)
        var x = [0.0, 0.0, 0.0, fixC1 ?? 0]
        for (i, j) in free.enumerated() { x[j] = s.x[i] }
        var model = CostModel(requestUs: x[0], metadataLoadUs: x[2], metadataLoadUsPerKiB: x[3], source: source)
        model.dataReadUsPerKiB = x[1]
        let points = observations.map { o -> FitPoint in
            let f = features(o)
            let t = zip(f, x).reduce(0) { $0 + $1.0 * $1.1 }
            return FitPoint(label: o.label, iops: o.iops, predictedIops: t > 0 ? 1e6 / t : 0)
        }
        model.points = points
        let undetermined = free.enumerated().filter { !s.determined[$0.offset] }.map { keys[$0.element] }
        return CostFitResult(
            model: model, points: points, undetermined: undetermined, fixed: fixC1 == nil ? [] : [keys[3]])
    }
}

/// A table of measured or published points (`calibrate --fit TABLE.csv`): one line per point,
/// `disk_size,cluster_size,entry_size,cache_size,iops` (sizes with K, M, G suffixes, binary),
/// in any column order after a header line, an optional `label` column; `#` lines are comments
/// (where the numbers come from).
public struct CostTable: Sendable, Equatable {
    /// One point.
    public struct Point: Sendable, Equatable {
        /// 1-based line in the file.
        public var line: Int
        /// Virtual disk size, bytes.
        public var diskSize: UInt64
        /// Cluster size, bytes.
        public var clusterSize: UInt64
        /// L2 cache entry size (`l2-cache-entry-size`), bytes.
        public var entrySize: UInt64
        /// L2 cache size (`l2-cache-size`), bytes.
        public var cacheSize: UInt64
        /// IOPS.
        public var iops: Double
        /// The `label` column, or one made from the sizes.
        public var label: String
    }

    /// The file, as given.
    public var file: String
    /// The points, in file order.
    public var points: [Point]

    /// The columns a table must have.
    public static let columns = ["disk_size", "cluster_size", "entry_size", "cache_size", "iops"]

    /// Reads and checks a table file (errors: exit 66 cannot read, 65 bad content, located).
    public static func load(path: String) throws(CostFileError) -> CostTable {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CostFileError(file: path, line: nil, message: "cannot read the table (\(CostModel.reason(path)))", exitCode: 66)
        }
        return try parse(String(decoding: data, as: UTF8.self), file: path)
    }

    /// Parses table text; `file` names it in messages.
    public static func parse(_ text: String, file: String) throws(CostFileError) -> CostTable {
        var header: [String]?
        var points: [Point] = []
        var number = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let fields = trimmed.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            func fail(_ m: String) -> CostFileError { CostFileError(file: file, line: number, message: m) }
            guard let names = header else {
                if let missing = columns.first(where: { !fields.contains($0) }) {
                    throw fail(
                        "the header has no column '\(missing)' (expected \(columns.joined(separator: ",")), and optionally label)"
                    )
                }
                if let unknown = fields.first(where: { !columns.contains($0) && $0 != "label" }) {
                    throw fail("unknown column '\(unknown)' (expected \(columns.joined(separator: ",")), and optionally label)")
                }
                header = fields
                continue
            }
            guard fields.count == names.count else {
                throw fail("\(fields.count) fields, but the header has \(names.count)")
            }
            var row: [String: String] = [:]
            for (k, v) in zip(names, fields) { row[k] = v }
            func size(_ key: String) throws(CostFileError) -> UInt64 {
                let v = row[key] ?? ""
                guard case .success(let n) = QemuSize.parse(Substring(v)), n > 0 else {
                    throw fail("column '\(key)': expected a positive size in bytes (K, M, G suffixes), not '\(v)'")
                }
                return n
            }
            let disk = try size("disk_size"), cluster = try size("cluster_size"), entry = try size("entry_size")
            let cache = try size("cache_size")
            let iopsText = row["iops"] ?? ""
            guard let iops = Double(iopsText), iops.isFinite, iops > 0 else {
                throw fail("column 'iops': expected a positive number, not '\(iopsText)'")
            }
            guard entry <= cluster, entry >= 512, entry.nonzeroBitCount == 1 else {
                throw fail("entry_size \(entry) must be a power of two between 512 and the cluster size (\(cluster))")
            }
            let label =
                row["label"].flatMap { $0.isEmpty ? nil : $0 }
                ?? "\(ReportFormat.bytes(disk)) cluster \(ReportFormat.bytes(cluster)) entry \(ReportFormat.bytes(entry)) cache \(ReportFormat.bytes(cache))"
            points.append(
                Point(
                    line: number, diskSize: disk, clusterSize: cluster, entrySize: entry, cacheSize: cache, iops: iops,
                    label: label))
        }
        guard header != nil else {
            throw CostFileError(file: file, line: nil, message: "no header line (expected \(columns.joined(separator: ",")))")
        }
        guard !points.isEmpty else { throw CostFileError(file: file, line: nil, message: "no points after the header") }
        return CostTable(file: file, points: points)
    }

    /// The configuration that simulates `p`: a fully populated image (`--populate full`) with the
    /// point's cluster size, opened with `l2-cache-size` and `l2-cache-entry-size` at the
    /// point's, `cache=none`.
    public static func config(_ p: Point) throws -> SimulationConfig {
        var c = SimulationConfig(virtualSize: p.diskSize, populate: .full, cacheMode: .none)
        try c.parseCreateOptions("cluster_size=\(p.clusterSize)")
        try c.parseDriveOptions("l2-cache-size=\(p.cacheSize),l2-cache-entry-size=\(p.entrySize)")
        return c
    }

    /// The uniform random 4 KiB read trace a point is simulated with (`requests` reads, seed 1).
    public static func workload(diskSize: UInt64, requests: Int) -> WorkloadSpec {
        WorkloadSpec(pattern: .uniform, count: requests, diskSize: diskSize, requestSize: 4096, readRatio: 1, seed: 1)
    }

    /// Simulates every point (uniform random 4 KiB reads, `requests` of them, and the first half
    /// of them for the warm-up) and returns its steady-state observation; points of one disk
    /// size share a recording per trace length.
    public func observations(requests: Int, jobs: Int = 1, directory: String = NSTemporaryDirectory()) throws
        -> [CostObservation]
    {
        var out = [CostObservation?](repeating: nil, count: points.count)
        let sizes = Array(Set(points.map(\.diskSize))).sorted()
        for disk in sizes {
            let members = points.indices.filter { points[$0].diskSize == disk }
            var sweepPoints: [SweepPoint] = []
            for (k, i) in members.enumerated() {
                do {
                    sweepPoints.append(SweepPoint(index: k, values: [], config: try Self.config(points[i])))
                } catch {
                    throw CostFileError(file: file, line: points[i].line, message: "\(error)")
                }
            }
            // Trace 0 is the warm-up, the first half of trace 1 (one seed, one sequence).
            let specs = [
                Self.workload(diskSize: disk, requests: requests / 2), Self.workload(diskSize: disk, requests: requests),
            ]
            let reports: [[SimulationReport]]
            do {
                reports = try SweepExecutor.run(
                    points: sweepPoints, traces: 2, jobs: jobs, runner: RecordingPointRunner(directory: directory),
                    open: { t in try WorkloadGenerator(specs[t]) })
            } catch let f as SweepFailure {
                let line = f.point < members.count ? points[members[f.point]].line : nil
                throw CostFileError(file: file, line: line, message: "\(f.error)")
            }
            for (k, i) in members.enumerated() {
                out[i] = CostObservation(
                    label: points[i].label, iops: points[i].iops, report: reports[1][k], warmup: reports[0][k])
            }
        }
        return out.compactMap { $0 }
    }
}
