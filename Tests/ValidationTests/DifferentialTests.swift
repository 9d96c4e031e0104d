import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

/// One generated case of the differential grid: a configuration and a trace, both derived from
/// `seed` alone (TraceKit's `Xoshiro256StarStar`, portable across platforms).
struct DiffCase: CustomStringConvertible, Sendable {
    /// Position in the grid.
    var index: Int
    /// The seed everything below was drawn from.
    var seed: UInt64
    /// Cluster size in bytes.
    var clusterSize: UInt64
    /// `extended_l2=on`.
    var extendedL2: Bool
    /// The run.
    var config: SimulationConfig
    /// The trace.
    var records: [TraceRecord]

    /// The populate mode as the issue names it.
    var populateName: String {
        switch (config.populate, config.populateMode) {
        case (.none, _): "none"
        case (.full, .metadata): "full metadata"
        case (.full, .zero): "full zero"
        case (.full, .data): "full data"
        case (.ranges, .zero): "zero ranges"
        case (.ranges, .data): "data ranges"
        case (.ranges, .metadata): "metadata ranges (invalid)"
        }
    }

    /// Everything needed to reproduce the case, in words (trace excluded).
    var description: String {
        var s = "case \(index) seed 0x\(String(seed, radix: 16)): size \(config.virtualSize >> 20)M, -o '\(config.createOptions)'"
        s += ", chain \(config.chainLength), populate \(populateName)"
        if case .ranges(let r) = config.populate { s += " [" + r.map { "\($0.start):\($0.length)" }.joined(separator: ",") + "]" }
        s += ", --drive '\(config.driveOptions)', \(config.cacheMode)"
        if config.readOnly { s += ", read-only" }
        if !config.discardUnmap { s += ", discard=ignore" }
        for p in config.preparation { s += ", preparation on image \(p.image): \(p.records.count) requests" }
        s += ", \(records.count) requests"
        return s
    }
}

/// The differential grid (issue 3 "Done when", issue 4 item 4): every cluster size (512 B,
/// 4 KiB, 64 KiB, 2 MiB), extended L2 where allowed, every populate mode, chains of depth 1–3 and
/// both cache modes are crossed exactly (180 cases); L2 cache layouts from the 2-entry minimum
/// to full coverage (full tables and slices), refcount caches, backing options and preparation
/// sessions rotate and are drawn from the seed; 36 more cases mix in read-only opens,
/// `discard=ignore` and several preparation sessions.
enum DifferentialGrid {
    /// Cases crossed exactly.
    static let crossed = 180
    /// Extra cases drawn freely (read-only, discard=ignore, several preparation sessions).
    static let extra = 36
    /// Total number of cases.
    static let count = crossed + extra
    /// The fixed seed base; `QCOW2SIM_GRID_SEED` (hex) explores another grid locally.
    static let defaultSeedBase: UInt64 = 0xD1FF_0000
    static let seedBase: UInt64 =
        ProcessInfo.processInfo.environment["QCOW2SIM_GRID_SEED"].flatMap { UInt64($0, radix: 16) } ?? defaultSeedBase
    /// The seed of case `i`.
    static func seed(_ i: Int) -> UInt64 { seedBase &+ UInt64(i) }

    /// (cluster size, extended L2)
    static let geometries: [(UInt64, Bool)] = [
        (512, false), (4096, false), (65536, false), (65536, true), (2 << 20, false), (2 << 20, true),
    ]
    static let populateKinds = ["none", "full metadata", "zero ranges", "data ranges", "full zero"]

