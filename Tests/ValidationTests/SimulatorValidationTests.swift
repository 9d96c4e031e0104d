import Foundation
import Qcow2Sim
import Testing
import TraceKit
import Validation

/// The simulator (`Simulation.run`) against real QEMU through the validator: the wiring of
/// `qcow2sim validate`, the mis-eviction switch, and a seeded differential run.
@Suite("simulator vs QEMU", .enabled(if: Qemu.hasQemuIO, Qemu.skipIO))
struct SimulatorValidationTests {
    let validator = Validator(runner: Qemu.runner)

    static func simulate(_ config: SimulationConfig, _ input: ValidationInput, misEvict: Int? = nil) throws -> (EventLog, [ImageCacheSizes]) {
        let log = EventLog(retainEvents: true)
        var reader = ArrayTraceReader(input.records, fileName: input.fileName)
        let report = try Simulation.run(config: config, reader: &reader, log: log, debugMisEvictAtLookup: misEvict)
        let sizes = report.images.map {
            ImageCacheSizes(
                l2EntryBytes: $0.sizing.l2EntrySize, l2Entries: $0.sizing.l2Entries, refcountEntryBytes: $0.sizing.refcountEntrySize,
                refcountEntries: $0.sizing.refcountEntries)
        }
        return (log, sizes)
    }

    @Test("the simulator's TV1 run is identical to QEMU's")
    func tv1() throws {
        let config = SimulationConfig(virtualSize: 1 << 30)
        let input = ValidationInput(records: records("W 0 4k\nR 0 4k"))
        let (log, sizes) = try Self.simulate(config, input)
        let report = try validator.validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.identical, "\(report.text())")
        #expect(report.qemuEvents == 53)
    }

    @Test("a deliberately wrong eviction (simulator switch) is caught at the right request")
    func misEviction() throws {
        // TV6 with l2-cache-size=8K: lookups 1, 2, 4, 5, 6 miss; lookup 4 is request 3 (read 64M).
        let config = RealQemuTests.tv6Config("8K")
        let input = ValidationInput(records: records(RealQemuTests.tv6Reads), fileName: "tv6.trace")
        let (good, _) = try Self.simulate(config, input)
        #expect(try validator.validate(config: config, input: input, expected: good).identical)
        let (bad, _) = try Self.simulate(config, input, misEvict: 4)
        let report = try validator.validate(config: config, input: input, expected: bad)
        #expect(!report.identical)
        #expect(report.exitCode == 1)
        #expect(report.firstDivergence?.request == 3)
        #expect(report.firstDivergence?.traceLocation == "4")
        #expect(report.firstDivergence?.actual.dropFirst().first == "qcow2_cache_get_replace_entry image 0 is_l2_cache 1 index 1")
    }

    /// Small seeded generator (SplitMix64): reads, single-cluster writes, write-zeroes, discards
    /// and flushes over a small disk, so every write stays single-segment (§13).
    struct Mix: Sendable {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: UInt64) -> UInt64 { next() % n }
    }

    static func randomTrace(seed: UInt64, count: Int, size: UInt64, cluster: UInt64) -> [TraceRecord] {
        var rng = Mix(state: seed)
        return (0..<count).map { _ in
            let clusterStart = rng.below(size / cluster) * cluster
            let within = rng.below(cluster / 512) * 512
            let len = min(cluster - within, (rng.below(16) + 1) * 512)
            switch rng.below(20) {
            case 0..<9: return TraceRecord(op: .read, offset: clusterStart + within, length: len)
            case 9..<16: return TraceRecord(op: .write, offset: clusterStart + within, length: len)
            case 16: return TraceRecord(op: .writeZeroes, offset: clusterStart, length: cluster, flags: rng.below(2) == 0 ? [] : .unmap)
            case 17..<19: return TraceRecord(op: .discard, offset: clusterStart, length: cluster * (rng.below(3) + 1))
            default: return TraceRecord(op: .flush, offset: 0, length: 0)
            }
        }
    }

    @Test(
        "differential: seeded random traces and configurations, zero divergences",
        arguments: [
            (UInt64(1), "", "", CacheMode.writeback),
            (UInt64(2), "cluster_size=4096", "l2-cache-size=16K", CacheMode.writeback),
            (UInt64(3), "", "l2-cache-size=8K,refcount-cache-size=64K", CacheMode.writethrough),
            (UInt64(4), "cluster_size=32K,extended_l2=on", "l2-cache-size=16K", CacheMode.writeback),
            (UInt64(5), "cluster_size=512", "", CacheMode.writeback),
            (UInt64(6), "refcount_bits=1", "l2-cache-entry-size=1K,l2-cache-size=4K", CacheMode.writethrough),
        ])
    func differential(seed: UInt64, create: String, drive: String, mode: CacheMode) throws {
        let size: UInt64 = 256 << 20
        let cluster: UInt64 = create.contains("cluster_size=4096") ? 4096 : create.contains("cluster_size=512") ? 512 : create.contains("32K") ? 32768 : 65536
        let recs = Self.randomTrace(seed: seed, count: 300, size: size, cluster: cluster)
        let config = SimulationConfig(virtualSize: size, createOptions: create, driveOptions: drive, cacheMode: mode)
        let input = ValidationInput(records: recs, fileName: "seed-\(seed)")
        let (log, sizes) = try Self.simulate(config, input)
        let report = try validator.validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.qemuEvents > 300)
        #expect(report.identical, "seed \(seed) (-o '\(create)', --drive '\(drive)', \(mode)):\n\(report.text())")
    }
}
