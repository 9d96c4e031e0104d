import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

/// Long requests against real qemu-io (issue 14 item 9): the bulk refcount reads and range
/// updates that make a 16 TiB write take seconds must leave every event as QEMU prints it.
/// Each case crosses refcount blocks, or, with small clusters and narrow refcounts, many
/// refcount blocks and L2 tables.
@Suite("long requests: simulator vs qemu-io", .requires(QemuTools.io))
struct LongRequestValidationTests {
    let validator = Validator(runner: QemuTools.runner)

    func check(_ config: SimulationConfig, _ trace: String) throws {
        let input = ValidationInput(records: TraceText.records(trace))
        let (log, sizes) = try SimulatorValidationTests.simulate(config, input)
        let report = try validator.validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.identical, "\(report.text())")
        #expect(report.qemuEvents > 0)
    }

    /// 2.5 GiB in table-sized (512 MiB) writes over a fresh 64 GiB image: each runs as one
    /// segment in QEMU (one L2 table, one contiguous allocation), so events are deterministic;
    /// the allocation crosses the first refcount block's 2 GiB, then rewrites, a discard and a
    /// write over the hole. (One 8 GiB request instead runs as concurrent segments in QEMU,
    /// whose order the comparator can only flag.)
    @Test("512 MiB writes across a refcount block boundary, rewrites, a discard")
    func tableSizedWrites() throws {
        let writes = (0..<5).map { "W \($0 * 512)M 512M" }.joined(separator: "\n")
        try check(SimulationConfig(virtualSize: 64 << 30), writes + "\nW 100M 300M\nD 8M 8M\nW 4M 16M\nR 0 512M")
    }

    /// 512-byte clusters with 16-bit refcounts: a refcount block covers 256 clusters (128 KiB),
    /// an L2 table 64 clusters (32 KiB). 300 table-sized writes allocate about 75 refcount
    /// blocks; rewrites keep existing clusters, a discard frees some, then everything is read.
    @Test("512-byte clusters: table-sized writes over many refcount blocks")
    func smallClusters() throws {
        var lines = (0..<300).map { "W \($0 * 32)k 32k" }
        lines += stride(from: 0, to: 300, by: 7).map { "W \($0 * 32 + 8)k 16k" }
        lines += ["D 64k 64k", "W 60k 12k"]
        lines += (0..<300).map { "R \($0 * 32)k 32k" }
        try check(
            SimulationConfig(virtualSize: 1 << 30, createOptions: try CreateOptions(parsing: "cluster_size=512")),
            lines.joined(separator: "\n"))
    }

    /// 4 KiB clusters, 2-bit refcounts (16384 clusters per block) and a small L2 cache.
    static func narrowConfig() throws -> SimulationConfig {
        var config = SimulationConfig(
            virtualSize: 4 << 30, createOptions: try CreateOptions(parsing: "cluster_size=4K,refcount_bits=2"))
        config.driveOptions = try DriveOptions(parsing: "l2-cache-size=64K")
        return config
    }

    /// The same 300 MiB and 200 MiB in table-sized (2 MiB) writes: one segment each in QEMU, so
    /// the bulk refcount paths are compared event for event.
    @Test("4 KiB clusters, refcount_bits=2: 300 MiB in table-sized writes")
    func narrowRefcounts() throws {
        let lines = (50..<200).map { "W \($0 * 2)M 2M" } + (0..<100).map { "W \($0 * 2)M 2M" }
        try check(try Self.narrowConfig(), lines.joined(separator: "\n"))
    }

    /// One 300 MiB write is 150 segments, which QEMU runs as a pool of up to 8 concurrent tasks
    /// over a 16-entry L2 cache. Since the task-pool model was merged with this test, the
    /// simulation is no interleaving of QEMU's run and differs in its counts (L2 misses 428
    /// against QEMU's 250, simulated 215843 events against 215485 and 215491 in two QEMU runs):
    /// a known gap of the model for pools wider than the cache, kept visible here.
    @Test("4 KiB clusters, refcount_bits=2: one 300 MiB write (150 concurrent segments)")
    func narrowRefcountsOneWideWrite() throws {
        try withKnownIssue("task-pool model: a pool wider than the L2 cache diverges from QEMU", isIntermittent: true) {
            try check(try Self.narrowConfig(), "W 100M 300M\nW 0 200M")
        }
    }
}