    /// Builds case `i`.
    static func make(_ i: Int) throws -> DiffCase {
        var rng = Xoshiro256StarStar(seed: seed(i))
        let g: Int, p: Int, chain: Int, mode: CacheMode
        if i < crossed {
            g = i % 6
            p = (i / 6) % 5
            chain = 1 + (i / 30) % 3
            mode = (i / 90) % 2 == 0 ? .writeback : .writethrough
        } else {
            g = Int(rng.nextBelow(6))
            p = Int(rng.nextBelow(5))
            chain = 1 + Int(rng.nextBelow(3))
            mode = rng.nextBelow(2) == 0 ? .writeback : .writethrough
        }
        let (cs, ext) = geometries[g]
        let size: UInt64
        switch cs {
        case 512: size = 64 << 20
        case 4096: size = [64, 128][Int(rng.nextBelow(2))] << 20
        default: size = [64, 128, 256][Int(rng.nextBelow(3))] << 20
        }
        var create = "cluster_size=\(cs)"
        if ext { create += ",extended_l2=on" } else if rng.nextBelow(4) == 0 { create += ",extended_l2=off" }
        var config = SimulationConfig(
            virtualSize: size, createOptions: try CreateOptions(parsing: create), chainLength: chain, cacheMode: mode)
        switch populateKinds[p] {
        case "full metadata":
            config.populate = .full
            config.populateMode = .metadata
        case "zero ranges", "data ranges":
            config.populate = .ranges(ranges(&rng, cs: cs, size: size))
            config.populateMode = p == 2 ? .zero : .data
        case "full zero":
            config.populate = .full
            config.populateMode = .zero
        default:
            break
        }
        // Drive options, top first; the variant rotates with the case so every layout appears
        // at every cluster size.
        var drive: [String] = []
        for level in 0..<chain {
            let variant = level == 0 ? (i / 6 + i / 30) % 7 : Int(rng.nextBelow(7))
            let prefix = String(repeating: "backing.", count: level)
            for item in cacheOptions(&rng, variant: variant, cs: cs, ext: ext, size: size) { drive.append(prefix + item) }
        }
        config.driveOptions = try DriveOptions(parsing: drive.joined(separator: ","))

        let hot = (0..<3).map { _ in rng.nextBelow(size / cs) }
        var count = 100 + Int(rng.nextBelow(101))
        if i >= crossed {
            switch rng.nextBelow(4) {
            case 0: config.readOnly = true
            case 1: config.discardUnmap = false
            default: break
            }
        }
        // Preparation sessions: on overlays in the crossed part (every other chained case), on
        // any image in the extra part.
        let sessions: Int
        if i < crossed { sessions = chain > 1 && (i / 6) % 2 == 0 ? 1 : 0 } else { sessions = Int(rng.nextBelow(3)) }
        for _ in 0..<sessions {
            let image = i < crossed ? 1 + Int(rng.nextBelow(UInt64(chain - 1))) : Int(rng.nextBelow(UInt64(chain)))
            let n = 5 + Int(rng.nextBelow(16))
            let recs = (0..<n).map { _ in request(&rng, cs: cs, size: size, hot: hot, readOnly: false) }
            config.preparation.append(PreparationSession(image: image, records: recs))
        }
        // Read-only traces hold reads, and flushes in one of three of them.
        let readOnlyFlushes = config.readOnly && rng.nextBelow(3) == 0
        if config.readOnly { count = 100 }
        let records = (0..<count).map { _ in
            request(&rng, cs: cs, size: size, hot: hot, readOnly: config.readOnly, readOnlyFlushes: readOnlyFlushes)
        }
        return DiffCase(index: i, seed: seed(i), clusterSize: cs, extendedL2: ext, config: config, records: records)
    }

    /// 1–4 populate ranges, 512-byte aligned, up to 4 clusters or 1 MiB each.
    static func ranges(_ rng: inout Xoshiro256StarStar, cs: UInt64, size: UInt64) -> [ByteRange] {
        let maxLen = max(4 * cs, 1 << 20)
        return (0..<(1 + rng.nextBelow(4))).map { _ in
            let len = 512 * (1 + rng.nextBelow(maxLen / 512))
            let start = 512 * rng.nextBelow((size - len) / 512 + 1)
            return ByteRange(start: start, length: len)
        }
    }

    /// `max_l2_bytes` (qcow2-model.md §2).
    static func maxL2Bytes(cs: UInt64, ext: Bool, size: UInt64) -> UInt64 {
        let need = (size + cs - 1) / cs * (ext ? 16 : 8)
        return (need + cs - 1) / cs * cs
    }

