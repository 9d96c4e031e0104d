import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

/// The simulator (`Simulation.run`) against real QEMU through the validator: the wiring of
/// `qcow2sim validate`, the mis-eviction switch, and a seeded differential run.
@Suite("simulator vs QEMU", .requires(QemuTools.io))
struct SimulatorValidationTests {
    let validator = Validator(runner: QemuTools.runner)

    static func simulate(_ config: SimulationConfig, _ input: ValidationInput, misEvict: Int? = nil) throws -> (
        EventLog, [ImageCacheSizes]
    ) {
        try ExpectedRun.simulate(config: config, input: input, misEvictAtLookup: misEvict)
    }

    @Test("the simulator's TV1 run is identical to QEMU's")
    func tv1() throws {
        let config = SimulationConfig(virtualSize: 1 << 30)
        let input = ValidationInput(records: TraceText.records("W 0 4k\nR 0 4k"))
        let (log, sizes) = try Self.simulate(config, input)
        let report = try validator.validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.identical, "\(report.text())")
        #expect(report.qemuEvents == 53)
    }

    @Test("a deliberately wrong eviction (simulator switch) is caught at the right request")
    func misEviction() throws {
        // TV6 with l2-cache-size=8K: lookups 1, 2, 4, 5, 6 miss; lookup 4 is request 3 (read 64M).
        let config = RealQemuTests.tv6Config("8K")
        let input = ValidationInput(records: TraceText.records(RealQemuTests.tv6Reads), fileName: "tv6.trace")
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

    @Test("--image with a backing chain: the whole chain is copied and rebased, the user's files stay byte-identical")
    func imageChain() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // base in a sibling directory, named relatively from the overlay's directory.
        try FileManager.default.createDirectory(atPath: dir + "/images/lower", withIntermediateDirectories: true)
        let base = dir + "/images/lower/b.qcow2"
        let top = dir + "/images/t.qcow2"
        let img = { (args: [String]) in
            _ = try QemuTools.runner.runChecked(
                ProcessRequest(executable: "qemu-img", arguments: args, workingDirectory: dir + "/images"))
        }
        try img(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", base, "64M"])
        _ = try QemuTools.runner.runChecked(
            ProcessRequest(executable: "qemu-io", arguments: ["-c", "write -q 0 1M", "-f", "qcow2", base]))
        try img(["create", "-q", "-f", "qcow2", "-b", "lower/b.qcow2", "-F", "qcow2", "-o", "cluster_size=4096", top])
        _ = try QemuTools.runner.runChecked(
            ProcessRequest(executable: "qemu-io", arguments: ["-c", "write -q 512k 8k", "-f", "qcow2", top]))
        #expect(try ImageBuilder.backingChain(of: top) == [top, dir + "/images/lower/b.qcow2"])
        let before = try [top, base].map { try Data(contentsOf: URL(fileURLWithPath: $0)) }

        let keep = dir + "/kept"
        let config = SimulationConfig(virtualSize: 64 << 20, imageFile: top)
        let input = ValidationInput(records: TraceText.records("R 0 64k\nW 256k 4k\nR 510k 8k\nZ 2M 8k\nD 0 64k\nF\nR 0 16k"))
        let (log, sizes) = try Self.simulate(config, input)
        let v = Validator(runner: QemuTools.runner, options: ValidatorOptions(keepDirectory: keep))
        let report = try v.validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.identical, "\(report.text())")
        #expect(report.images.count == 2)
        #expect(report.images[0].qemu.l2.lookups > 0)
        let after = try [top, base].map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
        #expect(before == after)
        // The copy of the overlay names the copy of the base.
        #expect(try Qcow2File(path: keep + "/top1.qcow2").header.backingFileName == "base.qcow2")
        #expect(try ImageBuilder.backingChain(of: keep + "/top1.qcow2") == [keep + "/top1.qcow2", keep + "/base.qcow2"])

        // --chain other than the file's depth is refused.
        var wrong = config
        wrong.chainLength = 3
        #expect(
            throws: ValidationError.usage("--chain 3 cannot be combined with --image '\(top)': its backing chain has 2 image(s)")
        ) {
            _ = try Validator(runner: QemuTools.runner).replay(config: wrong, input: input)
        }
    }

    @Test("discard=ignore: qemu-io is sent no discards, the simulator drops them, the report says so")
    func discardIgnore() throws {
        var config = SimulationConfig(
            virtualSize: 256 << 20, populate: .ranges([ByteRange(start: 0, length: 1 << 20)]), populateMode: .data)
        config.discardUnmap = false
        let input = ValidationInput(records: TraceText.records("D 0 1M\nR 0 4k\nW 2M 4k\nD 2M 64k\nR 2M 4k\nZ 0 64k"))
        let (log, sizes) = try Self.simulate(config, input)
        let report = try validator.validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.identical, "\(report.text())")
        #expect(report.replayedRequests == 4)
        #expect(report.notes.contains { $0.hasPrefix("discard=ignore: 2 discard request(s) not sent to qemu-io") })
        // Worked by hand from QEMU's path: with discard=ignore, bdrv_co_pdiscard returns before
        // qcow2, so the log starts with `R 0 4k`'s L2 miss, then `W 2M 4k`'s hit on the same slice.
        // With discards on, `D 0 1M` comes first:
        // qcow2_cluster_discard → discard_in_l2_slice takes the one L2 slice (0x40000, a miss) and
        // frees its 16 populated 64 KiB clusters, each through qcow2_free_any_cluster →
        // update_refcount, a lookup of refcount block 0 (0x20000): one miss, then 15 hits; the
        // read's lookup then hits the slice. So the configuration really reaches the simulator.
        func miss(_ l2: Bool, _ offset: String) -> [String] {
            let c = l2 ? 1 : 0
            return [
                "qcow2_cache_get is_l2_cache \(c) offset \(offset) read_from_disk 1",
                "qcow2_cache_get_replace_entry is_l2_cache \(c) index 0", "qcow2_cache_get_read is_l2_cache \(c) index 0",
                "qcow2_cache_get_done is_l2_cache \(c) index 0",
            ]
        }
        func hit(_ l2: Bool, _ offset: String) -> [String] {
            let c = l2 ? 1 : 0
            return [
                "qcow2_cache_get is_l2_cache \(c) offset \(offset) read_from_disk 1",
                "qcow2_cache_get_done is_l2_cache \(c) index 0",
            ]
        }
        let lines = { (l: EventLog, n: Int) in l.events.prefix(n).map { $0.line(includeImage: false) } }
        #expect(lines(log, 6) == miss(true, "0x40000") + hit(true, "0x40000"))
        config.discardUnmap = true
        let (unmapLog, _) = try Self.simulate(config, input)
        let discard = miss(true, "0x40000") + miss(false, "0x20000") + (0..<15).flatMap { _ in hit(false, "0x20000") }
        #expect(lines(unmapLog, discard.count + 2) == discard + hit(true, "0x40000"))
        #expect(try validator.validate(config: config, input: input, expected: unmapLog).identical)
    }

    @Test("preparation sessions on overlays: the trace session matches QEMU after them")
    func preparation() throws {
        var config = SimulationConfig(
            virtualSize: 128 << 20, createOptions: try CreateOptions(parsing: "cluster_size=65536,extended_l2=on"),
            chainLength: 3,
            populate: .ranges([ByteRange(start: 0, length: 4 << 20)]), populateMode: .data,
            driveOptions: try DriveOptions(parsing: "l2-cache-size=1,backing.l2-cache-size=1"),
            cacheMode: .writethrough)
        config.preparation = [
            PreparationSession(image: 1, records: TraceText.records("W 64k 4k\nW 8M 64k\nD 1M 128k")),
            PreparationSession(image: 2, records: TraceText.records("W 68k 4k\nZ 16M 64k\nF")),
        ]
        let input = ValidationInput(
            records: TraceText.records("R 64k 8k\nW 72k 4k\nR 8M 4k\nW 1M 4k\nR 16M 4k\nD 0 4M\nR 0 192k"))
        let (log, sizes) = try Self.simulate(config, input)
        let report = try validator.validate(config: config, input: input, expected: log, sizes: sizes)
        // The 3-image reads run as task pools: the backing tasks' events after their first
        // miss come where QEMU prints them (§13), so the run is identical, not just equivalent.
        #expect(report.identical, "\(report.text())")
        #expect(
            report.notes.contains(
                "2 preparation session(s) ran before the trace (qemu-io, writeback, default options; not compared)"))
        // Without the sessions QEMU's run differs from the prepared simulation.
        var bare = config
        bare.preparation = []
        #expect(try !validator.validate(config: bare, input: input, expected: log).identical)
    }

    /// Reads, single-cluster writes, write-zeroes, discards and flushes over a small disk from a
    /// seeded SplitMix64, so every write stays single-segment (§13).
    static func randomTrace(seed: UInt64, count: Int, size: UInt64, cluster: UInt64) -> [TraceRecord] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            let clusterStart = rng.below(size / cluster) * cluster
            let within = rng.below(cluster / 512) * 512
            let len = min(cluster - within, (rng.below(16) + 1) * 512)
            switch rng.below(20) {
            case 0..<9: return TraceRecord(op: .read, offset: clusterStart + within, length: len)
            case 9..<16: return TraceRecord(op: .write, offset: clusterStart + within, length: len)
            case 16:
                return TraceRecord(
                    op: .writeZeroes, offset: clusterStart, length: cluster, flags: rng.below(2) == 0 ? [] : .unmap)
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
        let cluster: UInt64 =
            create.contains("cluster_size=4096")
            ? 4096 : create.contains("cluster_size=512") ? 512 : create.contains("32K") ? 32768 : 65536
        let recs = Self.randomTrace(seed: seed, count: 300, size: size, cluster: cluster)
        let config = SimulationConfig(
            virtualSize: size, createOptions: try CreateOptions(parsing: create), driveOptions: try DriveOptions(parsing: drive),
            cacheMode: mode)
        let input = ValidationInput(records: recs, fileName: "seed-\(seed)")
        let (log, sizes) = try Self.simulate(config, input)
        let report = try validator.validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.qemuEvents > 300)
        #expect(report.identical, "seed \(seed) (-o '\(create)', --drive '\(drive)', \(mode)):\n\(report.text())")
    }
}
