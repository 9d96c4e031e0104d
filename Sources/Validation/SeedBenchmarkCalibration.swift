import Foundation
import Qcow2Sim
import TraceKit

/// Issue 12's check of the cost model against QEMU itself: `calibrate --dir` measures the read
/// costs through qemu-io (cache=none), and the calibrated model predicts qemu-io's own measured
/// IOPS for the seed benchmark (20 GiB fully populated, 64 KiB clusters, 20 000 uniform random
/// 4 KiB reads, 64 KiB entries at 1, 1.5, 2 and 2.5 MiB).
///
/// A measurement, not a test: its figures depend on the machine and its load, so
/// `qcow2sim-bench calibrate` prints them and the test suite only checks what does not
/// (`CalibrationTests`).
public struct SeedBenchmarkCalibration {
    /// One cache size of the seed benchmark.
    public struct Row: Sendable {
        /// `l2-cache-size` as given to QEMU.
        public var cacheSize: String
        /// qemu-io's IOPS as calibrate measures them (`QemuIOTimer.robustMean`, fastest round).
        public var measuredIops: Double
        /// qemu-io's plain mean IOPS (best round).
        public var plainIops: Double
        /// The calibrated model's IOPS for the simulated run.
        public var predictedIops: Double
        /// The simulated run's L2 misses.
        public var l2Misses: Int
        /// (predicted − measured) / measured, percent.
        public var errorPct: Double { (predictedIops - measuredIops) / measuredIops * 100 }
    }

    /// The calibration and the four rows.
    public var calibration: Calibrator.Result
    /// One row per cache size, smallest first.
    public var rows: [Row]

    /// The figures as printed: the calibration, then a line per cache size.
    public var lines: [String] {
        let c = calibration.fit.model
        return [
            String(
                format: "calibrate --dir: %.1f s; request_us %.4g, c0 %.4g, c1 %.4g", calibration.seconds, c.requestUs,
                c.metadataLoadUs, c.metadataLoadUsPerKiB)
        ]
            + rows.map { r in
                String(
                    format:
                        "seed benchmark l2-cache-size=%-6@ measured %7.0f IOPS (plain mean %7.0f)  predicted %7.0f  %+6.1f %%  %5d L2 misses",
                    r.cacheSize as NSString, r.measuredIops, r.plainIops, r.predictedIops, r.errorPct, r.l2Misses)
            }
    }

    /// The seed benchmark's cache sizes.
    public static let cacheSizes = ["1M", "1536K", "2M", "2560K"]

    /// Calibrates in `directory` (scratch images; removed by the caller) and measures the seed
    /// benchmark between calibrate's rounds, so that on a shared machine both see the same load.
    public static func run(
        runner: any ProcessRunner, directory: String, timeLimit: Double = 60, progress: @escaping (String) -> Void
    ) throws -> SeedBenchmarkCalibration {
        let size: UInt64 = 20 << 30
        let records = Array(
            try WorkloadGenerator(
                WorkloadSpec(pattern: .uniform, count: 20_000, diskSize: size, requestSize: 4096, readRatio: 1, seed: 1)))
        let images = (directory as NSString).appendingPathComponent("seed")
        let scratch = (directory as NSString).appendingPathComponent("calibrate")
        for d in [images, scratch] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        var base = SimulationConfig(virtualSize: size, populate: .full, cacheMode: .none)
        try base.parseCreateOptions("cluster_size=64K")
        let built = try ImageBuilder(runner: runner).build(base, in: images)
        var configs: [SimulationConfig] = []
        var loads: [[Int]] = []
        for c in cacheSizes {
            var config = base
            try config.parseDriveOptions("l2-cache-size=\(c),l2-cache-entry-size=64K")
            configs.append(config)
            loads.append(try QemuIOTimer.loads(config: config, records: records))
        }
        let timer = QemuIOTimer(runner: runner)
        var measured = [Double](repeating: .infinity, count: cacheSizes.count)
        var plain = [Double](repeating: 0, count: cacheSizes.count)
        let result = try Calibrator(runner: runner, directory: scratch, timeLimit: timeLimit).run(
            progress: progress,
            afterRound: { round in
                guard round % 2 == 0 else { return }
                for k in cacheSizes.indices {
                    let times = try timer.time(image: built.top, driveOptions: configs[k].driveOptions.rendered, records: records)
                    measured[k] = min(measured[k], QemuIOTimer.robustMean(times: times, loads: loads[k]))
                    plain[k] = max(plain[k], Double(times.count) / times.reduce(0, +))
                }
            })
        var rows: [Row] = []
        for k in cacheSizes.indices {
            var reader = ArrayTraceReader(records, fileName: "seed-20G.csv")
            let report = try Simulation.run(config: configs[k], reader: &reader)
            rows.append(
                Row(
                    cacheSize: cacheSizes[k], measuredIops: 1 / measured[k], plainIops: plain[k],
                    predictedIops: result.fit.model.predict(report, config: configs[k]).iops,
                    l2Misses: report.images[0].l2.misses))
        }
        return SeedBenchmarkCalibration(calibration: result, rows: rows)
    }
}