    /// The cache options of one image. Variants: 0 default (full tables); 1 the 2-entry minimum
    /// (`l2-cache-size=1`); 2 a partial sliced cache (default slice size); 3 an explicit entry
    /// size and entry count up to full coverage; 4 full coverage in small slices; 5 full tables
    /// spelled out, or through `cache-size`; 6 `cache-size` alone, small. Refcount caches: default,
    /// the 4-entry minimum spelled out, or a few entries more.
    static func cacheOptions(_ rng: inout Xoshiro256StarStar, variant: Int, cs: UInt64, ext: Bool, size: UInt64) -> [String] {
        let maxL2 = maxL2Bytes(cs: cs, ext: ext, size: size)
        var items: [String] = []
        var cacheSizeUsed = false
        func entrySize() -> UInt64 {
            // A power of two between 512 and the cluster size.
            var options: [UInt64] = []
            var e: UInt64 = 512
            while e <= cs {
                options.append(e)
                e <<= 1
            }
            return options[Int(rng.nextBelow(UInt64(options.count)))]
        }
        switch variant {
        case 1:
            items.append("l2-cache-size=1")
        case 2:
            let slice = min(cs, 4096)
            let slots = maxL2 / slice
            let k = slots <= 2 ? 2 : 2 + rng.nextBelow(slots - 2)
            items.append("l2-cache-size=\(k * slice + rng.nextBelow(slice))")
        case 3:
            let e = entrySize()
            let slots = max(2, maxL2 / e)
            let k = 2 + rng.nextBelow(slots - 1)
            items += ["l2-cache-entry-size=\(e)", "l2-cache-size=\(k * e)"]
        case 4:
            let e = entrySize()
            items += ["l2-cache-entry-size=\(e)", "l2-cache-size=\(maxL2 + (rng.nextBelow(2) == 0 ? 0 : 32 << 20))"]
        case 5:
            if rng.nextBelow(2) == 0 {
                items.append("l2-cache-size=\(maxL2)")
            } else {
                items.append("cache-size=\(maxL2 + 4 * cs + rng.nextBelow(2) * cs)")
                cacheSizeUsed = true
            }
        case 6:
            items.append("cache-size=\((2 + rng.nextBelow(6)) * min(cs, 4096) + rng.nextBelow(4) * cs)")
            cacheSizeUsed = true
        default:
            break
        }
        if !cacheSizeUsed {
            switch rng.nextBelow(4) {
            case 1: items.append("refcount-cache-size=1")
            case 2: items.append("refcount-cache-size=\((5 + rng.nextBelow(4)) * cs)")
            default: break
            }
        }
        return items
    }

    /// A guest offset: 70 % near one of three hot spots (so caches see hits), else uniform.
    static func offset(_ rng: inout Xoshiro256StarStar, cs: UInt64, size: UInt64, hot: [UInt64]) -> UInt64 {
        let clusters = size / cs
        let c: UInt64
        if rng.nextBelow(10) < 7 {
            c = min(clusters - 1, hot[Int(rng.nextBelow(UInt64(hot.count)))] + rng.nextBelow(24))
        } else {
            c = rng.nextBelow(clusters)
        }
        return c * cs
    }

    /// One request: reads (a few over 2–3 clusters), writes inside one cluster (single-segment,
    /// §13), write-zeroes with and without unmap, discards and flushes.
    static func request(
        _ rng: inout Xoshiro256StarStar, cs: UInt64, size: UInt64, hot: [UInt64], readOnly: Bool, readOnlyFlushes: Bool = false
    ) -> TraceRecord {
        let base = offset(&rng, cs: cs, size: size, hot: hot)
        let within = 512 * rng.nextBelow(cs / 512)
        let roll = rng.nextBelow(100)
        let maxPiece = min(cs, 64 << 10)
        func inCluster() -> UInt64 { min(cs - within, 512 * (1 + rng.nextBelow(maxPiece / 512))) }
        if readOnly || roll < 34 {
            if readOnlyFlushes && roll >= 90 { return TraceRecord(op: .flush, offset: 0, length: 0) }
            if rng.nextBelow(10) == 0 {
                // Multi-cluster read: 2 or 3 clusters touched.
                let clusters = 1 + rng.nextBelow(2)
                let end = min(size, base + clusters * cs + 512 * (1 + rng.nextBelow(cs / 512)))
                let start = base + within
                return TraceRecord(op: .read, offset: start, length: end - start)
            }
            return TraceRecord(op: .read, offset: base + within, length: inCluster())
        }
        if roll < 70 {
            if rng.nextBelow(10) == 0 { return TraceRecord(op: .write, offset: base, length: cs) }
            return TraceRecord(op: .write, offset: base + within, length: inCluster())
        }
        if roll < 82 {
            let flags: TraceRecord.Flags = rng.nextBelow(2) == 0 ? [] : .unmap
            if rng.nextBelow(2) == 0 {
                let n = min(1 + rng.nextBelow(4), (size - base) / cs)
                return TraceRecord(op: .writeZeroes, offset: base, length: n * cs, flags: flags)
            }
            let start = base + within
            let len = min(size - start, 512 * (1 + rng.nextBelow(2 * cs / 512)))
            return TraceRecord(op: .writeZeroes, offset: start, length: len, flags: flags)
        }
        if roll < 92 {
            let start = base + (rng.nextBelow(2) == 0 ? 0 : within)
            let len = min(size - start, 512 * (1 + rng.nextBelow(4 * cs / 512)))
            return TraceRecord(op: .discard, offset: start, length: len)
        }
        return TraceRecord(op: .flush, offset: 0, length: 0)
    }

