import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// Issue 10, item 3 for `mrc --sizes all`: every point of the one-pass curve (stack or replay)
/// equals `Simulation.run` at that size in every counter of every cache of every image, over a
/// grid of traces (reads, writes, discards, chains, timestamps with and without the clean timer,
/// the files in Traces/ and ../shared/traces), at every size or at samples that include the
/// minimum, the knee and full coverage.
@Suite struct MissRatioCurveTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static func local(_ name: String) -> String { root.appendingPathComponent("Traces").appendingPathComponent(name).path }
    /// The public traces (`QCOW2SIM_TRACES` or ../shared/traces, as every other test finds them).
    static let shared = URL(fileURLWithPath: SharedTraces.directory)

    static func generated(_ spec: WorkloadSpec) throws -> [TraceRecord] { Array(try WorkloadGenerator(spec)) }

    /// The curve over `values` (all sizes if nil) and `policies`; checks the sampled points
    /// against `Simulation.run` and returns each point's method (grid order) and the points.
    @discardableResult
    static func check<R: TraceReader>(
        _ base: SimulationConfig, open: @escaping () throws -> R, values: [SweepValue]? = nil,
        policies: [String] = ["qemu"], sample: Int? = nil, directory: String = NSTemporaryDirectory()
    ) throws -> (methods: [CurveMethod], points: [SweepPoint], reports: [SimulationReport]) {
        let sizes = try values ?? MissRatioCurveRunner.allSizes(base)
        var axes = [SweepAxis(key: .drive("l2-cache-size"), values: sizes)]
        if policies.count > 1 { axes.append(SweepAxis(key: .policy, values: policies.map { SweepValue(text: $0) })) }
        var b = base
        b.policy = policies[0]
        let grid = try SweepGrid(base: b, axes: axes)
        let points = grid.points
        let (reports, methods) = try MissRatioCurveRunner(directory: directory).run(points, open: open)
        #expect(reports.count == points.count)
        // Sizes to check: all, or the ends, the knee (the largest drop in misses) and evenly spaced ones.
        var chosen = Set(sizes.indices)
        if let sample, sizes.count > sample {
            let misses = sizes.indices.map { reports[$0 * policies.count].images.last?.l2.misses ?? 0 }
            var knee = 1
            for k in 1..<misses.count where misses[k - 1] - misses[k] > misses[knee - 1] - misses[knee] { knee = k }
            chosen = [0, 1, knee - 1, knee, sizes.count - 2, sizes.count - 1]
            for k in 0..<sample { chosen.insert(k * (sizes.count - 1) / max(sample - 1, 1)) }
        }
        for p in points where chosen.contains(p.index / policies.count) {
            var reader = try open()
            let live = try Simulation.run(config: p.config, reader: &reader)
            let got = reports[p.index]
            let what = "\(p.config.policy) l2-cache-size=\(p.values[0].text) (\(methods[p.index]))"
            #expect(got.requests == live.requests, "\(what)")
            #expect(got.memorySpan == live.memorySpan, "\(what)")
            #expect(got.images.count == live.images.count, "\(what)")
            for (g, l) in zip(got.images, live.images) {
                #expect(g.sizing == l.sizing, "\(what) image \(l.index) sizing")
                #expect(g.l2 == l.l2, "\(what) image \(l.index) l2: \(g.l2) instead of \(l.l2)")
                #expect(g.refcount == l.refcount, "\(what) image \(l.index) refcount: \(g.refcount) instead of \(l.refcount)")
            }
        }
        return (methods, points, reports)
    }

    static func array(_ records: [TraceRecord]) -> () throws -> ArrayTraceReader {
        { ArrayTraceReader(records) }
    }

    static func file(_ path: String, size: UInt64? = nil) -> () throws -> AnyTraceReader {
        var options = TraceOptions()
        options.diskSize = size
        return { try TraceFile.open(path: path, format: nil, options: options) }
    }

    // MARK: generated traces

    @Test func uniformReadsEverySizeBothPolicies() throws {
        // 1 GiB, 64 KiB clusters: 128 KiB of L2 tables = 32 slices; sizes 2…31 slices, then 128K.
        let base = SimulationConfig(virtualSize: 1 << 30, populate: .full)
        let records = try Self.generated(WorkloadSpec(count: 3000, diskSize: 1 << 30, seed: 7))
        let r = try Self.check(base, open: Self.array(records), policies: ["qemu", "lru"])
        #expect(r.points.count == 31 * 2)
        // The templates (2 entries, one per policy) and full coverage (its own stream) replay.
        let replayed = r.points.filter { r.methods[$0.index] == .replay }.map { "\($0.values[0].text)/\($0.config.policy)" }
        #expect(replayed == ["8192/qemu", "8192/lru", "131072/qemu", "131072/lru"])
        // Hand-checkable: at full coverage only the 2 whole tables miss; at 31 slices of 32 the
        // 32 slices miss once each and a few more.
        #expect(r.reports[60].images[0].l2.misses == 2)
        #expect(r.reports[58].images[0].l2.misses >= 32)
        #expect(r.reports[58].images[0].l2.missesCold == 32)
    }

    @Test func hotsetReadsWithEntrySize() throws {
        // Whole-table entries fixed by --entry-size: 8 GiB = 16 tables, sizes 2…16 entries,
        // all from one stream.
        var base = SimulationConfig(virtualSize: 8 << 30, populate: .full)
        SweepGrid.apply(SweepValue(text: "65536", number: 65536), for: .drive("l2-cache-entry-size"), to: &base)
        let records = try Self.generated(
            WorkloadSpec(pattern: .hotset(hotFraction: 0.25, hotAccess: 0.9), count: 4000, diskSize: 8 << 30, seed: 3))
        let r = try Self.check(base, open: Self.array(records), policies: ["qemu", "lru"])
        #expect(r.points.count == 15 * 2)
        #expect(r.methods.filter { $0 == .stack }.count == 28)
    }

    @Test func timestampsWithoutAndWithTheCleanTimer() throws {
        // 0.37 s between requests: the memory integral sums non-integral steps in order.
        let records = try Self.generated(WorkloadSpec(count: 2000, diskSize: 1 << 30, seed: 11, interval: 0.37))
        var base = SimulationConfig(virtualSize: 1 << 30, populate: .full)
        SweepGrid.apply(SweepValue(text: "0", number: 0), for: .drive("cache-clean-interval"), to: &base)
        let off = try Self.check(base, open: Self.array(records))
        #expect(off.methods.filter { $0 == .stack }.count == 29)
        // cache-clean-interval=1 over 740 s: ticks drop the slices not used for a second or two;
        // every point replays.
        SweepGrid.apply(SweepValue(text: "1", number: 1), for: .drive("cache-clean-interval"), to: &base)
        let on = try Self.check(base, open: Self.array(records))
        #expect(on.methods.allSatisfy { $0 == .replay })
        #expect(on.reports[10].images[0].l2.cleaned > 0)
    }

    @Test func writesAndDiscardsReplay() throws {
        // Allocating writes dirty L2 tables: write-backs depend on the size, so every point replays.
        let writes = try Self.generated(WorkloadSpec(count: 1500, diskSize: 1 << 30, readRatio: 0.5, seed: 5))
        let w = try Self.check(SimulationConfig(virtualSize: 1 << 30), open: Self.array(writes), sample: 8)
        #expect(w.methods.allSatisfy { $0 == .replay })
        #expect(w.reports[0].images[0].l2.writebacks > 0)
        // Discards over a populated image: they rewrite L2 entries (dirty) and free clusters.
        var records = try Self.generated(WorkloadSpec(count: 1500, diskSize: 1 << 30, seed: 9))
        for k in stride(from: 0, to: records.count, by: 3) {
            records[k] = TraceRecord(op: .discard, offset: records[k].offset & ~0xFFFF, length: 65536)
        }
        let d = try Self.check(SimulationConfig(virtualSize: 1 << 30, populate: .full), open: Self.array(records), sample: 8)
        #expect(d.methods.allSatisfy { $0 == .replay })
    }

    @Test func overwritesOfAllocatedClustersUseTheStack() throws {
        // Writes into preallocated, COPIED clusters touch no metadata: no dirty table, stack.
        let records = try Self.generated(WorkloadSpec(count: 2000, diskSize: 1 << 30, readRatio: 0.5, seed: 13))
        let r = try Self.check(
            SimulationConfig(virtualSize: 1 << 30, populate: .full, populateMode: .data), open: Self.array(records), sample: 10)
        #expect(r.methods.filter { $0 == .stack }.count == 29)
    }

    @Test func oneReadOnlyPolicyRecordsNothing() throws {
        // One policy over reads: every point comes from the stack and the live run, so mrc writes
        // no recording; a directory that does not exist shows it (a recording there cannot be
        // created).
        let missing = (NSTemporaryDirectory() as NSString).appendingPathComponent("no-such-dir-\(UUID().uuidString)")
        let base = SimulationConfig(virtualSize: 1 << 30, populate: .full)
        let reads = try Self.generated(WorkloadSpec(count: 3000, diskSize: 1 << 30, seed: 21))
        for policy in ["qemu", "lru"] {
            let r = try Self.check(base, open: Self.array(reads), policies: [policy], directory: missing)
            // The first size runs live, full coverage is its own stream; the 29 between are stack.
            #expect(r.methods.filter { $0 == .stack }.count == 29, "\(policy)")
        }
        // Reads, then allocating writes: the unrecorded run stops at the first write and the
        // curve is recorded and replayed (here: the recording cannot be created).
        var late = reads
        late += try Self.generated(WorkloadSpec(count: 200, diskSize: 1 << 30, readRatio: 0, seed: 22))
        let fresh = SimulationConfig(
            virtualSize: 1 << 30, populate: .ranges([ByteRange(start: 0, length: 512 << 20)]), populateMode: .data)
        do {
            try Self.check(
                fresh, open: Self.array(late), values: [8192, 65536].map { SweepValue(text: String($0), number: UInt64($0)) },
                directory: missing)
            Issue.record("a curve over writes recorded nothing")
        } catch let e as SweepFailure {
            #expect(String(describing: e.error).contains(missing), "\(e.error)")
        }
        let w = try Self.check(fresh, open: Self.array(late), sample: 6)
        #expect(w.methods.allSatisfy { $0 == .replay })
        #expect(w.reports[0].images[0].l2.writebacks > 0)
    }

    @Test func chainOfTwo() throws {
        // The top image's curve; the backing file's caches keep their size at every point.
        var base = SimulationConfig(virtualSize: 1 << 30, chainLength: 2, populate: .full)
        base.chainLength = 2
        let records = try Self.generated(WorkloadSpec(count: 2000, diskSize: 1 << 30, seed: 17))
        let r = try Self.check(base, open: Self.array(records), policies: ["qemu", "lru"], sample: 8)
        #expect(r.reports[0].images.count == 2)
    }

    // MARK: trace files

    @Test(arguments: [
        "seed-uniform-20G-20000.csv", "seed-zipf-20G-20000.csv", "seed-hotset-20G-20000.csv",
    ])
    func seedReadTraces(_ name: String) throws {
        let base = SimulationConfig(virtualSize: 20 << 30, populate: .full)
        let r = try Self.check(base, open: Self.file(Self.local(name)), sample: 6)
        // 20 GiB = 640 slices of 4 KiB: 2…639 slices below full coverage, all but the first (the
        // template) by the stack, then full coverage (whole tables, its own stream).
        #expect(r.points.count == 639)
        #expect(r.methods.filter { $0 == .stack }.count == 637)
    }

    @Test func seedMixedAndGuestTraces() throws {
        try Self.check(
            SimulationConfig(virtualSize: 8 << 30), open: Self.file(Self.local("seed-mixed-uniform-8G-20000-rw50.csv")),
            sample: 5)
        try Self.check(SimulationConfig(virtualSize: 8 << 30), open: Self.file(Self.local("guest-ext4.trace.csv")), sample: 5)
    }

    // Skipped with a message where the traces are missing, failed in CI (`SharedTraces.requirement`);
    // it found them two directories above the checkout and passed silently without them before.
    @Test(.requires(SharedTraces.requirement)) func sharedTraces() throws {
        let msr = Self.shared.appendingPathComponent("msr-cambridge1-sample.csv").path
        let cloud = Self.shared.appendingPathComponent("cloudPhysicsIO.csv").path
        // Writes into a populated image (overwrites): no table gets dirty.
        let m = try Self.check(
            SimulationConfig(virtualSize: 16 << 30, populate: .full), open: Self.file(msr, size: 16 << 30),
            policies: ["qemu", "lru"], sample: 6)
        #expect(m.methods.contains(.stack))
        // Two hours of timestamps: the default 600 s clean timer fires, every point replays
        // (four sizes: all 1 024 would replay 1 024 times).
        let c = try Self.check(
            SimulationConfig(virtualSize: 32 << 30, populate: .full), open: Self.file(cloud, size: 32 << 30),
            values: [8192, 262144, 2 << 20, 4 << 20].map { SweepValue(text: String($0), number: UInt64($0)) })
        #expect(c.methods.allSatisfy { $0 == .replay })
    }

    // MARK: sizes

    @Test func allSizesFollowQemusRules() throws {
        // 1 GiB, 64 KiB clusters: max_l2 = 128 KiB; 4 KiB slices below it, then the covering size.
        let one = try MissRatioCurveRunner.allSizes(SimulationConfig(virtualSize: 1 << 30)).compactMap(\.number)
        #expect(one.first == 8192 && one.count == 31 && one[29] == 31 * 4096 && one.last == 131072)
        // 512-byte clusters: slices of 512 bytes; a 1 MiB disk has 2048 clusters = 16 KiB of L2.
        var small = SimulationConfig(virtualSize: 1 << 20)
        small.createOptions = try CreateOptions(parsing: "cluster_size=512")
        let s = try MissRatioCurveRunner.allSizes(small).compactMap(\.number)
        #expect(s.first == 1024 && s.last == 16384 && s.count == 31)
        // Too many sizes: a usage error that says what to do.
        #expect(throws: SimulationError.self) {
            var huge = SimulationConfig(virtualSize: 1 << 50)
            huge.createOptions = try CreateOptions(parsing: "cluster_size=512")
            _ = try MissRatioCurveRunner.allSizes(huge)
        }
    }
}
