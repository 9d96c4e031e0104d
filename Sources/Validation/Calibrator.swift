import Foundation
import Qcow2Sim
import TraceKit

/// Times guest requests through real qemu-io with `cache=none` (O_DIRECT on the image file):
/// each `read` command prints its own duration (`… ops; 00.00 sec (… and N ops/sec)`), so the
/// time is QEMU's, without qemu-io's command parsing between requests.
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
    /// The most reads per configuration.
    public var maxReads = 6000

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
        /// Reads per configuration.
        public var reads: Int
        /// Wall-clock seconds the measurements took.
        public var seconds: Double
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

    /// Measures and fits; `progress` gets one line per step.
    public func run(progress: (String) -> Void) throws -> Result {
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
        let budget = max(0, timeLimit - Date().timeIntervalSince(started)) * 0.7 / Double(Self.points.count)
        let reads = max(200, min(maxReads, Int(budget / max(perRead, 1e-6))))
        var observations: [CostObservation] = []
        for (k, p) in Self.points.enumerated() {
            progress(
                String(
                    format: "point %d/%d: %@, %d reads (%.0f s so far)", k + 1, Self.points.count, p.label, reads,
                    Date().timeIntervalSince(started)))
            let records = try Self.records(point: k, count: reads)
            let times = try timer.time(image: built.top, driveOptions: p.drive, records: records)
            let mean = times.reduce(0, +) / Double(times.count)
            var reader = ArrayTraceReader(records, fileName: "calibrate-\(k)")
            let report = try Simulation.run(config: try Self.config(p), reader: &reader)
            observations.append(CostObservation(label: p.label, iops: 1 / mean, report: report, steadyState: false))
        }
        let source = "qcow2sim calibrate --dir \(directory) (qemu-io, cache=none, \(reads) reads per point)"
        let fit = CostFitter.fit(observations, fitData: true, source: source)
        return Result(fit: fit, reads: reads, seconds: Date().timeIntervalSince(started))
    }
}
