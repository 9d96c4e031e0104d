import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

/// The seed benchmark of issue 2: a 20 GiB fully populated image with 64 KiB clusters and 20 000
/// uniform random 4 KiB reads. Every configuration is run through real qemu-io and the simulator
/// and must give identical events and counts; the spec-derived facts are asserted on top.
@Suite("seed benchmark vs qemu-io", .requires(QemuTools.io))
struct SeedBenchmarkTests {
    let validator = Validator(runner: QemuTools.runner)

    static func trace(size: UInt64) throws -> ValidationInput {
        let spec = WorkloadSpec(pattern: .uniform, count: 20_000, diskSize: size, requestSize: 4096, readRatio: 1, seed: 1)
        return ValidationInput(records: Array(try WorkloadGenerator(spec)), fileName: "seed-\(size >> 30)G.csv")
    }

    /// Runs one configuration through both and returns (simulated L2 counts, QEMU's L2 counts).
    func run(size: UInt64, drive: String, input: ValidationInput) throws -> (sim: CacheStats, qemu: Metrics) {
        let config = SimulationConfig(virtualSize: size, populate: .full, driveOptions: try DriveOptions(parsing: drive))
        let log = EventLog(retainEvents: true)
        var reader = ArrayTraceReader(input.records, fileName: input.fileName)
        let report = try Simulation.run(config: config, reader: &reader, log: log)
        let sizes = report.images.map {
            ImageCacheSizes(
                l2EntryBytes: $0.sizing.l2EntrySize, l2Entries: $0.sizing.l2Entries,
                refcountEntryBytes: $0.sizing.refcountEntrySize, refcountEntries: $0.sizing.refcountEntries)
        }
        let v = try validator.validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(v.identical, "\(drive): \(v.text())")
        let sim = report.images[0].l2
        let qemu = v.images[0].qemu.l2
        #expect(qemu.lookups == sim.lookups && qemu.misses == sim.misses, "\(drive)")
        return (sim, qemu)
    }

    @Test("l2-cache-entry-size=64K: the miss ratio falls to cold misses only at 2.5M")
    func fullTableEntries() throws {
        let size: UInt64 = 20 << 30
        let input = try Self.trace(size: size)
        var misses: [Int] = []
        for cache in ["1M", "1.5M", "2M", "2.5M"] {
            let (sim, _) = try run(size: size, drive: "l2-cache-size=\(cache),l2-cache-entry-size=64K", input: input)
            misses.append(sim.misses)
        }
        // 20 GiB / (8192 entries × 64 KiB) = 40 L2 tables; 2.5M holds all of them.
        #expect(misses[3] == 40)
        #expect(misses[0] > misses[1] && misses[1] > misses[2] && misses[2] > misses[3] * 10)
    }

    @Test("slices: 64K vs 4K entries at 1 MiB on 16 GiB: same miss ratio, about 16× fewer bytes read")
    func slices() throws {
        let size: UInt64 = 16 << 30
        let input = try Self.trace(size: size)
        let (full, _) = try run(size: size, drive: "l2-cache-size=1M,l2-cache-entry-size=64K", input: input)
        let (sliced, _) = try run(size: size, drive: "l2-cache-size=1M,l2-cache-entry-size=4K", input: input)
        #expect(abs(full.missRate - sliced.missRate) < 0.02)
        let ratio = Double(full.bytesRead) / Double(sliced.bytesRead)
        #expect(ratio > 15 && ratio < 17, "ratio \(ratio)")
    }
}
