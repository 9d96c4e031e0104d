import Foundation
import Qcow2Sim
import TraceKit

/// Times guest requests through real qemu-io with `cache=none` (O_DIRECT on the image file):
/// each `read` command prints its own duration (`… ops; 00.00 sec (… and N ops/sec)`), so the
/// time is QEMU's, without qemu-io's command parsing between requests. The IOPS a run measures
/// is `robustMean`'s: scheduler stalls taken out.
public struct QemuIOTimer: Sendable {
    /// Runs qemu-io.
    public var runner: any ProcessRunner

    /// A timer over `runner`.
    public init(runner: any ProcessRunner) { self.runner = runner }

    /// The seconds each of `records` (reads) took on `image` opened with `driveOptions`, at
    /// queue depth 1, `cache=none`.
    public func time(image: String, driveOptions: String, records: [TraceRecord]) throws -> [Double] {
        var script = ""
        script.reserveCapacity(records.count * 32)
        for r in records {
            guard r.op == .read else { throw ValidationError.usage("the timer replays reads only") }
            script += "read \(r.offset) \(r.length)\n"
        }
        script += "quit\n"
        let request = ProcessRequest(
            executable: "qemu-io",
            arguments: [
                "-t", "none", "--image-opts",
                QemuReplayer.imageOpts(top: image, driveOptions: driveOptions, aio: nil),
            ], standardInput: Data(script.utf8), outputLimit: max(1 << 20, records.count * 160))
        let result = try runner.runChecked(request)
        let times = Self.opTimes(String(decoding: result.standardOutput, as: UTF8.self))
        guard times.count == records.count else {
            throw ValidationError.badQemuLog(
                "qemu-io printed \(times.count) timings for \(records.count) reads: \(result.outputTail)")
        }
        return times
    }

    /// The metadata entries each of `records` loads from the image file under `config`
    /// (`qcow2_cache_get_read` events between the request's marks in the simulator's log).
    public static func loads(config: SimulationConfig, records: [TraceRecord]) throws -> [Int] {
        let log = EventLog(retainEvents: true)
        var reader = ArrayTraceReader(records, fileName: "timed")
        _ = try Simulation.run(config: config, reader: &reader, log: log)
        var out = [Int](repeating: 0, count: records.count)
        let marks = log.requests
        // Marks are 0-based request numbers.
        for (i, mark) in marks.enumerated() where mark.request >= 0 && mark.request < records.count {
            let end = i + 1 < marks.count ? marks[i + 1].firstEvent : (log.closeStart ?? log.events.count)
            out[mark.request] = log.events[mark.firstEvent..<end].reduce(0) { $0 + ($1.kind == .getRead ? 1 : 0) }
        }
        return out
    }

    /// The mean time per request with scheduler stalls taken out: requests are grouped by how many
    /// entries they loaded (`loads`), and each group's requests count at the group's lower
    /// quartile time. On a host shared with other jobs a request's time includes the moments
    /// qemu-io waited for a CPU (stalls of milliseconds on a loaded 2-core machine, and a shift of
    /// the whole distribution while other jobs run), which the plain mean carries and the storage
    /// does not cause; other jobs only ever add time, so a low quantile of each kind of request
    /// is the least disturbed measure of what it costs.
    public static func robustMean(times: [Double], loads: [Int], quantile: Double = 0.25) -> Double {
        var groups: [Int: [Double]] = [:]
        for (t, l) in zip(times, loads) { groups[l, default: []].append(t) }
        var total = 0.0
        for (_, g) in groups {
            let sorted = g.sorted()
            total += sorted[min(sorted.count - 1, Int(Double(sorted.count) * quantile))] * Double(sorted.count)
        }
        return times.isEmpty ? 0 : total / Double(times.count)
    }