    /// Grid cases whose divergence is the simulator's fault (case index → the name of the
    /// `KnownDivergence` it shows). They are reported as known issues, not failures.
    /// (Cases 81, 182, 198 and 203 diverged before the fixes that `KnownDivergence` records.)
    static let knownDivergentCases: [Int: String] = [:]
}

/// A divergence the grid found in the simulator (since fixed), with the smallest repro and what
/// real QEMU does: kept as regression tests.
struct KnownDivergence: Sendable, CustomStringConvertible {
    /// A short name used by `DifferentialGrid.knownDivergentCases`.
    var name: String
    /// What the simulator does wrong, and what QEMU 7.2 does.
    var summary: String
    /// The repro's configuration.
    var config: SimulationConfig
    /// The repro's trace (`R|W|D|Z|Zu|F OFFSET LENGTH`).
    var trace: String

    var description: String { name }

    /// Every known divergence, with its repro.
    static let all: [KnownDivergence] = [readOnlyFlush, cowReadUnmarked, multiSegmentOverMarking, seekDataAfterRead]

    /// Grid seed `abcdef`, case 125: once the preallocation probe has fired, write-zeroes'
    /// unaligned head asks the image file for holes (SEEK_DATA). A guest read over the cluster
    /// had brought the COW zero range (an unwritten extent) into the page cache, so ext4
    /// reports it as data; the simulator counted it as a hole and made one more L2 lookup.
    static let seekDataAfterRead = KnownDivergence(
        name: "seek-data after read",
        summary:
            "after a read over a zero-range (unwritten) extent, SEEK_DATA reports it as data: the unaligned write-zeroes head stops after one block-status query",
        config: {
            var c = SimulationConfig(
                virtualSize: 64 << 20, createOptions: CreateOptions(clusterSize: 2 << 20, extendedL2: true), chainLength: 2,
                // l2-cache-entry-size=2048,l2-cache-size=1777664,refcount-cache-size=1,
                // backing.l2-cache-entry-size=16384,backing.l2-cache-size=2097152
                driveOptions: DriveOptions([
                    CacheOptions(l2CacheSize: 1_777_664, refcountCacheSize: 1, l2CacheEntrySize: 2048),
                    CacheOptions(l2CacheSize: 2_097_152, l2CacheEntrySize: 16384),
                ]),
                cacheMode: .writethrough)
            c.preparation = [
                PreparationSession(
                    image: 1,
                    records: [
                        TraceRecord(op: .discard, offset: 65_011_712, length: 2_097_152),
                        TraceRecord(op: .write, offset: 40_097_280, length: 52224),
                        TraceRecord(op: .write, offset: 5_316_608, length: 62464),
                        TraceRecord(op: .read, offset: 51_937_792, length: 25600),
                        TraceRecord(op: .read, offset: 33_118_208, length: 35328),
                        TraceRecord(op: .flush, offset: 0, length: 0),
                        TraceRecord(op: .write, offset: 50_933_760, length: 27136),
                        TraceRecord(op: .read, offset: 66_368_512, length: 14336),
                        TraceRecord(op: .flush, offset: 0, length: 0),
                    ])
            ]
            return c
        }(),
        trace: "W 66929152 20480\nR 66503168 605696\nZu 66958848 150016")

