import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// Issue 8 items 1 and 4: the model's operation stream depends on the trace, the image options and
/// the L2 entry size only, and one recording replayed through many cache configurations gives
/// exactly what live runs with those configurations give (counts, events, memory timelines).
@Suite struct OperationStreamTests {
    static let traces = Repository.root.appendingPathComponent("Traces")

    static func scratch(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qcow2sim-ops-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name).path
    }

    /// `--drive` text of this file's own (a typo in it is a bug of the test: it stops the run).
    static func parsed(_ drive: String) -> DriveOptions {
        do { return try DriveOptions(parsing: drive) } catch { preconditionFailure("--drive '\(drive)': \(error.message)") }
    }

    /// The seed benchmark's mixed trace (8 GiB, 50 % writes).
    static func seedConfig(_ drive: String, policy: String = "qemu") -> SimulationConfig {
        SimulationConfig(virtualSize: 8 << 30, driveOptions: parsed(drive), policy: policy)
    }

    static func seedReader() throws -> AnyTraceReader {
        try TraceFile.open(path: traces.appendingPathComponent("seed-mixed-uniform-8G-20000-rw50.csv").path)
    }

    /// A two-image chain with timestamps: the base holds data in its first half; the overlay
    /// gets writes (COW from the base), reads spanning allocated and unallocated clusters (read
    /// task pools over the backing file), discards and write-zeroes.
    /// Both images' L2 caches stay below full coverage (512 KiB for 4 GiB), so entries are 4 KiB
    /// slices in every configuration: one stream.
    static func chainConfig(_ drive: String, policy: String = "qemu") -> SimulationConfig {
        let backing = drive.contains("backing.l2-cache-size") ? "" : ",backing.l2-cache-size=64K"
        var c = SimulationConfig(virtualSize: 4 << 30, chainLength: 2, driveOptions: parsed(drive + backing), policy: policy)
        c.layers[0] = LayerPlan(populate: .ranges([ByteRange(start: 0, length: 512 << 20)]), populateMode: .data)
        return c
    }

    static func chainRecords() -> [TraceRecord] {
        var rng = XorShift64(seed: 0x2545_F491_4F6C_DD1D)
        func next() -> UInt64 { rng.next() }
        var records: [TraceRecord] = []
        var written: [UInt64] = []
        var t = 0.0
        for i in 0..<3000 {
            t += Double(next() % 4000) / 1000
            let offset = (next() % ((1 << 30) / 4096 - 64)) * 4096 * (i % 3 == 0 ? 4 : 1)
            let r = next() % 100
            let op: TraceRecord.Op = r < 45 ? .read : r < 85 ? .write : r < 93 ? .discard : .writeZeroes
            let length: UInt64 = op == .read && i % 5 == 0 ? 256 << 10 : (1 + next() % 16) * 4096
            // Discards and write-zeroes mostly land on clusters written before (frees).
            let at =
                (op == .discard || op == .writeZeroes) && !written.isEmpty ? written[Int(next() % UInt64(written.count))] : offset
            if op == .write { written.append(offset & ~0xFFFF) }
            records.append(TraceRecord(time: t, op: op, offset: at, length: op == .discard ? 128 << 10 : length))
        }
        return records
    }

    /// Every operation of `recording`, with the cache layer's guard digests cleared (they are
    /// the cache layer's answer, not the model's operation).
    static func modelOperations(_ recording: OpRecording) throws -> [MetadataOp] {
        var all: [MetadataOp] = []
        try recording.forEachBatch { batch in
            for var op in batch {
                if op.code == .hostGuard { op.extra = 0 }
                all.append(op)
            }
        }
        return all
    }

    @Test func seedStreamIsTheSameAtTwoCacheSizes() throws {
        var r1 = try Self.seedReader()
        let a = try Simulation.record(config: Self.seedConfig("l2-cache-size=64K"), reader: &r1, to: Self.scratch("seed-64k.ops"))
        var r2 = try Self.seedReader()
        let b = try Simulation.record(
            config: Self.seedConfig("l2-cache-size=512K"), reader: &r2, to: Self.scratch("seed-512k.ops"))
        // The caches behave differently…
        #expect(a.report.images[0].l2.misses != b.report.images[0].l2.misses)
        #expect(a.report.images[0].l2.writebacks != b.report.images[0].l2.writebacks)
        // …on one stream: 20 000 requests, each at least a GET and a PUT of an L2 slice.
        let opsA = try Self.modelOperations(a.recording)
        #expect(opsA.count > 40_000)
        #expect(opsA == (try Self.modelOperations(b.recording)))
        #expect(a.recording.streamKey == b.recording.streamKey)
        // Issue 8: at most 16 bytes per operation on average.
        #expect(a.recording.bytesPerOperation <= 16)
    }

    @Test func chainStreamIsTheSameAtTwoCacheSizes() throws {
        var r1 = ArrayTraceReader(Self.chainRecords())
        let a = try Simulation.record(
            config: Self.chainConfig("l2-cache-size=32K,cache-clean-interval=5,backing.l2-cache-size=16K"), reader: &r1,
            to: Self.scratch("chain-a.ops"))
        var r2 = ArrayTraceReader(Self.chainRecords())
        let b = try Simulation.record(
            config: Self.chainConfig("l2-cache-size=256K,backing.l2-cache-size=128K,backing.cache-clean-interval=7"), reader: &r2,
            to: Self.scratch("chain-b.ops"))
        #expect(a.report.images[1].l2.misses != b.report.images[1].l2.misses)
        #expect(a.report.images[1].l2.cleaned > 0)
        #expect(a.report.multiSegmentReads > 0)
        let opsA = try Self.modelOperations(a.recording)
        #expect(opsA.contains { $0.code == .captureBegin })
        #expect(opsA.contains { $0.code == .freeCluster })
        #expect(opsA == (try Self.modelOperations(b.recording)))
    }

    /// Replays one recording at 8 configurations and compares each with a live run.
    static func checkReplay(
        record: SimulationConfig, configs: [SimulationConfig], reader: () throws -> any TraceReader, name: String, jobs: Int
    ) throws {
        var r0 = try reader()
        let recorded = try Simulation.record(config: record, reader: &r0, to: Self.scratch(name))
        let logs = configs.map { _ in EventLog() }
        let timelines = configs.map { _ in MemoryTimeline() }
        let outcomes = try Simulation.replay(recorded.recording, configs: configs, logs: logs, timelines: timelines, jobs: jobs)
        #expect(outcomes.count == configs.count)
        for (n, config) in configs.enumerated() {
            let log = EventLog()
            let timeline = MemoryTimeline()
            var r = try reader()
            let live = try Simulation.run(config: config, reader: &r, log: log, memoryTimeline: timeline)
            let outcome = outcomes[n]
            #expect(outcome.divergedAtRequest == nil, "configuration \(n + 1): \(config.driveOptions) \(config.policy)")
            guard let replayed = outcome.report else { continue }
            for k in live.images.indices {
                #expect(replayed.images[k].l2 == live.images[k].l2, "configuration \(n + 1) image \(k) L2")
                #expect(replayed.images[k].refcount == live.images[k].refcount, "configuration \(n + 1) image \(k) refcount")
                #expect(replayed.images[k].image == live.images[k].image, "configuration \(n + 1) image \(k)")
                #expect(replayed.images[k].sizing == live.images[k].sizing)
                #expect(replayed.images[k].hostAllocatedBytes == live.images[k].hostAllocatedBytes)
            }
            #expect(replayed.policy == live.policy)
            #expect(logs[n].events == log.events, "configuration \(n + 1): event log")
            #expect(logs[n].eventTasks == log.eventTasks)
            #expect(logs[n].requests.map { $0.firstEvent } == log.requests.map { $0.firstEvent })
            #expect(logs[n].requests.map { $0.multiSegment } == log.requests.map { $0.multiSegment })
            #expect(logs[n].closeStart == log.closeStart)
            #expect(timelines[n].samples == timeline.samples, "configuration \(n + 1): memory timeline")
        }
    }

    @Test(arguments: [1, 2]) func seedReplayAtEightConfigurations(jobs: Int) throws {
        let drives = [
            "l2-cache-size=64K", "l2-cache-size=96K", "l2-cache-size=128K", "l2-cache-size=256K,refcount-cache-size=4K",
        ]
        let configs =
            drives.map { Self.seedConfig($0) } + [
                Self.seedConfig("l2-cache-size=64K", policy: "lru"), Self.seedConfig("l2-cache-size=256K", policy: "lru"),
                Self.seedConfig("l2-cache-size=64K", policy: "fifo"), Self.seedConfig("l2-cache-size=512K", policy: "fifo"),
            ]
        try Self.checkReplay(
            record: Self.seedConfig("l2-cache-size=128K"), configs: configs, reader: { try Self.seedReader() },
            name: "seed-replay-\(jobs).ops", jobs: jobs)
    }

    @Test func chainReplayAtEightConfigurations() throws {
        let drives = [
            "l2-cache-size=32K", "l2-cache-size=32K,cache-clean-interval=5", "l2-cache-size=64K,cache-clean-interval=20",
            "l2-cache-size=256K,backing.l2-cache-size=8K",
            "l2-cache-size=8K,backing.l2-cache-size=256K,backing.cache-clean-interval=3",
            "refcount-cache-size=4K,l2-cache-size=16K",
        ]
        let configs =
            drives.map { Self.chainConfig($0) } + [
                Self.chainConfig("l2-cache-size=32K", policy: "lru"), Self.chainConfig("l2-cache-size=16K", policy: "fifo"),
            ]
        try Self.checkReplay(
            record: Self.chainConfig("l2-cache-size=128K"), configs: configs, reader: { ArrayTraceReader(Self.chainRecords()) },
            name: "chain-replay.ops", jobs: 1)
    }

    @Test func replayRefusesAnotherEntrySize() throws {
        var r = try Self.seedReader()
        let recorded = try Simulation.record(
            config: Self.seedConfig("l2-cache-size=64K"), reader: &r, to: Self.scratch("key.ops"))
        #expect(
            throws: SimulationError.usage(
                "configuration 1 does not share the recording's operation stream (image 0: l2-entry=65536 discard-no-unref=false instead of image 0: l2-entry=4096 discard-no-unref=false): it needs its own recording"
            )
        ) {
            _ = try Simulation.replay(recorded.recording, configs: [Self.seedConfig("l2-cache-size=64K,l2-cache-entry-size=64K")])
        }
    }

    /// The host-file guard: three writes allocate three new L2 tables; a partial write-zeroes
    /// then runs QEMU's preallocation probe, which reads `st_blocks`. QEMU writes a new table at
    /// once (`l2_allocate` and `alloc_refcount_block` flush their cache), so however small the
    /// cache, the file the probe reads is the same: the replay at 2 slices is exact (no
    /// divergence), and equals its live run, as does the one at 128.
    @Test func probeAfterAllocationsReplaysExactly() throws {
        let records = [
            TraceRecord(op: .write, offset: 0, length: 4096), TraceRecord(op: .write, offset: 1 << 30, length: 4096),
            TraceRecord(op: .write, offset: 2 << 30, length: 4096),
            TraceRecord(op: .writeZeroes, offset: (3 << 30) + 512, length: 1024),
            TraceRecord(op: .read, offset: 0, length: 4096),
        ]
        var r = ArrayTraceReader(records)
        let recorded = try Simulation.record(
            config: Self.seedConfig("l2-cache-size=1M,l2-cache-entry-size=4K"), reader: &r, to: Self.scratch("guard.ops"))
        #expect(recorded.report.images[0].image.preallocationProbes == 1)
        let drives = ["l2-cache-size=8K,l2-cache-entry-size=4K", "l2-cache-size=512K,l2-cache-entry-size=4K"]
        let outcomes = try Simulation.replay(recorded.recording, configs: drives.map { Self.seedConfig($0) })
        for (drive, outcome) in zip(drives, outcomes) {
            #expect(outcome.divergedAtRequest == nil, "\(drive)")
            var live = ArrayTraceReader(records)
            let expected = try Simulation.run(config: Self.seedConfig(drive), reader: &live)
            #expect(outcome.report?.images[0].l2 == expected.images[0].l2, "\(drive)")
            #expect(outcome.report?.images[0].refcount == expected.images[0].refcount, "\(drive)")
        }
        // 2 slices for 3 tables: the small cache really evicts before the probe.
        #expect((outcomes[0].report?.images[0].l2.evictions ?? 0) > 0)
    }
}