    /// The per-command durations in qemu-io's output, from its `and N ops/sec` (1 / N seconds;
    /// N is printed with 4 decimals, so a 10 µs read is known to 1 part in 10⁹).
    public static func opTimes(_ output: String) -> [Double] {
        var out: [Double] = []
        for line in output.split(separator: "\n") {
            guard let r = line.range(of: " and "), line.hasSuffix(" ops/sec)") else { continue }
            let number = line[r.upperBound...].dropLast(" ops/sec)".count)
            if let n = Double(number), n > 0 { out.append(1 / n) }
        }
        return out
    }
}

/// `qcow2sim calibrate --dir DIR`: measures the cost model's read parameters on the storage
/// under DIR (issue 12, item 3). A 20 GiB image with 64 KiB clusters and preallocated metadata
/// (what `--populate full` simulates) is read at queue depth 1 with `cache=none` at six
/// configurations: 64 KiB and 4 KiB L2 entries at two cache sizes each below full coverage (so
/// misses load entries of both sizes), and full coverage with 4 KiB and 64 KiB reads (so data
/// size has its own slope). Each configuration's workload is simulated exactly (the simulator
/// reproduces qemu-io's cache events), which gives its loads per request; the costs are the
/// least-squares fit of the measured times (`CostFitter`).
///
/// Prices what reads do: request_us, data_read_us_per_kib and c(s) = c0 + c1·s. Data clusters
/// of a metadata-preallocated image are host-file holes, so a data read costs the block layer
/// and the kernel but no device I/O; writes, write-backs, COW and flushes are not measured.
public struct Calibrator: Sendable {
    /// One measured configuration.
    public struct Point: Sendable, Equatable {
        /// What it is.
        public var label: String
        /// `-drive` options.
        public var drive: String
        /// Bytes per read.
        public var requestSize: UInt64
    }

    /// Runs QEMU.
    public var runner: any ProcessRunner
    /// Where the scratch image goes (removed after).
    public var directory: String
    /// Seconds the measurements may take in all.
    public var timeLimit: Double
    /// The most reads per configuration and round.
    public var maxReads = 4000
    /// Rounds over the configurations (each keeps its fastest).
    public var rounds = 5

    /// The virtual size and cluster size of the scratch image.
    public static let diskSize: UInt64 = 20 << 30
    /// Cluster size of the scratch image.
    public static let clusterSize: UInt64 = 64 << 10

    /// The six configurations.
    public static let points = [
        Point(label: "64K entries, l2-cache-size=1M", drive: "l2-cache-size=1M,l2-cache-entry-size=64K", requestSize: 4096),
        Point(label: "64K entries, l2-cache-size=2M", drive: "l2-cache-size=2M,l2-cache-entry-size=64K", requestSize: 4096),
        Point(label: "4K entries, l2-cache-size=512K", drive: "l2-cache-size=512K,l2-cache-entry-size=4K", requestSize: 4096),
        Point(label: "4K entries, l2-cache-size=1536K", drive: "l2-cache-size=1536K,l2-cache-entry-size=4K", requestSize: 4096),
        Point(label: "full coverage, 4K reads", drive: "l2-cache-size=2560K,l2-cache-entry-size=64K", requestSize: 4096),
        Point(label: "full coverage, 64K reads", drive: "l2-cache-size=2560K,l2-cache-entry-size=64K", requestSize: 65536),
    ]

    /// A calibrator writing its scratch image into `directory`.
    public init(runner: any ProcessRunner, directory: String, timeLimit: Double) {
        self.runner = runner
        self.directory = directory
        self.timeLimit = timeLimit
    }

    /// What was measured and the fitted model.
    public struct Result: Sendable {
        /// The fitted cost model.
        public var fit: CostFitResult
        /// Reads per configuration and round.
        public var reads: Int
        /// Rounds.
        public var rounds: Int
        /// Wall-clock seconds the measurements took.
        public var seconds: Double
        /// Each point's plain IOPS (requests / Σ times, stalls included; its best round), for the report.
        public var plainIops: [Double]
    }