    /// The COW read of a write over a partly allocated cluster (extended L2, merged head+tail
    /// read, `perform_cow`) goes through `qcow2_co_preadv_part` of the same image; when that
    /// read has a data segment that is not the last (the other subclusters come from the
    /// backing file), QEMU creates a task pool. The simulator does not mark the write.
    static let cowReadUnmarked = KnownDivergence(
        name: "cow-read task pool unmarked",
        summary:
            "a single-cluster write whose merged COW read (extended L2, head and tail subclusters from the backing file, one allocated subcluster between) runs as a task pool in QEMU (qcow2_add_task … pool 0x…) is not marked multi-segment by the simulator; events happen to be identical here, but such a request's cross-image order is not deterministic (§13)",
        config: SimulationConfig(
            virtualSize: 1 << 30, createOptions: CreateOptions(extendedL2: true), chainLength: 2,
            populate: .ranges([ByteRange(start: 0, length: 65536)]),
            populateMode: .data),
        trace: "W 2560 1536\nW 1536 9216")

    /// `qemu-io -r`: `bdrv_co_flush` returns at once on a read-only node, so a flush request
    /// prints no cache event; the simulator prints `flush L2`, `flush RC` for it.
    static let readOnlyFlush = KnownDivergence(
        name: "read-only flush",
        summary:
            "a flush request on an image opened read-only prints nothing in QEMU (bdrv_co_flush skips read-only nodes); the simulator prints WRITE(L2) + WRITE(RC) (2 qcow2_cache_flush lines)",
        config: {
            var c = SimulationConfig(virtualSize: 1 << 30)
            c.readOnly = true
            return c
        }(),
        trace: "R 0 4096\nF")

    /// A read whose first MAP does not cover it is marked multi-segment, but QEMU creates a task
    /// pool only when a segment needs a task (data, or a backing read) and is not the last one:
    /// zero / unallocated-without-backing segments are filled inline (`qcow2_co_preadv_part`).
    static let multiSegmentOverMarking = KnownDivergence(
        name: "multi-segment over-marking",
        summary:
            "the simulator marks a read as multi-segment whenever the first MAP is shorter than the request; QEMU runs it inline (qcow2_add_task … pool (nil)) when every segment but the last is zero or unallocated without backing; events are identical, only the classification (and the multiSegmentReads metric) is off",
        config: SimulationConfig(virtualSize: 1 << 30),
        trace: "W 65536 4096\nR 0 131072")

    /// The trace as records.
    var records: [TraceRecord] { TraceText.records(trace) }
}

/// The grid itself (no QEMU needed): its size, its dimensions, determinism.
@Suite("differential grid: generator")
struct DifferentialGridTests {
    @Test("the grid covers every dimension the issues name")
    func coverage() throws {
        let cases = try (0..<DifferentialGrid.count).map(DifferentialGrid.make)
        #expect(cases.count >= 200)
        #expect(Set(cases.map(\.clusterSize)) == [512, 4096, 65536, 2 << 20])
        #expect(Set(cases.filter(\.extendedL2).map(\.clusterSize)) == [65536, 2 << 20])
        #expect(Set(cases.map(\.populateName)).isSuperset(of: DifferentialGrid.populateKinds))
        #expect(Set(cases.map(\.config.chainLength)) == [1, 2, 3])
        #expect(Set(cases.map(\.config.cacheMode.rawValue)) == ["writeback", "writethrough"])
        #expect(
            cases.contains { $0.config.driveOptions[0].l2CacheSize == 1 }
        )
        #expect(cases.contains { $0.config.driveOptions.images.count == 3 })
        #expect(cases.contains { $0.config.driveOptions.images.contains { $0.l2CacheEntrySize == 512 } })
        #expect(cases.contains { $0.config.driveOptions.images.contains { $0.refcountCacheSize == 1 } })
        #expect(
            cases.contains { $0.config.driveOptions.images.contains { $0.cacheSize != nil && $0.l2CacheSize == nil } }
        )
        #expect(cases.contains { $0.config.preparation.contains { $0.image > 0 } })
        #expect(cases.contains { $0.config.readOnly })
        #expect(cases.contains { !$0.config.discardUnmap })
        // Every write stays inside one cluster (single-segment, §13); some reads span clusters.
        for c in cases {
            for r in c.records where r.op == .write {
                #expect(r.offset / c.clusterSize == (r.offset + r.length - 1) / c.clusterSize, "\(c)")
            }
            #expect(c.records.count >= 100 && c.records.count <= 200)
        }
        #expect(
            cases.contains { c in
                c.records.contains { $0.op == .read && $0.offset / c.clusterSize != ($0.offset + $0.length - 1) / c.clusterSize }
            })
        // Every known divergent case names a repro in the list.
        let names = Set(KnownDivergence.all.map(\.name))
        #expect(DifferentialGrid.knownDivergentCases.values.allSatisfy(names.contains))
        // "Crossed exactly": the first 180 cases hold each (geometry, populate, chain, cache mode)
        // once: 6 × 5 × 3 × 2 = 180 (the grid's definition above).
        let cells = Set(
            cases.prefix(DifferentialGrid.crossed).map {
                "\($0.clusterSize) \($0.extendedL2) \($0.populateName) \($0.config.chainLength) \($0.config.cacheMode)"
            })
        #expect(DifferentialGrid.crossed == 6 * 5 * 3 * 2 && cells.count == DifferentialGrid.crossed)
        // Case 17 worked by hand from the definition: geometry 17 % 6 = 5 (2 MiB, extended L2),
        // populate (17 / 6) % 5 = 2 (zero ranges), chain 1 + (17 / 30) % 3 = 1, mode (17 / 90) % 2 = 0
        // (writeback), seed 0xD1FF0000 + 17.
        let c17 = cases[17]
        #expect(c17.seed == 0xD1FF_0011 || DifferentialGrid.seedBase != DifferentialGrid.defaultSeedBase)
        #expect(c17.config.createOptions.rendered == "cluster_size=2097152,extended_l2=on")
        #expect(c17.populateName == "zero ranges" && c17.config.chainLength == 1 && c17.config.cacheMode == .writeback)
    }
}