    /// The simulation configuration of point `p` (what the scratch image and options are).
    public static func config(_ p: Point) throws -> SimulationConfig {
        var c = SimulationConfig(virtualSize: diskSize, populate: .full, cacheMode: .none)
        try c.parseCreateOptions("cluster_size=\(clusterSize)")
        try c.parseDriveOptions(p.drive)
        return c
    }

    /// The reads of point `k`: uniform random, aligned to the request size (seeds 11, 12, …:
    /// not the seed benchmark's seed 1).
    public static func records(point k: Int, count: Int) throws -> [TraceRecord] {
        let p = points[k]
        return Array(
            try WorkloadGenerator(
                WorkloadSpec(
                    pattern: .uniform, count: count, diskSize: diskSize, requestSize: p.requestSize, readRatio: 1,
                    seed: 11 + UInt64(k))))
    }

    /// Measures and fits; `progress` gets one line per step. `afterRound(r)` runs after round r
    /// (a test measures its own workload there, under the same load from other programs).
    public func run(progress: (String) -> Void, afterRound: (Int) throws -> Void = { _ in }) throws -> Result {
        let started = Date()
        let scratch = (directory as NSString).appendingPathComponent("qcow2sim-calibrate-\(getpid())")
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        progress("creating a 20 GiB image (64 KiB clusters, preallocation=metadata) in \(directory)")
        let built = try ImageBuilder(runner: runner).build(try Self.config(Self.points[0]), in: scratch)
        let timer = QemuIOTimer(runner: runner)
        // A short probe sizes the runs to the time limit: the slowest point (64 KiB entries,
        // most misses) at 200 reads, qemu-io's command overhead included.
        let probeStart = Date()
        _ = try timer.time(image: built.top, driveOptions: Self.points[0].drive, records: try Self.records(point: 0, count: 200))
        let perRead = Date().timeIntervalSince(probeStart) / 200
        let runs = Self.points.count * rounds
        let budget = max(0, timeLimit - Date().timeIntervalSince(started)) * 0.6 / Double(runs)
        let reads = max(200, min(maxReads, Int(budget / max(perRead, 1e-6))))
        let configs = try Self.points.map(Self.config)
        let records = try Self.points.indices.map { try Self.records(point: $0, count: reads) }
        let loads = try Self.points.indices.map { try QemuIOTimer.loads(config: configs[$0], records: records[$0]) }
        // Rounds go over every point in turn, so a burst of load from other programs falls on
        // one round of several points, not on all rounds of one; each point keeps its fastest
        // round (other programs only ever add time).
        var best = [Double](repeating: .infinity, count: Self.points.count)
        var plain = [Double](repeating: 0, count: Self.points.count)
        for round in 0..<rounds {
            for (k, p) in Self.points.enumerated() {
                progress(
                    String(
                        format: "round %d/%d, point %d/%d: %@, %d reads (%.0f s so far)", round + 1, rounds, k + 1,
                        Self.points.count, p.label, reads, Date().timeIntervalSince(started)))
                let times = try timer.time(image: built.top, driveOptions: p.drive, records: records[k])
                best[k] = min(best[k], QemuIOTimer.robustMean(times: times, loads: loads[k]))
                plain[k] = max(plain[k], Double(times.count) / times.reduce(0, +))
            }
            try afterRound(round)
        }
        var observations: [CostObservation] = []
        for (k, p) in Self.points.enumerated() {
            var reader = ArrayTraceReader(records[k], fileName: "calibrate-\(k)")
            let report = try Simulation.run(config: configs[k], reader: &reader)
            observations.append(CostObservation(label: p.label, iops: 1 / best[k], report: report))
        }
        let source = "qcow2sim calibrate --dir \(directory) (qemu-io, cache=none, \(rounds) rounds of \(reads) reads per point)"
        let fit = CostFitter.fit(observations, fitData: true, source: source)
        return Result(fit: fit, reads: reads, rounds: rounds, seconds: Date().timeIntervalSince(started), plainIops: plain)
    }
}