/// Runs the simulator and real qemu-io over the grid and asserts identical event logs.
@Suite("differential grid: simulator vs qemu-io", .requires(QemuTools.io))
struct DifferentialTests {
    let validator = Validator(runner: QemuTools.runner)

    /// What checking one case found.
    struct Outcome {
        /// A real failure (events differ, a multi-segment write flagged, or a request QEMU ran
        /// as a task pool that the simulator did not mark), with everything needed to reproduce.
        var failure: String?
        /// Requests the simulator marks multi-segment that QEMU ran inline (events identical;
        /// the simulator's classification metric is off, see `KnownDivergence` "multi-segment
        /// over-marking").
        var overMarked: String?
    }

    /// Simulates and validates one case.
    static func check(_ c: DiffCase, records: [TraceRecord]? = nil, validator: Validator = Validator(runner: QemuTools.runner))
        throws
        -> Outcome
    {
        let recs = records ?? c.records
        let input = ValidationInput(records: recs, fileName: "seed-0x\(String(c.seed, radix: 16))")
        let (log, sizes) = try SimulatorValidationTests.simulate(c.config, input)
        let report = try validator.validate(config: c.config, input: input, expected: log, sizes: sizes)
        func describe(_ checks: [InterleavingCheck]) -> String {
            checks.map { m in
                "request \(m.request) (\(TraceText.text([recs[m.request]]))): simulator \(m.simulatorMarked ? "multi" : "single")-segment, QEMU \(m.qemuPooled ? "task pool" : "inline")"
            }.joined(separator: "; ")
        }
        var problems: [String] = []
        // Multi-segment reads over backing files follow QEMU's task order too (§13): another
        // valid interleaving (`equivalent`) is a failure here, as a divergence is.
        if report.outcome == .divergent { problems.append("divergent") }
        if report.outcome == .equivalent {
            problems.append("equivalent: requests \(report.equivalentRequests) in another order than QEMU's")
        }
        let under = report.multiSegment.checks.filter { $0.qemuPooled && !$0.simulatorMarked }
        if !under.isEmpty { problems.append("QEMU ran requests as task pools the simulator did not mark: " + describe(under)) }
        if report.multiSegment.flaggedWrites > 0 {
            problems.append("\(report.multiSegment.flaggedWrites) multi-segment writes flagged")
        }
        let over = report.multiSegment.checks.filter { $0.simulatorMarked && !$0.qemuPooled }
        return Outcome(
            failure: problems.isEmpty ? nil : "\(c)\n\(problems.joined(separator: "; "))\n\(report.text())",
            overMarked: over.isEmpty ? nil : "\(c)\n" + describe(over))
    }

    @Test("seeded case: simulator and qemu-io agree event for event", arguments: 0..<DifferentialGrid.count)
    func differential(index: Int) throws {
        let c = try DifferentialGrid.make(index)
        let outcome = try Self.check(c, validator: validator)
        if DifferentialGrid.seedBase == DifferentialGrid.defaultSeedBase, let name = DifferentialGrid.knownDivergentCases[index] {
            withKnownIssue(
                "known simulator divergence '\(name)' in case \(index) seed 0x\(String(c.seed, radix: 16))", isIntermittent: true
            ) {
                #expect(outcome.failure == nil, "\(outcome.failure ?? "")")
            }
        } else {
            #expect(outcome.failure == nil, "\(outcome.failure ?? "")")
        }
        #expect(
            outcome.overMarked == nil, "simulator marks requests multi-segment that QEMU ran inline: \(outcome.overMarked ?? "")")
    }

    @Test("former divergences: the minimal repros now agree with QEMU, classification included", arguments: KnownDivergence.all)
    func knownRepro(_ known: KnownDivergence) throws {
        let input = ValidationInput(records: known.records, fileName: known.name)
        let (log, sizes) = try SimulatorValidationTests.simulate(known.config, input)
        let report = try validator.validate(config: known.config, input: input, expected: log, sizes: sizes)
        let mismatch = report.multiSegment.checks.filter { $0.simulatorMarked != $0.qemuPooled }
        #expect(report.identical, "\(known.name): \(report.text())")
        #expect(mismatch.isEmpty, "\(known.name): \(known.summary)")
    }

    /// Shrinks the failing cases named in `QCOW2SIM_MINIMIZE` (comma-separated case indices):
    /// drops chunks of requests while the failure persists and prints the smallest trace.
    @Test(
        "minimize divergent cases (QCOW2SIM_MINIMIZE=i,j,…)",
        .enabled(
            if: ProcessInfo.processInfo.environment["QCOW2SIM_MINIMIZE"] != nil,
            "a debugging tool, run on demand: set QCOW2SIM_MINIMIZE=i,j,… to shrink those grid cases"))
    func minimize() throws {
        let list = ProcessInfo.processInfo.environment["QCOW2SIM_MINIMIZE"] ?? ""
        for item in list.split(separator: ",") {
            guard let index = Int(item) else { continue }
            let c = try DifferentialGrid.make(index)
            func fails(_ recs: [TraceRecord]) throws -> Bool {
                let o = try Self.check(c, records: recs, validator: validator)
                return o.failure != nil || o.overMarked != nil
            }
            var recs = c.records
            guard try fails(recs) else {
                print("case \(index): not divergent")
                continue
            }
            var chunk = max(1, recs.count / 2)
            while chunk >= 1 {
                var start = 0
                var removed = false
                while start < recs.count {
                    var trial = recs
                    trial.removeSubrange(start..<min(recs.count, start + chunk))
                    if !trial.isEmpty, try fails(trial) {
                        recs = trial
                        removed = true
                    } else {
                        start += chunk
                    }
                }
                if !removed { chunk /= 2 }
            }
            let o = try Self.check(c, records: recs, validator: validator)
            print(
                "=== minimal repro for case \(index) (\(recs.count) requests)\n\(TraceText.text(recs))\n\(o.failure ?? o.overMarked ?? "(no longer divergent)")"
            )
        }
    }

    @Test("a wrong eviction on a write-heavy trace is caught at the request where it happens")
    func misEvictionWriteHeavy() throws {
        // Fresh 128 MiB image, 4 KiB clusters, 3 slices of L2 cache: 80 % writes spread over a
        // few hundred clusters, so nearly every request allocates and evicts dirty slices.
        let config = SimulationConfig(
            virtualSize: 128 << 20, createOptions: try CreateOptions(parsing: "cluster_size=4096"),
            driveOptions: try DriveOptions(parsing: "l2-cache-size=12K"), cacheMode: .writeback)
        var rng = Xoshiro256StarStar(seed: 0x3_1415)
        let recs: [TraceRecord] = (0..<200).map { _ in
            let off = rng.nextBelow(32768) * 4096 + 512 * rng.nextBelow(8)
            return rng.nextBelow(10) < 8
                ? TraceRecord(op: .write, offset: off, length: 512 * (1 + rng.nextBelow(8)))
                : TraceRecord(op: .read, offset: off, length: 512)
        }
        #expect(recs.filter { $0.op == .write }.count > 140)
        let input = ValidationInput(records: recs, fileName: "write-heavy.trace")
        let (good, _) = try SimulatorValidationTests.simulate(config, input)
        #expect(try validator.validate(config: config, input: input, expected: good).identical)

        // The switch counts lookups since the image was created; find one that lands in the
        // second half of the trace and really changes an eviction.
        func firstDifference(_ bad: EventLog) -> (request: Int, event: Int)? {
            for (k, mark) in good.requests.enumerated() {
                let e = Array(good.events(ofRequest: k)), b = Array(bad.events(ofRequest: k))
                if e != b {
                    let j = zip(e, b).prefix { $0 == $1 }.count
                    return (mark.request, j)
                }
            }
            return nil
        }
        var lookup = 1
        var found: (log: EventLog, request: Int, event: Int)?
        while lookup < 200_000 && found == nil {
            let (bad, _) = try SimulatorValidationTests.simulate(config, input, misEvict: lookup)
            if let d = firstDifference(bad), d.request >= 100 { found = (bad, d.request, d.event) }
            lookup += lookup < 64 ? 1 : 17
        }
        let mutated = try #require(found, "no lookup in the second half changes an eviction")
        let report = try validator.validate(config: config, input: input, expected: mutated.log)
        #expect(!report.identical)
        #expect(report.exitCode == 1)
        let d = try #require(report.firstDivergence)
        #expect(d.request == mutated.request)
        #expect(d.traceLocation == "\(mutated.request + 1)")
        #expect(d.eventIndex == mutated.event)
        // QEMU's event at that spot is a replace_entry naming another slot than the mutated log.
        let k = d.eventIndex - d.windowStart
        #expect(d.actual[k].hasPrefix("qcow2_cache_get_replace_entry"))
        #expect(d.expected[k].hasPrefix("qcow2_cache_get_replace_entry"))
        #expect(d.actual[k] != d.expected[k])
    }
}

/// `discard=ignore` is reproduced exactly only by qemu-system (qemu-io always opens with unmap
/// on): discards are sent and QEMU drops them.
@Suite("discard=ignore through qemu-system", .requires(QemuTools.system))
struct DiscardIgnoreSystemTests {
    @Test("discards sent to a discard=ignore drive never reach qcow2, as the simulator drops them")
    func discardsDropped() throws {
        var config = SimulationConfig(
            virtualSize: 256 << 20, populate: .ranges([ByteRange(start: 0, length: 1 << 20)]), populateMode: .data)
        config.discardUnmap = false
        let input = ValidationInput(records: TraceText.records("D 0 1M\nR 0 4k\nW 2M 4k\nD 2M 64k\nR 2M 4k\nF"))
        let (log, sizes) = try SimulatorValidationTests.simulate(config, input)
        let v = Validator(runner: QemuTools.runner, options: ValidatorOptions(tool: .qemuSystem, timeScale: 0))
        let report = try v.validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.argv.contains { $0.contains(",discard=ignore") })
        #expect(report.identical, "\(report.text())")
        #expect(report.notes.contains("discard=ignore: 2 discard request(s) sent to a drive with discard=ignore"))
    }

    @Test("write-zeroes with unmap still unmaps on a discard=ignore drive (QEMU 7.2), as the simulator does")
    func zeroesUnmap() throws {
        var config = SimulationConfig(virtualSize: 256 << 20)
        config.discardUnmap = false
        var recs = TraceText.records("W 0 64k\nF\nZ 0 64k\nF\nR 0 4k")
        recs[2].flags = .unmap
        let input = ValidationInput(records: recs)
        let (log, sizes) = try SimulatorValidationTests.simulate(config, input)
        let v = Validator(runner: QemuTools.runner, options: ValidatorOptions(tool: .qemuSystem, timeScale: 0))
        let report = try v.validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.identical, "\(report.text())")
        // Without unmap the simulation is different, and QEMU's run is not that one: the unmap
        // flag reached qcow2 (the cluster was freed, FREE_ENTRY's refcount GETs).
        var plain = recs
        plain[2].flags = []
        let (plainLog, _) = try SimulatorValidationTests.simulate(config, ValidationInput(records: plain))
        let other = Validator.report(
            config: config, input: input, expected: plainLog, replay: try v.replay(config: config, input: input), sizes: nil,
            keptDirectory: nil)
        #expect(!other.identical)
        #expect(other.firstDivergence?.request == 2)
    }
}
